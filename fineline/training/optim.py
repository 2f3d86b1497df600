"""optax AdamW with the usual LLaMA-recipe trimmings, learning-rate schedules, and
gradient accumulation over microbatches.

Mixed precision is a model setting, not an optimizer one: with `LlamaConfig.param_dtype`
float32 and `dtype` bfloat16 the params (and so the AdamW moments) stay fp32 masters while
every matmul runs in bf16 (`train.compute_dtype = 'bfloat16'`).
"""

from __future__ import annotations

from typing import Callable

import gin
import jax
import jax.numpy as jnp
import optax


@gin.configurable
def warmup_cosine(peak: float = gin.REQUIRED, warmup_steps: int = 0, total_steps: int = gin.REQUIRED,
                  final: float = 0.0) -> optax.Schedule:
  """Linear warmup 0 → peak, then cosine decay to `final` at `total_steps` (and flat after)."""
  warmup_steps = min(warmup_steps, total_steps)
  return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, max(total_steps, 1), final)


@gin.configurable
def linear(peak: float = gin.REQUIRED, warmup_steps: int = 0, total_steps: int = gin.REQUIRED,
           final: float = 0.0) -> optax.Schedule:
  """Linear warmup 0 → peak, then linear decay to `final` at `total_steps`."""
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
       optax.linear_schedule(peak, final, max(total_steps - warmup_steps, 1))], [warmup_steps])


@gin.configurable
def constant(peak: float = gin.REQUIRED, warmup_steps: int = 0) -> optax.Schedule:
  """Linear warmup 0 → peak, then constant."""
  if not warmup_steps:
    return optax.constant_schedule(peak)
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps),
                               optax.constant_schedule(peak)], [warmup_steps])


@gin.configurable
def warmup_stable_decay(peak: float = gin.REQUIRED, warmup_steps: int = 0,
                        total_steps: int = gin.REQUIRED, decay_fraction: float = 0.1,
                        final: float = 0.0) -> optax.Schedule:
  """Warmup, a long constant plateau, then a linear cool-down over the last `decay_fraction`."""
  decay_steps = max(int(total_steps * decay_fraction), 1)
  stable_end = max(total_steps - decay_steps, warmup_steps)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
       optax.constant_schedule(peak),
       optax.linear_schedule(peak, final, decay_steps)], [warmup_steps, stable_end])


def decay_mask(params, decay_embeddings: bool = True):
  """True where weight decay applies: matrices, not norm scales (nor, optionally, embeddings)."""
  def wants_decay(path, leaf):
    names = [getattr(k, "key", str(k)) for k in path]
    if names[-1] == "scale" or leaf.ndim <= 1:
      return False
    return decay_embeddings or names[-1] not in ("embedding", "lm_head")
  return jax.tree_util.tree_map_with_path(wants_decay, params)


@gin.configurable
def make_optimizer(learning_rate: optax.Schedule | float = gin.REQUIRED,
                   b1: float = 0.9, b2: float = 0.95, eps: float = 1e-8,
                   weight_decay: float = 0.1, decay_embeddings: bool = True,
                   clip_norm: float | None = 1.0):
  """AdamW with global-norm clipping. `learning_rate`: a schedule (in gin, an evaluated
  reference such as `@warmup_cosine()`) or a constant. Returns (optimizer, schedule) so the
  step can log the learning rate it applied."""
  schedule = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)
  chain = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
  chain.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                           mask=lambda p: decay_mask(p, decay_embeddings)))
  return optax.chain(*chain), schedule


def accumulate_gradients(loss_and_grad: Callable, params, batch, num_microbatches: int, *,
                         microbatch_sharding=None, grad_shardings=None):
  """(loss, aux, grads) averaged over `num_microbatches` equal slices of `batch`.

  A `lax.scan` keeps one microbatch's activations alive at a time. Microbatch m holds rows
  m, m+M, m+2M, … of the batch: when the batch is split over devices in contiguous blocks
  of a multiple of M rows, each microbatch takes the same number of rows from every block,
  so it is spread over the devices as the batch was and forming it moves nothing
  (`microbatch_sharding`, the M × B/M × … stack's sharding, pins that). The accumulator
  is held in `grad_shardings` (the parameters'), so it stays sharded as the gradients are.
  Losses are combined weighted by each slice's token weight, so the result equals the
  full-batch loss.
  """
  if num_microbatches == 1:
    (loss, aux), grads = loss_and_grad(params, batch)
    return loss, aux, grads
  rows = next(iter(batch.values())).shape[0]
  if rows % num_microbatches:
    raise ValueError(f"batch of {rows} rows does not split into {num_microbatches} microbatches")
  micro = split_microbatches(batch, num_microbatches, microbatch_sharding)
  total_weight = jnp.maximum(jnp.sum(batch["weights"]), 1e-8)

  def body(carry, mb):
    loss_sum, grads_sum = carry
    (loss, aux), grads = loss_and_grad(params, mb)
    share = jnp.sum(mb["weights"]) / total_weight
    grads_sum = jax.tree.map(lambda g, acc: acc + share * g.astype(jnp.float32), grads, grads_sum)
    return (loss_sum + share * loss, _constrain(grads_sum, grad_shardings)), (aux, share)

  zeros = _constrain(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params),
                     grad_shardings)
  (loss, grads), (auxs, shares) = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), micro)
  grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
  # Counts add up over microbatches; means are combined with the same token weights as the loss.
  aux = {k: v.sum(axis=0) if k.startswith("num_") else jnp.sum(v * shares, axis=0)
         for k, v in auxs.items()}
  return loss, aux, grads


def split_microbatches(batch, num_microbatches: int, sharding=None):
  """B × … arrays → M × B/M × …, microbatch m holding rows m, m+M, m+2M, … (placed with
  `sharding`, e.g. `partitioning.microbatch_sharding`)."""
  def split(x):
    rows = x.shape[0]
    strided = x.reshape((rows // num_microbatches, num_microbatches) + x.shape[1:])
    return _constrain(jnp.swapaxes(strided, 0, 1), sharding)
  return jax.tree.map(split, batch)


def _constrain(tree, shardings):
  return tree if shardings is None else jax.lax.with_sharding_constraint(tree, shardings)
