"""The native CPU attention kernel: values and gradients against XLA's attention path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fineline.models import attention
from fineline.models import cpu_attention
from fineline.models import native

pytestmark = pytest.mark.skipif(not native.available(),
                                reason="native CPU kernels could not be built here")


def _operands(B, S, T, H, K, Dh=16, seed=0):
  r = np.random.default_rng(seed)
  q, dout = (jnp.asarray(r.standard_normal((B, S, H, Dh), np.float32)) for _ in range(2))
  k, v = (jnp.asarray(r.standard_normal((B, T, K, Dh), np.float32)) for _ in range(2))
  return q, k, v, dout


def _value_and_grads(fn, q, k, v, mask, dout, causal):
  out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, mask, causal), q, k, v)
  return (out,) + vjp(dout)


def _assert_same(q, k, v, mask, dout, causal):
  native = jax.jit(_value_and_grads, static_argnums=(0, 6))(
      cpu_attention.attention, q, k, v, mask, dout, causal)
  xla = jax.jit(_value_and_grads, static_argnums=(0, 6))(
      attention.dot_attention, q, k, v, mask, dout, causal)
  for name, a, b in zip(("out", "dq", "dk", "dv"), native, xla):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
def test_causal_matches_xla_over_several_query_blocks(heads, kv_heads):
  S = 2 * cpu_attention.BLOCK + 5  # a partial last block
  q, k, v, dout = _operands(2, S, S, heads, kv_heads)
  positions_BxS = jnp.broadcast_to(jnp.arange(S), (2, S))
  _assert_same(q, k, v, attention.causal_mask(positions_BxS, positions_BxS), dout, True)


def test_arbitrary_mask_with_more_keys_than_queries_and_a_row_that_sees_nothing():
  q, k, v, dout = _operands(2, 9, 21, 4, 2)
  mask_BxSxT = np.random.default_rng(1).random((2, 9, 21)) < 0.4
  mask_BxSxT[1, 3] = False  # attends uniformly, like XLA's path; no gradient to its scores
  _assert_same(q, k, v, jnp.asarray(mask_BxSxT), dout, False)


def test_one_mask_shared_by_the_batch():
  q, k, v, dout = _operands(3, 10, 10, 2, 2)
  mask_1xSxT = attention.causal_mask(jnp.arange(10)[None], jnp.arange(10)[None])
  native = _value_and_grads(cpu_attention.attention, q, k, v, mask_1xSxT, dout, True)
  full = _value_and_grads(cpu_attention.attention, q, k, v,
                          jnp.broadcast_to(mask_1xSxT, (3, 10, 10)), dout, True)
  for a, b in zip(native, full):
    np.testing.assert_array_equal(a, b)


def test_a_non_finite_query_stays_non_finite():
  """The train step skips updates with non-finite gradients: the kernel must not hide them."""
  q, k, v, dout = _operands(1, 8, 8, 2, 2)
  q = q.at[0, 5, 1, 0].set(jnp.nan)
  mask = attention.causal_mask(jnp.arange(8)[None], jnp.arange(8)[None])
  out, dq, dk, dv = _value_and_grads(cpu_attention.attention, q, k, v, mask, dout, True)
  assert np.isnan(out[0, 5, 1]).all() and np.isfinite(out[0, :5]).all()
  assert not np.isfinite(dk).all() and not np.isfinite(dv).all()


def test_attend_uses_the_kernel_for_float32_on_cpu_and_xla_for_bfloat16():
  q, k, v, _ = _operands(1, 8, 8, 2, 2)
  mask = attention.causal_mask(jnp.arange(8)[None], jnp.arange(8)[None])
  hlo = lambda *xs: jax.jit(lambda q, k, v: attention.attend(q, k, v, mask, "dot", True)).lower(
      *xs).as_text()
  assert "FinelineAttentionForward" in hlo(q, k, v)
  assert "FinelineAttentionForward" not in hlo(*(x.astype(jnp.bfloat16) for x in (q, k, v)))


def test_packed_rows_of_several_sequences():
  """Scoring packs sequences into one row: blocks skip the keys of the sequences before."""
  S = 3 * cpu_attention.BLOCK
  segments_BxS = np.repeat(np.array([[1, 2, 3, 3], [1, 1, 2, 0]]), S // 4, axis=1)
  index = np.arange(S)
  mask_BxSxT = ((segments_BxS[:, :, None] == segments_BxS[:, None, :])
                & (index[:, None] >= index[None, :]) & (segments_BxS[:, None, :] > 0))
  q, k, v, dout = _operands(2, S, S, 4, 2)
  _assert_same(q, k, v, jnp.asarray(mask_BxSxT), dout, True)
