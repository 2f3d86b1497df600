"""The checkpoint format: params + meta, either layer layout, dtypes kept, clear errors."""

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
