"""The contract between task definitions and the evaluator.

Task modules (the `evals` package, or any module named in `TASK_MODULES`) register
tasks (seqio Tasks too) whose examples are *rendered requests*: one example per
log-likelihood request (a multiple-choice document gives one per choice) or per
generation. Every example carries

  kind                  "loglikelihood" | "loglikelihood_rolling" | "generate"
  context, continuation the request strings (continuation empty for "generate")
  until                 JSON list of stop sequences ("generate")
  max_new_tokens        int32 ("generate")
  meta                  JSON object with what the task's metric needs (doc id, gold, …)
  targets(_pretokenized) the gold text; `targets` holds it as UTF-8 byte ids

Rendering is lm-evaluation-harness's, so tokenisation belongs to the scorer (joint
encoding of context and continuation), not to seqio: the `targets` feature uses
`seqio.ByteVocabulary`, which round-trips any text exactly. The task metric functions
receive targets post-processed into dicts (`meta` plus `text`) and scores shaped N×2
(log-likelihood, is_greedy) or generated strings, and return floats named as lm-eval
names them.

Run settings (data directory, few-shot count, document limit) are not part of a task's
name: `use_settings(...)` makes them current while an evaluator reads the task data.
`TaskInfo` (capability group, chance level, default few-shot count) is registered next to
each task so results can be labelled without importing the task modules.

Task modules register through `register_task` / `register_group`, which keep each task's
request examples function and metric functions here, without TensorFlow: `fineline eval`
renders and scores these tasks without importing seqio or TensorFlow at all. The same
tasks are `seqio.Task`s (and groups `seqio.Mixture`s) in seqio's registries as soon as
seqio is loaded in the process (`fineline.evaluation.seqio_tasks`, imported on first use
or by any module that imports seqio before the task modules), and tasks registered only
with seqio are evaluated through `seqio.Evaluator`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import json
import os
import sys
from typing import Any, Callable, Iterator, Sequence

from fineline.errors import UserError

KINDS = ("loglikelihood", "loglikelihood_rolling", "generate")
SPLIT = "eval"  # the single split every evaluation task exposes
DEFAULT_TASK_MODULES = ("evals.multiple_choice", "evals.generation", "evals.perplexity",
                        "evals.code")
# Defined with seqio (`fineline.evaluation.seqio_tasks`), loaded when first read.
_SEQIO_NAMES = ("BYTE_VOCAB", "OUTPUT_FEATURES", "examples_dataset", "RequestFeatureConverter")


def __getattr__(name: str):
  if name in _SEQIO_NAMES:
    from fineline.evaluation import seqio_tasks  # pylint: disable=import-outside-toplevel
    return getattr(seqio_tasks, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_data_dir() -> str:
  """$FINELINE_DATA_DIR, else ~/.cache/fineline/eval_data."""
  return os.environ.get("FINELINE_DATA_DIR") or os.path.expanduser("~/.cache/fineline/eval_data")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Per-run settings: `num_fewshot` None keeps each task's default; `limit` takes the
  first N documents, as lm-eval's --limit does. `num_samples`, `temperature` and `top_p`
  are for tasks that sample several generations per document (pass@k); None keeps the
  task's defaults."""
  data_dir: str | None = None
  num_fewshot: int | None = None
  limit: int | None = None
  num_samples: int | None = None
  temperature: float | None = None
  top_p: float | None = None

  @property
  def resolved_data_dir(self) -> str:
    return self.data_dir or default_data_dir()


_SETTINGS: contextvars.ContextVar[Settings] = contextvars.ContextVar("settings", default=Settings())


@contextlib.contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
  token = _SETTINGS.set(settings)
  try:
    yield settings
  finally:
    _SETTINGS.reset(token)


def current_settings() -> Settings:
  return _SETTINGS.get()


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  name: str
  capability: str
  chance: float | None = None
  num_fewshot: int = 0  # the task's default
  primary_metric: str = "acc"


_INFO: dict[str, TaskInfo] = {}


def register_info(info: TaskInfo) -> None:
  _INFO[info.name] = info


def task_info(name: str) -> TaskInfo:
  return _INFO.get(name) or TaskInfo(name=name, capability="unknown")


def effective_fewshot(name: str) -> int:
  k = current_settings().num_fewshot
  return task_info(name).num_fewshot if k is None else k


@dataclasses.dataclass(frozen=True)
class RequestTask:
  """A task as fineline holds it: `examples(settings)` gives its rendered request examples
  (dicts: kind, context, continuation, until, max_new_tokens, meta, target) and each
  metric function takes (targets, scores) or (targets, predictions), seqio's contract."""
  name: str
  examples: Callable[[Settings], list[dict]]
  metric_fns: tuple[Callable[..., dict], ...]


_TASKS: dict[str, RequestTask] = {}
_GROUPS: dict[str, tuple[str, ...]] = {}


def register_task(task: RequestTask, info: TaskInfo) -> None:
  """Adds (or replaces) a task; mirrored into seqio's registry when seqio is loaded."""
  _TASKS[task.name] = task
  _GROUPS.pop(task.name, None)
  register_info(info)
  if "seqio" in sys.modules:
    from fineline.evaluation import seqio_tasks  # pylint: disable=import-outside-toplevel
    seqio_tasks.add_task(task)


def register_group(name: str, subtasks: Sequence[str], info: TaskInfo) -> None:
  """A group scored as the size-weighted mean of its subtasks (a seqio Mixture there)."""
  _GROUPS[name] = tuple(subtasks)
  register_info(info)
  if "seqio" in sys.modules:
    from fineline.evaluation import seqio_tasks  # pylint: disable=import-outside-toplevel
    seqio_tasks.add_group(name, _GROUPS[name])


def registered_tasks() -> dict[str, RequestTask]:
  return dict(_TASKS)


def registered_groups() -> dict[str, tuple[str, ...]]:
  return dict(_GROUPS)


def request_task(name: str) -> RequestTask | None:
  """The task registered here under `name` (None for seqio-only tasks and groups)."""
  return _TASKS.get(name)


def subtasks(name: str) -> list[str]:
  """The leaf tasks of a task or group name (a seqio-only name asks seqio)."""
  if name in _GROUPS:
    return list(_GROUPS[name])
  if name in _TASKS:
    return [name]
  from fineline.evaluation import seqio_tasks  # pylint: disable=import-outside-toplevel
  return seqio_tasks.subtasks(name)


def import_task_modules(modules: Sequence[str] = DEFAULT_TASK_MODULES) -> None:
  """Imports the modules that register tasks (T5X's TASK_MODULES pattern)."""
  for module in modules:
    importlib.import_module(module)


def resolve(names: Sequence[str]) -> list[str]:
  """Checks that each name is a registered task or mixture; ValueError listing the known
  ones otherwise."""
  known = set(_TASKS) | set(_GROUPS)
  if "seqio" in sys.modules and any(n not in known for n in names):
    # Tasks a module registered with seqio itself.
    from fineline.evaluation import seqio_tasks  # pylint: disable=import-outside-toplevel
    known |= seqio_tasks.registered_names()
  missing = [n for n in names if n not in known]
  if missing:
    raise UserError(f"unknown evaluation task(s) {missing}; registered: "
                     f"{sorted(n for n in known if n in _INFO) or sorted(known)}")
  return list(names)


def postprocess(text, example=None, is_target=False):
  """Targets become dicts (the example's `meta` plus the gold `text`); predictions stay."""
  if not is_target:
    return text
  meta = example["meta"]
  meta = json.loads(meta.decode() if isinstance(meta, bytes) else meta)
  return {**meta, "text": text}


def example(request: dict) -> dict:
  """A rendered request as the evaluator holds it: the form it takes through seqio's
  dataset (strings, `until` a list, `meta` through JSON) with its gold text as `target`."""
  return {"kind": request["kind"], "context": request["context"],
          "continuation": request.get("continuation", ""),
          "until": list(request.get("until", ())),
          "max_new_tokens": int(request.get("max_new_tokens", 0)),
          "meta": json.loads(json.dumps(request.get("meta", {}))),
          "target": request.get("target", "")}


def compute_metrics(task: RequestTask, examples: Sequence[dict], outputs: list) -> dict[str, Any]:
  """The task's metrics for `outputs` (one (log-likelihood, is_greedy) pair or generated
  text per example), called as `seqio.Evaluator` calls them: targets post-processed into
  dicts, scores or predictions in example order."""
  targets = [{**ex["meta"], "text": ex["target"]} for ex in examples]
  out: dict[str, Any] = {}
  for fn in task.metric_fns:
    if outputs and isinstance(outputs[0], str):
      out.update(fn(targets, list(outputs)))
    else:
      out.update(fn(targets, [(float(ll), float(g)) for ll, g in outputs]))
  return out
