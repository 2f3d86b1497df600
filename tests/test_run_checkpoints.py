import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from fineline import checkpointing, run_checkpoints


def _state(v):
  return {"params": {"w": jnp.full((4, 3), v, jnp.float32)},
          "opt_state": {"mu": jnp.full((4, 3), -v, jnp.float32)},
          "step": jnp.asarray(int(v), jnp.int32)}


def _abstract():
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), _state(0))


def _save_steps(directory, steps, **kw):
  ckpts = run_checkpoints.RunCheckpoints(directory, **kw)
  for s in steps:
    ckpts.save(s, _state(s), {"step": s, "tokens": 10 * s}, {"batches": s, "iterator": "x"})
  ckpts.wait()
  return ckpts


def test_rolling_window_plus_permanent_checkpoints(tmp_path):
  ckpts = _save_steps(str(tmp_path), range(1, 10), keep_last=2, keep_every=4)
  assert ckpts.all_steps() == [4, 8, 9]
  state, meta, data = ckpts.restore(9, _abstract())
  assert float(state["params"]["w"][0, 0]) == 9 and int(state["step"]) == 9
  assert meta["tokens"] == 90 and meta["format"] == checkpointing.FORMAT
  assert data == {"batches": 9, "iterator": "x"}
  ckpts.close()
  # The params item is a plain fineline checkpoint that evaluation and conversion read.
  assert checkpointing.read_meta(os.path.join(str(tmp_path), "checkpoints", "9"))["step"] == 9


def test_an_interrupted_save_is_never_restored(tmp_path):
  _save_steps(str(tmp_path), [2, 4], keep_last=5).close()
  root = os.path.join(str(tmp_path), "checkpoints")
  # What a crash mid-save leaves: Orbax's temporary directory, half written.
  partial = os.path.join(root, "6.orbax-checkpoint-tmp-1700000000")
  shutil.copytree(os.path.join(root, "4"), partial)
  shutil.rmtree(os.path.join(partial, "train_state"))
  ckpts = run_checkpoints.RunCheckpoints(str(tmp_path), keep_last=5)
  assert ckpts.latest_step() == 4
  state, _, _ = ckpts.restore(ckpts.latest_step(), _abstract())
  assert float(state["params"]["w"][0, 0]) == 4
  ckpts.close()
  assert not os.path.exists(partial)  # cleaned up, never mistaken for a checkpoint


def test_tokenizer_is_copied_once(tmp_path):
  tok = tmp_path / "tok"
  tok.mkdir()
  (tok / "tokenizer.model").write_bytes(b"model")
  run_checkpoints.copy_tokenizer(str(tmp_path / "run"), str(tok))
  (tok / "tokenizer.model").write_bytes(b"changed")
  run_checkpoints.copy_tokenizer(str(tmp_path / "run"), str(tok))
  assert (tmp_path / "run" / "tokenizer" / "tokenizer.model").read_bytes() == b"model"
  np.testing.assert_equal(sorted(os.listdir(tmp_path / "run")), ["tokenizer"])
