"""TaskSuite (seqio.Evaluator glue) and InProcessEvaluator."""

import glob
import json
import math
import os

import numpy as np
import pytest

from eval_fixtures import write_jsonl

from evals import capabilities, registry
from fineline.evaluation import evaluator
from fineline.evaluation import tasks as task_lib
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


def _suite(names, data_dir, **kw):
  return evaluator.TaskSuite(names, task_lib.Settings(data_dir=data_dir, **kw),
                             task_modules=())


def test_scores_and_labels_tasks_batched_across_tasks(data_dir):
  scorer = FakeScorer()
  results = _suite(["t_mc", "t_gen", "t_mc_big"], data_dir).run(scorer)
  mc = results["t_mc"]
  assert (mc["n"], mc["acc"]) == (5, 3 / 5)
  # acc_norm divides by the choice's characters (no leading space): " cccc" wins, -5/4.
  assert mc["acc_norm"] == 2 / 5
  assert mc["acc_stderr"] == pytest.approx(math.sqrt(0.6 * 0.4 / 4))
  assert (mc["capability"], mc["chance"], mc["num_fewshot"]) == ("math", 1 / 3, 0)
  assert results["t_gen"]["exact_match"] == 0.25  # " 42\nmore" cut at "\n" for item 7 only
  assert mc["seconds"] >= 0
  # One scorer call per request kind for all tasks together.
  assert sorted(scorer.calls) == [("generate", 4), ("loglikelihood", 60)]


def test_broken_task_is_reported_and_skipped(data_dir):
  suite = _suite(["t_mc", "t_broken", "t_gen", "t_gen_bad"], data_dir)
  results = suite.run(FakeScorer(fail_on="explode"))
  assert set(results) == {"t_mc", "t_gen"}
  assert "the loader is broken" in suite.last_errors["t_broken"]
  assert "generation exploded" in suite.last_errors["t_gen_bad"]
  assert results["t_gen"]["exact_match"] == 0.25


def test_group_is_size_weighted_with_pooled_stderr(data_dir):
  from lm_eval.api.metrics import pooled_sample_stderr
  results = _suite(["t_group"], data_dir).run(FakeScorer())
  group, subs = results["t_group"], results["t_group"]["subtasks"]
  assert group["n"] == 20
  assert group["acc"] == pytest.approx((5 * subs["t_mc"]["acc"] + 15 * subs["t_mc_big"]["acc"])
                                       / 20)
  assert group["acc_stderr"] == pytest.approx(pooled_sample_stderr(
      [subs["t_mc"]["acc_stderr"], subs["t_mc_big"]["acc_stderr"]], [5, 15]))


def test_limit_and_fewshot_settings(data_dir):
  suite = _suite(["t_mc"], data_dir, limit=2, num_fewshot=2)
  results = suite.run(FakeScorer())
  assert (results["t_mc"]["n"], results["t_mc"]["num_fewshot"]) == (2, 2)
  contexts = {ex["context"] for ex in suite._examples["t_mc"]}
  # Two shots from the other items, never the item itself.
  for ctx in contexts:
    query = ctx.rsplit("\n\n", 1)[1]
    assert ctx.count("\n\n") == 2 and query not in ctx.rsplit("\n\n", 1)[0]


def test_a_task_known_only_to_seqio_scores_as_the_same_task_rendered_directly(data_dir):
  """Tasks registered here are scored without seqio; a task a module registered with
  seqio alone goes through seqio.Evaluator, and both give the same record."""
  import seqio
  from fineline.evaluation import seqio_tasks
  assert {"t_mc", "t_gen", "t_group"} <= seqio_tasks.registered_names()  # mirrored
  for name in ("t_mc", "t_gen"):
    mine = task_lib.request_task(name)
    seqio_tasks.add_task(task_lib.RequestTask(f"{name}_seqio", mine.examples, mine.metric_fns))
  assert task_lib.request_task("t_mc_seqio") is None
  assert "t_mc_seqio" in seqio.TaskRegistry.names()
  direct = _suite(["t_mc", "t_gen"], data_dir, limit=4).run(FakeScorer())
  via_seqio = _suite(["t_mc_seqio", "t_gen_seqio"], data_dir, limit=4).run(FakeScorer())
  for name in ("t_mc", "t_gen"):
    drop = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "capability",
                                                             "chance", "primary_metric")}
    assert drop(via_seqio[f"{name}_seqio"]) == drop(direct[name])


def test_missing_dataset_error_names_task_and_directory(tmp_path):
  suite = evaluator.TaskSuite(["piqa"], task_lib.Settings(data_dir=str(tmp_path)))
  assert suite.prepared == []
  assert "'piqa'" in suite.errors["piqa"] and str(tmp_path) in suite.errors["piqa"]


def test_unknown_task_is_a_clear_error(data_dir):
  with pytest.raises(ValueError, match="no_such_task"):
    _suite(["no_such_task"], data_dir)


def test_in_process_evaluator_never_raises(data_dir):
  ev = evaluator.InProcessEvaluator(tasks=["t_mc"], data_dir=data_dir, task_modules=())
  params = {"embedding": np.zeros((4, 2), np.float32)}
  record = ev.maybe_evaluate(params, step=1, tokens=1, save_index=0)  # no model_dir, no cfg
  assert record["tasks"] == {} and "model_cfg" in record["errors"]["evaluation"]


def _scalar_steps(files):
  from tensorflow.compat.v1.train import summary_iterator
  tags = {}
  for path in files:
    for event in summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
  return {k: sorted(v) for k, v in tags.items()}


def test_training_run_writes_a_record_per_save_and_survives_a_broken_task(tmp_path, data_dir):
  """`fineline train` with gin/evals/quick.gin, its task list swapped for small local ones."""
  from fineline import ginconf
  from fineline.training import trainer
  model_dir = tmp_path / "run"
  ginconf.parse(["runs/tiny_cpu.gin", "evals/quick.gin"], [
      f"MODEL_DIR = '{model_dir}'", "TRAIN_STEPS = 4", "SAVE_EVERY_STEPS = 1",
      "KEEP_EVERY_STEPS = 1", "LOG_EVERY_STEPS = 2", "BATCH_SIZE = 4", "SEQUENCE_LENGTH = 64",
      "WARMUP_STEPS = 1", "InProcessEvaluator.every_n_saves = 2",
      "InProcessEvaluator.tasks = ['t_mc', 't_broken', 't_mc_big']",
      "InProcessEvaluator.task_modules = []", "InProcessEvaluator.limit = None",
      f"InProcessEvaluator.data_dir = '{data_dir}'", "InProcessEvaluator.batch_size = 8"])
  try:
    final = ginconf.call(trainer.train)
  finally:
    import gin
    gin.clear_config()
  assert final["step"] == 4
  lines = [json.loads(l) for l in open(model_dir / "eval" / "results.jsonl")]
  # Saves at steps 1-4 (save_index = step); every second one is evaluated.
  assert [(r["step"], r["tokens"]) for r in lines] == [(2, 512), (4, 1024)]
  for record in lines:
    assert set(record["tasks"]) == {"t_mc", "t_mc_big"}
    assert record["checkpoint"] == str(model_dir / "checkpoints" / str(record["step"]))
    assert "the loader is broken" in record["errors"]["t_broken"]
    assert record["tasks"]["t_mc_big"]["n"] == 15
    assert 0 <= record["tasks"]["t_mc"]["acc"] <= 1 and record["tasks"]["t_mc"]["seconds"] >= 0
  scalars = _scalar_steps(glob.glob(str(model_dir / "eval" / "events.*")))
  assert scalars["t_mc/acc"] == [2, 4] and scalars["t_mc_big/acc_norm"] == [2, 4]


@pytest.mark.parametrize("gin_file", ["evals/downstream.gin", "evals/quick.gin",
                                      "evals/skills.gin"])
def test_gin_suites_name_registered_tasks(gin_file, tmp_path):
  import gin
  from fineline import ginconf
  from fineline.training import trainer  # noqa: F401  (registers train)
  ginconf.parse(["runs/tiny_cpu.gin", gin_file], [f"MODEL_DIR = '{tmp_path}'"])
  try:
    tasks = gin.query_parameter("InProcessEvaluator.tasks")
    modules = gin.query_parameter("InProcessEvaluator.task_modules")
    assert gin.query_parameter("InProcessEvaluator.model_dir") is not None
  finally:
    gin.clear_config()
  task_lib.import_task_modules(modules)
  assert task_lib.resolve(tasks) == tasks
