"""Evaluation of one checkpoint or a series of them, resumable.

A series is given as any mix of
  a fineline run directory      every MODEL_DIR/checkpoints/<step>/ (step, tokens from meta);
  a directory of checkpoints    its subdirectories that are fineline or HF LLaMA checkpoints,
                                step / tokens read from the names (`step1000`, `ckpt_012`,
                                `…-41.94B` = 41.94e9 tokens) unless the meta says;
  a list file                   lines `PATH [STEP [TOKENS]]` (or JSON objects with path,
                                step, tokens); relative paths are relative to the file;
  a checkpoint itself.
`evaluate_series` writes one result record per checkpoint to a JSONL file, appending each
as soon as it is complete; a restart reads the file and skips the checkpoints it already
holds (a torn last line from a killed run is dropped). On several hosts, each scores the
same checkpoints (those process 0's file lacks) and process 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Callable, Iterable

import tqdm

from fineline.errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  path: str
  step: int | None = None
  tokens: int | None = None


def is_fineline_checkpoint(path: str) -> bool:
  return os.path.isdir(os.path.join(path, "meta"))


def is_hf_checkpoint(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "config.json"))


def discover(paths: Iterable[str]) -> list[Checkpoint]:
  """The checkpoints named by `paths`, each series ordered by step/tokens."""
  out: list[Checkpoint] = []
  for path in paths:
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(path):
      out.extend(_read_list_file(path))
    elif is_fineline_checkpoint(path) or is_hf_checkpoint(path):
      out.append(_named(path))
    elif os.path.isdir(os.path.join(path, "checkpoints")):
      out.extend(_children(os.path.join(path, "checkpoints")))
    elif os.path.isdir(path):
      found = _children(path)
      if not found:
        raise FileNotFoundError(f"{path}: no fineline or Hugging Face checkpoints in it")
      out.extend(found)
    else:
      raise FileNotFoundError(f"{path}: no such checkpoint, directory or list file")
  return out


def _children(directory: str) -> list[Checkpoint]:
  found = [_named(os.path.join(directory, name)) for name in os.listdir(directory)
           if is_fineline_checkpoint(os.path.join(directory, name))
           or is_hf_checkpoint(os.path.join(directory, name))]
  return sorted(found, key=lambda c: (c.step if c.step is not None else -1,
                                      c.tokens if c.tokens is not None else -1, c.path))


def _named(path: str, step=None, tokens=None) -> Checkpoint:
  if is_fineline_checkpoint(path) and (step is None or tokens is None):
    from fineline import checkpointing  # pylint: disable=import-outside-toplevel
    meta = checkpointing.read_meta(path)
    step = meta.get("step") if step is None else step
    tokens = meta.get("tokens") if tokens is None else tokens
  name = os.path.basename(path.rstrip("/"))
  if step is None:
    m = re.search(r"(?:step|ckpt|checkpoint)[-_]?(\d+)$", name) or re.fullmatch(r"(\d+)", name)
    step = int(m.group(1)) if m else None
  if tokens is None:
    m = re.search(r"(\d+(?:\.\d+)?)([BMT])$", name)
    if m:
      tokens = int(round(float(m.group(1)) * {"M": 1e6, "B": 1e9, "T": 1e12}[m.group(2)]))
  return Checkpoint(path, step, tokens)


def _read_list_file(path: str) -> list[Checkpoint]:
  base, out = os.path.dirname(path), []
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      try:
        if line.startswith("{"):
          entry = json.loads(line)
          ckpt, step, tokens = entry["path"], entry.get("step"), entry.get("tokens")
        else:
          parts = line.split()
          ckpt = parts[0]
          step = int(parts[1]) if len(parts) > 1 and parts[1] != "-" else None
          tokens = int(float(parts[2])) if len(parts) > 2 else None
      except (ValueError, KeyError, IndexError) as e:
        raise UserError(f"{path}:{lineno}: expected 'PATH [STEP [TOKENS]]' or a JSON object "
                         f"with 'path', got {line!r} ({e})") from e
      ckpt = os.path.normpath(os.path.join(base, os.path.expanduser(ckpt)))
      if not (is_fineline_checkpoint(ckpt) or is_hf_checkpoint(ckpt)):
        raise FileNotFoundError(f"{path}:{lineno}: {ckpt} is not a fineline or Hugging Face "
                                "checkpoint")
      out.append(_named(ckpt, step, tokens))
  return out


def read_records(output: str) -> list[dict]:
  """The complete records in a series file; drops a torn last line left by a killed run."""
  if not os.path.exists(output):
    return []
  with open(output, "rb") as f:
    data = f.read()
  records, good_end = [], 0
  for line in data.splitlines(keepends=True):
    try:
      if not line.endswith(b"\n"):
        raise UserError("no newline")
      if line.strip():
        records.append(json.loads(line))
      good_end += len(line)
    except ValueError:
      log.warning("%s: dropping an incomplete last record", output)
      break
  if good_end < len(data) and _process_index() == 0:
    with open(output, "r+b") as f:
      f.truncate(good_end)
  return records


def append_record(output: str, record: dict) -> None:
  """Appends `record` to `output` (process 0 only: the other hosts hold the same one)."""
  if _process_index() != 0:
    return
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, "a") as f:
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _key(path: str) -> str:
  """How a record names its checkpoint: a local path made absolute, a hub one (hf://) as is."""
  return path if "://" in path else os.path.abspath(path)


def pending(checkpoints: list, output: str) -> list:
  """The checkpoints (anything with a `.path`) that `output` holds no record of yet. A
  record of a failed download (errors["download"]) does not count: it is tried again."""
  done = {_key(r["checkpoint"]) for r in read_records(output)
          if r.get("checkpoint") and "download" not in (r.get("errors") or {})}
  todo = _agreed([_key(c.path) not in done for c in checkpoints])
  todo = [c for c, wanted in zip(checkpoints, todo) if wanted]
  if len(todo) < len(checkpoints):
    log.info("%s already holds %d of %d checkpoints; evaluating the other %d", output,
             len(checkpoints) - len(todo), len(checkpoints), len(todo))
  return todo


def _agreed(wanted: list[bool]) -> list[bool]:
  """Process 0's answer on every host: the hosts must score the same checkpoints, and only
  process 0's output file need exist."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() == 1 or not wanted:
    return wanted
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return [bool(w) for w in multihost_utils.broadcast_one_to_all(np.asarray(wanted, np.int32))]


def _process_index() -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_index()


def evaluate_series(checkpoints: list[Checkpoint], output: str,
                    evaluate_one: Callable[[Checkpoint], dict], progress: bool = True) -> int:
  """Evaluates the checkpoints not yet in `output` with `evaluate_one(ckpt) -> record`,
  appending each record; returns how many were evaluated now."""
  todo = pending(checkpoints, output)
  for ckpt in tqdm.tqdm(todo, desc="checkpoints", unit="ckpt", disable=not progress):
    append_record(output, evaluate_one(ckpt))
  return len(todo)
