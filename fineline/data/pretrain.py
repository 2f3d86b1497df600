"""Pretraining text as SeqIO tasks, packed into fixed-length sequences, with a position that
survives restarts.

Sources: a TFDS dataset (e.g. `c4`, for users with data access), local files (JSONL with a
`text` field, or plain text with one document per line; glob patterns), and the bundled
skills corpus (registered on first use). Each document is tokenised with the model's
vocabulary, gets BOS (optional) and EOS, and the token stream is cut into chunks of
`sequence_length + 1` tokens (concatenate-and-chunk, as EasyLM does): inputs = chunk[:-1],
targets = chunk[1:].

Resuming. The whole pipeline is deterministic given the seed (tf.data keeps element order),
so a run's token stream is a fixed function of its config. Every checkpoint stores, per
host, the tf.data iterator's checkpoint (file offsets, shuffle buffer, partial chunk;
`iterator_state`), so restoring costs the size of that state rather than a replay of
everything read so far. The pipeline is pure TensorFlow ops, as that needs: JSONL and
corpora for a `tokenizer.json` are converted beforehand (`pretokenize`). When the number of
hosts changes, or the state predates this format, the per-host states no longer apply; the
pipeline then warns and skips forward by the batches consumed (a replay, and not exactly
the same tokens, since the shards differ).
"""

from __future__ import annotations

import logging
from typing import Callable

import gin
import numpy as np
import seqio
import tensorflow as tf

from fineline import cache, tokenizers
from fineline.data import iterator_state, pretokenize
from fineline.errors import UserError

LAZY_TASKS: dict[str, Callable[[], None]] = {}
"""Task name → a function that registers it (for sources that are materialised on demand)."""
TOKENIZER_FILES: dict[str, str] = {}
"""Task name → the tokenizer file its vocabulary was loaded from (copied into MODEL_DIR)."""

SKILLS_TASK = "fineline_skills"


def _to_targets(ds):
  return ds.map(lambda text: {"targets": text}).filter(lambda ex: tf.strings.length(ex["targets"]) > 0)


def _register(name: str, source: seqio.DataSource, vocabulary, preprocessors, tokenizer: str,
              pretokenized: bool = False):
  """`preprocessors` give {"targets": text}, or with `pretokenized` {"targets": ids}."""
  tokenize = [] if pretokenized else [seqio.preprocessors.tokenize]
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=[*preprocessors, *tokenize, seqio.preprocessors.append_eos],
      output_features={"targets": seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32)})
  TOKENIZER_FILES[name] = tokenizer
  return name


@gin.configurable
def register_local_task(name: str = gin.REQUIRED, file_patterns=gin.REQUIRED,
                        tokenizer: str = gin.REQUIRED, text_key: str = "text",
                        cache_dir: str | None = None) -> str:
  """A task over local files: `*.jsonl`/`*.json` lines are JSON objects with `text_key`;
  any other file holds one document per line. `file_patterns`: a glob or a list of globs.
  JSONL, and any file whose tokenizer cannot run in the graph (`tokenizer.json`), is
  converted once to TFRecords under `cache_dir` (default ~/.cache/fineline/jsonl)."""
  patterns = [file_patterns] if isinstance(file_patterns, str) else list(file_patterns)
  files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
  if not files:
    raise FileNotFoundError(f"task {name!r}: no files match {patterns}")
  kinds = {f.endswith((".jsonl", ".json")) for f in files}
  if len(kinds) > 1:
    raise UserError(f"task {name!r}: mixes JSONL and plain-text files; use one task for each")
  vocabulary = tokenizers.load_vocabulary(tokenizer)
  cache_dir = cache_dir or _default_cache_dir()
  if pretokenize.needs_ids(vocabulary):
    records = pretokenize.files_as_records(files, text_key, cache_dir, vocabulary, tokenizer)
    source = seqio.FileDataSource(tf.data.TFRecordDataset, {"train": records})
    return _register(name, source, vocabulary, [pretokenize.decode_ids], tokenizer,
                     pretokenized=True)
  if kinds.pop():
    records = pretokenize.files_as_records(files, text_key, cache_dir)
    source = seqio.FileDataSource(tf.data.TFRecordDataset, {"train": records})
  else:
    source = seqio.TextLineDataSource({"train": files})
  return _register(name, source, vocabulary, [_to_targets], tokenizer)


def _default_cache_dir() -> str:
  return str(cache.path("jsonl"))


@gin.configurable
def register_tfds_task(name: str = gin.REQUIRED, tfds_name: str = gin.REQUIRED,
                       tokenizer: str = gin.REQUIRED, text_key: str = "text",
                       tfds_data_dir: str | None = None, cache_dir: str | None = None) -> str:
  """A task over a TFDS dataset's `text_key` feature, e.g. tfds_name='c4/en:3.1.0'. With a
  tokenizer that cannot run in the graph (`tokenizer.json`), the train split is tokenised
  once into `cache_dir` (default ~/.cache/fineline/jsonl)."""
  source = seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir)
  vocabulary = tokenizers.load_vocabulary(tokenizer)
  if pretokenize.needs_ids(vocabulary):
    records = pretokenize.tfds_as_records(tfds_name, source, "train", text_key,
                                          cache_dir or _default_cache_dir(), vocabulary,
                                          tokenizer)
    source = seqio.FileDataSource(tf.data.TFRecordDataset, {"train": records})
    return _register(name, source, vocabulary, [pretokenize.decode_ids], tokenizer,
                     pretokenized=True)
  rekey = lambda ds: _to_targets(ds.map(lambda ex: ex[text_key]))
  return _register(name, source, vocabulary, [rekey], tokenizer)


@gin.configurable
def register_mixture(name: str = gin.REQUIRED, tasks_and_rates=gin.REQUIRED) -> str:
  """A seqio Mixture of already registered tasks: [(task, rate), …]."""
  for task, _ in tasks_and_rates:
    get_task(task)
  seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, list(tasks_and_rates))
  TOKENIZER_FILES[name] = TOKENIZER_FILES.get(tasks_and_rates[0][0])
  return name


def _register_skills_task():
  from fineline.data import skills  # pylint: disable=import-outside-toplevel
  corpus = skills.ensure_corpus()
  register_local_task(SKILLS_TASK, list(corpus.train_files), corpus.tokenizer)


LAZY_TASKS[SKILLS_TASK] = _register_skills_task


def get_task(name: str):
  """A registered task or mixture, registering a lazily materialised one on first use."""
  if name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names():
    if name not in LAZY_TASKS:
      known = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
                     | set(LAZY_TASKS))
      raise UserError(f"unknown task or mixture {name!r}; registered: {', '.join(known)}")
    LAZY_TASKS[name]()
  return seqio.get_mixture_or_task(name)


@gin.configurable
class PretrainData:
  """This host's share of the global batch, as numpy {"inputs", "targets", "weights"}.

  Each host reads a disjoint shard of the source (seqio ShardInfo) and yields
  `global_batch_size // process_count` rows per step. `task`: a registered task or mixture
  name; in gin also `@register_local_task()` (registers the files and yields their name).
  """

  def __init__(self, task: str = gin.REQUIRED, *, sequence_length: int = gin.REQUIRED,
               global_batch_size: int = gin.REQUIRED, seed: int = 0, split: str = "train",
               shuffle_buffer_size: int = 1000, add_bos: bool = True, bos_id: int = 1,
               process_index: int = 0, process_count: int = 1):
    if global_batch_size % process_count:
      raise UserError(f"global batch {global_batch_size} does not split over {process_count} hosts")
    self.task_name = task
    self.sequence_length = sequence_length
    self.local_batch_size = global_batch_size // process_count
    self.process_index, self.process_count = process_index, process_count
    self._task = get_task(task)
    self._kw = dict(split=split, seed=seed, shuffle_buffer_size=shuffle_buffer_size,
                    add_bos=add_bos, bos_id=bos_id)
    self._dataset = self._build(**self._kw)
    self._iterator = iter(self._dataset)
    self.batches = 0

  @property
  def tokenizer_file(self) -> str | None:
    return TOKENIZER_FILES.get(self.task_name)

  def _build(self, split, seed, shuffle_buffer_size, add_bos, bos_id) -> tf.data.Dataset:
    ds = self._task.get_dataset(
        sequence_length=None, split=split, use_cached=False, shuffle=shuffle_buffer_size > 0,
        shuffle_buffer_size=shuffle_buffer_size or None, seed=seed,
        shard_info=seqio.ShardInfo(self.process_index, self.process_count), num_epochs=None,
        trim_output_features=False)
    ds = ds.map(lambda ex: ex["targets"])
    if add_bos:
      ds = ds.map(lambda t: tf.concat([tf.constant([bos_id], tf.int32), t], 0))
    chunk = self.sequence_length + 1
    ds = ds.unbatch().batch(chunk, drop_remainder=True)  # concatenate, then cut
    ds = ds.map(lambda c: {"inputs": c[:-1], "targets": c[1:]})
    ds = ds.batch(self.local_batch_size, drop_remainder=True).prefetch(2)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    ex = next(self._iterator)
    self.batches += 1
    inputs = ex["inputs"].numpy()
    return {"inputs": inputs, "targets": ex["targets"].numpy(),
            "weights": np.ones(inputs.shape, np.float32)}

  def get_state(self) -> dict:
    """JSON-serialisable position of this host's iterator."""
    return {"batches": self.batches, "process_index": self.process_index,
            "process_count": self.process_count, "task": self.task_name,
            "position": iterator_state.save(self._iterator)}

  def set_state(self, state: dict) -> None:
    """Continues exactly where `get_state` was taken (same host layout), else skips ahead."""
    self._iterator = iter(self._dataset)
    same_layout = (state.get("process_count") == self.process_count
                   and state.get("process_index") == self.process_index)
    position = state.get("position")
    if same_layout and position and position.get("format") == iterator_state.FORMAT:
      iterator_state.restore(self._iterator, position)
    else:
      why = (f"was saved with {state.get('process_count')} hosts, now {self.process_count}"
             if not same_layout else "was saved in an older format (serialised tf.data "
             "iterator), which this version does not read")
      logging.warning("data position %s: skipping %d batches (the same documents, but not "
                      "the exact token stream of an uninterrupted run)", why, state["batches"])
      self._iterator = iter(self._dataset.skip(state["batches"]))
    self.batches = state["batches"]
