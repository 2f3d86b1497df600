"""Two real processes joined by jax.distributed (gloo collectives on localhost) train, save
and resume one run."""

import os
import socket
import subprocess
import sys

import pytest

import train_fixtures
from fineline import checkpointing


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return train_fixtures.make_corpus(str(tmp_path_factory.mktemp("corpus")))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two_hosts(gin_path, model_dir, steps):
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "fineline.cli", "train", f"--gin_file={gin_path}",
       f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={steps}",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
      env=train_fixtures.env(2), cwd=train_fixtures.REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outs.append((p.returncode, out, err))
  for code, _, err in outs:
    assert code == 0, err[-4000:]
  return outs


def test_two_processes_train_save_and_resume(corpus, tmp_path):
  gin_path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"), SAVE_EVERY_STEPS=2,
                                    BATCH_SIZE=8)
  model_dir = str(tmp_path / "run")
  first = _run_two_hosts(gin_path, model_dir, steps=4)
  assert "step       4" in first[0][1]        # process 0 logs
  assert "step" not in first[1][1]            # process 1 stays quiet
  ckpt = os.path.join(model_dir, "checkpoints", "4")
  assert {"process_0.json", "process_1.json"} <= set(os.listdir(os.path.join(ckpt, "data")))
  assert checkpointing.read_meta(ckpt)["tokens"] == 4 * 8 * 32

  second = _run_two_hosts(gin_path, model_dir, steps=6)
  assert "(step 4," in second[0][1] and "(step 4," in second[1][1]
  losses = train_fixtures.losses_by_step(model_dir)
  assert sorted(losses) == [1, 2, 3, 4, 5, 6]
  assert checkpointing.read_meta(os.path.join(model_dir, "checkpoints", "6"))["step"] == 6
