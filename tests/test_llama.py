"""The Flax LLaMA is numerically the same model as transformers' LlamaForCausalLM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_fixtures import hf_logits, make_hf_llama_dir

from fineline.convert import hf
from fineline.models import llama

TOKENS_BxS = np.array([[1, 17, 255, 3, 88, 400, 9, 511, 2, 64, 5, 130],
                       [1, 300, 42, 42, 7, 0, 19, 450, 23, 99, 1, 2]], np.int32)

CASES = {
    "mha": dict(num_heads=4, num_kv_heads=4),
    "gqa": dict(num_heads=4, num_kv_heads=2),
    "mqa_tied": dict(num_heads=4, num_kv_heads=1, tie=True),
    "rope_theta": dict(rope_theta=500000.0),
    "llama3_scaling": dict(rope_theta=500000.0, max_length=512, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def hf_model(request, tmp_path_factory):
  path = make_hf_llama_dir(tmp_path_factory.mktemp(request.param), seed=3, **CASES[request.param])
  params, cfg, _ = hf.load_hf_checkpoint(path)
  return path, params, cfg


def test_logits_match_transformers(hf_model):
  path, params, cfg = hf_model
  ours = np.asarray(jax.jit(llama.Llama(cfg).apply)({"params": params}, TOKENS_BxS))
  theirs = hf_logits(path, TOKENS_BxS)
  assert ours.shape == theirs.shape == TOKENS_BxS.shape + (cfg.vocab_size,)
  # Random-init logits are O(0.1–1); a layout or rope mistake shows up at that scale.
  assert np.abs(theirs).max() > 0.05
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_parameter_count_matches_the_config(hf_model):
  _, _, cfg = hf_model
  assert cfg.param_dtype == "float32"
  assert cfg.num_params() == sum(x.size for x in jax.tree.leaves(hf_model[1]))


@pytest.fixture(scope="module")
def gqa_model(tmp_path_factory):
  path = make_hf_llama_dir(tmp_path_factory.mktemp("gqa"), seed=5, **CASES["gqa"])
  params, cfg, _ = hf.load_hf_checkpoint(path)
  return params, cfg, jax.jit(llama.Llama(cfg).apply)  # one jit cache shared by the tests


@pytest.mark.parametrize("scan", [False, True])
def test_kv_cache_decode_equals_full_pass(gqa_model, scan):
  params, cfg, apply = gqa_model
  if scan:
    cfg = cfg.replace(scan_layers=True)
    params = llama.scan_layers(params, cfg.num_layers)
    apply = jax.jit(llama.Llama(cfg).apply)
  full = np.asarray(apply({"params": params}, TOKENS_BxS))
  prompt = 5
  cache = llama.init_cache(cfg, TOKENS_BxS.shape[0], 16)
  step_logits, cache = apply({"params": params}, TOKENS_BxS[:, :prompt], cache=cache)
  pieces = [np.asarray(step_logits)]
  for t in range(prompt, TOKENS_BxS.shape[1]):
    step_logits, cache = apply({"params": params}, TOKENS_BxS[:, t:t + 1], cache=cache)
    pieces.append(np.asarray(step_logits))
  np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(np.asarray(cache["end"]), [TOKENS_BxS.shape[1]] * 2)


def test_right_padded_prompts_decode_like_unpadded_rows(gqa_model):
  """Rows of different prompt lengths share one cache; each continues from its own end."""
  params, cfg, apply = gqa_model
  lengths = np.array([5, 3], np.int32)
  prompts = TOKENS_BxS[:, :5].copy()
  prompts[1, 3:] = 0  # padding, overwritten by the next step
  cache = llama.init_cache(cfg, 2, 16)
  _, cache = apply({"params": params}, prompts, cache=cache, lengths_B=jnp.asarray(lengths))
  nxt = np.array([[11], [12]], np.int32)
  step, cache = apply({"params": params}, nxt, cache=cache)
  np.testing.assert_array_equal(np.asarray(cache["end"]), lengths + 1)
  # Each row alone, unpadded: prompt + next token; causal, so what follows does not matter.
  alone = np.zeros_like(TOKENS_BxS)
  for row, n in enumerate(lengths):
    alone[row, :n + 1] = np.concatenate([TOKENS_BxS[row, :n], nxt[row]])
  want = np.asarray(apply({"params": params}, alone))
  for row, n in enumerate(lengths):
    np.testing.assert_allclose(np.asarray(step)[row, 0], want[row, n], atol=1e-5, rtol=0)


def test_scanned_and_unscanned_layers_give_the_same_logits(gqa_model):
  params, cfg, apply = gqa_model
  scanned = llama.scan_layers(params, cfg.num_layers)
  assert scanned["layers"]["block"]["attn"]["q"].shape[0] == cfg.num_layers
  a = apply({"params": params}, TOKENS_BxS)
  b = jax.jit(llama.Llama(cfg.replace(scan_layers=True)).apply)({"params": scanned}, TOKENS_BxS)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)
  back = llama.unscan_layers(scanned, cfg.num_layers)
  assert jax.tree.all(jax.tree.map(np.array_equal, back, params))
