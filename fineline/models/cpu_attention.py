"""Native CPU attention: `cpu_attention.cc` as XLA FFI calls, with its own backward.

On the CPU, XLA runs the attention core's batched products at about half the speed of
single-threaded BLAS calls on each head's strided view, and adds transposed and sliced
copies around them. The native kernel makes those calls directly (OpenBLAS from the
`scipy-openblas32` wheel), spreads the (batch, key/value head) pairs over the cores and
recomputes the probabilities in the backward pass instead of storing them.

The library is compiled with the system's C++ compiler on first use and cached per source,
machine and jaxlib (`$FINELINE_CACHE_DIR`, else ~/.cache/fineline). Where it cannot be built,
`available()` is False, one warning says why, and `attention.attend` keeps XLA's path;
`FINELINE_NATIVE_ATTENTION=0` chooses that path too.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import platform
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = pathlib.Path(__file__).with_name("cpu_attention.cc")
# Query rows per block: causal blocks skip the keys after their last row.
BLOCK = 64
_FLAGS = ("-O3", "-march=native", "-ffast-math", "-fPIC", "-shared", "-std=c++17")


def _cache_dir() -> pathlib.Path:
  root = os.environ.get("FINELINE_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "fineline")
  return pathlib.Path(root) / "kernels"


def _cpu_signature() -> str:
  """The CPU model and feature flags: `-march=native` code is only valid on their like."""
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    return "\n".join(sorted({l for l in lines if l.startswith(("model name", "flags"))}))
  except OSError:
    return platform.processor()


def _build() -> pathlib.Path:
  import scipy_openblas32  # pylint: disable=import-outside-toplevel
  compiler = os.environ.get("CXX", "g++")
  lib_dir = scipy_openblas32.get_lib_dir()
  command = [compiler, *_FLAGS, f"-I{jax.ffi.include_dir()}",
             f"-I{scipy_openblas32.get_include_dir()}", str(_SOURCE), f"-L{lib_dir}",
             f"-l{scipy_openblas32.get_library()}", f"-Wl,-rpath,{lib_dir}", "-lpthread", "-lmvec"]
  key = hashlib.sha256("\0".join([_SOURCE.read_text(), compiler, *_FLAGS, _cpu_signature(),
                                  jax.__version__, lib_dir]).encode()).hexdigest()[:16]
  target = _cache_dir() / f"cpu_attention-{key}.so"
  if target.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  # Compiled beside the target and renamed into place: concurrent builders never load a
  # half-written library.
  with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
    built = pathlib.Path(tmp) / target.name
    result = subprocess.run([*command, "-o", str(built)], capture_output=True, text=True,
                            check=False)
    if result.returncode:
      raise RuntimeError(f"{compiler} failed on {_SOURCE.name}:\n{result.stderr[-2000:]}")
    os.replace(built, target)
  return target


@functools.lru_cache(maxsize=None)
def available() -> bool:
  """Whether the native kernel is built and registered with XLA (once per process)."""
  if os.environ.get("FINELINE_NATIVE_ATTENTION", "1") == "0":
    return False
  try:
    library = ctypes.CDLL(str(_build()))
    library.scipy_openblas_set_num_threads(1)  # one BLAS thread per task: the tasks are parallel
  except (OSError, RuntimeError, ImportError, AttributeError) as e:
    logging.warning("native CPU attention unavailable, using XLA's (%s)", e)
    return False
  for name in ("FinelineAttentionForward", "FinelineAttentionBackward"):
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
  return True


def applies(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh) -> bool:
  """Whether `attention` serves these operands: float32 on the CPU, kernel available."""
  return (jax.default_backend() == "cpu"
          and all(x.dtype == jnp.float32 for x in (q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh))
          and available())


def _threads() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _attrs(causal: bool):
  if not available():
    raise RuntimeError("native CPU attention is unavailable: see the warning logged above")
  return dict(causal=bool(causal), block=np.int64(BLOCK), threads=np.int64(_threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def attention(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT, causal: bool = False):
  """Masked softmax(q·kᵀ/√Dh)·v with grouped key/value heads, as `attention.dot_attention`."""
  return _forward(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT, causal)[0]


def _forward(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT, causal):
  B, S, H, _ = q_BxSxHxDh.shape
  row_stats = jax.ShapeDtypeStruct((B, H, S), jnp.float32)
  out_BxSxHxDh, max_BxHxS, inv_BxHxS = jax.ffi.ffi_call(
      "FinelineAttentionForward",
      (jax.ShapeDtypeStruct(q_BxSxHxDh.shape, jnp.float32), row_stats, row_stats),
      vmap_method="sequential")(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT, **_attrs(causal))
  return out_BxSxHxDh, (q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT, out_BxSxHxDh, max_BxHxS,
                        inv_BxHxS)


def _backward(causal, residuals, dout_BxSxHxDh):
  q, k, v, mask_BxSxT = residuals[:4]
  dq, dk, dv = jax.ffi.ffi_call(
      "FinelineAttentionBackward",
      tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v)),
      vmap_method="sequential")(*residuals, dout_BxSxHxDh.astype(jnp.float32), **_attrs(causal))
  return dq, dk, dv, np.zeros(mask_BxSxT.shape, jax.dtypes.float0)


attention.defvjp(_forward, _backward)
