"""Target log-probabilities under the LM head: the native kernel and XLA's path against a
float64 log-softmax, ties in the greedy flag, and which path runs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fineline.models import native
from fineline.models import presets
from fineline.models.target_logprobs import target_logprobs

# 2,500 entries: two whole 1,024-logit tiles of the native kernel and a partial one.
_CFG = dataclasses.replace(presets.get_preset("tiny"), vocab_size=2500, hidden_size=48)


def _params(tied: bool, seed: int = 0):
  r = np.random.default_rng(seed)
  embedding_VxD = r.standard_normal((_CFG.vocab_size, _CFG.hidden_size), np.float32)
  if tied:
    return {"embedding": embedding_VxD}
  return {"embedding": embedding_VxD,
          "lm_head": r.standard_normal((_CFG.hidden_size, _CFG.vocab_size), np.float32)}


def _reference(hidden_CxD, params, tied, targets_C):
  head_DxV = (params["embedding"].T if tied else params["lm_head"]).astype(np.float64)
  logits_CxV = hidden_CxD.astype(np.float64) @ head_DxV
  top_C = logits_CxV.max(-1)
  log_z_C = top_C + np.log(np.exp(logits_CxV - top_C[:, None]).sum(-1))
  rows = np.arange(len(targets_C))
  return logits_CxV[rows, targets_C] - log_z_C, np.argmax(logits_CxV, -1) == targets_C


def _both_paths(monkeypatch, hidden_CxD, params, tied, targets_C):
  cfg = dataclasses.replace(_CFG, tie_embeddings=tied)
  run = lambda: jax.jit(lambda h, p, t: target_logprobs(h, p, cfg, t))(
      jnp.asarray(hidden_CxD), jax.tree.map(jnp.asarray, params), jnp.asarray(targets_C))
  native_result = run()
  with monkeypatch.context() as m:
    m.setattr(native, "applies", lambda *operands: False)
    xla_result = run()
  return {"native": native_result, "xla": xla_result}


@pytest.mark.skipif(not native.available(), reason="native CPU kernels could not be built here")
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_log_softmax_at_the_targets_in_every_vocabulary_tile(monkeypatch, tied):
  r = np.random.default_rng(1)
  C = 37  # rows split unevenly over the threads
  hidden_CxD = (r.standard_normal((C, _CFG.hidden_size)) * 0.3).astype(np.float32)
  params = _params(tied)
  targets_C = r.integers(0, _CFG.vocab_size, C).astype(np.int32)
  targets_C[:3] = [0, 1023, _CFG.vocab_size - 1]  # first, tile-edge and last entries
  # Rows whose target is their argmax, so the greedy flag is True somewhere.
  head_DxV = params["embedding"].T if tied else params["lm_head"]
  targets_C[-5:] = np.argmax(hidden_CxD[-5:] @ head_DxV, -1)
  want_logprob, want_greedy = _reference(hidden_CxD, params, tied, targets_C)
  for path, (logprob, greedy) in _both_paths(monkeypatch, hidden_CxD, params, tied,
                                            targets_C).items():
    np.testing.assert_allclose(logprob, want_logprob, rtol=1e-5, atol=1e-4, err_msg=path)
    np.testing.assert_array_equal(greedy, want_greedy, err_msg=path)
    assert greedy[-5:].all(), path


@pytest.mark.skipif(not native.available(), reason="native CPU kernels could not be built here")
def test_greedy_is_the_first_of_equal_maxima_across_tiles(monkeypatch):
  """Entries 100 and 2100 (in different tiles) hold the same row and win every logit: only
  the first counts as greedy, as torch's argmax reads it. The winner and the hidden rows hold
  small integers, so their products are exact in float32 whatever order a kernel sums them
  in (AVX-512 and AVX2 builds tile the products differently): the tie is exact."""
  params = _params(tied=True)
  r = np.random.default_rng(2)
  sign_D = np.where(r.standard_normal(_CFG.hidden_size) < 0, -1, 1).astype(np.float32)
  params["embedding"][[100, 2100]] = 10 * sign_D
  hidden_CxD = r.integers(1, 4, (4, _CFG.hidden_size)).astype(np.float32) * sign_D
  targets_C = np.array([100, 2100, 100, 7], np.int32)
  for path, (logprob, greedy) in _both_paths(monkeypatch, hidden_CxD, params, True,
                                            targets_C).items():
    assert greedy.tolist() == [True, False, True, False], path
    assert logprob[0] == logprob[1], path


def test_float32_on_one_cpu_device_runs_the_kernel_and_bfloat16_runs_xla():
  cfg = dataclasses.replace(_CFG, tie_embeddings=True)
  params = {"embedding": jnp.ones((_CFG.vocab_size, _CFG.hidden_size))}
  hlo = lambda hidden: jax.jit(lambda h, p: target_logprobs(h, p, cfg, jnp.zeros(4, jnp.int32))
                               ).lower(hidden, params).as_text()
  assert ("FinelineTargetLogprobs" in hlo(jnp.ones((4, _CFG.hidden_size)))) == native.available()
  assert "FinelineTargetLogprobs" not in hlo(jnp.ones((4, _CFG.hidden_size), jnp.bfloat16))
