"""The attention core: values and gradients against JAX's own attention and plain autodiff."""

import contextlib
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractDevice, AbstractMesh, use_abstract_mesh

from fineline import partitioning
from fineline.models import attention
from fineline.models import llama
from fineline.models import presets


def _qkv(B=2, S=12, H=4, K=2, Dh=8, dtype=jnp.float32, seed=0):
  kq, kk, kv, kd = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(kq, (B, S, H, Dh), dtype)
  k = jax.random.normal(kk, (B, S, K, Dh), dtype)
  v = jax.random.normal(kv, (B, S, K, Dh), dtype)
  dout = jax.random.normal(kd, (B, S, H, Dh), dtype)
  return q, k, v, dout


def _reference(q_BxSxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask_BxSxT):
  """Textbook attention with repeated key/value heads, differentiated by JAX."""
  G = q_BxSxHxDh.shape[2] // k_BxTxKxDh.shape[2]
  k = jnp.repeat(k_BxTxKxDh, G, axis=2)
  v = jnp.repeat(v_BxTxKxDh, G, axis=2)
  scores = jnp.einsum("bshd,bthd->bhst", q_BxSxHxDh, k) / np.sqrt(q_BxSxHxDh.shape[-1])
  scores = jnp.where(mask_BxSxT[:, None], scores, jnp.finfo(scores.dtype).min)
  return jnp.einsum("bhst,bthd->bshd", jax.nn.softmax(scores, axis=-1), v)


def _value_and_grads(fn, q, k, v, mask, dout):
  out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, mask), q, k, v)
  return (out,) + vjp(dout)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
def test_matches_jax_dot_product_attention_with_a_causal_mask(heads, kv_heads):
  q, k, v, dout = _qkv(H=heads, K=kv_heads)
  pos = jnp.arange(q.shape[1])[None, :]
  mask = attention.causal_mask(pos, pos)
  ours = _value_and_grads(attention.dot_attention, q, k, v, mask, dout)
  theirs = _value_and_grads(
      lambda q, k, v, m: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                      implementation="xla"),
      q, k, v, mask, dout)
  for name, a, b in zip(("out", "dq", "dk", "dv"), ours, theirs):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5, err_msg=name)


def test_rows_without_a_visible_key_match_autodiff():
  """Cache-style masks (per-row offsets, a fully masked padding row) through the custom VJP."""
  q, k, v, dout = _qkv(B=3, S=6, H=4, K=2)
  q_pos = jnp.array([[0, 1, 2, 3, 4, 5], [2, 3, 4, 5, 6, 7], [-1, -1, -1, -1, -1, -1]])
  k_pos = jnp.broadcast_to(jnp.arange(6)[None, :], (3, 6))
  mask = attention.causal_mask(q_pos, k_pos)
  assert not mask[2].any()
  ours = _value_and_grads(attention.dot_attention, q, k, v, mask, dout)
  ref = _value_and_grads(_reference, q, k, v, mask, dout)
  for name, a, b in zip(("out", "dq", "dk", "dv"), ours, ref):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2)], ids=["mha", "gqa"])
def test_causal_query_blocks_match_the_full_square(monkeypatch, heads, kv_heads):
  """Blocks of 4 queries over 10 positions (the last block short), with sequences packed in a
  row: the blocked path skips the keys after each block and must change nothing else."""
  monkeypatch.setattr(attention, "CAUSAL_BLOCK", 4)
  q, k, v, dout = _qkv(S=10, H=heads, K=kv_heads)
  pos = jnp.arange(10)[None, :]
  segments = jnp.array([[1] * 3 + [2] * 7, [1] * 10])
  mask = attention.causal_mask(pos, pos) & (segments[:, :, None] == segments[:, None, :])
  ours = _value_and_grads(lambda q, k, v, m: attention.dot_attention(q, k, v, m, causal=True),
                          q, k, v, mask, dout)
  ref = _value_and_grads(_reference, q, k, v, mask, dout)
  for name, a, b in zip(("out", "dq", "dk", "dv"), ours, ref):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5, err_msg=name)


def test_bfloat16_stays_close_to_float32():
  q, k, v, dout = _qkv()
  pos = jnp.arange(q.shape[1])[None, :]
  mask = attention.causal_mask(pos, pos)
  exact = _value_and_grads(attention.dot_attention, q, k, v, mask, dout)
  bf16 = _value_and_grads(attention.dot_attention,
                          *(x.astype(jnp.bfloat16) for x in (q, k, v)), mask,
                          dout.astype(jnp.bfloat16))
  for name, a, b in zip(("out", "dq", "dk", "dv"), exact, bf16):
    assert b.dtype == jnp.bfloat16, name
    scale = float(jnp.max(jnp.abs(a)))
    assert float(jnp.max(jnp.abs(a - b.astype(jnp.float32)))) < 0.05 * scale, name


LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


@pytest.mark.parametrize("scaling", [None, LLAMA3_SCALING], ids=["default", "llama3"])
def test_rope_tables_hold_the_rotation_angles_of_each_position(scaling):
  cfg = dataclasses.replace(presets.get_preset("tiny"), rope_theta=500000.0, rope_scaling=scaling,
                            max_length=64)
  inv_freq = attention.rope_inv_freq(cfg).astype(np.float64)
  expected = lambda pos: np.cos(np.concatenate([pos[..., None] * inv_freq] * 2, axis=-1))
  cos_1xSx1xDh, _ = attention.rope_tables(None, 48, cfg, jnp.float32)
  np.testing.assert_allclose(cos_1xSx1xDh[:, :, 0], expected(np.arange(48.0))[None], atol=2e-5)
  positions_BxS = np.array([[0, 1, 2, 3], [30, 31, 32, 33], [62, 63, 64, 90]])
  cos_BxSx1xDh, _ = jax.jit(lambda p: attention.rope_tables(p, 4, cfg, jnp.float32))(
      jnp.asarray(positions_BxS))
  # Positions past the model's length read its last row.
  np.testing.assert_allclose(cos_BxSx1xDh[:, :, 0], expected(np.minimum(positions_BxS, 63.0)),
                             atol=2e-5)
  long_cfg = dataclasses.replace(cfg, max_length=1 << 20)  # tables computed in the program
  cos_BxSx1xDh, _ = jax.jit(lambda p: attention.rope_tables(p, 4, long_cfg, jnp.float32))(
      jnp.asarray(positions_BxS))
  np.testing.assert_allclose(cos_BxSx1xDh[:, :, 0], expected(positions_BxS), atol=2e-5)


@pytest.mark.parametrize("platform,dtype,expected", [
    ("cpu", jnp.float32, "dot"), ("cpu", jnp.bfloat16, "dot"), ("tpu", jnp.float32, "splash"),
    ("tpu", jnp.bfloat16, "splash"), ("gpu", jnp.bfloat16, "cudnn"), ("gpu", jnp.float32, "dot")])
def test_auto_picks_the_kernel_of_the_platform(platform, dtype, expected):
  assert attention.resolve_impl("auto", platform, dtype) == expected


@pytest.mark.parametrize("impl,platform,dtype,message", [
    ("splash", "cpu", jnp.float32, "attention_impl 'splash' does not run on cpu; there use one of auto, dot"),
    ("cudnn", "tpu", jnp.bfloat16, "attention_impl 'cudnn' does not run on tpu"),
    ("cudnn", "gpu", jnp.float32, "'cudnn' needs bfloat16 or float16 activations on gpu; got float32"),
    ("flash", "gpu", jnp.float32, "attention_impl 'flash'; known: auto, dot, splash, cudnn")])
def test_an_impl_the_platform_lacks_names_both(impl, platform, dtype, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    attention.resolve_impl(impl, platform, dtype)


def test_an_unknown_impl_is_refused_by_the_config():
  with pytest.raises(ValueError, match="attention_impl 'flash'; known: auto, dot, splash, cudnn"):
    dataclasses.replace(presets.get_preset("tiny"), attention_impl="flash")


def _custom_vjps_and_kernels(platform: str | None):
  """The custom-VJP functions and Pallas calls in tiny's forward program built for `platform`
  (None: this process's CPU), traced here whatever the target."""
  cfg = presets.get_preset("tiny")
  params = llama.init_params(cfg, jax.random.key(0))
  forward = lambda p: llama.Llama(cfg).apply({"params": p}, jnp.zeros((1, 128), jnp.int32))
  context = contextlib.nullcontext()
  if platform is not None:
    device = AbstractDevice(device_kind="accelerator", num_cores=1, platform=platform)
    context = use_abstract_mesh(AbstractMesh((1, 1, 1), partitioning.MESH_AXES,
                                             abstract_device=device))
  with context:
    text = str(jax.make_jaxpr(forward)(params))
  return set(re.findall(r"custom_vjp_call\[[^\]]*?name=(\w+)", text)), "pallas_call" in text


def test_cpu_hand_written_backwards_stay_out_of_tpu_and_gpu_programs():
  """Decided by the mesh's platform, not the process's backend (plan builds TPU programs
  on a CPU host): on TPU only splash's own VJP, on GPU (float32: XLA's attention) none."""
  cpu_vjps, cpu_pallas = _custom_vjps_and_kernels(None)
  assert {"_swiglu"} <= cpu_vjps and not cpu_pallas
  assert _custom_vjps_and_kernels("tpu") == ({"_splash_attention_custom"}, True)
  assert _custom_vjps_and_kernels("gpu") == (set(), False)
