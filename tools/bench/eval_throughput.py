"""Benchmark: multiple-choice scoring with fineline's Scorer against lm-evaluation-harness.

Builds a Hugging Face LLaMA directory of a preset (default `125m`, random weights, float32)
with a SentencePiece tokenizer trained here on generated pseudo-English (the model's
32,000-entry vocabulary is wider than the tokenizer's, as padded vocabularies are), and
deterministic ARC- and HellaSwag-shaped items (4 choices each). The same requests are then
scored, in this one process, by
  lm-eval   lm_eval.models.huggingface.HFLM(batch_size=16).loglikelihood (PyTorch)
  fineline  fineline.evaluation.scorer.Scorer(batch_size=16).loglikelihood (JAX)
fineline's first call is timed apart (cold: compiles included). Then both score the same
requests again, alternately, `--repeats` times in all (fineline warm, as every later
evaluation of a run reuses the compiled programs), and each side's best time counts, as
timeit reports it: on a shared machine either side's time for the same requests can drift
by a third within minutes, and alternating best-of-N compares the two at their own pace. Prints requests/s of each, the ratios, and how far
the scores agree (max |Δ log-likelihood|, acc / acc_norm of both). Target: fineline ≥ 3×
lm-eval.

  python tools/bench/eval_throughput.py [--docs 150] [--repeats 3] [--preset 125m] [--json]

`--xla_default_matmuls` scores with XLA:CPU's default (YNNPACK) matmuls instead of the
Eigen ones `scorer.score_compiler_options` picks. Recorded when that choice was made:
Eigen's ran 7–20% faster on the scoring forward, in interleaved runs of the same calls, and
YNNPACK's elementwise fusions brought no gain; compare a run with the flag and one without.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from fineline.models import presets  # noqa: E402

_CONSONANTS = "b c d f g h j k l m n p r s t v w z br ch st th tr pl gr sh".split()
_VOWELS = "a e i o u ai ea ou io".split()


def pseudo_words(rng: random.Random, n: int) -> list[str]:
  words = set()
  while len(words) < n:
    words.add("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS)
                      for _ in range(rng.choice((1, 1, 2, 2, 3)))))
  return sorted(words)


class TextMaker:
  """Zipf-distributed pseudo-English sentences, deterministic for a seed."""

  def __init__(self, seed: int = 0, vocabulary: int = 6000):
    self.rng = random.Random(seed)
    self.words = pseudo_words(self.rng, vocabulary)
    self.weights = [1.0 / (rank + 1) for rank in range(vocabulary)]

  def words_(self, n: int) -> str:
    return " ".join(self.rng.choices(self.words, self.weights, k=n))

  def sentence(self, lo: int, hi: int) -> str:
    text = self.words_(self.rng.randint(lo, hi))
    return text[0].upper() + text[1:] + self.rng.choice(".....?!")


def make_tokenizer(out_dir: str, texts: TextMaker, vocab_size: int) -> None:
  """A LLaMA-style SentencePiece BPE model (byte fallback, BOS/EOS) and its HF files."""
  import sentencepiece as spm
  model = io.BytesIO()
  lines = [texts.sentence(5, 25) for _ in range(30000)]
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
      model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=1.0,
      unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=2, minloglevel=2)
  with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
    f.write(model.getvalue())
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
               "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
               "model_max_length": 2048, "legacy": False}, f)


def make_model_dir(out_dir: str, preset: str, seed: int) -> None:
  import torch
  import transformers
  cfg = presets.get_preset(preset)
  torch.manual_seed(seed)
  hf_cfg = transformers.LlamaConfig(**presets.to_hf_config(cfg))
  model = transformers.LlamaForCausalLM(hf_cfg).eval()
  model.save_pretrained(out_dir, safe_serialization=True)


def make_items(texts: TextMaker, n_docs: int):
  """Alternating ARC-like ("Question: …\\nAnswer:" over short answers) and HellaSwag-like
  (a scene over four sentence endings) items: (context, [4 choices], gold)."""
  items = []
  for d in range(n_docs):
    if d % 2:  # ARC-Challenge: questions of ~30 tokens, answers of a few
      context = f"Question: {texts.sentence(15, 45)}\nAnswer:"
      choices = [texts.words_(texts.rng.randint(2, 9)) for _ in range(4)]
    else:  # HellaSwag: an activity label and ~70 tokens of scene, endings of ~25
      context = (f"{texts.words_(2).title()}: {texts.sentence(20, 45)} "
                 f"{texts.words_(texts.rng.randint(15, 35))}")
      choices = [texts.sentence(15, 35) for _ in range(4)]
    items.append((context, choices, texts.rng.randrange(4)))
  return items


def accuracies(results, items):
  acc, acc_norm = [], []
  for d, (_, choices, gold) in enumerate(items):
    ll = np.array([r[0] for r in results[4 * d:4 * d + 4]])
    acc.append(int(np.argmax(ll)) == gold)
    acc_norm.append(int(np.argmax(ll / np.array([len(c) for c in choices]))) == gold)
  return float(np.mean(acc)), float(np.mean(acc_norm)), acc, acc_norm


def timed(fn, runs: list):
  """fn()'s result; its (wall s, CPU s) appended to `runs`."""
  start, start_cpu = time.perf_counter(), time.process_time()
  result = fn()
  runs.append((time.perf_counter() - start, time.process_time() - start_cpu))
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", default="125m")
  parser.add_argument("--docs", type=int, default=150, help="items (× 4 choices)")
  parser.add_argument("--repeats", type=int, default=3,
                      help="timed runs of each, alternating; the best counts")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--tokenizer_vocab", type=int, default=8000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--xla_default_matmuls", action="store_true",
                      help="XLA:CPU's default matmuls in the scorer (no compiler options)")
  args = parser.parse_args(argv)
  log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

  workdir = tempfile.mkdtemp(prefix="fineline_eval_bench_")
  try:
    texts = TextMaker(args.seed)
    log(f"writing a random {args.preset} model and a tokenizer to {workdir}")
    make_model_dir(workdir, args.preset, args.seed)
    make_tokenizer(workdir, texts, args.tokenizer_vocab)
    items = make_items(texts, args.docs)
    pairs = [(context, " " + choice) for context, choices, _ in items for choice in choices]

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    import torch
    lm = HFLM(pretrained=workdir, batch_size=args.batch_size, device="cpu", dtype="float32")
    instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    lengths = [len(c) + len(x) for c, x in (lm._encode_pair(c, x) for c, x in pairs)]  # pylint: disable=protected-access

    from fineline.convert.hf import load_hf_checkpoint
    from fineline.evaluation.requests import Loglikelihood
    from fineline.evaluation import scorer as scorer_lib
    from fineline.evaluation.scorer import Scorer
    if args.xla_default_matmuls:
      scorer_lib.score_compiler_options = lambda: None
    from fineline.tokenizers import load_vocabulary
    params, cfg, tokenizer_dir = load_hf_checkpoint(workdir)
    scorer = Scorer(cfg, params, load_vocabulary(tokenizer_dir), batch_size=args.batch_size)
    requests = [Loglikelihood(c, x) for c, x in pairs]

    # (wall s, CPU s) of each timed run.
    lm_eval_runs, cold_runs, fineline_runs, fineline_results = [], [], [], []
    theirs = timed(lambda: lm.loglikelihood(instances, disable_tqdm=True), lm_eval_runs)
    ours = timed(lambda: scorer.loglikelihood(requests), cold_runs)
    (cold_s, cold_cpu), = cold_runs
    for repeat in range(args.repeats):
      fineline_results.append(timed(lambda: scorer.loglikelihood(requests), fineline_runs))
      if repeat + 1 < args.repeats:
        timed(lambda: lm.loglikelihood(instances, disable_tqdm=True), lm_eval_runs)
    (lm_eval_s, lm_eval_cpu), (warm_s, warm_cpu) = map(min, (lm_eval_runs, fineline_runs))
    log(f"lm-eval: {len(pairs) / lm_eval_s:.1f} requests/s (best of "
        f"{', '.join(f'{t:.1f}' for t, _ in lm_eval_runs)} s; torch threads "
        f"{torch.get_num_threads()})")
    log(f"fineline: cold {len(pairs) / cold_s:.1f} requests/s ({cold_s:.1f} s), warm "
        f"{len(pairs) / warm_s:.1f} requests/s (best of "
        f"{', '.join(f'{t:.1f}' for t, _ in fineline_runs)} s)")

    delta = np.abs(np.array([o[0] for o in ours]) - np.array([t[0] for t in theirs]))
    acc_ours, norm_ours, per_doc_ours, per_doc_norm_ours = accuracies(ours, items)
    acc_theirs, norm_theirs, per_doc_theirs, per_doc_norm_theirs = accuracies(theirs, items)
    result = {
        "preset": args.preset, "docs": args.docs, "requests": len(pairs),
        "batch_size": args.batch_size,
        "mean_tokens_per_request": float(np.mean(lengths)),
        "lm_eval_requests_per_s": len(pairs) / lm_eval_s,
        "fineline_cold_requests_per_s": len(pairs) / cold_s,
        "fineline_warm_requests_per_s": len(pairs) / warm_s,
        "speedup_cold": lm_eval_s / cold_s,
        "speedup_warm": lm_eval_s / warm_s,
        # CPU seconds of the process: a steadier comparison on a shared machine.
        "cpu_s": {"lm_eval": lm_eval_cpu, "fineline_cold": cold_cpu, "fineline_warm": warm_cpu},
        "cpu_speedup_warm": lm_eval_cpu / warm_cpu,
        "max_abs_loglikelihood_diff": float(delta.max()),
        "repeats": args.repeats,
        "lm_eval_s": [t for t, _ in lm_eval_runs],
        "fineline_warm_s": [t for t, _ in fineline_runs],
        # Each warm run against the lm-eval run just before it.
        "paired_speedups": [lm_s / fl_s for (lm_s, _), (fl_s, _) in zip(lm_eval_runs, fineline_runs)],
        "warm_equals_cold": all(warm == ours for warm in fineline_results),
        "is_greedy_agree": [o[1] for o in ours] == [t[1] for t in theirs],
        "acc": {"fineline": acc_ours, "lm_eval": acc_theirs},
        "acc_norm": {"fineline": norm_ours, "lm_eval": norm_theirs},
        "per_doc_acc_agree": per_doc_ours == per_doc_theirs
                             and per_doc_norm_ours == per_doc_norm_theirs,
    }
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  if args.json:
    print(json.dumps(result))
  else:
    print(f"{result['requests']} requests ({args.docs} items × 4), "
          f"{result['mean_tokens_per_request']:.0f} tokens each on average, batch {args.batch_size}")
    print(f"best of {args.repeats} alternating runs each (cold: the first fineline call)")
    print(f"lm-eval HF backend  {result['lm_eval_requests_per_s']:8.1f} requests/s")
    print(f"fineline cold       {result['fineline_cold_requests_per_s']:8.1f} requests/s  "
          f"({result['speedup_cold']:.2f}× lm-eval, compiles included)")
    print(f"fineline warm       {result['fineline_warm_requests_per_s']:8.1f} requests/s  "
          f"({result['speedup_warm']:.2f}× lm-eval; run by run "
          f"{', '.join(f'{r:.2f}×' for r in result['paired_speedups'])})")
    print(f"CPU seconds: lm-eval {lm_eval_cpu:.1f}, fineline cold {cold_cpu:.1f}, warm "
          f"{warm_cpu:.1f} ({result['cpu_speedup_warm']:.2f}× lm-eval)")
    print(f"max |Δ loglikelihood| {result['max_abs_loglikelihood_diff']:.2e}; "
          f"acc {acc_ours:.3f} vs {acc_theirs:.3f}; acc_norm {norm_ours:.3f} vs {norm_theirs:.3f}; "
          f"per-item agreement {result['per_doc_acc_agree']}; "
          f"is_greedy agreement {result['is_greedy_agree']}")
  return result


if __name__ == "__main__":
  main()
