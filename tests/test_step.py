import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fineline import partitioning
from fineline.models import llama, presets
from fineline.training import optim
from fineline.training import step as step_lib


@pytest.fixture(scope="module")
def tiny_step():
  gin.clear_config()
  mesh = partitioning.make_mesh(jax.devices()[:1])
  opt, schedule = optim.make_optimizer(learning_rate=optim.constant(peak=1e-2))
  return step_lib.make_train_step(llama.Llama(presets.get_preset("tiny")), opt, mesh,
                                  schedule=schedule, donate=False)


def _batch(ts, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 512, (4, 17)).astype(np.int32)
  local = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": np.ones((4, 16), np.float32)}
  return partitioning.global_batch(ts.mesh, local, 4)


def test_steps_update_params_and_lower_the_loss(tiny_step):
  state = tiny_step.init(jax.random.key(0))
  batch = _batch(tiny_step)
  losses = []
  for _ in range(5):
    new_state, metrics = tiny_step.step(state, batch)
    losses.append(float(metrics["loss"]))
    assert bool(metrics["finite"])
    assert float(metrics["learning_rate"]) == pytest.approx(1e-2)
    state = new_state
  assert losses[-1] < losses[0] - 0.3
  assert int(state["step"]) == 5 and int(state["nonfinite_total"]) == 0


def test_a_non_finite_step_is_skipped_and_counted(tiny_step):
  state = tiny_step.init(jax.random.key(0))
  state = dict(state, params=jax.tree.map(lambda x: x, state["params"]))
  poisoned = jax.tree.map(lambda x: x, state["params"])
  poisoned["final_norm"]["scale"] = poisoned["final_norm"]["scale"].at[0].set(jnp.inf)
  bad = dict(state, params=poisoned)
  new_state, metrics = tiny_step.step(bad, _batch(tiny_step))
  assert not bool(metrics["finite"])
  assert int(new_state["step"]) == 1
  assert int(new_state["nonfinite_total"]) == 1 and int(new_state["nonfinite_streak"]) == 1
  for before, after in zip(jax.tree.leaves(bad), jax.tree.leaves(new_state)):
    if before.ndim:  # params and moments untouched
      np.testing.assert_array_equal(np.asarray(after), np.asarray(before))
  # A finite step afterwards resets the streak but keeps the total.
  fixed = dict(new_state, params=state["params"])
  after, metrics = tiny_step.step(fixed, _batch(tiny_step))
  assert bool(metrics["finite"])
  assert int(after["nonfinite_streak"]) == 0 and int(after["nonfinite_total"]) == 1
