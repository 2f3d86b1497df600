"""Scorer against plain full-sequence forward passes of the same model (no KV cache, no
batching), for scores, greedy flags, generation, the scanned layout and a sharded mesh."""

from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from fineline.evaluation import requests
from fineline.evaluation import scorer as scorer_lib
from fineline.evaluation.requests import Generate
from fineline.evaluation.scorer import Scorer
from fineline.models import llama, presets

CFG = presets.get_preset("tiny")


class CharVocab:
  """One id per character (3 + code point); unk/bos/eos = 0/1/2; BOS added by default."""
  unk_id, bos_id, eos_id, add_bos = 0, 1, 2, True

  def encode(self, text):
    return [3 + ord(c) for c in text]

  def decode(self, ids):
    return "".join(chr(i - 3) for i in ids if i >= 3)


@pytest.fixture(scope="module")
def params():
  return llama.init_params(CFG, jax.random.key(0))


@functools.lru_cache(maxsize=None)
def _forward(cfg):
  return jax.jit(lambda p, x: jax.nn.log_softmax(llama.Llama(cfg).apply({"params": p}, x), -1))


def reference_scores(params, pairs, max_length):
  """lm-eval's computation: one right-padded full forward per request."""
  out = []
  for context, continuation in pairs:
    tokens = (context + continuation)[-(max_length + 1):][:-1]
    padded = np.zeros((1, 64), np.int32)
    padded[0, :len(tokens)] = tokens
    logprobs = np.asarray(_forward(CFG)(params, padded))[0, len(tokens) - len(continuation):len(tokens)]
    out.append((float(logprobs[np.arange(len(continuation)), continuation].sum()),
                bool((logprobs.argmax(-1) == continuation).all())))
  return out


def greedy_tokens(params, prompt, n):
  tokens = list(prompt)
  for _ in range(n):
    padded = np.zeros((1, 64), np.int32)
    padded[0, :len(tokens)] = tokens
    tokens.append(int(np.asarray(_forward(CFG)(params, padded))[0, len(tokens) - 1].argmax()))
  return tokens[len(prompt):]


def make_pairs(params, seed=0):
  rng = random.Random(seed)
  pairs = []
  for g in range(9):
    context = [1] + [rng.randrange(3, 500) for _ in range(rng.choice([1, 5, 17, 50]))]
    for _ in range(rng.choice([1, 2, 4, 5])):  # several continuations share one context
      pairs.append((context, [rng.randrange(3, 500) for _ in range(rng.randint(1, 12))]))
    if g % 3 == 0:  # the model's own greedy continuation: is_greedy must come out True
      pairs.append((context, greedy_tokens(params, context[-40:], 3)))
  return pairs


def test_loglikelihood_matches_full_forward(params):
  pairs = make_pairs(params)
  # batch 1 → several calls of one row, each packing several groups; max_length 40 → the
  # 51-token contexts lose tokens on the left.
  scorer = Scorer(CFG, params, CharVocab(), batch_size=1, max_length=40)
  ours = scorer.loglikelihood_tokens(pairs)
  theirs = reference_scores(params, pairs, max_length=40)
  np.testing.assert_allclose([o[0] for o in ours], [t[0] for t in theirs], atol=1e-4, rtol=0)
  assert [o[1] for o in ours] == [t[1] for t in theirs]
  assert any(t[1] for t in theirs) and not all(t[1] for t in theirs)


def test_many_targets_span_several_head_chunks(params, monkeypatch):
  pairs = make_pairs(params, seed=2) + make_pairs(params, seed=3)
  default = Scorer(CFG, params, CharVocab(), batch_size=2).loglikelihood_tokens(pairs)
  # Three rows at batch 2: a call of two rows and one of one. Chunks of 16 targets: several
  # loop steps per call, the last one partly padding.
  monkeypatch.setattr(scorer_lib, "_HEAD_CHUNK", 16)
  chunked = Scorer(CFG, params, CharVocab(), batch_size=2).loglikelihood_tokens(pairs)
  theirs = reference_scores(params, pairs, max_length=CFG.max_length)
  assert sum(len(x) for _, x in pairs) > 3 * 16
  for ours in (default, chunked):
    np.testing.assert_allclose([o[0] for o in ours], [t[0] for t in theirs], atol=1e-4, rtol=0)
    assert [o[1] for o in ours] == [t[1] for t in theirs]


def test_scanned_layers_give_the_same_scores(params):
  pairs = make_pairs(params, seed=1)[:12]
  plain = Scorer(CFG, params, CharVocab(), batch_size=8).loglikelihood_tokens(pairs)
  scanned_cfg = CFG.replace(scan_layers=True)
  scanned = Scorer(scanned_cfg, llama.scan_layers(params, CFG.num_layers), CharVocab(),
                   batch_size=8).loglikelihood_tokens(pairs)
  np.testing.assert_allclose([s[0] for s in scanned], [p[0] for p in plain], atol=1e-5)
  assert [s[1] for s in scanned] == [p[1] for p in plain]


def test_rolling_loglikelihood_sums_windows(params):
  text = "the quick brown fox jumps over the lazy dog " * 3  # 133 tokens, windows of 32
  scorer = Scorer(CFG, params, CharVocab(), batch_size=4, max_length=32)
  windows = requests.rolling_windows(CharVocab(), text, 32)
  assert len(windows) == 5
  expected = sum(score for score, _ in reference_scores(params, windows, 32))
  assert scorer.loglikelihood_rolling([text, "a"])[0] == pytest.approx(expected, abs=1e-3)


def test_generate_matches_greedy_decoding(params):
  vocab = CharVocab()
  prompts = ["Q: what is two plus two?\nA:", "hello", "x" * 80]  # the last is left-truncated
  scorer = Scorer(CFG, params, vocab, batch_size=2, max_length=60)
  plain = [greedy_tokens(params, ([1] + vocab.encode(p))[-(60 - 20):], 20) for p in prompts]
  texts = [vocab.decode([t for t in toks if t > 2]) for toks in plain]
  stop = texts[0][4:6]  # a stop string the first output does contain
  requests = [Generate(prompts[0], until=(stop,), max_new_tokens=20),
              Generate(prompts[1], until=(), max_new_tokens=20),
              Generate(prompts[2], until=("never",), max_new_tokens=7)]
  expected = [texts[0].split(stop)[0], texts[1], vocab.decode([t for t in plain[2][:7] if t > 2])]
  assert scorer.generate(requests) == expected
  assert len(expected[0]) < len(texts[0])

  # EOS ends a generation: make the token the model emits at step 6 the EOS token.
  eos = plain[1][5]
  eos_cfg = CFG.replace(eos_token_id=eos)
  eos_vocab = CharVocab()
  eos_vocab.eos_id = eos
  scorer = Scorer(eos_cfg, params, eos_vocab, batch_size=2, max_length=60)
  first = plain[1].index(eos)
  assert scorer.generate([requests[1]]) == [vocab.decode([t for t in plain[1][:first] if t > 2])]


_MESH_SCRIPT = textwrap.dedent("""
  import json, sys
  import gin, jax, numpy as np
  sys.path.insert(0, {tests!r})
  from test_scorer import CFG, CharVocab, make_pairs
  from fineline import partitioning
  from fineline.evaluation.requests import Generate
  from fineline.evaluation.scorer import Scorer
  from fineline.models import llama
  gin.bind_parameter("mesh_axes.data", 2)
  gin.bind_parameter("mesh_axes.fsdp", 2)
  gin.bind_parameter("mesh_axes.tensor", 2)
  mesh = partitioning.make_mesh()
  params = llama.init_params(CFG, jax.random.key(0))
  shardings = partitioning.param_shardings(mesh, llama.abstract_params(CFG))
  pairs = make_pairs(params)[:14]
  gen = [Generate("hello", max_new_tokens=6), Generate("Q: x?\\nA:", until=("a",), max_new_tokens=9)]
  plain = Scorer(CFG, params, CharVocab(), batch_size=4, max_length=40)
  sharded = Scorer(CFG, params, CharVocab(), batch_size=4, max_length=40, mesh=mesh,
                   shardings=shardings)
  a, b = plain.loglikelihood_tokens(pairs), sharded.loglikelihood_tokens(pairs)
  print(json.dumps({{
      "devices": len(jax.devices()),
      "param_sharded": not sharded.params["embedding"].sharding.is_fully_replicated,
      "max_diff": float(np.max(np.abs(np.array([x[0] for x in a]) - [x[0] for x in b]))),
      "greedy_equal": [x[1] for x in a] == [x[1] for x in b],
      "generate_equal": plain.generate(gen) == sharded.generate(gen)}}))
""")


def test_sharded_mesh_gives_the_same_results():
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  out = subprocess.run([sys.executable, "-c", _MESH_SCRIPT.format(tests=tests_dir)], env=env,
                       capture_output=True, text=True, timeout=600,
                       cwd=os.path.dirname(tests_dir))
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8 and result["param_sharded"]
  assert result["max_diff"] < 1e-4 and result["greedy_equal"] and result["generate_equal"]
