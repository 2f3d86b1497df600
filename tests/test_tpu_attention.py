"""Splash attention (the TPU path) against the CPU's dot path, in Pallas's interpreter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from fineline import partitioning
from fineline.models import attention
from fineline.models import tpu_attention


def _qkv(B, S, H, K, Dh, seed=0):
  kq, kk, kv, kd = jax.random.split(jax.random.key(seed), 4)
  return (jax.random.normal(kq, (B, S, H, Dh)), jax.random.normal(kk, (B, S, K, Dh)),
          jax.random.normal(kv, (B, S, K, Dh)), jax.random.normal(kd, (B, S, H, Dh)))


def _value_and_grads(fn, q, k, v, dout):
  out, vjp = jax.vjp(fn, q, k, v)
  return (out,) + vjp(dout)


def _dot(q, k, v):
  index = jnp.arange(q.shape[1])[None, :]
  return attention.dot_attention(q, k, v, attention.causal_mask(index, index), causal=True)


def _splash(q, k, v):
  return tpu_attention.attention(q, k, v, interpret=True)


@pytest.fixture(autouse=True)
def two_blocks(monkeypatch):
  """Blocks of 128 (the kernel's smallest tile) over 256 positions: the key block after the
  first query block is skipped, the diagonal blocks are masked."""
  monkeypatch.setattr(tpu_attention, "MAX_BLOCK", 128)


def test_splash_matches_dot_attention_values_and_gradients_mha():
  q, k, v, dout = _qkv(B=1, S=256, H=2, K=2, Dh=8)
  for name, a, b in zip(("out", "dq", "dk", "dv"), _value_and_grads(_splash, q, k, v, dout),
                        _value_and_grads(_dot, q, k, v, dout)):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5, err_msg=name)


def test_splash_gqa_under_a_mesh_runs_per_shard_and_matches():
  """Grouped heads (4 query heads over 2 key/value heads) through shard_map, as in a step."""
  q, k, v, dout = _qkv(B=2, S=256, H=4, K=2, Dh=8, seed=1)
  mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), partitioning.MESH_AXES)
  with partitioning.activation_rules(mesh):
    splash = jax.jit(lambda *a: _value_and_grads(_splash, *a))(q, k, v, dout)
  for name, a, b in zip(("out", "dq", "dk", "dv"), splash, _value_and_grads(_dot, q, k, v, dout)):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5, err_msg=name)


def test_lengths_the_kernel_cannot_tile_are_refused():
  q, k, v, _ = _qkv(B=1, S=96, H=2, K=2, Dh=8)
  with pytest.raises(ValueError, match="multiples of 128; got 96 queries and 96 keys"):
    tpu_attention.attention(q, k, v, interpret=True)
