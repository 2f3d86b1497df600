"""The result record: one checkpoint's task scores, shared by `fineline eval`, series
files and in-process evaluation (schema in docs/ARCHITECTURE.md, "Result record")."""

from __future__ import annotations

import json
import os


def make_record(tasks: dict, *, model: str | None, checkpoint: str | None,
                step: int | None, tokens: int | None, errors: dict | None = None) -> dict:
  """`{"model", "checkpoint", "step", "tokens", "tasks"}`, plus `"errors"` {task: message}
  when any task failed."""
  record = {"model": model, "checkpoint": checkpoint, "step": step, "tokens": tokens,
            "tasks": tasks}
  if errors:
    record["errors"] = dict(errors)
  return record


def write_jsonl(path: str, rows: list[dict], mode: str) -> None:
  """One JSON object per line; `mode` "a" appends (a run's results), "w" replaces."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, mode) as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
