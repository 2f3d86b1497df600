"""Log-probabilities of target tokens under the LM head, and whether each is the greedy pick.

Scoring reads one log-probability per target, so the C×V logits are only a means to it.
XLA stores them and reduces over V three times (max, Σ exp, first maximum); on one CPU
device in float32 the native kernel (`cpu_head.cc`) instead reduces the logits tile by tile
while they are in cache, and never stores them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fineline.models import llama
from fineline.models import native
from fineline.models.config import LlamaConfig


def target_logprobs(hidden_CxD, params, cfg: LlamaConfig, targets_C):
  """(logprob_C, greedy_C): log softmax(head(hidden))[target] in float32, and whether the
  target is the logits' first maximum (torch's argmax, as lm-eval reads it)."""
  weights = params["embedding"] if cfg.tie_embeddings else params["lm_head"]
  if native.applies(hidden_CxD, weights):
    return jax.ffi.ffi_call(
        "FinelineTargetLogprobs",
        (jax.ShapeDtypeStruct(targets_C.shape, jnp.float32),
         jax.ShapeDtypeStruct(targets_C.shape, jnp.bool_)),
        vmap_method="sequential")(hidden_CxD, weights, targets_C.astype(jnp.int32),
                                  transpose_w=bool(cfg.tie_embeddings),
                                  threads=np.int64(native.threads()))
  # The model's own head, in its activation dtype; logits in float32.
  logits_CxV = nn.with_logical_constraint(
      llama.lm_head_logits(hidden_CxD, params, cfg).astype(jnp.float32), ("batch", "vocab"))
  max_Cx1 = jnp.max(logits_CxV, axis=-1, keepdims=True)
  target_C = jnp.take_along_axis(logits_CxV, targets_C[:, None], axis=-1)[:, 0] - max_Cx1[:, 0]
  logprob_C = target_C - jnp.log(jnp.sum(jnp.exp(logits_CxV - max_Cx1), axis=-1))
  earlier_max_C = jnp.any((logits_CxV == max_Cx1)
                          & (jnp.arange(logits_CxV.shape[-1])[None, :] < targets_C[:, None]), -1)
  return logprob_C, (target_C == 0) & ~earlier_max_C
