"""Rotary embeddings and the attention core of the LLaMA family.

Shape suffixes: B batch, S queries, T key/value slots, H query heads, K key/value heads,
G = H // K, Dh head dim.

The rotary tables and the attention mask depend only on positions, so the model builds
them once per call (`rope_tables`, `causal_mask`) and every layer reuses them.

`dot_attention` is the plain dot-product attention used on CPU and in tests, with a
hand-written backward: differentiated automatically, XLA:CPU fused the score-gradient
matmul into the softmax-backward loop, which then cost more than the whole forward pass.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from fineline.models.config import LlamaConfig

# Longest context whose rotary tables are embedded in the program (8 MiB at Dh = 128).
_MAX_CONSTANT_POSITIONS = 8192


def rope_inv_freq(cfg: LlamaConfig) -> np.ndarray:
  """The Dh/2 rotary frequencies (float32), with llama3 scaling when the config has it."""
  dh = cfg.resolved_head_dim
  inv_freq = 1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, dh, 2, dtype=np.float32) / dh))
  scaling = cfg.rope_scaling or {}
  if scaling.get("rope_type") == "llama3":
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    inv_freq = np.where(wavelen > old_len / low, inv_freq / factor,
                        np.where(wavelen < old_len / high, inv_freq, smoothed))
  return inv_freq.astype(np.float32)


def rope_tables(positions_BxS, seq_len: int, cfg: LlamaConfig, dtype):
  """(cos, sin), each B×S×1×Dh (1×S×1×Dh for positions 0 … S − 1), in HF's half-split layout.

  The tables are compile-time constants, gathered at `positions_BxS` when given (positions
  past `cfg.max_length` read its last row: the model has no use for them). Computed from
  traced positions instead, XLA recomputes the sines and cosines in every fusion that
  reads them, once per layer and per use; only contexts too long to embed do that.
  """
  if positions_BxS is None:
    cos_SxDh, sin_SxDh = _rope_table(cfg, np.arange(seq_len, dtype=np.float32))
    return (jnp.asarray(cos_SxDh[None, :, None, :], dtype),
            jnp.asarray(sin_SxDh[None, :, None, :], dtype))
  if cfg.max_length > _MAX_CONSTANT_POSITIONS:  # too large to embed in the program
    cos_BxSxDh, sin_BxSxDh = _rope_table(cfg, positions_BxS.astype(jnp.float32), jnp)
    return cos_BxSxDh[:, :, None, :].astype(dtype), sin_BxSxDh[:, :, None, :].astype(dtype)
  cos_PxDh, sin_PxDh = _rope_table(cfg, np.arange(cfg.max_length, dtype=np.float32))
  gather = lambda table: jnp.take(jnp.asarray(table, dtype), positions_BxS, axis=0,
                                  mode="clip")[:, :, None, :]
  return gather(cos_PxDh), gather(sin_PxDh)


def _rope_table(cfg: LlamaConfig, positions, xp=np):
  angles_xHalf = positions[..., None] * rope_inv_freq(cfg)
  angles_xDh = xp.concatenate([angles_xHalf, angles_xHalf], axis=-1)
  return xp.cos(angles_xDh), xp.sin(angles_xDh)


def apply_rope(x_BxSxNxDh, rope):
  """Rotates each head's halves (HF's `rotate_half` convention) by the tables' angles."""
  cos_BxSx1xDh, sin_BxSx1xDh = rope
  half = x_BxSxNxDh.shape[-1] // 2
  rotated = jnp.concatenate([-x_BxSxNxDh[..., half:], x_BxSxNxDh[..., :half]], axis=-1)
  return x_BxSxNxDh * cos_BxSx1xDh + rotated * sin_BxSx1xDh


def causal_mask(q_pos_BxS, k_pos_BxT):
  """mask_BxSxT: query s may attend to key slot t when t's position is not after s's."""
  return q_pos_BxS[:, :, None] >= k_pos_BxT[:, None, :]


def attend(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT, impl: str):
  """Softmax attention with grouped key/value heads; out_BxSxHxDh."""
  if impl != "dot":
    return jax.nn.dot_product_attention(
        q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask=mask_BxSxT[:, None], implementation=impl)
  return dot_attention(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT)


def dot_attention(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT):
  """Masked softmax(q·kᵀ/√Dh)·v; a row with no visible key attends uniformly.

  The G query heads sharing a key/value head are stacked along the query axis (M = G·S),
  so each (b, k) pair is one plain M×T attention and repeated keys are never materialised.
  """
  B, S, H, Dh = q_BxSxHxDh.shape
  T, K = k_BxTxKxDh.shape[1], k_BxTxKxDh.shape[2]
  G = H // K
  q_BxKxMxDh = q_BxSxHxDh.reshape(B, S, K, G, Dh).transpose(0, 2, 3, 1, 4).reshape(B, K, G * S, Dh)
  mask_Bx1xMxT = jnp.broadcast_to(mask_BxSxT[:, None], (B, G, S, T)).reshape(B, 1, G * S, T)
  out_BxKxMxDh = _grouped_attention(q_BxKxMxDh, k_BxTxKxDh.transpose(0, 2, 1, 3),
                                    v_BxTxKxDh.transpose(0, 2, 1, 3), mask_Bx1xMxT)
  return out_BxKxMxDh.reshape(B, K, G, S, Dh).transpose(0, 3, 1, 2, 4).reshape(B, S, H, Dh)


def _probs(q_BxKxMxDh, k_BxKxTxDh, mask_Bx1xMxT):
  scores = jnp.einsum("bkmd,bktd->bkmt", q_BxKxMxDh, k_BxKxTxDh).astype(jnp.float32)
  scores = scores / math.sqrt(q_BxKxMxDh.shape[-1])
  scores = jnp.where(mask_Bx1xMxT, scores, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(scores, axis=-1).astype(q_BxKxMxDh.dtype)


@jax.custom_vjp
def _grouped_attention(q_BxKxMxDh, k_BxKxTxDh, v_BxKxTxDh, mask_Bx1xMxT):
  return _grouped_attention_fwd(q_BxKxMxDh, k_BxKxTxDh, v_BxKxTxDh, mask_Bx1xMxT)[0]


def _grouped_attention_fwd(q_BxKxMxDh, k_BxKxTxDh, v_BxKxTxDh, mask_Bx1xMxT):
  probs_BxKxMxT = _probs(q_BxKxMxDh, k_BxKxTxDh, mask_Bx1xMxT)
  out_BxKxMxDh = probs_BxKxMxT @ v_BxKxTxDh
  return out_BxKxMxDh, (q_BxKxMxDh, k_BxKxTxDh, v_BxKxTxDh, mask_Bx1xMxT, probs_BxKxMxT,
                        out_BxKxMxDh)


def _grouped_attention_bwd(residuals, dout_BxKxMxDh):
  q_BxKxMxDh, k_BxKxTxDh, v_BxKxTxDh, mask_Bx1xMxT, probs_BxKxMxT, out_BxKxMxDh = residuals
  f32 = lambda a: a.astype(jnp.float32)
  # The M×T matrices go second in the key/value-gradient products: contracted over their
  # major axis they are read in place, where XLA:CPU would transpose each as a left operand.
  dv_BxKxTxDh = jnp.einsum("bkmd,bkmt->bktd", dout_BxKxMxDh, probs_BxKxMxT)
  # softmax': p ⊙ (dp − Σ_t p·dp), with dp = dout·vᵀ and Σ_t p·dp = Σ_d dout·out. The row
  # term rides in the matmul as an extra column (dout | row)·(v | −1)ᵀ: left as a separate
  # reduction, XLA:CPU fused it into the matmul and recomputed it for every tile.
  row_BxKxMx1 = jnp.sum(f32(dout_BxKxMxDh) * f32(out_BxKxMxDh), axis=-1, keepdims=True)
  dout_aug = jnp.concatenate([dout_BxKxMxDh, row_BxKxMx1.astype(dout_BxKxMxDh.dtype)], axis=-1)
  v_aug = jnp.concatenate([v_BxKxTxDh, -jnp.ones(v_BxKxTxDh.shape[:-1] + (1,), v_BxKxTxDh.dtype)],
                          axis=-1)
  dprobs_minus_row = jnp.einsum("bkmd,bktd->bkmt", dout_aug, v_aug,
                                preferred_element_type=jnp.float32)
  # Masked scores are constants: no gradient flows to them even where p > 0 (a row that
  # sees no key at all).
  dscores = jnp.where(mask_Bx1xMxT, f32(probs_BxKxMxT) * dprobs_minus_row, 0.0)
  dscores = (dscores / math.sqrt(q_BxKxMxDh.shape[-1])).astype(q_BxKxMxDh.dtype)
  dq_BxKxMxDh = dscores @ k_BxKxTxDh
  dk_BxKxTxDh = jnp.einsum("bkmd,bkmt->bktd", q_BxKxMxDh, dscores)
  return (dq_BxKxMxDh, dk_BxKxTxDh, dv_BxKxTxDh, np.zeros(mask_Bx1xMxT.shape, jax.dtypes.float0))


_grouped_attention.defvjp(_grouped_attention_fwd, _grouped_attention_bwd)
