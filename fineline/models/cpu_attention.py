"""Native CPU attention: `cpu_attention.cc` as XLA FFI calls, with its own backward.

On the CPU, XLA runs the attention core's batched products at about half the speed of
single-threaded BLAS calls on each head's strided view, and adds transposed and sliced
copies around them. The native kernel (built by `native`) makes those calls directly,
spreads the (batch, key/value head) pairs over the cores and recomputes the probabilities
in the backward pass instead of storing them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fineline.models import native

# Query rows per block: causal blocks skip the keys after their last row.
BLOCK = 64


def _attrs(causal: bool):
  native.require()
  return dict(causal=bool(causal), block=np.int64(BLOCK), threads=np.int64(native.threads()))


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
