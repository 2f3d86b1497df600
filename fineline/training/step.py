"""The jitted, sharded train step and the state it updates.

State (a dict, so Orbax saves it as a plain tree):
  params            the model parameters (the optimizer's masters)
  opt_state         optax state, each moment sharded like its parameter
  step              steps taken, skipped ones included (the data position follows it)
  nonfinite_total   steps skipped because the loss or a gradient was not finite
  nonfinite_streak  such steps in a row, ending at the current one

`make_train_step` is the one way to build the step; the benchmark builds the same one.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fineline import partitioning
from fineline.errors import UserError
from fineline.models import llama
from fineline.training import loss as loss_lib
from fineline.training import optim

COUNTERS = ("step", "nonfinite_total", "nonfinite_streak")


@dataclasses.dataclass
class TrainStep:
  """The compiled pieces of one training setup.

  step(state, batch) -> (state, metrics): donates `state`; `batch` holds global arrays
    {"inputs", "targets": int32 B×S, "weights": float32 B×S} placed with `batch_sharding`.
  init(rng) -> state: random init, born sharded.
  init_from_params(params) -> state: fresh optimizer state around given params.
  """

  mesh: Any
  jitted_step: Callable
  jitted_init: Callable
  jitted_from_params: Callable
  state_shardings: Any
  abstract_state: Any
  batch_sharding: Any

  def step(self, state, batch):
    with partitioning.activation_rules(self.mesh):
      return self.jitted_step(state, batch)

  def init(self, rng):
    with partitioning.activation_rules(self.mesh):
      return self.jitted_init(rng)

  def init_from_params(self, params):
    with partitioning.activation_rules(self.mesh):
      return self.jitted_from_params(params)

  def lower(self, state, batch):
    """Ahead-of-time lowering on concrete or abstract (ShapeDtypeStruct) arguments."""
    with partitioning.activation_rules(self.mesh):
      return self.jitted_step.lower(state, batch)


def make_train_step(model: llama.Llama, optimizer: optax.GradientTransformation, mesh, *,
                    schedule: optax.Schedule | None = None, num_microbatches: int = 1,
                    z_loss: float = 0.0, donate: bool = True) -> TrainStep:
  """Builds the sharded train step of `model` with `optimizer` on `mesh`."""
  cfg = model.cfg
  boxed = llama.abstract_params(cfg)
  abstract_params = nn.meta.unbox(boxed)
  params_sh = partitioning.param_shardings(mesh, boxed)
  replicated = partitioning.replicated(mesh)
  state_sh = {"params": params_sh,
              "opt_state": partitioning.optimizer_shardings(mesh, optimizer, abstract_params, params_sh),
              **{k: replicated for k in COUNTERS}}
  batch_sh = partitioning.batch_sharding(mesh)
  micro_sh = partitioning.microbatch_sharding(mesh)

  def from_params(params):
    params = jax.tree.map(lambda p, a: p.astype(a.dtype), params, abstract_params)
    zero = jnp.zeros((), jnp.int32)
    return {"params": params, "opt_state": optimizer.init(params), **{k: zero for k in COUNTERS}}

  def init(rng):
    return from_params(llama.init_params(cfg, rng))

  loss_fn = functools.partial(loss_lib.next_token_loss, model=model, z_loss=z_loss)
  loss_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state, batch):
    params = state["params"]
    loss, aux, grads = optim.accumulate_gradients(
        loss_and_grad, params, batch, num_microbatches, microbatch_sharding=micro_sh,
        grad_shardings=params_sh)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(params, opt_state):
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    # A non-finite step leaves params and moments exactly as they were. A branch rather
    # than a select: the kept state is not read and rewritten once more every step.
    new_params, opt_state = jax.lax.cond(finite, update, lambda p, o: (p, o),
                                         params, state["opt_state"])
    bad = (~finite).astype(jnp.int32)
    applied = state["step"] - state["nonfinite_total"]  # updates made so far = optax's count
    new_state = {
        "params": new_params,
        "opt_state": opt_state,
        "step": state["step"] + 1,
        "nonfinite_total": state["nonfinite_total"] + bad,
        "nonfinite_streak": (state["nonfinite_streak"] + 1) * bad,
    }
    metrics = {
        "loss": loss, "grad_norm": grad_norm, "param_norm": optax.global_norm(new_state["params"]),
        "learning_rate": schedule(applied) if schedule is not None else jnp.nan,
        "finite": finite, "nonfinite_total": new_state["nonfinite_total"],
        "nonfinite_streak": new_state["nonfinite_streak"], **aux,
    }
    return new_state, metrics

  return TrainStep(
      mesh=mesh,
      jitted_step=jax.jit(train_step, in_shardings=(state_sh, batch_sh),
                          out_shardings=(state_sh, replicated),
                          donate_argnums=(0,) if donate else ()),
      jitted_init=jax.jit(init, out_shardings=state_sh),
      jitted_from_params=jax.jit(from_params, in_shardings=(params_sh,), out_shardings=state_sh),
      state_shardings=state_sh,
      abstract_state=jax.eval_shape(init, jax.random.key(0)),
      batch_sharding=batch_sh)


def check_batch_split(mesh, global_batch_size: int, num_microbatches: int = 1) -> None:
  """Every microbatch must take whole rows from each data-parallel device
  (`optim.accumulate_gradients`): the batch is a multiple of microbatches × that size."""
  ways = partitioning.data_parallel_size(mesh)
  if num_microbatches < 1 or global_batch_size % (ways * num_microbatches):
    raise UserError(
        f"train.batch_size={global_batch_size} does not split into train.num_microbatches="
        f"{num_microbatches} microbatches over the {ways} data-parallel devices of mesh "
        f"{dict(mesh.shape)}; make the batch size a multiple of {ways * max(num_microbatches, 1)}")


def abstract_batch(global_batch_size: int, seq_len: int):
  """Shapes and dtypes of one global batch."""
  tokens = jax.ShapeDtypeStruct((global_batch_size, seq_len), jnp.int32)
  return {"inputs": tokens, "targets": tokens,
          "weights": jax.ShapeDtypeStruct((global_batch_size, seq_len), jnp.float32)}

