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

from fineline import fileio
from fineline.errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  path: str
  step: int | None = None
  tokens: int | None = None


def is_fineline_checkpoint(path) -> bool:
  return (fileio.resolve(path) / "meta").is_dir()


def is_hf_checkpoint(path) -> bool:
  return (fileio.resolve(path) / "config.json").is_file()


def discover(paths: Iterable[str]) -> list[Checkpoint]:
  """The checkpoints named by `paths`, each series ordered by step/tokens."""
  out: list[Checkpoint] = []
  for given in paths:
    path = fileio.resolve(given)
    fileio.check_access(path, "checkpoint path")
    if path.is_file():
      out.extend(_read_list_file(path))
    elif is_fineline_checkpoint(path) or is_hf_checkpoint(path):
      out.append(_named(path))
    elif (path / "checkpoints").is_dir():
      out.extend(_children(path / "checkpoints", run=True))
    elif path.is_dir():
      found = _children(path)
      if not found:
        raise FileNotFoundError(f"{path}: no fineline or Hugging Face checkpoints in it")
      out.extend(found)
    else:
      raise FileNotFoundError(f"{path}: no such checkpoint, directory or list file")
  return out


def _children(directory, run: bool = False) -> list[Checkpoint]:
  if run:  # a run's saves: only those Orbax committed (on a bucket, a save may be partial)
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    children = [c for c in directory.iterdir() if ocp.utils.is_checkpoint_finalized(c)]
  else:
    children = list(directory.iterdir())
  found = [_named(c) for c in children if is_fineline_checkpoint(c) or is_hf_checkpoint(c)]
  return sorted(found, key=lambda c: (c.step if c.step is not None else -1,
                                      c.tokens if c.tokens is not None else -1, c.path))


def _named(path, step=None, tokens=None) -> Checkpoint:
  path = os.fspath(path)
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


def _read_list_file(path) -> list[Checkpoint]:
  out = []
  for lineno, line in enumerate(path.read_text().splitlines(), 1):
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
    ckpt = os.path.expanduser(ckpt)
    if not (fileio.is_url(ckpt) or os.path.isabs(ckpt)):  # relative to the list file
      ckpt = (os.fspath(path.parent / ckpt) if fileio.is_url(path)
              else os.path.normpath(os.path.join(path.parent, ckpt)))
    if not (is_fineline_checkpoint(ckpt) or is_hf_checkpoint(ckpt)):
      raise FileNotFoundError(f"{path}:{lineno}: {ckpt} is not a fineline or Hugging Face "
                              "checkpoint")
    out.append(_named(ckpt, step, tokens))
  return out


def read_records(output) -> list[dict]:
  """The complete records in a series file (either `fileio.JsonlLog` layout); a torn last
  line left by a killed run is dropped (and, by process 0, cut off the file)."""
  return fileio.read_jsonl(output, repair=_process_index() == 0)


def append_record(output, record: dict) -> None:
  """Appends `record` to `output` (process 0 only: the other hosts hold the same one)."""
  if _process_index() != 0:
    return
  log_file = fileio.JsonlLog(output)
  log_file.append(record)
  log_file.close()


def _key(path: str) -> str:
  """How a record names its checkpoint: a local path made absolute, a hub one (hf://) as is."""
  return os.fspath(fileio.resolve(path))


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
