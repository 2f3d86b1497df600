"""InProcessEvaluator: a suite on the live parameters after each committed save."""

import glob
import json

import numpy as np
import pytest

from suite_fixtures import data_dir  # noqa: F401  (a fixture)

from fineline.errors import UserError
from fineline.evaluation import evaluator
from fineline.evaluation import tasks as task_lib


def test_in_process_evaluator_without_model_dir_is_a_clear_error(data_dir):
  ev = evaluator.InProcessEvaluator(tasks=["t_mc"], data_dir=data_dir, task_modules=())
  params = {"embedding": np.zeros((4, 2), np.float32)}
  with pytest.raises(UserError, match="InProcessEvaluator.model_dir"):
    ev.maybe_evaluate(params, step=1, tokens=1, save_index=0)


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
