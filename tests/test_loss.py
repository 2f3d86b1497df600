"""The fused next-token loss against a plain full-logits reference, in value and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fineline.models import llama, presets
from fineline.training.loss import next_token_loss

B, S = 2, 16


def _setup(**overrides):
  cfg = presets.get_preset("tiny", **overrides)
  model = llama.Llama(cfg)
  params = llama.init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (B, S + 1), 0, cfg.vocab_size)
  weights = jnp.ones((B, S), jnp.float32).at[1, 11:].set(0.0).at[0, 3].set(0.5)
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights}
  return cfg, model, params, batch


def _reference(params, batch, model, z_loss):
  logits = model.apply({"params": params}, batch["inputs"])
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  lse = jax.nn.logsumexp(logits, axis=-1)
  w = batch["weights"]
  n = jnp.sum(w)
  return jnp.sum((ce + z_loss * lse ** 2) * w) / n, (jnp.sum(ce * w) / n, jnp.sum(lse ** 2 * w) / n)


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# Scanned chunks with z-loss; one chunk with a tied head, whose table also gets the gather's
# gradient.
@pytest.mark.parametrize("chunk,z_loss,tie", [(4, 1e-2, False), (16, 0.0, True)])
def test_matches_full_logits_reference(chunk, z_loss, tie):
  _, model, params, batch = _setup(tie_embeddings=tie)
  fused = jax.jit(jax.value_and_grad(
      lambda p: next_token_loss(p, batch, model=model, z_loss=z_loss, chunk=chunk), has_aux=True))
  (loss, aux), grads = fused(params)
  (ref_loss, (ref_ce, ref_z)), ref_grads = jax.jit(jax.value_and_grad(
      lambda p: _reference(p, batch, model, z_loss), has_aux=True))(params)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(aux["cross_entropy"], ref_ce, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(aux["z_loss"], ref_z, rtol=1e-5, atol=1e-5)
  assert float(aux["num_tokens"]) == pytest.approx(float(jnp.sum(batch["weights"])))
  assert _max_diff(grads, ref_grads) < 1e-5
  assert ("lm_head" in params) != tie


def test_padding_tokens_do_not_count():
  _, model, params, batch = _setup()
  loss_fn = jax.jit(lambda p, b: next_token_loss(p, b, model=model))
  loss, aux = loss_fn(params, batch)
  changed = dict(batch, targets=batch["targets"].at[1, 12:].set(7))  # only weight-0 positions
  loss2, _ = loss_fn(params, changed)
  np.testing.assert_allclose(loss, loss2, rtol=1e-6)
  empty = dict(batch, weights=jnp.zeros((B, S)))
  loss0, aux0 = loss_fn(params, empty)
  assert float(loss0) == 0.0 and float(aux0["num_tokens"]) == 0.0
  assert float(aux["num_tokens"]) == pytest.approx(2 * S - 5 - 0.5)


def test_hidden_output_gives_the_same_logits():
  cfg, model, params, batch = _setup()
  logits = model.apply({"params": params}, batch["inputs"])
  hidden = model.apply({"params": params}, batch["inputs"], return_hidden=True)
  np.testing.assert_allclose(hidden @ llama.lm_head_weights(params, cfg), logits, atol=1e-5)
  cache = llama.init_cache(cfg, B, S)
  logits_c, cache_l = model.apply({"params": params}, batch["inputs"], cache=cache)
  hidden_c, cache_h = model.apply({"params": params}, batch["inputs"], cache=cache,
                                  return_hidden=True)
  np.testing.assert_allclose(logits_c, logits, atol=1e-5)
  np.testing.assert_allclose(hidden_c, hidden, atol=1e-5)
  assert _max_diff(cache_l, cache_h) == 0.0


def test_mlp_backward_equals_autodiff():
  keys = jax.random.split(jax.random.key(2), 5)
  x, dy = (jax.random.normal(keys[i], (2, 6, 8)) for i in (0, 1))
  gate, up = (jax.random.normal(keys[i], (8, 12)) for i in (2, 3))
  down = jax.random.normal(keys[4], (12, 8))
  plain = lambda *a: llama._swiglu_forward(*a)[0]  # pylint: disable=protected-access
  y, vjp = jax.vjp(llama._swiglu, x, gate, up, down)  # pylint: disable=protected-access
  y_ref, vjp_ref = jax.vjp(plain, x, gate, up, down)
  np.testing.assert_array_equal(y, y_ref)
  for ours, ref in zip(vjp(dy), vjp_ref(dy)):
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
