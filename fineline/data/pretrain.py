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
host, the serialised state of the tf.data iterator (file offsets, shuffle buffer, partial
chunk), so restoring costs the size of that state rather than a replay of everything read
so far. When the number of hosts changes, the per-host states no longer apply; the pipeline
then warns and skips forward by the batches consumed (a replay, and not exactly the same
tokens, since the shards differ).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Callable

import gin
import numpy as np
import seqio
import tensorflow as tf

from fineline import cache
from fineline.errors import UserError

LAZY_TASKS: dict[str, Callable[[], None]] = {}
"""Task name → a function that registers it (for sources that are materialised on demand)."""
TOKENIZER_FILES: dict[str, str] = {}
"""Task name → the tokenizer file its vocabulary was loaded from (copied into MODEL_DIR)."""

SKILLS_TASK = "fineline_skills"


def load_vocabulary(path: str) -> seqio.Vocabulary:
  """The vocabulary at `path` (a tokenizer file or a directory holding one)."""
  try:
    from fineline import tokenizers  # pylint: disable=import-outside-toplevel
  except ImportError:
    tokenizers = None
  if tokenizers is not None and hasattr(tokenizers, "load_vocabulary"):
    return tokenizers.load_vocabulary(path)
  if os.path.isdir(path):
    path = os.path.join(path, "tokenizer.model")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no SentencePiece tokenizer at {path}")
  return seqio.SentencePieceVocabulary(path)


def _to_targets(ds):
  return ds.map(lambda text: {"targets": text}).filter(lambda ex: tf.strings.length(ex["targets"]) > 0)


def _jsonl_as_tfrecords(files: list[str], text_key: str, cache_dir: str) -> list[str]:
  """Each JSONL file's documents as a TFRecord file of raw UTF-8 texts, written once.

  Parsing JSON inside tf.data would need a py_function, which makes the pipeline hang at
  interpreter exit once its iterator was checkpointed; a one-off conversion keeps the
  pipeline pure TensorFlow ops.
  """
  os.makedirs(cache_dir, exist_ok=True)
  out = []
  for path in files:
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{text_key}".encode())
    target = os.path.join(cache_dir, f"{os.path.basename(path)}.{key.hexdigest()[:12]}.tfrecord")
    if not os.path.exists(target):
      tmp = f"{target}.tmp{os.getpid()}"
      with open(path, encoding="utf-8") as f, tf.io.TFRecordWriter(tmp) as writer:
        for line_no, line in enumerate(f, 1):
          if not line.strip():
            continue
          try:
            text = json.loads(line)[text_key]
          except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"{path}:{line_no}: not a JSON object with a {text_key!r} field "
                             f"({e})") from None
          writer.write(text.encode("utf-8"))
      os.replace(tmp, target)
    out.append(target)
  return out


def _register(name: str, source: seqio.DataSource, vocabulary, preprocessors, tokenizer: str):
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=[*preprocessors, seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={"targets": seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32)})
  TOKENIZER_FILES[name] = tokenizer
  return name


@gin.configurable
def register_local_task(name: str = gin.REQUIRED, file_patterns=gin.REQUIRED,
                        tokenizer: str = gin.REQUIRED, text_key: str = "text",
                        cache_dir: str | None = None) -> str:
  """A task over local files: `*.jsonl`/`*.json` lines are JSON objects with `text_key`;
  any other file holds one document per line. `file_patterns`: a glob or a list of globs.
  JSONL is converted once to TFRecords under `cache_dir` (default ~/.cache/fineline/jsonl)."""
  patterns = [file_patterns] if isinstance(file_patterns, str) else list(file_patterns)
  files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
  if not files:
    raise FileNotFoundError(f"task {name!r}: no files match {patterns}")
  kinds = {f.endswith((".jsonl", ".json")) for f in files}
  if len(kinds) > 1:
    raise UserError(f"task {name!r}: mixes JSONL and plain-text files; use one task for each")
  if kinds.pop():
    records = _jsonl_as_tfrecords(files, text_key, cache_dir or _default_cache_dir())
    source = seqio.FileDataSource(tf.data.TFRecordDataset, {"train": records})
  else:
    source = seqio.TextLineDataSource({"train": files})
  return _register(name, source, load_vocabulary(tokenizer), [_to_targets], tokenizer)


def _default_cache_dir() -> str:
  return str(cache.path("jsonl"))


@gin.configurable
def register_tfds_task(name: str = gin.REQUIRED, tfds_name: str = gin.REQUIRED,
                       tokenizer: str = gin.REQUIRED, text_key: str = "text",
                       tfds_data_dir: str | None = None) -> str:
  """A task over a TFDS dataset's `text_key` feature, e.g. tfds_name='c4/en:3.1.0'."""
  source = seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir)
  rekey = lambda ds: _to_targets(ds.map(lambda ex: ex[text_key]))
  return _register(name, source, load_vocabulary(tokenizer), [rekey], tokenizer)


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
            "iterator": self._iterator._save().numpy().decode("ascii")}  # pylint: disable=protected-access

  def set_state(self, state: dict) -> None:
    """Continues exactly where `get_state` was taken (same host layout), else skips ahead."""
    self._iterator = iter(self._dataset)
    same_layout = (state.get("process_count") == self.process_count
                   and state.get("process_index") == self.process_index
                   and state.get("iterator"))
    if same_layout:
      self._iterator._restore(tf.constant(state["iterator"].encode("ascii")))  # pylint: disable=protected-access
    else:
      logging.warning("data position was saved with %s hosts, now %d: skipping %d batches "
                      "(not the exact token stream of the original layout)",
                      state.get("process_count"), self.process_count, state["batches"])
      self._iterator = iter(self._dataset.skip(state["batches"]))
    self.batches = state["batches"]
