"""Streaming weight reads and sharded writes keep every bit and dtype."""

import json
import os
import threading

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fineline.convert import weights_io


def _tensors():
  g = torch.Generator().manual_seed(0)
  return {
      "a.bf16": torch.randn(5, 7, generator=g).to(torch.bfloat16),
      "b.fp32": torch.randn(3, 4, 2, generator=g),
      "c.fp16": torch.randn(6, generator=g).to(torch.float16),
  }


def _bits(t: torch.Tensor) -> np.ndarray:
  return t.view(torch.int16 if t.element_size() == 2 else torch.int32).numpy()


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_reads_keep_dtype_and_bits(tmp_path, fmt):
  tensors = _tensors()
  if fmt == "safetensors":
    save_file(tensors, tmp_path / "model.safetensors")
  else:
    torch.save(tensors, tmp_path / "pytorch_model.bin")
  files = weights_io.WeightFiles(str(tmp_path))
  assert files.kind == fmt and sorted(files.tensor_names()) == sorted(tensors)
  read = dict(files.iter_tensors())
  assert read["a.bf16"].dtype == ml_dtypes.bfloat16
  assert read["b.fp32"].dtype == np.float32 and read["c.fp16"].dtype == np.float16
  for name, t in tensors.items():
    assert read[name].shape == tuple(t.shape)
    np.testing.assert_array_equal(read[name].view(_bits(t).dtype), _bits(t))


def test_skipped_tensors_are_not_returned(tmp_path):
  save_file(_tensors(), tmp_path / "model.safetensors")
  files = weights_io.WeightFiles(str(tmp_path))
  assert [n for n, _ in files.iter_tensors(wanted=lambda n: n != "b.fp32")] == ["a.bf16", "c.fp16"]


def test_sharded_writer_round_trips_through_safetensors(tmp_path):
  tensors = {name: np.asarray(t.float().numpy()).astype(dt) for (name, t), dt in zip(
      _tensors().items(), (ml_dtypes.bfloat16, np.float32, np.float16))}
  planned = [(n, a.nbytes) for n, a in tensors.items()]
  writer = weights_io.ShardedSafetensorsWriter(str(tmp_path), planned, max_shard_bytes=80)
  for name, array in tensors.items():
    writer.add(name, array)
  writer.close()
  index = json.loads((tmp_path / weights_io.SAFETENSORS_INDEX).read_text())
  assert len(set(index["weight_map"].values())) == 3
  assert index["metadata"]["total_size"] == sum(a.nbytes for a in tensors.values())
  back = {}
  for fname in sorted(set(index["weight_map"].values())):
    back.update(load_file(tmp_path / fname))  # read with torch's safetensors, not ours
  assert back["a.bf16"].dtype == torch.bfloat16
  for name, array in tensors.items():
    np.testing.assert_array_equal(_bits(back[name]), array.view(_bits(back[name]).dtype))
  assert dict(weights_io.WeightFiles(str(tmp_path)).iter_tensors()).keys() == tensors.keys()


def test_single_shard_has_no_index(tmp_path):
  writer = weights_io.ShardedSafetensorsWriter(str(tmp_path), [("x", 16)], max_shard_bytes=1 << 20)
  writer.add("x", np.arange(4, dtype=np.float32))
  writer.close()
  assert os.listdir(tmp_path) == ["model.safetensors"]


def test_writer_refuses_incomplete_or_unplanned_exports(tmp_path):
  writer = weights_io.ShardedSafetensorsWriter(str(tmp_path), [("x", 16), ("y", 16)], 1 << 20)
  with pytest.raises(ValueError, match="'z' was not planned"):
    writer.add("z", np.zeros(4, np.float32))
  writer.add("x", np.zeros(4, np.float32))
  with pytest.raises(ValueError, match="never written.*'y'"):
    writer.close()


def test_no_weights_names_the_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no weights found"):
    weights_io.WeightFiles(str(tmp_path))


def test_dtype_names():
  assert weights_io.as_dtype("bfloat16") == ml_dtypes.bfloat16
  assert weights_io.as_dtype("float16") == np.float16 and weights_io.as_dtype(None) is None
  with pytest.raises(ValueError, match="int8"):
    weights_io.as_dtype("int8")


def test_prefetched_keeps_order_surfaces_errors_and_stops():
  assert list(weights_io.prefetched(iter(range(50)))) == list(range(50))

  def failing():
    yield 1
    raise ValueError("shard 2 is unreadable")

  with pytest.raises(ValueError, match="shard 2 is unreadable"):
    list(weights_io.prefetched(failing()))
  items = weights_io.prefetched(iter(range(1000)), depth=2)
  assert next(items) == 0
  items.close()  # the consumer stops early: the reader thread must end too
  assert not any(t.name == "weights-prefetch" for t in threading.enumerate())


def test_shards_are_even_and_no_more_than_needed(tmp_path):
  planned = [(f"t{i}", 10) for i in range(10)]
  with weights_io.ShardedSafetensorsWriter(str(tmp_path), planned, 80) as writer:
    assert [len(g) for g in writer.groups] == [5, 5]  # not 8 + 2
  with weights_io.ShardedSafetensorsWriter(str(tmp_path), planned, 1000) as writer:
    assert [len(g) for g in writer.groups] == [10]


def test_tensor_specs_come_from_the_headers(tmp_path):
  tensors = _tensors()
  save_file(tensors, tmp_path / "model.safetensors")
  specs = weights_io.WeightFiles(str(tmp_path)).tensor_specs()
  assert specs == {"a.bf16": (np.dtype(ml_dtypes.bfloat16), (5, 7)),
                   "b.fp32": (np.dtype(np.float32), (3, 4, 2)),
                   "c.fp16": (np.dtype(np.float16), (6,))}
  os.remove(tmp_path / "model.safetensors")
  torch.save(tensors, tmp_path / "pytorch_model.bin")
  assert weights_io.WeightFiles(str(tmp_path)).tensor_specs() is None
