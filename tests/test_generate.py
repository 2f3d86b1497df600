"""Sampled generation (pass@k's samples): its first-token distribution against
transformers' temperature and top-p warpers on the model's own logits, reproducibility
per seed whatever the batch, and greedy requests unchanged beside sampled ones."""

from __future__ import annotations

import collections
import math

import jax
import numpy as np
import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

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
def scorer():
  params = llama.init_params(CFG, jax.random.key(0))
  return Scorer(CFG, params, CharVocab(), batch_size=8, max_length=64)


def _next_token_logits(scorer, prompt):
  tokens = np.array([[1] + scorer.vocab.encode(prompt)], np.int32)
  logits = llama.Llama(CFG).apply({"params": scorer.params}, tokens)
  return torch.tensor(np.asarray(logits[0, -1], np.float32))


def test_first_token_follows_transformers_warpers(scorer):
  prompt = "def add(a, b):"
  logits_V = _next_token_logits(scorer, prompt)
  # A temperature giving the most likely token about half the mass, so that a few hundred
  # draws estimate the distribution.
  low, high = 1e-3, 10.0
  for _ in range(40):
    temperature = math.sqrt(low * high)
    if torch.softmax(logits_V / temperature, -1).max() > 0.5:
      low = temperature
    else:
      high = temperature
  top_p = 0.6  # a nucleus of a few tokens, so the cut matters
  warped = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(
      None, logits_V[None].clone()))
  probs_V = torch.softmax(warped, -1)[0].numpy()
  n = 128
  texts = scorer.generate([Generate(prompt, (), 1, temperature=temperature, top_p=top_p,
                                    seed=s) for s in range(n)])
  counts = collections.Counter(3 + ord(t) for t in texts if t)
  assert sum(counts.values()) == n
  assert all(probs_V[token] > 0 for token in counts), "a token outside the nucleus"
  # Each of the three likeliest tokens and the rest: within 4 standard errors.
  order = np.argsort(-probs_V)
  bins = [[order[0]], [order[1]], [order[2]], order[3:]]
  for tokens in bins:
    p = float(probs_V[tokens].sum())
    freq = sum(counts.get(int(t), 0) for t in tokens) / n
    assert abs(freq - p) <= 4 * math.sqrt(max(p * (1 - p), 1e-4) / n), (freq, p)


def test_samples_are_fixed_by_seed_not_by_batch(scorer):
  sampled = [Generate("hello", ("\n",), 12, temperature=1.0, top_p=0.95, seed=s)
             for s in range(6)]
  alone = scorer.generate(sampled[:1])[0]
  together = scorer.generate(sampled)
  assert together[0] == alone
  assert len(set(together)) > 1  # different seeds, different samples
  greedy = Generate("hello", ("\n",), 12)
  assert scorer.generate([greedy, sampled[0]]) == [scorer.generate([greedy])[0], alone]
