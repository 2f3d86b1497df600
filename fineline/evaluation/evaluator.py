"""`InProcessEvaluator` (gin-configurable): a `TaskSuite` run on the live parameters from
inside the trainer after committed saves, writing MODEL_DIR/eval/results.jsonl and
TensorBoard scalars under MODEL_DIR/eval."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Sequence

import gin

from fineline import fileio
from fineline.errors import UserError
from fineline.evaluation import records
from fineline.evaluation import suite as suite_lib
from fineline.evaluation import tasks as task_lib

log = logging.getLogger(__name__)


@gin.configurable
class InProcessEvaluator:
  """Scores downstream tasks on the live train state after committed saves.

  gin binds the evaluation (`tasks`, `num_fewshot`, `limit`, `every_n_saves`, `data_dir`,
  `batch_size`, `task_modules`, `num_samples` for pass@k) and usually `model_dir = %MODEL_DIR`;
  the trainer calls `maybe_evaluate(params, step=, tokens=, save_index=)` after each
  committed save. The model config comes from that save's checkpoint meta, the tokenizer
  from MODEL_DIR/tokenizer/, and the mesh from the parameters' own sharding, so the live
  parameters are scored where they are. Saves whose save_index is a multiple of
  `every_n_saves` append a record to MODEL_DIR/eval/results.jsonl and scalars
  `<task>/<metric>` to TensorBoard under MODEL_DIR/eval. The task data is read once, at
  the first evaluation. A failing task is recorded under the record's `errors` and the
  others go on (the suite's task boundary); a run without model_dir or tokenizer is a
  `UserError` at the first evaluation.
  """

  def __init__(self, tasks: Sequence[str] = ("hellaswag", "arc_easy", "arc_challenge",
                                             "piqa", "winogrande"),
               num_fewshot: int | None = None, limit: int | None = None,
               every_n_saves: int = 1, data_dir: str | None = None, batch_size: int = 16,
               max_length: int | None = None,
               task_modules: Sequence[str] = task_lib.DEFAULT_TASK_MODULES,
               write_samples: bool = False, model_dir: str | None = None,
               model_name: str | None = None, num_samples: int | None = None):
    if every_n_saves < 1:
      raise UserError(f"InProcessEvaluator.every_n_saves must be >= 1, got {every_n_saves}")
    self.tasks, self.every_n_saves = list(tasks), every_n_saves
    self.settings = task_lib.Settings(data_dir=data_dir, num_fewshot=num_fewshot, limit=limit,
                                      num_samples=num_samples)
    self.batch_size, self.max_length = batch_size, max_length
    self.task_modules, self.write_samples = tuple(task_modules), write_samples
    self.model_dir, self.model_name = model_dir, model_name
    self._suite, self._scorer = None, None

  def maybe_evaluate(self, params, *, step: int, tokens: int | None = None,
                     save_index: int | None = None) -> dict | None:
    if save_index is not None and save_index % self.every_n_saves:
      return None
    tick = time.time()
    record = self._evaluate(params, step, tokens)
    record["seconds"] = round(time.time() - tick, 3)
    if self.model_dir:
      self._write(record)
    return record

  def _evaluate(self, params, step, tokens):
    import jax  # pylint: disable=import-outside-toplevel
    from fineline.evaluation.scorer import Scorer  # pylint: disable=import-outside-toplevel
    model_dir = self.model_dir
    if self._scorer is None:
      cfg = _config_from_save(model_dir, step)
      vocab = _run_vocabulary(model_dir)
      leaf = jax.tree.leaves(params)[0]
      mesh = getattr(getattr(leaf, "sharding", None), "mesh", None)
      if mesh is not None and getattr(mesh, "size", 1) == 1:
        mesh = None
      self._scorer = Scorer(cfg, params, vocab, batch_size=self.batch_size,
                            max_length=self.max_length, mesh=mesh)
    if self._suite is None:
      self._suite = suite_lib.TaskSuite(self.tasks, self.settings, self.task_modules)
    # One scorer for the whole run: its jitted functions compile once.
    self._scorer.params = params
    samples = [] if self.write_samples else None
    results = self._suite.run(self._scorer, step=step, samples=samples)
    checkpoint = (os.fspath(fileio.resolve(model_dir) / "checkpoints" / str(step))
                  if model_dir else None)
    record = records.make_record(results, model=self.model_name or model_dir,
                                 checkpoint=checkpoint, step=step, tokens=tokens,
                                 errors=self._suite.last_errors)
    if samples and model_dir and jax.process_index() == 0:
      fileio.write_text(fileio.resolve(model_dir) / "eval" / f"samples_{step}.jsonl",
                        "".join(json.dumps(row) + "\n" for row in samples))
    return record

  def _write(self, record: dict) -> None:
    import jax  # pylint: disable=import-outside-toplevel
    if jax.process_index() != 0:
      return
    eval_dir = fileio.resolve(self.model_dir) / "eval"
    results = fileio.JsonlLog(eval_dir / "results.jsonl")
    results.append(record)
    results.close()
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    # One event file per evaluation, closed at once (tensorboardX's flush() does not wait
    # for its writer thread, close() does), then published whole.
    with tempfile.TemporaryDirectory(prefix=".fineline-tb-") as local:
      writer = SummaryWriter(local, filename_suffix=f".step{record['step']}")
      try:
        for task, metrics in record["tasks"].items():
          for name, value in metrics.items():
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                and name not in ("n", "num_fewshot", "chance")):
              writer.add_scalar(f"{task}/{name}", value, record["step"])
      finally:
        writer.close()
      for name in os.listdir(local):
        fileio.copy_into(os.path.join(local, name), eval_dir / name)


def _config_from_save(model_dir: str | None, step: int):
  from fineline import checkpointing  # pylint: disable=import-outside-toplevel
  from fineline.models.config import LlamaConfig  # pylint: disable=import-outside-toplevel
  if not model_dir:
    raise UserError("InProcessEvaluator.model_dir is not set (bind it to %MODEL_DIR)")
  meta = checkpointing.read_meta(fileio.resolve(model_dir) / "checkpoints" / str(step))
  return LlamaConfig.from_dict(meta["model_config"])


def _run_vocabulary(model_dir: str | None):
  from fineline import tokenizers  # pylint: disable=import-outside-toplevel
  if not model_dir or not (fileio.resolve(model_dir) / "tokenizer").is_dir():
    raise UserError(f"InProcessEvaluator: no tokenizer in {model_dir}/tokenizer/ (the run's "
                    "data names no tokenizer file)")
  return tokenizers.load_tokenizer(fileio.resolve(model_dir) / "tokenizer")
