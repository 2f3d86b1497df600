"""Two real processes joined by jax.distributed (gloo collectives on localhost) train, save
and resume one run, and stop together on SIGTERM."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

import train_fixtures
from fineline import checkpointing, run_checkpoints


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return train_fixtures.make_corpus(str(tmp_path_factory.mktemp("corpus")))


SCRIPT = r"""
import sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_enable_preemption_service", True)
port, pid, gin_path, model_dir, runs = sys.argv[1:]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(pid))
from fineline import ginconf
from fineline.training import trainer
for steps in map(int, runs.split(",")):  # a later run restores what the one before saved
  print(f"=== run to step {steps}", flush=True)
  ginconf.parse([gin_path], [f"MODEL_DIR = '{model_dir}'", f"TRAIN_STEPS = {steps}"])
  trainer.train()
"""


def _start_two_hosts(gin_path, model_dir, runs):
  port = train_fixtures.free_port()
  return [subprocess.Popen(
      [sys.executable, "-c", SCRIPT, str(port), str(i), gin_path, model_dir, runs],
      env=train_fixtures.env(2), cwd=train_fixtures.REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]


def _finish(procs):
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=400)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outs.append((p.returncode, out, err))
  for code, _, err in outs:
    assert code == 0, err[-4000:]
  return [out for _, out, _ in outs]


def test_two_processes_train_save_and_resume(corpus, tmp_path):
  gin_path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"), SAVE_EVERY_STEPS=2,
                                    BATCH_SIZE=8)
  model_dir = str(tmp_path / "run")
  out0, out1 = _finish(_start_two_hosts(gin_path, model_dir, "4,6"))
  first0, second0 = out0.split("=== run to step 6")
  first1, second1 = out1.split("=== run to step 6")
  assert "step       4" in first0           # process 0 logs
  assert "loss" not in out1                 # process 1 stays quiet
  assert "resumed" not in first0
  assert "(step 4," in second0 and "(step 4," in second1  # both hosts restored step 4
  ckpt = os.path.join(model_dir, "checkpoints", "4")
  assert {"process_0.json", "process_1.json"} <= set(os.listdir(os.path.join(ckpt, "data")))
  assert checkpointing.read_meta(ckpt)["tokens"] == 4 * 8 * 32
  losses = train_fixtures.losses_by_step(model_dir)
  assert sorted(losses) == [1, 2, 3, 4, 5, 6] and all(len(v) == 1 for v in losses.values())
  assert checkpointing.read_meta(os.path.join(model_dir, "checkpoints", "6"))["step"] == 6


def _lines(path) -> int:
  try:
    with open(path, encoding="utf-8") as f:
      return f.read().count("\n")
  except FileNotFoundError:
    return 0


def test_sigterm_to_one_process_stops_both_after_the_same_step(corpus, tmp_path):
  gin_path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"), SAVE_EVERY_STEPS=1000,
                                    BATCH_SIZE=8)
  model_dir = str(tmp_path / "run")
  procs = _start_two_hosts(gin_path, model_dir, "1000")
  metrics = os.path.join(model_dir, "metrics.jsonl")
  deadline = time.time() + 240
  while (_lines(metrics) < 3 and all(p.poll() is None for p in procs)
         and time.time() < deadline):
    time.sleep(0.05)
  # Only one host is told, as when one VM of a slice is preempted first; the coordination
  # service tells the other.
  procs[1].send_signal(signal.SIGTERM)
  out0, out1 = _finish(procs)
  stopped = [int(re.search(r"stopped by signal after step (\d+)", out).group(1))
             for out in (out0, out1)]
  assert stopped[0] == stopped[1] and 3 <= stopped[0] < 1000
  assert run_checkpoints.RunCheckpoints(model_dir).latest_step() == stopped[0]
  ckpt = os.path.join(model_dir, "checkpoints", str(stopped[0]))
  assert {"process_0.json", "process_1.json"} <= set(os.listdir(os.path.join(ckpt, "data")))
  assert checkpointing.read_meta(ckpt)["step"] == stopped[0]
  assert sorted(train_fixtures.losses_by_step(model_dir)) == list(range(1, stopped[0] + 1))
