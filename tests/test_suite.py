"""TaskSuite: tasks rendered and scored under seqio's contract, failures caught at the task
boundary."""

import math

import pytest

from suite_fixtures import FakeScorer, data_dir  # noqa: F401  (a fixture)

from fineline.evaluation import suite as suite_lib
from fineline.evaluation import tasks as task_lib


def _suite(names, data_dir, **kw):
  return suite_lib.TaskSuite(names, task_lib.Settings(data_dir=data_dir, **kw),
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


def test_missing_dataset_error_names_task_and_directory(tmp_path):
  suite = suite_lib.TaskSuite(["piqa"], task_lib.Settings(data_dir=str(tmp_path)))
  assert suite.prepared == []
  assert "'piqa'" in suite.errors["piqa"] and str(tmp_path) in suite.errors["piqa"]


def test_unknown_task_is_a_clear_error(data_dir):
  with pytest.raises(ValueError, match="no_such_task"):
    _suite(["no_such_task"], data_dir)


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
