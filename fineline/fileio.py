"""Paths that may be local or URLs (gs://…), through etils.epath.

- `resolve`: a local path made absolute, a URL kept as it is.
- `check_access`: one line naming a path that cannot be reached, read or written, before any
  work starts.
- `atomic_output`: the one way to write an output that must appear whole or not at all.
  The block builds the file or directory at a local staging path; only when it succeeds is
  the result published. Locally the staging path lies beside the target and is renamed
  into place. An object store has neither rename (it is a copy) nor atomic directories, so
  for a URL the result is built in a local temporary directory and uploaded: a file as one
  object (an object appears only once its upload is complete); a directory file by file,
  its top-level files last, so the file that marks it complete (`config.json`, `report.md`,
  a checkpoint's `_CHECKPOINT_METADATA`) appears only after everything else.
- `JsonlLog` / `read_jsonl`: append-only JSON-lines logs (metrics.jsonl, result records)
  that survive preemption on stores that cannot append: see `JsonlLog`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from typing import Any, Iterator

from etils import epath

log = logging.getLogger(__name__)

PARTS_SUFFIX = ".d"  # metrics.jsonl → metrics.jsonl.d/part-000000.jsonl, …
_PART = re.compile(r"part-(\d+)\.jsonl$")


def is_url(path) -> bool:
  return "://" in os.fspath(path)


def resolve(path) -> epath.Path:
  """`path` as an epath.Path: a local path made absolute (~ expanded), a URL kept."""
  path = os.fspath(path)
  if is_url(path):
    return epath.Path(path)
  return epath.Path(os.path.abspath(os.path.expanduser(path)))


def check_access(path, what: str, *, write: bool = False) -> epath.Path:
  """Proves that `path` can be reached (and, with `write`, that it takes a file, creating
  it as a directory); raises PermissionError, one line naming `what` and the path, if not."""
  path = resolve(path)
  verb = "reachable"
  # The store's client logs each failed attempt with a traceback; the error below says it.
  quiet = logging.getLogger("gcsfs")
  level = quiet.level
  quiet.setLevel(logging.CRITICAL)
  try:
    if is_url(path):
      path.exists()  # reaches the store: network, credentials, bucket
    if write:
      verb = "writable"
      path.mkdir(parents=True, exist_ok=True)
      probe = path / f".write_probe_{uuid.uuid4().hex}"
      probe.write_text("ok")
      probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise PermissionError(f"{what} {path} is not {verb}: {type(e).__name__}: {reason}"[:500]) \
        from None
  finally:
    quiet.setLevel(level)
  return path


def check_output(target, overwrite: bool) -> epath.Path:
  """Before any work: the output's parent takes files, and `target` may be (re)placed."""
  target = resolve(target)
  check_access(target.parent, "output directory", write=True)
  if not overwrite and target.exists():
    raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
  return target


@contextlib.contextmanager
def atomic_output(target, *, overwrite: bool = True) -> Iterator[str]:
  """Yields a local path (not yet existing) to build a file or a directory at; publishes it
  to `target` only when the block succeeds (replacing what was there). On failure nothing
  of it remains. FileExistsError if `target` exists and not `overwrite`."""
  target = resolve(target)
  if not overwrite and target.exists():
    raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
  if is_url(target):
    root = tempfile.mkdtemp(prefix=".fineline-staging-")
  else:
    target.parent.mkdir(parents=True, exist_ok=True)
    root = tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=os.fspath(target.parent))
  try:
    staged = os.path.join(root, "result")
    yield staged
    if not os.path.lexists(staged):
      raise FileNotFoundError(f"nothing was written for {target}")
    if is_url(target):
      _upload(staged, target)
    else:
      if os.path.lexists(target):
        os.rename(target, os.path.join(root, "replaced"))
      os.rename(staged, target)
  finally:
    shutil.rmtree(root, ignore_errors=True)


def _upload(local: str, target: epath.Path) -> None:
  if os.path.isfile(local):
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(epath.Path(local).read_bytes())
    return
  if target.exists():
    target.rmtree()
  files = [os.path.relpath(os.path.join(d, f), local)
           for d, _, names in os.walk(local) for f in names]
  uploaded = []
  try:
    # Nested files first, top-level files last: the top level says "complete".
    for rel in sorted(files, key=lambda r: (os.sep not in r, r)):
      dest = target / rel
      dest.parent.mkdir(parents=True, exist_ok=True)
      dest.write_bytes(epath.Path(os.path.join(local, rel)).read_bytes())
      uploaded.append(dest)
  except BaseException:
    for dest in uploaded:
      with contextlib.suppress(Exception):
        dest.unlink()
    raise


def write_text(target, text: str) -> None:
  """`text` as the file `target`, atomically (see `atomic_output`)."""
  with atomic_output(target) as staged:
    with open(staged, "w", encoding="utf-8") as f:
      f.write(text)


def write_json(target, obj: Any, **dumps_kwargs) -> None:
  write_text(target, json.dumps(obj, **dumps_kwargs) + "\n")


def copy_into(source, target) -> None:
  """Copies a local or remote file or directory to `target` atomically."""
  with atomic_output(target) as staged:
    _copy_tree(resolve(source), staged)


def _copy_tree(source: epath.Path, local: str) -> None:
  if source.is_dir():
    os.makedirs(local, exist_ok=True)
    for child in source.iterdir():
      _copy_tree(child, os.path.join(local, child.name))
  else:
    with open(local, "wb") as f:
      f.write(source.read_bytes())


_downloads: str | None = None


def download(path) -> str:
  """A local path holding `path`'s file or directory: `path` itself when local, else a copy
  in a temporary directory kept until the process exits (for libraries that read only local
  files, e.g. SentencePiece, which may read the file again later)."""
  global _downloads  # pylint: disable=global-statement
  path = resolve(path)
  if not is_url(path):
    return os.fspath(path)
  if not path.exists():
    raise FileNotFoundError(f"{path}: no such file or directory")
  if _downloads is None:
    _downloads = tempfile.mkdtemp(prefix=".fineline-downloads-")
    atexit.register(shutil.rmtree, _downloads, ignore_errors=True)
  local = tempfile.mkdtemp(dir=_downloads)
  local = os.path.join(local, path.name)
  _copy_tree(path, local)
  return local


class JsonlLog:
  """An append-only JSON-lines log, read back by `read_jsonl` after any interruption.

  Locally rows are appended to the one file and flushed at once. An object store cannot
  append, so there each `flush` writes the rows since the last one as a new immutable
  object `<path>.d/part-<n>.jsonl` (n increasing, continuing after the parts already there),
  and readers concatenate the parts in order. A preempted writer loses at most the rows not
  yet flushed (the trainer flushes at every save, and a resumed run logs those steps again).
  `min_interval_s` batches rows into fewer objects on a store; one writer per log.
  """

  def __init__(self, path, *, min_interval_s: float = 0.0):
    self.path = resolve(path)
    self.min_interval_s = min_interval_s
    self._rows: list[str] = []
    self._last_flush = time.monotonic()
    self._file = None
    self._next_part = None
    if not is_url(self.path):
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self._file = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def append(self, row: dict) -> None:
    line = json.dumps(row) + "\n"
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
      return
    self._rows.append(line)
    if time.monotonic() - self._last_flush >= self.min_interval_s:
      self.flush()

  def flush(self) -> None:
    self._last_flush = time.monotonic()
    if self._file is not None:
      self._file.flush()
      os.fsync(self._file.fileno())
      return
    if not self._rows:
      return
    parts = self.path.parent / (self.path.name + PARTS_SUFFIX)
    if self._next_part is None:
      self._next_part = max((n for n, _ in _parts(parts)), default=-1) + 1
    # A new object: readers see it whole or not at all.
    (parts / f"part-{self._next_part:06d}.jsonl").write_text("".join(self._rows))
    self._next_part += 1
    self._rows = []

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()
      self._file = None


def _parts(directory: epath.Path) -> list[tuple[int, epath.Path]]:
  if not directory.is_dir():
    return []
  found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _PART.search(p.name))]
  return sorted(found, key=lambda np_: np_[0])


def log_exists(path) -> bool:
  path = resolve(path)
  return path.is_file() or bool(_parts(path.parent / (path.name + PARTS_SUFFIX)))


def read_jsonl_text(path) -> str:
  """A JsonlLog's text in order: the single file (local layout), then the parts (store
  layout); '' when neither exists."""
  path = resolve(path)
  text = path.read_text(encoding="utf-8") if path.is_file() else ""
  for _, part in _parts(path.parent / (path.name + PARTS_SUFFIX)):
    text += part.read_text(encoding="utf-8")
  return text


def read_jsonl(path, *, repair: bool = False) -> list[dict]:
  """The complete rows of a JsonlLog. A torn last line of the local file (a killed writer)
  is dropped, and with `repair` cut off the file, so later appends start on a fresh line."""
  path = resolve(path)
  rows = []
  if path.is_file():
    data = path.read_bytes()
    good_end = 0
    for line in data.splitlines(keepends=True):
      try:
        if not line.endswith(b"\n"):
          raise ValueError("no newline")
        if line.strip():
          rows.append(json.loads(line))
        good_end += len(line)
      except ValueError:
        log.warning("%s: dropping an incomplete last record", path)
        break
    if repair and good_end < len(data) and not is_url(path):
      with open(path, "r+b") as f:
        f.truncate(good_end)
  for _, part in _parts(path.parent / (path.name + PARTS_SUFFIX)):
    rows.extend(json.loads(line) for line in part.read_text(encoding="utf-8").splitlines()
                if line.strip())
  return rows
