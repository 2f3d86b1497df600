import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fineline.models import llama, presets
from fineline.training import loss as loss_lib
from fineline.training import optim


def test_warmup_cosine_reaches_peak_then_floor():
  s = optim.warmup_cosine(peak=1.0, warmup_steps=10, total_steps=110, final=0.1)
  assert float(s(0)) == 0.0
  assert float(s(10)) == pytest.approx(1.0)
  assert float(s(60)) == pytest.approx(0.55, abs=1e-3)
  assert float(s(110)) == pytest.approx(0.1)
  assert float(s(500)) == pytest.approx(0.1)


def test_linear_constant_and_warmup_stable_decay():
  lin = optim.linear(peak=1.0, warmup_steps=10, total_steps=20, final=0.0)
  assert float(lin(15)) == pytest.approx(0.5)
  const = optim.constant(peak=2.0, warmup_steps=4)
  assert float(const(2)) == pytest.approx(1.0) and float(const(100)) == pytest.approx(2.0)
  wsd = optim.warmup_stable_decay(peak=1.0, warmup_steps=10, total_steps=100, decay_fraction=0.2)
  assert float(wsd(50)) == pytest.approx(1.0)
  assert float(wsd(80)) == pytest.approx(1.0)
  assert float(wsd(90)) == pytest.approx(0.5)
  assert float(wsd(100)) == pytest.approx(0.0)


def test_no_weight_decay_for_norms_and_optionally_embeddings():
  params = llama.init_params(presets.get_preset("tiny"), jax.random.key(0))
  mask = optim.decay_mask(params, decay_embeddings=False)
  assert mask["layers_0"]["attn"]["q"] and mask["layers_0"]["mlp"]["down"]
  assert not mask["layers_0"]["attn_norm"]["scale"] and not mask["final_norm"]["scale"]
  assert not mask["embedding"] and not mask["lm_head"]
  assert optim.decay_mask(params)["embedding"]


def test_clipping_bounds_the_update_of_a_huge_gradient():
  opt, _ = optim.make_optimizer(learning_rate=1.0, weight_decay=0.0, clip_norm=1.0, b1=0.0, b2=0.0,
                                eps=0.0)
  params = {"w": jnp.zeros((4, 4))}
  grads = {"w": jnp.full((4, 4), 1e6)}
  updates, _ = opt.update(grads, opt.init(params), params)
  # Adam normalises per element, so the clipped update is still ±lr everywhere.
  np.testing.assert_allclose(np.abs(np.asarray(updates["w"])), 1.0, rtol=1e-5)


def test_gradient_accumulation_equals_the_full_batch():
  cfg = presets.get_preset("tiny")
  model = llama.Llama(cfg)
  params = llama.init_params(cfg, jax.random.key(0))
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, cfg.vocab_size, (4, 17)).astype(np.int32)
  weights = np.ones((4, 16), np.float32)
  weights[0, 8:] = 0  # unequal token counts per microbatch
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights}
  fn = jax.value_and_grad(lambda p, b: loss_lib.next_token_loss(p, b, model=model), has_aux=True)
  loss1, aux1, grads1 = optim.accumulate_gradients(fn, params, batch, 1)
  loss2, aux2, grads2 = jax.jit(lambda p, b: optim.accumulate_gradients(fn, p, b, 2))(params, batch)
  assert float(loss2) == pytest.approx(float(loss1), rel=1e-5)
  assert float(aux2["num_tokens"]) == float(aux1["num_tokens"]) == 56
  for g1, g2 in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads2)):
    np.testing.assert_allclose(g2, g1, rtol=1e-4, atol=1e-6)
