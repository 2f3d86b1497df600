"""fineline's Scorer against lm-evaluation-harness's HF backend on the same model and requests.

Both sides read one random-init Hugging Face LLaMA directory (with a SentencePiece or a
byte-level BPE tokenizer); lm-eval is driven through its `HFLM` model object with the same
`Instance`s, so any difference in tokenisation, truncation, scoring or decoding shows.
A small `max_length` makes long contexts exercise left truncation.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from hf_fixtures import make_hf_llama_dir

from fineline.convert.hf import load_hf_checkpoint
from fineline.evaluation.requests import Generate, Loglikelihood
from fineline.evaluation.scorer import Scorer
from fineline.tokenizers import load_vocabulary
from lm_eval.api.instance import Instance
from lm_eval.models import huggingface as lm_eval_hf

MAX_LENGTH = 64
WORDS = ("the quick brown fox jumps over lazy dog question answer model train token sentence "
         "piece evaluation benchmark capability checkpoint loss accuracy science history "
         "language number café Straße 42 3.14").split()


def _words(rng, lo, hi):
  return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


@pytest.fixture(scope="module", params=["sentencepiece", "bpe"])
def models(request, tmp_path_factory):
  kind = request.param
  directory = str(tmp_path_factory.mktemp(kind))
  make_hf_llama_dir(directory, tokenizer=kind, vocab_size=400, max_length=256, seed=3)
  lm = lm_eval_hf.HFLM(pretrained=directory, batch_size=4, device="cpu", dtype="float32",
                       max_length=MAX_LENGTH)
  params, cfg, tokenizer_dir = load_hf_checkpoint(directory)
  scorer = Scorer(cfg, params, load_vocabulary(tokenizer_dir), batch_size=8,
                  max_length=MAX_LENGTH)
  return lm, scorer


def _lm_eval_loglikelihood(lm, pairs):
  instances = [Instance("loglikelihood", {}, (c, x), i) for i, (c, x) in enumerate(pairs)]
  return lm.loglikelihood(instances, disable_tqdm=True)


def _assert_same_scores(ours, theirs):
  ours_ll, theirs_ll = np.array([o[0] for o in ours]), np.array([t[0] for t in theirs])
  np.testing.assert_allclose(ours_ll, theirs_ll, atol=1e-4, rtol=0)
  assert [o[1] for o in ours] == [t[1] for t in theirs]


def _multiple_choice_docs(seed=0, n_docs=6):
  rng = random.Random(seed)
  docs = []
  for d in range(n_docs):
    shots = "".join(f"Question: {_words(rng, 3, 8)}?\nAnswer: {_words(rng, 1, 3)}\n\n"
                    for _ in range(d % 3 + (4 if d == 0 else 0)))  # doc 0 overflows MAX_LENGTH
    context = f"{shots}Question: {_words(rng, 3, 10)}?\nAnswer:"
    if d == 1:
      context += " "  # trailing space moves into the continuations
    if d == 2:
      context = ""  # conditioned on the prefix token
    choices = [_words(rng, 1, 4) for _ in range(4)]
    docs.append((context, choices, rng.randrange(4)))
  return docs


def test_multiple_choice_parity(models):
  lm, scorer = models
  docs = _multiple_choice_docs()
  pairs = [(ctx, " " + c if ctx else c) for ctx, choices, _ in docs for c in choices]
  ours = scorer.loglikelihood([Loglikelihood(c, x) for c, x in pairs])
  theirs = _lm_eval_loglikelihood(lm, pairs)
  _assert_same_scores(ours, theirs)

  def accuracy(results):
    acc, acc_norm = [], []
    for d, (_, choices, gold) in enumerate(docs):
      ll = np.array([r[0] for r in results[4 * d:4 * d + 4]])
      acc.append(int(np.argmax(ll)) == gold)
      acc_norm.append(int(np.argmax(ll / np.array([len(c) for c in choices]))) == gold)
    return np.mean(acc), np.mean(acc_norm)
  assert accuracy(ours) == accuracy(theirs)


def test_partial_scoring_shared_continuation(models):
  lm, scorer = models
  rng = random.Random(1)
  pairs = []
  for _ in range(5):  # WinoGrande: the option fills the blank, the shared rest is scored
    start, rest = _words(rng, 4, 9), " " + _words(rng, 3, 7) + "."
    pairs += [(f"{start} {_words(rng, 1, 2)}", rest) for _ in range(2)]
  ours = scorer.loglikelihood([Loglikelihood(c, x) for c, x in pairs])
  _assert_same_scores(ours, _lm_eval_loglikelihood(lm, pairs))


def _greedy_text(lm, context, n_tokens):
  """The text the HF model itself generates after `context` (so is_greedy can be True)."""
  import torch
  ids = lm.tok_encode(context)
  with torch.no_grad():
    out = lm.model.generate(torch.tensor([ids]), max_new_tokens=n_tokens, do_sample=False,
                            pad_token_id=lm.tokenizer.pad_token_id)
  return lm.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def test_lambada_greedy_matching(models):
  lm, scorer = models
  rng = random.Random(2)
  pairs = []
  for i in range(8):
    text = _words(rng, 6, 14 if i else 60)  # the first one needs left truncation
    context, last = text.rsplit(" ", 1)
    pairs.append((context, " " + last))
    greedy = _greedy_text(lm, context, 2)
    if greedy.strip():
      pairs.append((context, greedy))
  ours = scorer.loglikelihood([Loglikelihood(c, x) for c, x in pairs])
  theirs = _lm_eval_loglikelihood(lm, pairs)
  _assert_same_scores(ours, theirs)
  assert any(t[1] for t in theirs) and not all(t[1] for t in theirs)


def test_generation_parity(models):
  lm, scorer = models
  rng = random.Random(3)
  shots = "".join(f"Q: {_words(rng, 4, 8)}?\nA: {_words(rng, 3, 6)}. The answer is {i}.\n\n"
                  for i in range(3))
  requests = [Generate(shots + f"Q: {_words(rng, 3, 8 + 10 * (i == 0))}?\nA:",
                       until=("Q:", "\n\n"), max_new_tokens=20) for i in range(5)]
  requests.append(Generate("the quick", until=("e",), max_new_tokens=12))  # cut mid-output
  requests.append(Generate(_words(rng, 2, 4), until=(), max_new_tokens=9))
  instances = [Instance("generate_until", {}, (r.context, {"until": list(r.until),
                        "max_gen_toks": r.max_new_tokens, "do_sample": False}), i)
               for i, r in enumerate(requests)]
  theirs = lm.generate_until(instances, disable_tqdm=True)
  ours = scorer.generate(requests)
  assert ours == theirs
  assert any(len(t) > 10 for t in theirs)


def test_loglikelihood_rolling_parity(models):
  lm, scorer = models
  rng = random.Random(4)
  texts = [_words(rng, 5, 10), _words(rng, 60, 80), "Hello world"]  # the second spans windows
  theirs = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i)
                                     for i, t in enumerate(texts)], disable_tqdm=True)
  ours = scorer.loglikelihood_rolling(texts)
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


NEW_TASKS = {  # task → (lm-eval config, its data files under the data dir, few-shot count)
    "cmmlu_agronomy": ("cmmlu/cmmlu_agronomy.yaml", "csv",
                       {"dev": "cmmlu/dev/agronomy.csv", "test": "cmmlu/test/agronomy.csv"}, 5),
    "truthfulqa_mc2": ("truthfulqa/truthfulqa_mc2.yaml", "json",
                       {"validation": "truthfulqa/validation.jsonl"}, 0),
}


def test_new_tasks_end_to_end_equal_lm_eval(tmp_path):
  """`fineline eval` on a HF directory against lm-eval's simple_evaluate on the same model
  and files: a released-CSV exam 5-shot and TruthfulQA MC2's own metric (generation
  tasks' outputs are compared request by request in test_generation_parity)."""
  import json
  import os

  import lm_eval
  from eval_fixtures import write_eval_data, write_exam_csvs
  from lm_eval.api.task import ConfigurableTask
  from lm_eval.tasks._yaml_loader import load_yaml

  from fineline import cli

  hf_dir = make_hf_llama_dir(str(tmp_path / "hf"), tokenizer="sentencepiece", vocab_size=400,
                             max_length=2048, seed=5)
  data_dir = write_exam_csvs(write_eval_data(
      tmp_path / "data", tasks=["truthfulqa"], n=4), n=4)
  output, samples = tmp_path / "r.json", tmp_path / "samples.jsonl"
  assert cli.main(["eval", "--quiet", "--checkpoint", hf_dir, "--tasks", ",".join(NEW_TASKS),
                   "--limit", "3", "--data_dir", data_dir, "--output", str(output),
                   "--samples", str(samples)]) == 0
  record = json.loads(output.read_text())["tasks"]
  tasks = []
  for name, (config, kind, files, k) in NEW_TASKS.items():
    cfg = load_yaml(os.path.join(os.path.dirname(lm_eval.tasks.__file__), config))
    cfg.update(task=name, dataset_path=kind, dataset_name=None, num_fewshot=k,
               dataset_kwargs={"data_files": {s: os.path.join(data_dir, f)
                                              for s, f in files.items()}})
    tasks.append(ConfigurableTask(config=cfg))
  lm = lm_eval_hf.HFLM(pretrained=hf_dir, batch_size=4, device="cpu", dtype="float32")
  out = lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=3, bootstrap_iters=0,
                                log_samples=True, fewshot_random_seed=1234)
  theirs = out["results"]
  for name, metric in (("cmmlu_agronomy", "acc"), ("cmmlu_agronomy", "acc_norm"),
                       ("truthfulqa_mc2", "acc")):
    assert record[name][metric] == pytest.approx(theirs[name][f"{metric},none"], abs=1e-6)
    assert record[name]["n"] == 3
  rows = [json.loads(line) for line in samples.read_text().splitlines()]
  ours_ll = [r["loglikelihood"] for r in rows if r["task"] == "truthfulqa_mc2"]
  their_ll = [float(r[0][0]) for s in out["samples"]["truthfulqa_mc2"] for r in s["resps"]]
  np.testing.assert_allclose(ours_ll, their_ll, atol=1e-4, rtol=0)
