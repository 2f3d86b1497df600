"""The LLaMA family in Flax linen, numerically the same model as HF `LlamaForCausalLM`.

Shape suffixes: B batch, S new tokens this call, T key/value slots, D hidden, H query heads,
K key/value heads, G = H // K, Dh head dim, F FFN width, V vocab, L layers.

Every parameter carries logical axis names (`nn.with_logical_partitioning`) and the main
activations carry logical constraints; `fineline.partitioning` maps the names to a mesh.

One call covers the three uses:
- training / scoring: `model.apply(v, tokens_BxS)` → logits_BxSxV (causal);
- prefill and incremental decode: pass `cache=` from `init_cache`; the call writes the new
  keys/values at each row's `cache["end"]` and attends to every earlier slot of that row.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fineline.models import attention
from fineline.models import backend
from fineline.models.config import LlamaConfig
from fineline.models.matmul import NATIVE_NAME, matmul

Cache = dict[str, Any]  # {"k": [L]×B×T×K×Dh (or L×B×T×K×Dh when scanned), "v": same, "end": B}


def _dtype(name: str):
  return jnp.dtype(name)


def _init(axes):
  """Normal(0.02)-style init (HF's initializer_range) tagged with logical axes."""
  return nn.with_logical_partitioning(nn.initializers.normal(0.02), axes)


class RMSNorm(nn.Module):
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x_BxSxD):
    scale_D = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                         (self.cfg.hidden_size,), _dtype(self.cfg.param_dtype))
    x32 = x_BxSxD.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
    # HF casts back to the activation dtype before the weight multiply.
    return scale_D.astype(_dtype(self.cfg.dtype)) * normed.astype(_dtype(self.cfg.dtype))


def _write_cache(cache_BxTxKxDh, new_BxSxKxDh, start_B):
  return jax.vmap(lambda c, n, s: jax.lax.dynamic_update_slice_in_dim(c, n, s, axis=0))(
      cache_BxTxKxDh, new_BxSxKxDh.astype(cache_BxTxKxDh.dtype), start_B)


class Attention(nn.Module):
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x_BxSxD, rope, mask_BxSxT, kv=None, start_B=None):
    cfg = self.cfg
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    D, H, K, Dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
    wq = self.param("q", _init(("embed", "heads", "head_dim")), (D, H, Dh), pdt)
    wk = self.param("k", _init(("embed", "kv_heads", "head_dim")), (D, K, Dh), pdt)
    wv = self.param("v", _init(("embed", "kv_heads", "head_dim")), (D, K, Dh), pdt)
    wo = self.param("o", _init(("heads", "head_dim", "embed")), (H, Dh, D), pdt)

    # Projections as (B·S)×D matrix products: in the backward, XLA:CPU copies and transposes
    # the operands of the B×S×H×Dh einsums' weight gradients, not those of plain matmuls.
    B, S = x_BxSxD.shape[:2]
    x_NxD = x_BxSxD.reshape(B * S, D)
    project = lambda w_DxHxDh: matmul(x_NxD, w_DxHxDh.reshape(D, -1).astype(dt)).reshape(
        B, S, w_DxHxDh.shape[1], Dh)
    q_BxSxHxDh, k_BxSxKxDh, v_BxSxKxDh = project(wq), project(wk), project(wv)
    q_BxSxHxDh = nn.with_logical_constraint(q_BxSxHxDh, ("batch", "length", "heads", "head_dim"))
    k_BxSxKxDh = nn.with_logical_constraint(k_BxSxKxDh, ("batch", "length", "kv_heads", "head_dim"))

    q_BxSxHxDh = attention.apply_rope(q_BxSxHxDh, rope)
    k_BxSxKxDh = attention.apply_rope(k_BxSxKxDh, rope)

    if kv is None:  # plain causal attention over this call's tokens
      keys, values, new_kv = k_BxSxKxDh, v_BxSxKxDh, None
    else:  # write into each row's cache at its own offset
      keys = _write_cache(kv[0], k_BxSxKxDh, start_B)
      values = _write_cache(kv[1], v_BxSxKxDh, start_B)
      new_kv = (keys, values)

    out_BxSxHxDh = attention.attend(q_BxSxHxDh, keys.astype(dt), values.astype(dt), mask_BxSxT,
                                    cfg.attention_impl, causal=kv is None)
    out_BxSxHxDh = nn.with_logical_constraint(out_BxSxHxDh, ("batch", "length", "heads", "head_dim"))
    out_BxSxD = matmul(out_BxSxHxDh.reshape(B * S, H * Dh), wo.reshape(H * Dh, D).astype(dt))
    out_BxSxD = out_BxSxD.reshape(B, S, D)
    return out_BxSxD, new_kv


class MLP(nn.Module):
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x_BxSxD):
    cfg = self.cfg
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    D, F = cfg.hidden_size, cfg.intermediate_size
    gate = self.param("gate", _init(("embed", "mlp")), (D, F), pdt)
    up = self.param("up", _init(("embed", "mlp")), (D, F), pdt)
    down = self.param("down", _init(("mlp", "embed")), (F, D), pdt)
    weights = (gate.astype(dt), up.astype(dt), down.astype(dt))
    if backend.target_platform() != "cpu":  # XLA's own backward: it fuses and remats there
      return _swiglu_forward(x_BxSxD, *weights)[0]
    return _swiglu(x_BxSxD, *weights)


def _swiglu_forward(x_BxSxD, gate_DxF, up_DxF, down_FxD):
  B, S, D = x_BxSxD.shape
  x_NxD = x_BxSxD.reshape(B * S, D)
  g_BxSxF = matmul(x_NxD, gate_DxF).reshape(B, S, -1)
  u_BxSxF = matmul(x_NxD, up_DxF).reshape(B, S, -1)
  sig_BxSxF = jax.nn.sigmoid(g_BxSxF)
  h_BxSxF = g_BxSxF * sig_BxSxF * u_BxSxF
  h_BxSxF = nn.with_logical_constraint(h_BxSxF, ("batch", "length", "mlp"))
  y_BxSxD = matmul(h_BxSxF.reshape(B * S, -1), down_FxD).reshape(B, S, D)
  return y_BxSxD, (g_BxSxF, sig_BxSxF, u_BxSxF, h_BxSxF)


@jax.custom_vjp
def _swiglu(x_BxSxD, gate_DxF, up_DxF, down_FxD):
  """down(silu(x·gate) ⊙ x·up). The hand-written backward works on (B·S)×… matrices:
  XLA:CPU otherwise transposes the B×S×F gradients before the weight-gradient matmuls,
  which made this backward cost about twice its matmuls."""
  return _swiglu_forward(x_BxSxD, gate_DxF, up_DxF, down_FxD)[0]


def _swiglu_fwd(x_BxSxD, gate_DxF, up_DxF, down_FxD):
  y_BxSxD, activations = _swiglu_forward(x_BxSxD, gate_DxF, up_DxF, down_FxD)
  return y_BxSxD, (x_BxSxD, gate_DxF, up_DxF, down_FxD, *activations)


def _swiglu_bwd(residuals, dy_BxSxD):
  x_BxSxD, gate_DxF, up_DxF, down_FxD, g_BxSxF, sig_BxSxF, u_BxSxF, h_BxSxF = residuals
  B, S, D = x_BxSxD.shape
  # B is the leading (batch-sharded) axis, so merging it with S keeps the sharding.
  flat = lambda a: a.reshape(B * S, a.shape[-1])
  x_NxD, dy_NxD, g_NxF, sig_NxF, u_NxF = map(flat, (x_BxSxD, dy_BxSxD, g_BxSxF, sig_BxSxF,
                                                    u_BxSxF))
  dh_NxF = matmul(dy_NxD, down_FxD, transpose_b=True)
  du_NxF = dh_NxF * (g_NxF * sig_NxF)
  dg_NxF = dh_NxF * u_NxF * sig_NxF * (1 + g_NxF * (1 - sig_NxF))  # silu' = σ(1 + g(1 − σ))
  dx_NxD = matmul(dg_NxF, gate_DxF, transpose_b=True) + matmul(du_NxF, up_DxF, transpose_b=True)
  return (dx_NxD.reshape(B, S, D).astype(x_BxSxD.dtype),
          matmul(x_NxD, dg_NxF, transpose_a=True), matmul(x_NxD, du_NxF, transpose_a=True),
          matmul(flat(h_BxSxF), dy_NxD, transpose_a=True))


_swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


class Block(nn.Module):
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x_BxSxD, rope, mask_BxSxT, kv=None, start_B=None):
    attn_out, new_kv = Attention(self.cfg, name="attn")(
        RMSNorm(self.cfg, name="attn_norm")(x_BxSxD), rope, mask_BxSxT, kv, start_B)
    x_BxSxD = x_BxSxD + attn_out
    x_BxSxD = x_BxSxD + MLP(self.cfg, name="mlp")(RMSNorm(self.cfg, name="mlp_norm")(x_BxSxD))
    return nn.with_logical_constraint(x_BxSxD, ("batch", "length", "embed")), new_kv


class _ScanBlock(nn.Module):
  """Block with a (carry, xs) signature for nn.scan."""
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, carry, kv):
    x_BxSxD, rope, mask_BxSxT, start_B = carry
    x_BxSxD, new_kv = Block(self.cfg, name="block")(x_BxSxD, rope, mask_BxSxT, kv, start_B)
    return (x_BxSxD, rope, mask_BxSxT, start_B), new_kv


def _remat(module_cls, cfg: LlamaConfig, **kw):
  if cfg.remat_policy == "none":
    return module_cls
  policies = jax.checkpoint_policies
  with_native = lambda dots: policies.save_from_both_policies(
      dots, policies.save_only_these_names(NATIVE_NAME))
  policy = {
      "full": None,
      "dots": with_native(policies.checkpoint_dots),
      "dots_with_no_batch_dims": with_native(policies.checkpoint_dots_with_no_batch_dims),
  }[cfg.remat_policy]
  return nn.remat(module_cls, policy=policy, prevent_cse=not cfg.scan_layers, **kw)


class Llama(nn.Module):
  """Decoder-only LLaMA. Parameter tree (unscanned):

  embedding V×D · layers_i/{attn_norm,mlp_norm}/scale D ·
  layers_i/attn/{q D×H×Dh, k D×K×Dh, v D×K×Dh, o H×Dh×D} · layers_i/mlp/{gate,up D×F, down F×D} ·
  final_norm/scale D · lm_head D×V (absent when embeddings are tied).
  With `scan_layers`, `layers/block/...` holds the same leaves stacked on a leading L axis.
  """

  cfg: LlamaConfig

  @nn.compact
  def __call__(self, tokens_BxS, positions_BxS=None, cache: Cache | None = None,
               lengths_B=None, return_hidden: bool = False, attention_mask_BxSxT=None):
    """Returns logits_BxSxV (float32), and the updated cache when one is given.

    With a cache, row b's tokens occupy slots cache["end"][b] … + S − 1 and the returned
    cache's end advances by lengths_B (default S: right-padded prompts pass their lengths,
    so padding slots are overwritten by the next step and never attended to).
    `return_hidden=True` returns the final-normed hidden states B×S×D in place of the logits
    (the LM head is `lm_head_weights(params, cfg)`), so a loss can fuse head and softmax.
    `attention_mask_BxSxT` (bool) further limits which keys each query sees, e.g. to its
    own sequence when several are packed in a row. Without a cache a token never sees a
    later token of its row, whatever the positions say.
    """
    cfg = self.cfg
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    B, S = tokens_BxS.shape
    start_B = cache["end"] if cache is not None else None
    if positions_BxS is None and cache is not None:
      positions_BxS = start_B[:, None] + jnp.arange(S, dtype=jnp.int32)[None, :]

    embedding_VxD = self.param("embedding", _init(("vocab", "embed")),
                               (cfg.vocab_size, cfg.hidden_size), pdt)
    x_BxSxD = jnp.take(embedding_VxD, tokens_BxS, axis=0).astype(dt)
    x_BxSxD = nn.with_logical_constraint(x_BxSxD, ("batch", "length", "embed"))
    rope = attention.rope_tables(positions_BxS, S, cfg, dt)
    if cache is None and positions_BxS is None and attention_mask_BxSxT is None:
      mask_BxSxT = None  # plain causal by index: what the fused attention kernels serve
    elif cache is None:  # causal attention over this call's tokens, by position and by index
      index_BxS = jnp.arange(S)[None, :]
      mask_BxSxT = attention.causal_mask(index_BxS, index_BxS)
      if positions_BxS is not None:
        mask_BxSxT = mask_BxSxT & attention.causal_mask(positions_BxS, positions_BxS)
    else:  # each row attends to its cache slots up to the query's own
      slots_T = jnp.arange(_cache_slots(cache, cfg))
      mask_BxSxT = attention.causal_mask(start_B[:, None] + jnp.arange(S)[None, :],
                                         jnp.broadcast_to(slots_T[None, :], (B, slots_T.shape[0])))
    if attention_mask_BxSxT is not None:
      mask_BxSxT = mask_BxSxT & attention_mask_BxSxT

    if cfg.scan_layers:
      kv = (cache["k"], cache["v"]) if cache is not None else None
      scanned = nn.scan(
          _remat(_ScanBlock, cfg),
          variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=0, length=cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})
      (x_BxSxD, *_), new_kv = scanned(cfg, name="layers")((x_BxSxD, rope, mask_BxSxT, start_B), kv)
      new_k, new_v = (new_kv if cache is not None else (None, None))
    else:
      block_cls = _remat(Block, cfg, static_argnums=())
      new_k, new_v = [], []
      for i in range(cfg.num_layers):
        kv = (cache["k"][i], cache["v"][i]) if cache is not None else None
        x_BxSxD, layer_kv = block_cls(cfg, name=f"layers_{i}")(x_BxSxD, rope, mask_BxSxT, kv,
                                                               start_B)
        if cache is not None:
          new_k.append(layer_kv[0])
          new_v.append(layer_kv[1])

    x_BxSxD = RMSNorm(cfg, name="final_norm")(x_BxSxD)
    if return_hidden:
      x_BxSxD = nn.with_logical_constraint(x_BxSxD, ("batch", "length", "embed"))
      if cache is None:
        return x_BxSxD
      return x_BxSxD, self._advance(cache, new_k, new_v, lengths_B, B, S)
    head = {"embedding": embedding_VxD}
    if not cfg.tie_embeddings:
      head["lm_head"] = self.param("lm_head", _init(("embed", "vocab")),
                                   (cfg.hidden_size, cfg.vocab_size), pdt)
    logits_BxSxV = lm_head_logits(x_BxSxD.reshape(B * S, -1), head, cfg).reshape(B, S, -1)
    logits_BxSxV = nn.with_logical_constraint(logits_BxSxV.astype(jnp.float32),
                                              ("batch", "length", "vocab"))
    if cache is None:
      return logits_BxSxV
    return logits_BxSxV, self._advance(cache, new_k, new_v, lengths_B, B, S)

  @staticmethod
  def _advance(cache, new_k, new_v, lengths_B, B, S):
    advance_B = jnp.full((B,), S, jnp.int32) if lengths_B is None else lengths_B.astype(jnp.int32)
    return {"k": new_k, "v": new_v, "end": cache["end"] + advance_B}


def _cache_slots(cache: Cache, cfg: LlamaConfig) -> int:
  return cache["k"].shape[2] if cfg.scan_layers else cache["k"][0].shape[1]


def lm_head_weights(params, cfg: LlamaConfig) -> jax.Array:
  """The D×V output projection: `lm_head`, or the transposed embedding when tied."""
  return params["embedding"].T if cfg.tie_embeddings else params["lm_head"]


def lm_head_logits(x_NxD, params, cfg: LlamaConfig) -> jax.Array:
  """x_NxD · `lm_head_weights` in x's dtype, reading a tied embedding in place (no
  transposed V×D copy)."""
  if cfg.tie_embeddings:
    return matmul(x_NxD, params["embedding"].astype(x_NxD.dtype), transpose_b=True)
  return matmul(x_NxD, params["lm_head"].astype(x_NxD.dtype))


def init_cache(cfg: LlamaConfig, batch: int, max_slots: int, dtype=None) -> Cache:
  """An empty KV cache of `max_slots` positions per row, in the layout `cfg.scan_layers` uses."""
  dtype = _dtype(dtype or cfg.dtype)
  shape = (batch, max_slots, cfg.num_kv_heads, cfg.resolved_head_dim)
  if cfg.scan_layers:
    k = jnp.zeros((cfg.num_layers,) + shape, dtype)
    v = jnp.zeros((cfg.num_layers,) + shape, dtype)
  else:
    k = [jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)]
    v = [jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)]
  return {"k": k, "v": v, "end": jnp.zeros((batch,), jnp.int32)}


def init_params(cfg: LlamaConfig, rng: jax.Array, boxed: bool = False):
  """Random parameters (HF-style normal(0.02) init); `boxed` keeps the logical-axis metadata."""
  variables = Llama(cfg).init(rng, jnp.zeros((1, 1), jnp.int32))
  params = variables["params"]
  return params if boxed else nn.meta.unbox(params)


def abstract_params(cfg: LlamaConfig):
  """Parameter shapes and dtypes, boxed with logical axes, without allocating anything."""
  return jax.eval_shape(functools.partial(init_params, cfg, boxed=True), jax.random.key(0))


def logical_axes(cfg: LlamaConfig):
  """The logical axis names of every parameter, as a tree of PartitionSpec."""
  return nn.get_partition_spec(abstract_params(cfg))


def scan_layers(params, num_layers: int):
  """Unscanned tree (layers_0 … layers_{L-1}) → scanned tree (layers/block, leading L axis)."""
  if "layers" in params:
    return params
  layers = [params[f"layers_{i}"] for i in range(num_layers)]
  out = {k: v for k, v in params.items() if not k.startswith("layers_")}
  stack = lambda *xs: np.stack(xs) if isinstance(xs[0], np.ndarray) else jnp.stack(xs)
  out["layers"] = {"block": jax.tree.map(stack, *layers)}
  return out


def unscan_layers(params, num_layers: int):
  """Scanned tree → unscanned tree; checkpoints restore whichever way the model now runs."""
  if "layers" not in params:
    return params
  out = {k: v for k, v in params.items() if k != "layers"}
  for i in range(num_layers):
    out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"]["block"])
  return out
