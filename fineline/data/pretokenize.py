"""Local and TFDS documents as cached TFRecord files, written once, outside tf.data.

Two cases keep a training pipeline pure TensorFlow ops, so that its iterator can be
checkpointed (`iterator_state`) and the process exits cleanly:
- JSONL: parsing JSON inside tf.data would need a `py_function`; each file's texts are
  stored as raw UTF-8 records instead.
- a vocabulary that cannot tokenise in the graph (a Hugging Face `tokenizer.json`, run by
  the `tokenizers` library, `tf_native = False`): each document is tokenised here and
  stored as little-endian int32 ids; `decode_ids` reads them back in the pipeline. For a
  large TFDS dataset this is a long one-off pass.
A cache file is named by a hash of its source (path, size, modification time), the text
field and the tokenizer files, and is published whole (`fileio.atomic_output`).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from fineline import fileio
from fineline.errors import UserError


def needs_ids(vocabulary) -> bool:
  """Whether `vocabulary` cannot tokenise inside tf.data without a py_function."""
  return not getattr(vocabulary, "tf_native", True)


def files_as_records(files: list[str], text_key: str, cache_dir: str,
                     vocabulary=None, tokenizer: str | None = None) -> list[str]:
  """One TFRecord file per input file: its texts (JSONL's `text_key`, or one document per
  line otherwise), or, with `vocabulary`, their token ids."""
  return [_cached(cache_dir, os.path.basename(path),
                  [_stat_key(path), text_key, *_tokenizer_key(vocabulary, tokenizer)],
                  lambda path=path: _documents(path, text_key), vocabulary)
          for path in files]


def tfds_as_records(name: str, source, split: str, text_key: str, cache_dir: str,
                    vocabulary, tokenizer: str) -> list[str]:
  """The token ids of a seqio TFDS source's `split`, in one TFRecord file."""
  def texts():
    for ex in source.get_dataset(split=split, shuffle=False).as_numpy_iterator():
      yield ex[text_key].decode("utf-8")
  return [_cached(cache_dir, name.replace("/", "_"),
                  [name, split, text_key, *_tokenizer_key(vocabulary, tokenizer)], texts,
                  vocabulary)]


def decode_ids(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Records of `files_as_records(…, vocabulary)` → {"targets": int32 ids}."""
  return ds.map(lambda r: {"targets": tf.io.decode_raw(r, tf.int32, little_endian=True)})


def _cached(cache_dir: str, stem: str, key_parts: list[str], texts: Callable[[], Iterable[str]],
            vocabulary) -> str:
  os.makedirs(cache_dir, exist_ok=True)
  key = hashlib.sha1("|".join(key_parts).encode()).hexdigest()[:12]
  kind = "ids" if vocabulary is not None else "text"
  target = os.path.join(cache_dir, f"{stem}.{key}.{kind}.tfrecord")
  if not os.path.exists(target):
    with fileio.atomic_output(target) as tmp, tf.io.TFRecordWriter(tmp) as writer:
      for text in texts():
        if vocabulary is None:
          writer.write(text.encode("utf-8"))
        elif text:
          writer.write(np.asarray(vocabulary.encode(text), "<i4").tobytes())
  return target


def _documents(path: str, text_key: str):
  jsonl = path.endswith((".jsonl", ".json"))
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not jsonl:
        yield line.rstrip("\n")
        continue
      if not line.strip():
        continue
      try:
        yield json.loads(line)[text_key]
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}:{line_no}: not a JSON object with a {text_key!r} field "
                        f"({e})") from None


def _stat_key(path: str) -> str:
  st = os.stat(path)
  return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def _tokenizer_key(vocabulary, tokenizer: str | None) -> list[str]:
  if vocabulary is None:
    return []
  files = ([os.path.join(tokenizer, f) for f in sorted(os.listdir(tokenizer))]
           if os.path.isdir(tokenizer) else [tokenizer])
  return [_stat_key(f) for f in files if os.path.isfile(f)]
