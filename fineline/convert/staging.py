"""Outputs that appear whole or not at all: built beside the target, renamed into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


def check_output(out: str, overwrite: bool) -> None:
  if os.path.lexists(out) and not overwrite:
    raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")


@contextlib.contextmanager
def staged_output(out: str, overwrite: bool):
  """Yields a path to build the output at; moves it to `out` only if the block succeeds."""
  out = os.path.abspath(out)
  check_output(out, overwrite)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  staging_root = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
  try:
    result = os.path.join(staging_root, "result")
    yield result
    if os.path.lexists(out):
      os.rename(out, os.path.join(staging_root, "replaced"))
    os.rename(result, out)
  finally:
    shutil.rmtree(staging_root, ignore_errors=True)
