"""The contract between task definitions and the evaluator.

Task modules (the `evals` package, or any module named in `TASK_MODULES`) register
`seqio.Task`s whose examples are *rendered requests*: one example per log-likelihood
request (a multiple-choice document gives one per choice) or per generation. Every
example carries

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
each seqio task so results can be labelled without importing the task modules.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import json
import os
from typing import Iterator, Sequence

import seqio
import tensorflow as tf

from fineline.errors import UserError

KINDS = ("loglikelihood", "loglikelihood_rolling", "generate")
SPLIT = "eval"  # the single split every evaluation task exposes
DEFAULT_TASK_MODULES = ("evals.multiple_choice", "evals.generation", "evals.perplexity",
                        "evals.code")
BYTE_VOCAB = seqio.ByteVocabulary()
OUTPUT_FEATURES = {"targets": seqio.Feature(BYTE_VOCAB, add_eos=False, required=False)}


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


def import_task_modules(modules: Sequence[str] = DEFAULT_TASK_MODULES) -> None:
  """Imports the modules that register tasks (T5X's TASK_MODULES pattern)."""
  for module in modules:
    importlib.import_module(module)


def resolve(names: Sequence[str]) -> list[str]:
  """Checks that each name is a registered task or mixture; ValueError listing the known
  ones otherwise."""
  known = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  missing = [n for n in names if n not in known]
  if missing:
    raise UserError(f"unknown evaluation task(s) {missing}; registered: "
                     f"{sorted(n for n in known if n in _INFO) or sorted(known)}")
  return list(names)


def examples_dataset(examples: list[dict]) -> tf.data.Dataset:
  """A tf.data.Dataset of rendered request examples (dicts with the fields above)."""
  def gen():
    for ex in examples:
      target = ex.get("target", "")
      yield {
          "kind": ex["kind"], "context": ex["context"],
          "continuation": ex.get("continuation", ""),
          "until": json.dumps(list(ex.get("until", ()))),
          "max_new_tokens": ex.get("max_new_tokens", 0),
          "meta": json.dumps(ex.get("meta", {})),
          "targets_pretokenized": target,
          "targets": BYTE_VOCAB.encode(target) or [0],
      }
  scalar = lambda dtype: tf.TensorSpec((), dtype)
  return tf.data.Dataset.from_generator(gen, output_signature={
      "kind": scalar(tf.string), "context": scalar(tf.string),
      "continuation": scalar(tf.string), "until": scalar(tf.string),
      "max_new_tokens": scalar(tf.int32), "meta": scalar(tf.string),
      "targets_pretokenized": scalar(tf.string), "targets": tf.TensorSpec([None], tf.int32)})


def postprocess(text, example=None, is_target=False):
  """Targets become dicts (the example's `meta` plus the gold `text`); predictions stay."""
  if not is_target:
    return text
  meta = example["meta"]
  meta = json.loads(meta.decode() if isinstance(meta, bytes) else meta)
  return {**meta, "text": text}


class RequestFeatureConverter(seqio.FeatureConverter):
  """Pads `targets` only: the model functions read the request strings from the cached
  task dataset by example index, so the model features need nothing else."""
  TASK_FEATURES = {"targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
  MODEL_FEATURES = {"targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
  PACKING_FEATURE_DTYPES = {}

  def __init__(self):
    super().__init__(pack=False)

  def _convert_features(self, ds, task_feature_lengths):
    ds = ds.map(lambda ex: {"targets": ex["targets"]})
    return seqio.utils.trim_and_pad_dataset(ds, task_feature_lengths)

  def get_model_feature_lengths(self, task_feature_lengths):
    return dict(task_feature_lengths)
