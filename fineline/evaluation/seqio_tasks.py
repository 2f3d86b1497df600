"""fineline's evaluation tasks as seqio Tasks and Mixtures.

Importing this module imports seqio (and with it TensorFlow) and adds every task and group
registered in `fineline.evaluation.tasks` to seqio's registries; later registrations follow
as they happen. A task's seqio source is its rendered request examples as a
`tf.data.Dataset` (the features described in `fineline.evaluation.tasks`), its targets
byte-encoded by `BYTE_VOCAB`; `RequestFeatureConverter` is the feature converter its
`seqio.Evaluator` uses.
"""

from __future__ import annotations

import json
from typing import Sequence

import seqio
import tensorflow as tf

from fineline.evaluation import tasks as task_lib

BYTE_VOCAB = seqio.ByteVocabulary()
OUTPUT_FEATURES = {"targets": seqio.Feature(BYTE_VOCAB, add_eos=False, required=False)}


def add_task(task: task_lib.RequestTask) -> None:
  """Adds `task` to seqio.TaskRegistry, replacing a task of the same name."""
  def dataset_fn(split, shuffle_files=False, seed=None):
    del split, shuffle_files, seed
    return examples_dataset(task.examples(task_lib.current_settings()))

  for registry in (seqio.TaskRegistry, seqio.MixtureRegistry):
    if task.name in registry.names():
      registry.remove(task.name)
  seqio.TaskRegistry.add(
      task.name, source=seqio.FunctionDataSource(dataset_fn, splits=[task_lib.SPLIT]),
      output_features=OUTPUT_FEATURES, preprocessors=[],
      postprocess_fn=task_lib.postprocess, metric_fns=list(task.metric_fns))


def add_group(name: str, subtasks: Sequence[str]) -> None:
  for registry in (seqio.TaskRegistry, seqio.MixtureRegistry):
    if name in registry.names():
      registry.remove(name)
  seqio.MixtureRegistry.add(name, list(subtasks), default_rate=1.0)


def registered_names() -> set[str]:
  return set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())


def subtasks(name: str) -> list[str]:
  return [t.name for t in seqio.get_subtasks(seqio.get_mixture_or_task(name))]


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


for _task in task_lib.registered_tasks().values():
  add_task(_task)
for _name, _subtasks in task_lib.registered_groups().items():
  add_group(_name, _subtasks)
