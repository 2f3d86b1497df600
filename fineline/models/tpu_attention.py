"""Causal attention on TPU: Pallas splash attention, one kernel per device's shard.

The kernel streams key/value blocks through on-chip memory and keeps only each row's
log-sum-exp for the backward pass, never the S×T probabilities, and skips the blocks that
the causal mask hides. Grouped key/value heads use its multi-query form: the G query heads
that share a key/value head form one multi-query problem, mapped over batch and K.

A Pallas call is opaque to XLA's partitioner, so under a mesh the kernel runs inside
`shard_map` over the same batch and head split as the activations around it.
"""

from __future__ import annotations

import functools
import math

import jax
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec as P

from fineline import partitioning

# The kernel's tiles are multiples of the TPU's 128 lanes; larger ones amortise the
# per-block overhead, up to the sequence itself.
LANES = 128
MAX_BLOCK = 512


def supports(seq_len: int, kv_len: int) -> bool:
  """Whether splash serves causal self-attention over these lengths."""
  return seq_len == kv_len and seq_len % LANES == 0


def attention(q_BxSxHxDh, k_BxSxKxDh, v_BxSxKxDh, interpret: bool = False):
  """Causal softmax(q·kᵀ/√Dh)·v by index (query s sees keys 0 … s); out_BxSxHxDh.

  `interpret` runs the kernel in Pallas's interpreter (any backend; for tests).
  """
  S, T = q_BxSxHxDh.shape[1], k_BxSxKxDh.shape[1]
  if not supports(S, T):
    raise ValueError(f"splash attention needs equal query and key lengths that are multiples "
                     f"of {LANES}; got {S} queries and {T} keys")
  local = functools.partial(_local_attention, interpret=interpret)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return local(q_BxSxHxDh, k_BxSxKxDh, v_BxSxKxDh)
  q_spec = partitioning.logical_to_mesh(P("batch", "length", "heads", "head_dim"))
  kv_spec = partitioning.logical_to_mesh(P("batch", "length", "kv_heads", "head_dim"))
  return jax.shard_map(local, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec,
                       check_vma=False)(q_BxSxHxDh, k_BxSxKxDh, v_BxSxKxDh)


def _local_attention(q_BxSxHxDh, k_BxSxKxDh, v_BxSxKxDh, interpret: bool):
  B, S, H, Dh = q_BxSxHxDh.shape
  K = k_BxSxKxDh.shape[2]
  # The kernel does not scale the scores: scale the queries once instead.
  q_BxSxHxDh = q_BxSxHxDh * (1.0 / math.sqrt(Dh))
  q_BxKxGxSxDh = q_BxSxHxDh.reshape(B, S, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
  k_BxKxSxDh = k_BxSxKxDh.transpose(0, 2, 1, 3)
  v_BxKxSxDh = v_BxSxKxDh.transpose(0, 2, 1, 3)
  kernel = _kernel(H // K, S, math.gcd(S, MAX_BLOCK), interpret)
  out_BxKxGxSxDh = jax.vmap(jax.vmap(kernel))(q_BxKxGxSxDh, k_BxKxSxDh, v_BxKxSxDh)
  return out_BxKxGxSxDh.transpose(0, 3, 1, 2, 4).reshape(B, S, H, Dh)


@functools.lru_cache(maxsize=None)
def _kernel(num_query_heads: int, seq_len: int, block: int, interpret: bool):
  """The multi-query kernel for G query heads over one key/value head (built once per shape:
  it precomputes which blocks the mask hides)."""
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  mask = splash.MultiHeadMask([splash.CausalMask((seq_len, seq_len))] * num_query_heads)
  return splash.make_splash_mqa_single_device(mask=mask, block_sizes=sizes, interpret=interpret)
