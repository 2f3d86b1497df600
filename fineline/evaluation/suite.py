"""The task suite: downstream tasks under seqio's evaluation contract, on a `Scorer`.

`TaskSuite(names, settings)` looks the tasks up in the task registry (a group, such as
`mmlu`, stands for its subtasks and is reported as their size-weighted mean) and renders
each task's requests once, so a suite can score many checkpoints. Tasks registered through
`fineline.evaluation.tasks` are rendered and their metric functions called directly, as
`seqio.Evaluator` calls them, without loading seqio or TensorFlow; a task registered only
with seqio gets a `seqio.Evaluator`, which reads and caches its dataset.
`TaskSuite.run(scorer)` gathers the requests of all tasks, scores each kind in one pass
(the scorer sorts, buckets and shares contexts across tasks), hands each task's slice to
its metric functions and returns one entry per task with lm-eval's metric names.

Failures are caught in one place, at the task boundary (`_task_boundary`): a task whose
data, scoring or metrics fail is logged with its name and error and left out (listed
under `errors` / `last_errors`); the others go on. Nothing above a task catches.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import time
from typing import Any, Sequence

import numpy as np

from fineline.evaluation import tasks as task_lib
from fineline.evaluation.requests import Generate, Loglikelihood

log = logging.getLogger(__name__)


class TaskSuite:
  """The rendered requests and metric functions of `names` under `settings`, built once."""

  def __init__(self, names: Sequence[str], settings: task_lib.Settings | None = None,
               task_modules: Sequence[str] | None = task_lib.DEFAULT_TASK_MODULES):
    if task_modules:
      task_lib.import_task_modules(task_modules)
    self.settings = settings or task_lib.Settings()
    self.names = task_lib.resolve(list(names))
    self.groups = {n: task_lib.subtasks(n) for n in self.names}
    self.errors: dict[str, str] = {}  # tasks that could not be prepared
    self.last_errors: dict[str, str] = {}  # those plus the failures of the latest run
    # task → its RequestTask, or the seqio.Evaluator of a task known only to seqio
    self._evaluators: dict[str, Any] = {}
    self._examples: dict[str, list[dict]] = {}
    self._prep_seconds: dict[str, float] = {}
    self._fewshot: dict[str, int] = {}
    for leaf in dict.fromkeys(t for leaves in self.groups.values() for t in leaves):
      tick = time.time()
      with _task_boundary(leaf, self.errors), task_lib.use_settings(self.settings):
        self._fewshot[leaf] = task_lib.effective_fewshot(leaf)
        task = task_lib.request_task(leaf)
        if task is not None:
          evaluator = task
          self._examples[leaf] = [task_lib.example(r) for r in task.examples(self.settings)]
        else:
          evaluator, self._examples[leaf] = _seqio_evaluator(leaf)
        self._evaluators[leaf] = evaluator
      self._prep_seconds[leaf] = time.time() - tick

  @property
  def prepared(self) -> list[str]:
    """The tasks whose data is ready."""
    return list(self._evaluators)

  @property
  def num_requests(self) -> int:
    return sum(len(v) for v in self._examples.values())

  def run(self, scorer, *, step: int | None = None, progress: bool = False,
          samples: list | None = None) -> dict[str, dict[str, Any]]:
    """{task: metrics} for every task that succeeded; `samples`, when a list, receives
    one dict per request (task, doc, choice, continuation, loglikelihood, …)."""
    errors = self.last_errors = dict(self.errors)
    outputs, score_seconds = self._score(scorer, progress, errors)
    leaf_results = {}
    for leaf, evaluator in self._evaluators.items():
      if leaf in errors:
        continue
      tick = time.time()
      with _task_boundary(leaf, errors):
        leaf_results[leaf] = self._metrics(leaf, evaluator, outputs[leaf], step)
      if leaf not in leaf_results:
        continue
      leaf_results[leaf]["seconds"] = round(
          self._prep_seconds[leaf] + score_seconds[leaf] + time.time() - tick, 3)
      log.info("evaluated %s in %.1fs: %s", leaf, leaf_results[leaf]["seconds"],
               {k: v for k, v in leaf_results[leaf].items() if k in ("acc", "acc_norm",
                "exact_match", "perplexity", "bits_per_byte", "pass@1")})
      # Per-request outcomes a metric reports (code execution results), for the samples.
      details = leaf_results[leaf].pop("sample_details", None)
      if samples is not None:
        samples.extend(_samples(leaf, self._examples[leaf], outputs[leaf], details))
    self._prep_seconds = collections.defaultdict(float)  # data preparation is paid once
    results = {}
    for name, leaves in self.groups.items():
      failed = [t for t in leaves if t not in leaf_results]
      if failed:
        if len(leaves) > 1:
          errors[name] = f"subtasks failed: {failed}"
        continue
      entry = leaf_results[name] if leaves == [name] else _aggregate(
          {t: leaf_results[t] for t in leaves})
      info = task_lib.task_info(name)
      split = (self._examples[leaves[0]] or [{"meta": {}}])[0]["meta"].get("split")
      entry.update(num_fewshot=self._fewshot[leaves[0]], capability=info.capability,
                   chance=info.chance, primary_metric=info.primary_metric, split=split)
      results[name] = entry
    return results

  def _score(self, scorer, progress: bool, errors: dict):
    """All requests of all tasks, one scorer call per kind; when a call fails, the tasks
    of that kind are retried one by one so that only the failing ones are dropped."""
    by_kind = collections.defaultdict(list)  # kind → [(leaf, index, example)]
    for leaf, examples in self._examples.items():
      for i, ex in enumerate(examples):
        by_kind[ex["kind"]].append((leaf, i, ex))
    outputs = {leaf: [None] * len(ex) for leaf, ex in self._examples.items()}
    seconds = collections.defaultdict(float)
    for kind, items in by_kind.items():
      leaves = list(dict.fromkeys(leaf for leaf, _, _ in items))
      if len(leaves) > 1:
        try:
          self._score_items(scorer, kind, items, outputs, seconds, progress)
          continue
        except Exception as e:  # pylint: disable=broad-except  (retried task by task below)
          log.warning("scoring the %s requests of %d tasks together failed (%s: %s); "
                      "retrying task by task", kind, len(leaves), type(e).__name__, e)
      for leaf in leaves:
        with _task_boundary(leaf, errors):
          self._score_items(scorer, kind, [it for it in items if it[0] == leaf], outputs,
                            seconds, progress)
    return outputs, seconds

  @staticmethod
  def _score_items(scorer, kind, items, outputs, seconds, progress):
    tick = time.time()
    if kind == "loglikelihood":
      got = scorer.loglikelihood([Loglikelihood(ex["context"], ex["continuation"])
                                  for _, _, ex in items], progress=progress)
    elif kind == "loglikelihood_rolling":
      got = [(ll, False) for ll in scorer.loglikelihood_rolling(
          [ex["context"] for _, _, ex in items], progress=progress)]
    elif kind == "generate":
      got = scorer.generate([Generate(ex["context"], tuple(ex["until"]), ex["max_new_tokens"],
                                      **_sampling(ex["meta"])) for _, _, ex in items],
                            progress=progress)
    else:
      raise ValueError(f"unknown request kind {kind!r}")
    share = (time.time() - tick) / max(len(items), 1)  # apportioned by request count
    for (leaf, i, _), out in zip(items, got):
      outputs[leaf][i] = out
      seconds[leaf] += share

  def _metrics(self, leaf: str, evaluator, outputs: list, step):
    if isinstance(evaluator, task_lib.RequestTask):
      metrics = task_lib.compute_metrics(evaluator, self._examples[leaf], outputs)
      return {k: _plain(v) for k, v in metrics.items()}
    if outputs and isinstance(outputs[0], str):
      encoded = [task_lib.BYTE_VOCAB.encode(text) for text in outputs]
      width = max([len(e) for e in encoded] + [1])
      rows = [e + [0] * (width - len(e)) for e in encoded]  # 0 is padding to the vocabulary
      model_fns = {"predict_fn": lambda ds: list(enumerate(rows))}
    else:
      model_fns = {"score_fn": lambda ds: [(i, (float(ll), float(g)))
                                           for i, (ll, g) in enumerate(outputs)]}
    future, _ = evaluator.evaluate(compute_metrics=True, step=step, **model_fns)
    metrics = future.result()[leaf]
    return {k: _plain(v.value if hasattr(v, "value") else v) for k, v in metrics.items()}


@contextlib.contextmanager
def _task_boundary(task: str, errors: dict):
  """Where a task's failure stops: recorded in `errors` under its name, logged with its
  traceback, and the suite goes on with the other tasks."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    errors[task] = f"{type(e).__name__}: {e}"
    log.exception("evaluation task %s failed and is skipped: %s", task, errors[task])


def _seqio_evaluator(leaf: str):
  """(seqio.Evaluator, its examples) for a task registered only with seqio."""
  # pylint: disable=import-outside-toplevel
  import seqio
  import tensorflow_datasets as tfds
  from fineline.evaluation import seqio_tasks
  evaluator = seqio.Evaluator(leaf, seqio_tasks.RequestFeatureConverter(),
                              eval_split=task_lib.SPLIT, async_compute_metrics=False)
  if leaf not in evaluator.cached_task_datasets:
    raise ValueError(f"task {leaf!r} has no metric functions")
  return evaluator, [_decode(ex) for ex in tfds.as_numpy(evaluator.cached_task_datasets[leaf])]


def _decode(ex: dict) -> dict:
  """A seqio task-dataset example (numpy) as the evaluator holds it (`tasks.example`)."""
  text = lambda k: ex[k].decode("utf-8")
  return {"kind": text("kind"), "context": text("context"),
          "continuation": text("continuation"), "until": json.loads(text("until")),
          "max_new_tokens": int(ex["max_new_tokens"]), "meta": json.loads(text("meta")),
          "target": text("targets_pretokenized")}


def _plain(v):
  if isinstance(v, (np.floating, np.integer)):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v


def _aggregate(subtasks: dict[str, dict]) -> dict:
  """Size-weighted means of the subtasks' metrics and the pooled standard errors
  (lm-eval's group aggregation with weight_by_size)."""
  sizes = {t: r["n"] for t, r in subtasks.items()}
  total = sum(sizes.values())
  first = next(iter(subtasks.values()))
  metrics = [k for k in first if k not in ("n", "seconds") and not k.endswith("_stderr")
             and isinstance(first[k], (int, float))]
  out: dict[str, Any] = {"n": total}
  for m in metrics:
    out[m] = sum(r[m] * sizes[t] for t, r in subtasks.items()) / total
    errs = [(r.get(f"{m}_stderr"), sizes[t]) for t, r in subtasks.items()]
    if all(e is not None for e, _ in errs) and total > len(errs):
      pooled = sum((n - 1) * e ** 2 * n for e, n in errs) / (total - len(errs))
      out[f"{m}_stderr"] = math.sqrt(pooled / total)
    else:
      out[f"{m}_stderr"] = None
  out["seconds"] = round(sum(r.get("seconds", 0.0) for r in subtasks.values()), 3)
  out["subtasks"] = subtasks
  return out


def _sampling(meta: dict) -> dict:
  """A generation request's sampling settings, when its task samples."""
  return {k: meta[k] for k in ("temperature", "top_p", "seed") if k in meta}


def _samples(leaf: str, examples: list[dict], outputs: list,
             details: list | None = None) -> list[dict]:
  rows = []
  for i, (ex, out) in enumerate(zip(examples, outputs)):
    row = {"task": leaf, **{k: v for k, v in ex["meta"].items() if k in ("doc", "choice",
                                                                       "gold")}}
    if ex["kind"] == "generate":
      row.update(generation=out, answers=ex["meta"].get("answers"))
    else:
      row.update(continuation=ex["continuation"] if ex["kind"] == "loglikelihood" else None,
                 loglikelihood=float(out[0]), is_greedy=bool(out[1]))
    if details is not None:
      row.update(details[i])
    rows.append(row)
  return rows
