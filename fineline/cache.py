"""fineline's local cache: `$FINELINE_CACHE_DIR`, else ~/.cache/fineline.

It holds what a later command can reuse instead of redoing: the native CPU kernels
(`kernels/`), JSONL corpora converted to TFRecords (`jsonl/`) and JAX's compiled programs
(`jax/`). Everything in it can be deleted at any time; it is rebuilt on demand.
"""

from __future__ import annotations

import os
import pathlib


def path(*parts: str) -> pathlib.Path:
  root = os.environ.get("FINELINE_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "fineline")
  return pathlib.Path(root, *parts)


def enable_compilation_cache() -> None:
  """Keeps JAX's compiled programs under `jax/`, so the next command (a rerun, the next
  checkpoint of a series, a resumed run) loads its scoring and training programs instead of
  compiling them again. A cache directory the user configured for JAX is left as it is."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.config.jax_compilation_cache_dir:
    return
  jax.config.update("jax_compilation_cache_dir", str(path("jax")))
  # The scorer compiles many small programs (one per row length); each is worth keeping.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
