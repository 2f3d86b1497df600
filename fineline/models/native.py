"""Native CPU kernels (`cpu_*.cc`): built on first use, registered as XLA FFI targets.

On the model's float32 shapes XLA:CPU's matrix products are slower than OpenBLAS's
(tools/bench/train_step_parts.py, with and without FINELINE_NATIVE=0), and it adds
transposed copies around batched ones, so on the CPU the model's products, its
attention core and the log-probabilities of scored targets run native code: OpenBLAS from
the `scipy-openblas32` wheel, one BLAS thread per call, the calls spread over the cores.

The library is compiled with the system's C++ compiler and cached per source, machine and
jaxlib (`$FINELINE_CACHE_DIR`, else ~/.cache/fineline). Where it cannot be built,
`available()` is False, one warning says why, and the model keeps XLA's paths;
`FINELINE_NATIVE=0` chooses those paths too.
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

import jax
import jax.numpy as jnp

from fineline import cache, fileio
from fineline.models import backend

_SOURCES = tuple(pathlib.Path(__file__).with_name(name)
                 for name in ("cpu_attention.cc", "cpu_head.cc", "cpu_matmul.cc"))
_HEADERS = tuple(pathlib.Path(__file__).with_name(name)
                 for name in ("cpu_parallel.h", "cpu_vector_exp.h"))
_TARGETS = ("FinelineAttentionForward", "FinelineAttentionBackward", "FinelineMatmul",
            "FinelineTargetLogprobs")
# Not -ffast-math: it links a constructor that sets flush-to-zero for the whole process and
# lets the compiler drop NaN checks. These are what the loops need to vectorise: exp without
# errno, sums reassociated, max reductions marked `omp simd` (no OpenMP runtime);
# cpu_vector_exp.h supplies glibc's vector exp.
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
          "-fassociative-math", "-fopenmp-simd", "-fPIC", "-shared", "-std=c++17")


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
             f"-I{scipy_openblas32.get_include_dir()}", *map(str, _SOURCES), f"-L{lib_dir}",
             f"-l{scipy_openblas32.get_library()}", f"-Wl,-rpath,{lib_dir}", "-lpthread", "-lmvec"]
  texts = [path.read_text() for path in _SOURCES + _HEADERS]
  key = hashlib.sha256("\0".join([*texts, compiler, *_FLAGS, _cpu_signature(), jax.__version__,
                                  lib_dir]).encode())
  target = cache.path("kernels") / f"fineline_cpu-{key.hexdigest()[:16]}.so"
  if target.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  # Published whole: concurrent builders never load a half-written library.
  with fileio.atomic_output(target) as built:
    result = subprocess.run([*command, "-o", built], capture_output=True, text=True,
                            check=False)
    if result.returncode:
      names = ", ".join(s.name for s in _SOURCES)
      raise RuntimeError(f"{compiler} failed on {names}:\n{result.stderr[-2000:]}")
  return target


@functools.lru_cache(maxsize=None)
def available() -> bool:
  """Whether the native kernels are built and registered with XLA (once per process)."""
  if os.environ.get("FINELINE_NATIVE", "1") == "0":
    return False
  try:
    library = ctypes.CDLL(str(_build()))
    library.scipy_openblas_set_num_threads(1)  # the kernels run their own threads
  except (OSError, RuntimeError, ImportError, AttributeError) as e:
    logging.warning("native CPU kernels unavailable, using XLA's (%s)", e)
    return False
  for name in _TARGETS:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
  return True


def applies(*operands) -> bool:
  """Whether the native kernels serve these operands: float32 in a single-device CPU
  program (XLA's partitioner would run a custom call whole on every device of a mesh), by
  the platform the program is built for (a TPU plan traces in a CPU process)."""
  return (backend.target_platform() == "cpu" and jax.device_count() == 1
          and all(x.dtype == jnp.float32 for x in operands) and available())


def threads() -> int:
  """The cores this process may run on: the kernels' thread count."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def require():
  """Raises unless the kernels are registered (a call site that skipped `applies`)."""
  if not available():
    raise RuntimeError("native CPU kernels are unavailable: see the warning logged above")
