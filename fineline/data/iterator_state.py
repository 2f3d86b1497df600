"""A tf.data iterator's position as JSON, through the public `tf.train.Checkpoint`.

`save(iterator)` writes the iterator's checkpoint (file offsets, shuffle buffer, partial
chunk) to TensorFlow's in-memory filesystem and returns its files as base64 text, so the
position travels inside the model checkpoint's JSON; `restore(iterator, state)` writes
them back and reads them into a fresh iterator of the same pipeline. A pipeline holding a
`py_function` cannot be checkpointed this way (its state lives outside the graph): the
pipelines here are pure TensorFlow ops (`pretokenize`).
"""

from __future__ import annotations

import base64
import uuid

import tensorflow as tf

FORMAT = "tf.train.Checkpoint"


def save(iterator) -> dict:
  """{"format", "files": {suffix: base64}} of `iterator`'s checkpoint."""
  prefix = _scratch()
  try:
    tf.train.Checkpoint(iterator=iterator).write(prefix)
    files = {}
    for path in tf.io.gfile.glob(prefix + "*"):
      with tf.io.gfile.GFile(path, "rb") as f:
        files[path[len(prefix):]] = base64.b64encode(f.read()).decode("ascii")
  finally:
    _remove(prefix)
  return {"format": FORMAT, "files": files}


def restore(iterator, state: dict) -> None:
  """Moves a fresh `iterator` of the same pipeline to the position in `state` (`save`'s)."""
  prefix = _scratch()
  try:
    for suffix, data in state["files"].items():
      with tf.io.gfile.GFile(prefix + suffix, "wb") as f:
        f.write(base64.b64decode(data))
    tf.train.Checkpoint(iterator=iterator).read(prefix).assert_consumed()
  finally:
    _remove(prefix)


def _scratch() -> str:
  return f"ram://fineline_iterator_state/{uuid.uuid4().hex}/position"


def _remove(prefix: str) -> None:
  for path in tf.io.gfile.glob(prefix + "*"):
    tf.io.gfile.remove(path)
