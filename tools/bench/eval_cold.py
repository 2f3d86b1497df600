"""Benchmark: `fineline eval` against `lm_eval`, each timed as a whole command, as a user runs it.

Builds a Hugging Face LLaMA directory of a preset (default `125m`, random weights, float32,
a SentencePiece tokenizer trained here; see eval_throughput.py) and scores the same
documents of the offline copies in the data directory (tools/get_eval_data.sh) with both
command-line tools, alternately:

  lm-eval     lm_eval --model hf … --tasks <task>_local --limit N --batch_size B
              (lm-eval's own task configs, pointed at the local Arrow files by --include_path)
  fineline    fineline eval --checkpoint DIR --tasks … --limit N --batch_size B
              - "compiling": a fresh JAX compilation cache each run (what every run cost
                before the persistent cache, and what a first run still costs);
              - "cached": the compilation cache the previous runs filled (a rerun, the next
                checkpoint of a series).
Every run is a new process: imports, task preparation, loading and compilation included.
The native kernels are built once before timing. Each variant's best wall time counts
(timeit's rule: the machine's speed drifts between runs); each round's ratios are printed
too, and the scores of both tools are compared task by task. Target: fineline ≥ 3× lm-eval.

  python tools/bench/eval_cold.py [--tasks hellaswag,arc_easy] [--limit 200] [--repeats 2] [--json]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import eval_throughput  # tools/bench/, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)

# task → (lm-eval config under lm_eval/tasks/, its local copy under <data_dir>/hf_datasets/,
# lm-eval settings that send it to that split). The offline ARC copy has no test split, so
# both tools score validation.
LOCAL_TASKS = {
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag/none/validation", {}),
    "arc_easy": ("arc/arc_easy.yaml", "ai2_arc/ARC-Easy/validation",
                 {"dataset_name": None, "test_split": None}),
    "arc_challenge": ("arc/arc_challenge.yaml", "ai2_arc/ARC-Challenge/validation",
                      {"dataset_name": None, "test_split": None}),
    "piqa": ("piqa/piqa.yaml", "piqa/none/validation", {"dataset_name": None}),
}


def write_lm_eval_tasks(directory: str, tasks: list[str], data_dir: str) -> None:
  import lm_eval  # pylint: disable=import-outside-toplevel
  configs = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
  for task in tasks:
    config, local, overrides = LOCAL_TASKS[task]
    arrow = sorted(glob.glob(os.path.join(data_dir, "hf_datasets", local, "*.arrow")))
    if not arrow:
      sys.exit(f"no {task} copy under {data_dir}/hf_datasets/{local}: run tools/get_eval_data.sh")
    lines = [f"include: {os.path.join(configs, config)}", f"task: {task}_local",
             "dataset_path: arrow", "dataset_kwargs:", "  data_files:",
             f"    validation: {json.dumps(arrow)}", "training_split: null"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in overrides.items()]
    with open(os.path.join(directory, f"{task}_local.yaml"), "w") as f:
      f.write("\n".join(lines) + "\n")


def timed_command(command: list[str], env: dict) -> float:
  start = time.perf_counter()
  result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if result.returncode:
    sys.exit(f"{' '.join(command[:3])} … failed ({result.returncode}):\n{result.stderr[-3000:]}")
  return seconds


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", default="125m")
  parser.add_argument("--tasks", default="hellaswag,arc_easy")
  parser.add_argument("--limit", type=int, default=200)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=2, help="alternating rounds")
  parser.add_argument("--data_dir", default=os.environ.get("FINELINE_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "fineline", "eval_data"))
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  args = parser.parse_args(argv)
  log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (
      lambda *a: print(*a, flush=True))
  tasks = [t for t in args.tasks.split(",") if t]

  work = tempfile.mkdtemp(prefix="fineline_eval_cold_")
  try:
    model, include = os.path.join(work, "model"), os.path.join(work, "lm_eval_tasks")
    os.makedirs(model)
    os.makedirs(include)
    log(f"writing a random {args.preset} model and a tokenizer to {model}")
    eval_throughput.make_model_dir(model, args.preset, 0)
    eval_throughput.make_tokenizer(model, eval_throughput.TextMaker(0), 8000)
    write_lm_eval_tasks(include, tasks, args.data_dir)

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "FINELINE_CACHE_DIR": os.path.join(work, "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    # fineline from this checkout, whichever one the environment has installed.
    ours_env = {**env, "PYTHONPATH": os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    common = ["--limit", str(args.limit), "--batch_size", str(args.batch_size)]
    # lm-eval adds a results file per run to its output dir: one dir per round.
    lm_eval_out = lambda round_: os.path.join(work, f"lm_eval_out_{round_}")
    lm_eval = lambda round_: [
        os.path.join(BIN, "lm_eval"), "--model", "hf", "--model_args",
        f"pretrained={model},dtype=float32", "--device", "cpu", "--include_path", include,
        "--tasks", ",".join(f"{t}_local" for t in tasks), "--output_path",
        lm_eval_out(round_), *common]
    ours_out = os.path.join(work, "fineline.json")
    fineline = [os.path.join(BIN, "fineline"), "eval", "--checkpoint", model, "--tasks",
                ",".join(tasks), "--num_fewshot", "0", "--data_dir", args.data_dir,
                "--output", ours_out, "--quiet", *common]
    subprocess.run([sys.executable, "-c", "from fineline.models import native; "
                    "native.available()"], env=ours_env, check=True)  # kernels built, untimed

    times = {"lm_eval": [], "fineline_compiling": [], "fineline_cached": []}
    for round_ in range(args.repeats):
      times["lm_eval"].append(timed_command(lm_eval(round_), env))
      fresh = {**ours_env, "JAX_COMPILATION_CACHE_DIR": tempfile.mkdtemp(dir=work)}
      times["fineline_compiling"].append(timed_command(fineline, fresh))
      times["fineline_cached"].append(timed_command(fineline, ours_env))
      log(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))

    ours = json.load(open(ours_out))["tasks"]
    theirs_file, = glob.glob(os.path.join(lm_eval_out(args.repeats - 1), "**",
                                          "results_*.json"), recursive=True)
    theirs = json.load(open(theirs_file))["results"]
    scores = {t: {m: {"fineline": ours[t][m], "lm_eval": theirs[f"{t}_local"][f"{m},none"]}
                  for m in ("acc", "acc_norm")} for t in tasks}
    best = {k: min(v) for k, v in times.items()}
    result = {
        "preset": args.preset, "tasks": tasks, "limit": args.limit,
        "batch_size": args.batch_size, "seconds": times, "best_s": best,
        "speedup_compiling": best["lm_eval"] / best["fineline_compiling"],
        "speedup_cached": best["lm_eval"] / best["fineline_cached"],
        "paired_speedups_cached": [a / b for a, b in zip(times["lm_eval"],
                                                         times["fineline_cached"])],
        "scores": scores,
        "scores_equal": all(abs(s["fineline"] - s["lm_eval"]) < 1e-9
                            for metrics in scores.values() for s in metrics.values()),
    }
  finally:
    shutil.rmtree(work, ignore_errors=True)
  if args.json:
    print(json.dumps(result))
  else:
    print(f"{args.preset}, {', '.join(tasks)}: {args.limit} documents each, batch "
          f"{args.batch_size}; whole commands, best of {args.repeats} alternating rounds")
    print(f"lm_eval                    {best['lm_eval']:7.1f} s")
    print(f"fineline eval, compiling   {best['fineline_compiling']:7.1f} s  "
          f"({result['speedup_compiling']:.2f}× lm-eval)")
    print(f"fineline eval, cached      {best['fineline_cached']:7.1f} s  "
          f"({result['speedup_cached']:.2f}× lm-eval; round by round "
          f"{', '.join(f'{r:.2f}×' for r in result['paired_speedups_cached'])})")
    for task, metrics in scores.items():
      print(f"{task}: " + ", ".join(f"{m} {s['fineline']:.4f} vs {s['lm_eval']:.4f}"
                                    for m, s in metrics.items()))
  return result


if __name__ == "__main__":
  main()
