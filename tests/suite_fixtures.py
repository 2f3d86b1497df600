"""Shared by the suite and in-process evaluator tests: small local tasks and a fake scorer."""

import os

import pytest

from eval_fixtures import write_jsonl

from evals import capabilities, registry
from fineline.evaluation.requests import cut_at_stop

# Items where the shortest choice is gold for the first `k` documents.
ITEMS = [{"context": f"Question {i}:", "choices": ["aa", "b", "cccc"], "gold": 1 if i < 3 else 2}
         for i in range(5)]


class FakeScorer:
  """log-likelihood = -characters of the continuation; greedy when it is a single char."""

  def __init__(self, fail_on=None):
    self.calls, self.fail_on = [], fail_on

  def loglikelihood(self, requests, progress=False):
    self.calls.append(("loglikelihood", len(requests)))
    return [(-float(len(r.continuation)), len(r.continuation.strip()) == 1) for r in requests]

  def loglikelihood_rolling(self, texts, progress=False):
    self.calls.append(("rolling", len(texts)))
    return [-float(len(t)) for t in texts]

  def generate(self, requests, progress=False):
    self.calls.append(("generate", len(requests)))
    if self.fail_on and any(self.fail_on in r.context for r in requests):
      raise RuntimeError("generation exploded")
    texts = [" 42\nmore" if "7" in r.context else " nope" for r in requests]
    return [cut_at_stop(t, r.until) for t, r in zip(texts, requests)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("items")
  write_jsonl(os.path.join(d, "mc.jsonl"), ITEMS)
  write_jsonl(os.path.join(d, "mc_big.jsonl"), ITEMS * 3)
  write_jsonl(os.path.join(d, "gen.jsonl"), [{"context": f"Sum {i}:", "answer": "42"}
                                             for i in range(6, 10)])
  write_jsonl(os.path.join(d, "gen_bad.jsonl"), [{"context": "explode here", "answer": "x"}])
  registry.register_multiple_choice_task("t_mc", "mc.jsonl", capabilities.MATH, chance=1 / 3)
  registry.register_multiple_choice_task("t_mc_big", "mc_big.jsonl", capabilities.MATH,
                                         chance=1 / 3)
  registry.register_generation_task("t_gen", "gen.jsonl", capabilities.MATH, max_new_tokens=8)
  registry.register_generation_task("t_gen_bad", "gen_bad.jsonl", capabilities.MATH)

  def broken(data_dir):
    raise RuntimeError("the loader is broken")
  registry.register_multiple_choice_task("t_broken", broken, capabilities.MATH)
  registry.register_group("t_group", ["t_mc", "t_mc_big"], capability=capabilities.MATH,
                          chance=1 / 3)
  return str(d)
