"""The result record: one checkpoint's task scores, shared by `fineline eval`, series
files and in-process evaluation (schema in docs/ARCHITECTURE.md, "Result record")."""

from __future__ import annotations


def make_record(tasks: dict, *, model: str | None, checkpoint: str | None,
                step: int | None, tokens: int | None, errors: dict | None = None) -> dict:
  """`{"model", "checkpoint", "step", "tokens", "tasks"}`, plus `"errors"` {task: message}
  when any task failed."""
  record = {"model": model, "checkpoint": checkpoint, "step": step, "tokens": tokens,
            "tasks": tasks}
  if errors:
    record["errors"] = dict(errors)
  return record

