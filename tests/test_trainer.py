import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import train_fixtures
from fineline import checkpointing, ginconf, run_checkpoints
from fineline.training import trainer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return train_fixtures.make_corpus(str(tmp_path_factory.mktemp("corpus")))


def _train(gin_path, model_dir, bindings=(), **kwargs):
  ginconf.parse([gin_path], [f"MODEL_DIR = '{model_dir}'", *bindings])
  return ginconf.call(lambda: trainer.train(**kwargs), [gin_path])


class RecordingEvaluator:
  def __init__(self):
    self.calls = []

  def maybe_evaluate(self, params, *, step, tokens, save_index):
    self.calls.append((step, tokens, save_index))


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
  """An uninterrupted 12-step run (checkpoints every 4 steps)."""
  root = tmp_path_factory.mktemp("ref")
  gin_path = train_fixtures.run_gin(corpus, str(root / "run.gin"))
  evaluator = RecordingEvaluator()
  result = _train(gin_path, str(root / "run"), evaluator=evaluator)
  return {"gin": gin_path, "dir": str(root / "run"), "result": result, "evaluator": evaluator}


def test_short_run_learns_and_fills_the_run_directory(reference):
  model_dir = reference["dir"]
  losses = train_fixtures.losses_by_step(model_dir)
  assert sorted(losses) == list(range(1, 13))
  assert np.mean([losses[s][0] for s in (10, 11, 12)]) < np.mean([losses[s][0] for s in (1, 2, 3)]) - 0.5
  record = train_fixtures.read_metrics(model_dir)[-1]
  for key in ("step", "loss", "learning_rate", "tokens", "tokens_per_s", "grad_norm", "param_norm", "mfu"):
    assert key in record
  assert record["tokens"] == 12 * 4 * 32
  assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == ["12", "4", "8"]
  assert os.path.exists(os.path.join(model_dir, "config.gin"))
  assert os.listdir(os.path.join(model_dir, "tokenizer")) == ["tokenizer.model"]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(model_dir))
  meta = checkpointing.read_meta(os.path.join(model_dir, "checkpoints", "12"))
  assert meta["step"] == 12 and meta["tokens"] == 12 * 4 * 32
  # The evaluator ran after every committed save.
  assert reference["evaluator"].calls == [(4, 512, 1), (8, 1024, 2), (12, 1536, 3)]


def test_sigkilled_run_resumes_with_the_same_losses_and_params(reference, corpus, tmp_path, capsys):
  gin_path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"), TRAIN_STEPS=400)
  model_dir = str(tmp_path / "run")
  proc = subprocess.Popen(
      [sys.executable, "-m", "fineline.cli", "train", f"--gin_file={gin_path}",
       f"--gin.MODEL_DIR='{model_dir}'"], env=train_fixtures.env(), cwd=train_fixtures.REPO,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  first_ckpt = os.path.join(model_dir, "checkpoints", "4")
  deadline = time.time() + 240
  while not os.path.isdir(first_ckpt) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  _, err = proc.communicate()
  assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
  saved = run_checkpoints.RunCheckpoints(model_dir).latest_step()
  assert saved is not None and saved < 400

  _train(train_fixtures.run_gin(corpus, str(tmp_path / "resume.gin"), TRAIN_STEPS=12), model_dir)
  assert f"(step {saved}," in capsys.readouterr().out
  want = train_fixtures.losses_by_step(reference["dir"])
  got = train_fixtures.losses_by_step(model_dir)
  for step in range(1, 13):
    np.testing.assert_allclose(got[step], [want[step][0]] * len(got[step]), rtol=1e-6,
                               err_msg=f"step {step}")
  final, _, _ = checkpointing.load_params(os.path.join(model_dir, "checkpoints", "12"), as_numpy=True)
  expected, _, _ = checkpointing.load_params(os.path.join(reference["dir"], "checkpoints", "12"),
                                             as_numpy=True)
  for a, b in zip(sorted(_leaves(final)), sorted(_leaves(expected))):
    assert a[0] == b[0]
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6, atol=1e-7, err_msg=a[0])


def test_resume_on_a_different_device_count_and_sigterm_saves(reference, tmp_path):
  model_dir = str(tmp_path / "run")
  shutil.copytree(reference["dir"], model_dir)
  proc = subprocess.Popen(
      [sys.executable, "-m", "fineline.cli", "train", f"--gin_file={reference['gin']}",
       f"--gin.MODEL_DIR='{model_dir}'", "--gin.TRAIN_STEPS=400", "--gin.SAVE_EVERY_STEPS=2"],
      env=train_fixtures.env(2), cwd=train_fixtures.REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while (not os.path.isdir(os.path.join(model_dir, "checkpoints", "14")) and proc.poll() is None
         and time.time() < deadline):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)  # what a preempted TPU VM receives
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert "(step 12," in out  # resumed on 2 devices from the 1-device checkpoint
  stopped = int(re.search(r"stopped by signal after step (\d+)", out).group(1))
  assert 14 <= stopped < 400
  assert run_checkpoints.RunCheckpoints(model_dir).latest_step() == stopped
  losses = train_fixtures.losses_by_step(model_dir)
  assert all(np.isfinite(losses[s][0]) for s in range(13, stopped + 1))


def test_non_finite_steps_are_skipped_then_stop_the_run(corpus, tmp_path):
  gin_path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"))
  model_dir = str(tmp_path / "run")
  # A z-loss coefficient past float32's range makes every loss infinite.
  with pytest.raises(trainer.NonFiniteLossError,
                     match=r"stopping at step 5: 5 steps in a row .*checkpoints/4"):
    _train(gin_path, model_dir, ["train.z_loss = 1e39"])
  events = [r for r in train_fixtures.read_metrics(model_dir) if r.get("event") == "nonfinite_step"]
  assert [e["streak"] for e in events] == [1, 2, 3, 4, 5]
  # The checkpoint kept is intact and still holds the initial (never updated) params.
  assert run_checkpoints.RunCheckpoints(model_dir).latest_step() == 4


def test_initialises_from_an_imported_checkpoint(reference, corpus, tmp_path):
  params, cfg, _ = checkpointing.load_params(os.path.join(reference["dir"], "checkpoints", "12"))
  imported = str(tmp_path / "imported")
  checkpointing.save_params(imported, params, cfg)
  gin_path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"), TRAIN_STEPS=1)
  _train(gin_path, str(tmp_path / "run"), [f"train.init_from = '{imported}'"])
  first = train_fixtures.losses_by_step(str(tmp_path / "run"))[1][0]
  assert first < train_fixtures.losses_by_step(reference["dir"])[1][0] - 0.5


def _leaves(tree, prefix=""):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _leaves(v, f"{prefix}/{k}")
  else:
    yield prefix, np.asarray(tree)
