"""Matrix products of the model: op(a)·op(b) for 2-D operands, op = identity or transpose.

Float32 products on a single CPU device run the native kernel (`native`), differentiated by
the same kernel with the transposes swapped; everything else is XLA's dot.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from fineline.models import native

# The checkpoint name of native products' outputs: remat policies that save dots save these
# too (a custom call is not a dot to `checkpoint_dots`).
NATIVE_NAME = "native_matmul"
# Products with fewer rows (decode steps of a few sequences) stay with XLA, which has a
# matrix-vector path for them; the native kernel is a matrix-matrix product.
_MIN_NATIVE_ROWS = 8


def matmul(a, b, transpose_a: bool = False, transpose_b: bool = False,
           preferred_element_type=None):
  """op(a) @ op(b): a M×K (K×M when transposed), b K×N (N×K when transposed)."""
  rows = a.shape[1] if transpose_a else a.shape[0]
  if rows >= _MIN_NATIVE_ROWS and native.applies(a, b):
    return checkpoint_name(_native(a, b, transpose_a, transpose_b), NATIVE_NAME)
  dims = (((0 if transpose_a else 1,), (1 if transpose_b else 0,)), ((), ()))
  return jax.lax.dot_general(a, b, dims, preferred_element_type=preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _native(a, b, transpose_a, transpose_b):
  native.require()
  M = a.shape[1] if transpose_a else a.shape[0]
  N = b.shape[0] if transpose_b else b.shape[1]
  return jax.ffi.ffi_call("FinelineMatmul", jax.ShapeDtypeStruct((M, N), jnp.float32),
                          vmap_method="sequential")(
      a, b, transpose_a=bool(transpose_a), transpose_b=bool(transpose_b),
      threads=np.int64(native.threads()))


def _native_fwd(a, b, transpose_a, transpose_b):
  return _native(a, b, transpose_a, transpose_b), (a, b)


def _native_bwd(transpose_a, transpose_b, residuals, dc):
  a, b = residuals
  da = (_native(b, dc, transpose_b, True) if transpose_a
        else _native(dc, b, False, not transpose_b))
  db = (_native(dc, a, True, transpose_a) if transpose_b
        else _native(a, dc, not transpose_a, False))
  return da, db


_native.defvjp(_native_fwd, _native_bwd)
