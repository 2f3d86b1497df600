"""The checkpoint format: params + meta, either layer layout, dtypes kept, clear errors."""

import os
import threading

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np
import pytest

from fineline import checkpointing
from fineline.models import llama, presets


@pytest.fixture(scope="module")
def tiny():
  cfg = presets.get_preset("tiny")
  rng = np.random.default_rng(0)
  shapes = nn.meta.unbox(llama.abstract_params(cfg))  # traced, not run: fast on CPU
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)
  return cfg, params


def _same(a, b):
  return jax.tree.all(jax.tree.map(lambda x, y: x.dtype == y.dtype and np.array_equal(x, y), a, b))


def test_round_trip_in_either_layout(tmp_path, tiny):
  cfg, params = tiny
  path = str(tmp_path / "ckpt")
  checkpointing.save_params(path, params, cfg, step=7, tokens=7 * 4096)
  meta = checkpointing.read_meta(path)
  assert meta["step"] == 7 and meta["tokens"] == 7 * 4096
  assert meta["model_config"] == cfg.to_dict()
  back, back_cfg, _ = checkpointing.load_params(path, as_numpy=True)
  assert back_cfg == cfg and _same(back, params)
  scanned, scan_cfg, _ = checkpointing.load_params(path, as_numpy=True, scan_layers=True)
  assert scan_cfg.scan_layers
  assert _same(scanned, llama.scan_layers(params, cfg.num_layers))
  on_device, _, _ = checkpointing.load_params(path)
  assert isinstance(on_device["embedding"], jax.Array)


def test_bfloat16_is_kept(tmp_path, tiny):
  cfg, params = tiny
  bf16 = jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), params)
  checkpointing.save_params(str(tmp_path / "c"), bf16, cfg.replace(param_dtype="bfloat16"))
  back, back_cfg, _ = checkpointing.load_params(str(tmp_path / "c"), as_numpy=True)
  assert back_cfg.param_dtype == "bfloat16" and _same(back, bf16)


def test_not_a_checkpoint_is_named(tmp_path):
  with pytest.raises(ValueError, match=f"{tmp_path} is not a fineline checkpoint"):
    checkpointing.read_meta(str(tmp_path))


def test_pending_leaves_are_written_as_they_arrive(tmp_path, tiny):
  cfg, params = tiny
  leaves, treedef = jax.tree.flatten(params)
  pending = [checkpointing.PendingArray(x.shape, x.dtype) for x in leaves]

  def fill():  # in reverse, from another thread, while the save runs
    for leaf, x in reversed(list(zip(pending, leaves))):
      leaf.set(x)

  thread = threading.Thread(target=fill)
  thread.start()
  checkpointing.save_params(str(tmp_path / "p"), jax.tree.unflatten(treedef, pending), cfg)
  thread.join()
  for leaf in pending:  # as a producer's cleanup does: the written leaves are unaffected
    leaf.fail(RuntimeError("weights ended early"))
  checkpointing.save_params(str(tmp_path / "n"), params, cfg)
  back, _, _ = checkpointing.load_params(str(tmp_path / "p"), as_numpy=True)
  assert _same(back, params)
  metadata = [sorted(os.listdir(tmp_path / d / "params")) for d in ("p", "n")]
  assert metadata[0] == metadata[1]
  assert ((tmp_path / "p" / "params" / "_METADATA").read_text()
          == (tmp_path / "n" / "params" / "_METADATA").read_text())


def test_a_failed_pending_leaf_fails_the_save_and_leaves_nothing(tmp_path, tiny):
  cfg, params = tiny
  leaves, treedef = jax.tree.flatten(params)
  pending = [checkpointing.PendingArray(x.shape, x.dtype) for x in leaves]
  for leaf, x in zip(pending[1:], leaves[1:]):
    leaf.set(x)
  pending[0].fail(ValueError("shard 2 is truncated"))
  with pytest.raises(ValueError, match="shard 2 is truncated"):
    checkpointing.save_params(str(tmp_path / "p"), jax.tree.unflatten(treedef, pending), cfg)
  assert not os.path.exists(tmp_path / "p")
  with pytest.raises(ValueError, match="set to"):
    checkpointing.PendingArray((2, 3), np.float32).set(np.zeros((3, 2), np.float32))


@pytest.mark.parametrize("scanned", [False, True])
def test_iter_params_restores_group_by_group(tmp_path, tiny, scanned):
  cfg, params = tiny
  saved = llama.scan_layers(params, cfg.num_layers) if scanned else params
  path = str(tmp_path / "c")
  checkpointing.save_params(path, saved, cfg.replace(scan_layers=scanned))
  groups = [["embedding"], ["layers_1", "layers_0"], ["no_such_entry"]]
  got = list(checkpointing.iter_params(path, groups))
  assert [sorted(g) for g in got[:3]] == [["embedding"], ["layers_0", "layers_1"], []]
  assert _same(got[0], {"embedding": params["embedding"]})
  assert _same(got[1], {"layers_0": params["layers_0"], "layers_1": params["layers_1"]})
  rest = {k: v for k, v in params.items() if k not in ("embedding", "layers_0", "layers_1")}
  assert len(got) == 4 and _same(got[3], rest)  # entries in no group come last
