"""The model's matrix products: the native kernel's values and gradients against XLA's dot."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fineline.models import native
from fineline.models.matmul import matmul

pytestmark = pytest.mark.skipif(not native.available(),
                                reason="native CPU kernels could not be built here")


def _xla_matmul(a, b, transpose_a, transpose_b):
  return (a.T if transpose_a else a) @ (b.T if transpose_b else b)


@pytest.mark.parametrize("M,K,N", [(9, 5, 7), (300, 64, 170), (96, 520, 40)],
                         ids=["one-thread", "split-rows", "split-columns"])
@pytest.mark.parametrize("transpose_a,transpose_b", list(itertools.product((False, True), repeat=2)))
def test_values_and_gradients_match_xla(M, K, N, transpose_a, transpose_b):
  r = np.random.default_rng(0)
  a = jnp.asarray(r.standard_normal((K, M) if transpose_a else (M, K), np.float32))
  b = jnp.asarray(r.standard_normal((N, K) if transpose_b else (K, N), np.float32))
  dc = jnp.asarray(r.standard_normal((M, N), np.float32))
  results = []
  for fn in (matmul, _xla_matmul):
    c, vjp = jax.vjp(lambda a, b, fn=fn: fn(a, b, transpose_a, transpose_b), a, b)
    results.append((c, *vjp(dc)))
  for name, got, want in zip(("c", "da", "db"), *results):
    assert got.shape == want.shape, name
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(K), err_msg=name)


def test_float32_runs_the_kernel_and_bfloat16_or_a_single_row_runs_xla():
  a = jnp.ones((8, 4))
  hlo = lambda x: jax.jit(lambda x: matmul(x, x, transpose_b=True)).lower(x).as_text()
  assert "FinelineMatmul" in hlo(a)
  assert "FinelineMatmul" not in hlo(a.astype(jnp.bfloat16))
  assert "FinelineMatmul" not in hlo(a[:1])
  c = matmul(a.astype(jnp.bfloat16), a.astype(jnp.bfloat16), transpose_b=True,
             preferred_element_type=jnp.float32)
  assert c.dtype == jnp.float32 and c.shape == (8, 8)


def test_remat_policies_that_save_dots_save_native_products():
  """A custom call is no dot to `checkpoint_dots`: the model's policies save native products
  by name, so only full remat recomputes them in the backward pass."""
  from fineline.models import llama, presets  # pylint: disable=import-outside-toplevel
  tokens = jnp.zeros((2, 16), jnp.int32)

  def native_products(policy):
    cfg = dataclasses.replace(presets.get_preset("tiny"), remat_policy=policy)
    model = llama.Llama(cfg)
    params = llama.init_params(cfg, jax.random.key(0))
    grad = jax.grad(lambda p: model.apply({"params": p}, tokens).sum())
    return jax.jit(grad).lower(params).as_text().count("FinelineMatmul")

  none, dots, full = (native_products(p) for p in ("none", "dots", "full"))
  assert none == dots < full
