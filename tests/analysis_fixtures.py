"""Synthetic result records and run directories with known capability dynamics.

Tests import these as `import analysis_fixtures` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Callable

import numpy as np

TOKENS_PER_STEP = 4096 * 256
STEPS = [200 * i for i in range(1, 11)]  # 10 checkpoints


def saturating(a: float, b: float, c: float, t0: float) -> Callable[[float], float]:
  return lambda tokens: a - b * (tokens / t0) ** (-c)


# name -> (true accuracy as a function of tokens, capability, chance, metric)
def default_tasks() -> dict[str, tuple]:
  t0 = STEPS[0] * TOKENS_PER_STEP
  return {
      # Rises early, flat by the last checkpoints.
      "copy_mc": (saturating(0.9, 0.65, 3.0, t0), "copying", 0.25, "acc"),
      # Never leaves chance.
      "arith_mc": (lambda t: 0.25, "arithmetic", 0.25, "acc"),
      # Rises steadily in log tokens.
      "facts_gen": (lambda t: 0.05 + 0.3 * math.log10(t / t0), "facts", 0.0, "exact_match"),
      # Climbs, then drops at the last two checkpoints.
      "grammar_mc": (lambda t: min(0.55 + 0.4 * math.log10(t / t0), 0.8)
                     - (0.12 if t > 8.5 * t0 else 0.0), "grammar", 0.5, "acc_norm"),
  }


def make_records(model: str = "demo", tasks: dict | None = None, steps=None, n: int = 4000,
                 seed: int = 0, tokens_per_step: float = TOKENS_PER_STEP,
                 with_step: bool = True) -> list[dict]:
  """One record per checkpoint; each score is a binomial draw around its true accuracy."""
  rng = np.random.default_rng(seed)
  tasks = default_tasks() if tasks is None else tasks
  records = []
  for step in steps or STEPS:
    tokens = float(step * tokens_per_step)
    entries = {}
    for name, (curve, capability, chance, metric) in tasks.items():
      p = float(np.clip(curve(tokens), 0.0, 1.0))
      score = rng.binomial(n, p) / n
      entry = {metric: score, f"{metric}_stderr": math.sqrt(score * (1 - score) / (n - 1)),
               "n": n, "num_fewshot": 0, "capability": capability, "chance": chance}
      if metric == "acc_norm":  # lm-eval reports acc alongside acc_norm
        entry.update(acc=score, acc_stderr=entry["acc_norm_stderr"])
      entries[name] = entry
    records.append({"model": model, "checkpoint": f"checkpoints/{step}",
                    "step": step if with_step else None, "tokens": tokens, "tasks": entries})
  return records


def loss_at(step: int) -> float:
  return 2.0 + 6.0 * (step * TOKENS_PER_STEP / 1e6) ** -0.3


def write_run(run_dir: pathlib.Path, records: list[dict], log_every: int = 20,
              learning_rate: Callable[[int], float] = lambda step: 3e-4) -> pathlib.Path:
  """A fineline run directory: eval/results.jsonl and metrics.jsonl."""
  (run_dir / "eval").mkdir(parents=True)
  with (run_dir / "eval" / "results.jsonl").open("w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
  last = max(r["step"] or 0 for r in records)
  with (run_dir / "metrics.jsonl").open("w") as f:
    for step in range(log_every, last + 1, log_every):
      f.write(json.dumps({"step": step, "loss": loss_at(step), "learning_rate": learning_rate(step),
                          "tokens": step * TOKENS_PER_STEP, "tokens_per_s": 1000.0}) + "\n")
  return run_dir
