"""Next-token training loss: weighted token cross-entropy with optional z-loss, in float32.

The LM head and the softmax are fused: the loss takes the model's final hidden states and
runs the head projection in chunks along the sequence, computing the gradient of each chunk
(softmax − one-hot, scaled by the token's weight) right away, so the B×S×V logits are never
held in memory and never revisited in the backward pass. On a CPU this is a large saving
in the train step; on a mesh the chunks keep the batch and vocab shardings.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fineline.models import llama
from fineline.models.matmul import matmul

# Sequence positions per chunk: B×chunk×V float32 logits are alive at a time.
DEFAULT_CHUNK = 128


def next_token_loss(params, batch, *, model, z_loss: float = 0.0, chunk: int = DEFAULT_CHUNK):
  """Weighted mean next-token cross-entropy (+ z_loss · weighted mean of logsumexp²).

  Args:
    params: the model's parameter tree (unboxed).
    batch: {"inputs": int32 B×S, "targets": int32 B×S, "weights": float32 B×S}; a weight of 0
      drops a token (padding), so the mean is over sum(weights) tokens.
    model: a `fineline.models.llama.Llama`.
    z_loss: coefficient of the logsumexp² penalty (PaLM's z-loss).
    chunk: sequence positions whose logits are computed at once (S if S is not a multiple).

  Returns:
    (loss, aux): aux = {"num_tokens", "cross_entropy", "z_loss"}, the weighted means before
    the coefficient is applied; only `loss` carries a gradient.
  """
  hidden_BxSxD = model.apply({"params": params}, batch["inputs"], return_hidden=True)
  head_DxV = llama.lm_head_weights(params, model.cfg)
  weights_BxS = batch["weights"].astype(jnp.float32)
  num_tokens = jnp.sum(weights_BxS)
  scaled_BxS = weights_BxS / jnp.maximum(num_tokens, 1e-8)  # all-padding batch: loss 0
  S = hidden_BxSxD.shape[1]
  chunk = chunk if 0 < chunk <= S and S % chunk == 0 else S
  loss, cross_entropy, z = _head_loss(hidden_BxSxD, head_DxV.astype(hidden_BxSxD.dtype),
                                      batch["targets"], scaled_BxS, float(z_loss), chunk)
  aux = {"num_tokens": num_tokens, "cross_entropy": jax.lax.stop_gradient(cross_entropy),
         "z_loss": jax.lax.stop_gradient(z)}
  return loss, aux


def _chunk_terms(x_BxCxD, head_DxV, targets_BxC, scaled_BxC, z_loss, with_grad):
  """Loss terms of one chunk, and its gradients w.r.t. the chunk's hidden states and the head."""
  B, C, D = x_BxCxD.shape
  x_NxD = x_BxCxD.reshape(B * C, D)
  logits_BxCxV = matmul(x_NxD, head_DxV, preferred_element_type=jnp.float32).reshape(B, C, -1)
  lse_BxC = jax.nn.logsumexp(logits_BxCxV, axis=-1)
  # Gathers and a scatter on the targets, never a B×C×V one-hot.
  target_logit_BxC = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
  ce_sum = jnp.sum((lse_BxC - target_logit_BxC) * scaled_BxC)
  z_sum = jnp.sum(jnp.square(lse_BxC) * scaled_BxC)
  if not with_grad:
    return ce_sum, z_sum, None, None
  # d/dlogits of w·(lse − logit_t + z·lse²) = w·(1 + 2z·lse)·softmax − w·onehot.
  coef_BxC = scaled_BxC * (1.0 + 2.0 * z_loss * lse_BxC)
  dlogits_BxCxV = jnp.exp(logits_BxCxV - lse_BxC[..., None]) * coef_BxC[..., None]
  dlogits_BxCxV = dlogits_BxCxV.at[jnp.arange(B)[:, None], jnp.arange(C)[None, :],
                                   targets_BxC].add(-scaled_BxC, mode="promise_in_bounds")
  dlogits_NxV = dlogits_BxCxV.astype(head_DxV.dtype).reshape(B * C, -1)
  dx_BxCxD = matmul(dlogits_NxV, head_DxV, transpose_b=True,
                    preferred_element_type=jnp.float32).reshape(B, C, D)
  dhead_DxV = matmul(x_NxD, dlogits_NxV, transpose_a=True, preferred_element_type=jnp.float32)
  return ce_sum, z_sum, dx_BxCxD, dhead_DxV


def _split(a_BxS, chunk):
  """B×S×… → (S/chunk)×B×chunk×…, the layout `lax.scan` walks over."""
  B, S = a_BxS.shape[:2]
  return jnp.swapaxes(a_BxS.reshape(B, S // chunk, chunk, *a_BxS.shape[2:]), 0, 1)


def _head_pass(x_BxSxD, head_DxV, targets_BxS, scaled_BxS, z_loss, chunk, with_grad):
  B, S, D = x_BxSxD.shape
  terms = functools.partial(_chunk_terms, head_DxV=head_DxV, z_loss=z_loss, with_grad=with_grad)
  if chunk == S:
    ce, z, dx_BxSxD, dhead_DxV = terms(x_BxSxD, targets_BxC=targets_BxS, scaled_BxC=scaled_BxS)
  else:
    def body(carry, xs):
      ce, z, dhead_DxV = carry
      x_BxCxD, targets_BxC, scaled_BxC = xs
      c_ce, c_z, c_dx, c_dhead = terms(x_BxCxD, targets_BxC=targets_BxC, scaled_BxC=scaled_BxC)
      if with_grad:
        dhead_DxV = dhead_DxV + c_dhead
      return (ce + c_ce, z + c_z, dhead_DxV), c_dx

    zero = jnp.zeros((), jnp.float32)
    dhead0 = jnp.zeros(head_DxV.shape, jnp.float32) if with_grad else None
    (ce, z, dhead_DxV), dx_chunks = jax.lax.scan(
        body, (zero, zero, dhead0),
        (_split(x_BxSxD, chunk), _split(targets_BxS, chunk), _split(scaled_BxS, chunk)))
    dx_BxSxD = jnp.swapaxes(dx_chunks, 0, 1).reshape(B, S, D) if with_grad else None
  return ce, z, dx_BxSxD, dhead_DxV


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _head_loss(x_BxSxD, head_DxV, targets_BxS, scaled_BxS, z_loss, chunk):
  ce, z, _, _ = _head_pass(x_BxSxD, head_DxV, targets_BxS, scaled_BxS, z_loss, chunk, False)
  return ce + z_loss * z, ce, z


def _head_loss_fwd(x_BxSxD, head_DxV, targets_BxS, scaled_BxS, z_loss, chunk):
  ce, z, dx_BxSxD, dhead_DxV = _head_pass(
      x_BxSxD, head_DxV, targets_BxS, scaled_BxS, z_loss, chunk, True)
  residuals = (dx_BxSxD.astype(x_BxSxD.dtype), dhead_DxV.astype(head_DxV.dtype), targets_BxS,
               scaled_BxS)
  return (ce + z_loss * z, ce, z), residuals


def _head_loss_bwd(z_loss, chunk, residuals, cotangents):
  """Only the loss output is differentiated; the ce and z outputs are reported as aux."""
  del z_loss, chunk
  dx_BxSxD, dhead_DxV, targets_BxS, scaled_BxS = residuals
  g = cotangents[0]
  return ((g * dx_BxSxD).astype(dx_BxSxD.dtype), (g * dhead_DxV).astype(dhead_DxV.dtype),
          np.zeros(targets_BxS.shape, jax.dtypes.float0), jnp.zeros_like(scaled_BxS))


_head_loss.defvjp(_head_loss_fwd, _head_loss_bwd)
