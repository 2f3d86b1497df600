"""Rotary embeddings and the attention core of the LLaMA family.

Shape suffixes: B batch, S queries, T key/value slots, H query heads, K key/value heads,
G = H // K, Dh head dim.

The rotary tables and the attention mask depend only on positions, so the model builds
them once per call (`rope_tables`, `causal_mask`) and every layer reuses them.

`attend` picks the kernel by `attention_impl` and the platform the program is built for
(`resolve_impl`): splash attention on TPU (`tpu_attention`), cuDNN's on GPU, and on CPU the
native kernel (`cpu_attention`) where `native.applies` (float32 on one CPU device, the
kernels built), else `dot_attention`: XLA's dot-product attention with a hand-written
backward: differentiated automatically,
XLA:CPU fused the score-gradient matmul into the softmax-backward loop, which then cost
more than the whole forward pass.
Without a cache the mask is causal by index, so it scores each block of queries against
the keys up to the block's end only.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from fineline.models import backend
from fineline.models import cpu_attention
from fineline.models import native
from fineline.models import tpu_attention
from fineline.models.config import ATTENTION_IMPLS, LlamaConfig

# Longest context whose rotary tables are embedded in the program (8 MiB at Dh = 128).
_MAX_CONSTANT_POSITIONS = 8192
# Query rows per block when causal attention skips the key blocks after the queries.
CAUSAL_BLOCK = 128


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


# attention_impl values, and those each platform serves ("auto" picks per platform).
IMPLS = ATTENTION_IMPLS
_SUPPORTED = {"cpu": ("auto", "dot"), "gpu": ("auto", "dot", "cudnn"),
              "tpu": ("auto", "dot", "splash")}
_HALF = (jnp.bfloat16, jnp.float16)


def resolve_impl(impl: str, platform: str, dtype) -> str:
  """The attention kernel `impl` means on `platform` for activations of `dtype`.

  auto: splash on TPU; cuDNN's fused attention on GPU in 16-bit floats, XLA's otherwise;
  "dot" on CPU. "dot" is XLA's dot-product attention (on CPU with a hand-written backward,
  or the native kernel).
  """
  if impl not in IMPLS:
    raise ValueError(f"attention_impl {impl!r}; known: {', '.join(IMPLS)}")
  supported = _SUPPORTED.get(platform, ("auto", "dot"))
  if impl not in supported:
    raise ValueError(f"attention_impl {impl!r} does not run on {platform}; there use one of "
                     f"{', '.join(supported)}")
  if impl == "cudnn" and jnp.dtype(dtype) not in _HALF:
    raise ValueError(f"attention_impl 'cudnn' needs bfloat16 or float16 activations on "
                     f"{platform}; got {jnp.dtype(dtype).name} (set train.compute_dtype)")
  if impl != "auto":
    return impl
  if platform == "tpu":
    return "splash"
  return "cudnn" if platform == "gpu" and jnp.dtype(dtype) in _HALF else "dot"


def attend(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT, impl: str, causal: bool = False):
  """Softmax attention with grouped key/value heads; out_BxSxHxDh.

  `mask_BxSxT` None means plain causal self-attention by index (S = T): only then do the
  fused kernels (splash, cuDNN) serve it; decoding with a cache and masked scoring take
  XLA's attention. `causal` promises that the mask hides every key slot after the query's
  own index (S = T), which lets the CPU path skip those blocks.
  """
  platform = backend.target_platform()
  impl = resolve_impl(impl, platform, q_BxSxHxDh.dtype)
  S, T = q_BxSxHxDh.shape[1], k_BxTxKxDh.shape[1]
  if mask_BxSxT is None:
    if impl == "splash" and tpu_attention.supports(S, T):
      return tpu_attention.attention(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh)
    if impl == "cudnn":
      return jax.nn.dot_product_attention(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, is_causal=True,
                                          implementation="cudnn")
    index_BxS = jnp.arange(S)[None, :]
    mask_BxSxT, causal = causal_mask(index_BxS, index_BxS), True
  if platform != "cpu":
    # XLA's own attention, differentiated by XLA: the CPU's hand-written backward and
    # native kernel would stand in the way of its fusion and remat choices there.
    return jax.nn.dot_product_attention(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh,
                                        mask=mask_BxSxT[:, None], implementation="xla")
  if native.applies(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh):
    return cpu_attention.attention(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT.astype(bool),
                                   causal)
  return dot_attention(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT, causal)


def dot_attention(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT, causal: bool = False):
  """Masked softmax(q·kᵀ/√Dh)·v; a row with no visible key attends uniformly.

  The G query heads sharing a key/value head are stacked along the query axis (M = G·S),
  so each (b, k) pair is one plain M×T attention and repeated keys are never materialised.
  With `causal` (see `attend`), query block [start, end) is scored against keys [0, end)
  only: about half the work of the full square.
  """
  B, S, H, Dh = q_BxSxHxDh.shape
  T, K = k_BxTxKxDh.shape[1], k_BxTxKxDh.shape[2]
  q_BxKxGxSxDh = q_BxSxHxDh.reshape(B, S, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
  # (start, end, seen): query rows [start, end) see key slots [0, seen).
  if causal and S == T and S >= 2 * CAUSAL_BLOCK:
    blocks = tuple((start, min(start + CAUSAL_BLOCK, S), min(start + CAUSAL_BLOCK, S))
                   for start in range(0, S, CAUSAL_BLOCK))
  else:
    blocks = ((0, S, T),)
  out_BxKxGxSxDh = _blocked_attention(q_BxKxGxSxDh, k_BxTxKxDh.transpose(0, 2, 1, 3),
                                      v_BxTxKxDh.transpose(0, 2, 1, 3), mask_BxSxT, blocks)
  return out_BxKxGxSxDh.transpose(0, 3, 1, 2, 4).reshape(B, S, H, Dh)


def _rows(a_BxKxGxSxN, start: int, end: int):
  """Query rows [start, end) of every stacked head: B×K×(G·n)×N."""
  B, K, G, _, N = a_BxKxGxSxN.shape
  return a_BxKxGxSxN[:, :, :, start:end].reshape(B, K, G * (end - start), N)


def _block_mask(mask_BxSxT, G: int, start: int, end: int, seen: int):
  B, n = mask_BxSxT.shape[0], end - start
  return jnp.broadcast_to(mask_BxSxT[:, None, start:end, :seen],
                          (B, G, n, seen)).reshape(B, 1, G * n, seen)


def _probs(q_BxKxMxDh, k_BxKxTxDh, mask_Bx1xMxT):
  scores = jnp.einsum("bkmd,bktd->bkmt", q_BxKxMxDh, k_BxKxTxDh).astype(jnp.float32)
  scores = scores / math.sqrt(q_BxKxMxDh.shape[-1])
  scores = jnp.where(mask_Bx1xMxT, scores, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(scores, axis=-1).astype(q_BxKxMxDh.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _blocked_attention(q_BxKxGxSxDh, k_BxKxTxDh, v_BxKxTxDh, mask_BxSxT, blocks):
  return _blocked_attention_fwd(q_BxKxGxSxDh, k_BxKxTxDh, v_BxKxTxDh, mask_BxSxT, blocks)[0]


def _blocked_attention_fwd(q_BxKxGxSxDh, k_BxKxTxDh, v_BxKxTxDh, mask_BxSxT, blocks):
  B, K, G, _, Dh = q_BxKxGxSxDh.shape
  probs, out_blocks = [], []
  for start, end, seen in blocks:
    probs_BxKxMxT = _probs(_rows(q_BxKxGxSxDh, start, end), k_BxKxTxDh[:, :, :seen],
                           _block_mask(mask_BxSxT, G, start, end, seen))
    probs.append(probs_BxKxMxT)
    out_blocks.append((probs_BxKxMxT @ v_BxKxTxDh[:, :, :seen]).reshape(B, K, G, end - start, Dh))
  out_BxKxGxSxDh = jnp.concatenate(out_blocks, axis=3) if len(blocks) > 1 else out_blocks[0]
  return out_BxKxGxSxDh, (q_BxKxGxSxDh, k_BxKxTxDh, v_BxKxTxDh, mask_BxSxT, probs, out_BxKxGxSxDh)


def _blocked_attention_bwd(blocks, residuals, dout_BxKxGxSxDh):
  q_BxKxGxSxDh, k_BxKxTxDh, v_BxKxTxDh, mask_BxSxT, probs, out_BxKxGxSxDh = residuals
  B, K, G, _, Dh = q_BxKxGxSxDh.shape
  T = k_BxKxTxDh.shape[2]
  f32 = lambda a: a.astype(jnp.float32)
  # softmax': p ⊙ (dp − Σ_t p·dp), and Σ_t p·dp = Σ_d dout·out: one pass over B×K×G×S×Dh
  # (read from the stored output, which XLA:CPU would otherwise recompute inside the sum).
  row_BxKxGxSx1 = jnp.sum(f32(dout_BxKxGxSxDh) * f32(out_BxKxGxSxDh), axis=-1, keepdims=True)
  pad_to_T = lambda a_BxKxTxDh: jnp.pad(a_BxKxTxDh, ((0, 0), (0, 0), (0, T - a_BxKxTxDh.shape[2]),
                                                      (0, 0)))
  dq_blocks, dk_parts, dv_parts = [], [], []
  for (start, end, seen), probs_BxKxMxT in zip(blocks, probs):
    q_BxKxMxDh = _rows(q_BxKxGxSxDh, start, end)
    dout_BxKxMxDh = _rows(dout_BxKxGxSxDh, start, end)
    k_seen, v_seen = k_BxKxTxDh[:, :, :seen], v_BxKxTxDh[:, :, :seen]
    # The M×T matrices go second in the key/value-gradient products: contracted over their
    # major axis they are read in place, where XLA:CPU would transpose each as a left operand.
    dv_parts.append(jnp.einsum("bkmd,bkmt->bktd", dout_BxKxMxDh, probs_BxKxMxT))
    dprobs = jnp.einsum("bkmd,bktd->bkmt", dout_BxKxMxDh, v_seen,
                        preferred_element_type=jnp.float32)
    # Masked scores are constants: no gradient flows to them even where p > 0 (a row that
    # sees no key at all).
    dscores = jnp.where(_block_mask(mask_BxSxT, G, start, end, seen),
                        f32(probs_BxKxMxT) * (dprobs - _rows(row_BxKxGxSx1, start, end)), 0.0)
    dscores = (dscores / math.sqrt(Dh)).astype(q_BxKxMxDh.dtype)
    dq_blocks.append((dscores @ k_seen).reshape(B, K, G, end - start, Dh))
    dk_parts.append(jnp.einsum("bkmd,bkmt->bktd", q_BxKxMxDh, dscores))
  dq_BxKxGxSxDh = jnp.concatenate(dq_blocks, axis=3) if len(blocks) > 1 else dq_blocks[0]
  return (dq_BxKxGxSxDh, sum(map(pad_to_T, dk_parts)), sum(map(pad_to_T, dv_parts)),
          np.zeros(mask_BxSxT.shape, jax.dtypes.float0))


_blocked_attention.defvjp(_blocked_attention_fwd, _blocked_attention_bwd)
