"""A run directory on Cloud Storage (the emulator): two jax.distributed processes train with
an evaluator into gs://…, one is SIGKILLed, the run resumes from the bucket with the same
losses; `fineline eval` and `fineline analyze` read from and write to the bucket."""

import json
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

import train_fixtures
from eval_fixtures import write_eval_data
from fineline import checkpointing, cli, fileio
from gcs_fixtures import emulator_env, gcs_bucket, gcs_emulator  # pylint: disable=unused-import

TIMEOUT_S = 300  # per launch; a hang fails the test instead of stalling the suite


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("gcs_run")
  corpus = train_fixtures.make_corpus(str(root / "corpus"))
  data_dir = write_eval_data(root / "eval_data", tasks=("arc_easy",), n=6)
  gin_path = train_fixtures.run_gin(corpus, str(root / "run.gin"), SAVE_EVERY_STEPS=2,
                                    KEEP_EVERY_STEPS=2, BATCH_SIZE=8)
  with open(gin_path, "a", encoding="utf-8") as f:
    f.write("\n".join([
        "import fineline.evaluation.evaluator",
        "train.evaluator = @InProcessEvaluator()",
        "InProcessEvaluator.model_dir = %MODEL_DIR",
        "InProcessEvaluator.tasks = ['arc_easy']",
        "InProcessEvaluator.task_modules = ['evals.multiple_choice']",
        f"InProcessEvaluator.data_dir = '{data_dir}'",
        "InProcessEvaluator.batch_size = 8", ""]))
  return gin_path, data_dir, str(root / "cache")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(inputs, model_dir, steps):
  """`fineline train` on two hosts (processes) joined by jax.distributed over localhost."""
  gin_path, _, cache_dir = inputs
  port = _free_port()
  # One compilation cache for the three launches: the later ones load the compiled step.
  env = {**train_fixtures.env(1), **emulator_env(), "FINELINE_CACHE_DIR": cache_dir}
  return [subprocess.Popen(
      [sys.executable, "-m", "fineline.cli", "train", f"--gin_file={gin_path}",
       f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={steps}",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
      env=env, cwd=train_fixtures.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]


def _finish(procs):
  outs = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=TIMEOUT_S)
      assert p.returncode == 0, err[-4000:]
      outs.append(out)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  return outs


def _losses(model_dir):
  out = {}
  for r in fileio.read_jsonl(f"{model_dir}/metrics.jsonl"):
    if "loss" in r and "event" not in r:
      out.setdefault(r["step"], []).append(r["loss"])
  return out


def test_two_hosts_killed_and_resumed_on_a_bucket_then_eval_and_analyze(inputs, gcs_bucket):
  data_dir = inputs[1]
  reference, run = f"{gcs_bucket}/reference", f"{gcs_bucket}/run"
  _finish(_launch(inputs, reference, 4))

  procs = _launch(inputs, run, 400)
  first_save = fileio.resolve(run) / "checkpoints" / "2"
  deadline = time.time() + TIMEOUT_S
  try:
    while not (first_save.exists() and ocp.utils.is_checkpoint_finalized(first_save)):
      assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
      assert time.time() < deadline, "no checkpoint reached the bucket"
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    assert procs[1].wait(timeout=30) == -signal.SIGKILL
  finally:
    for p in procs:  # the survivor cannot go on without its peer; a pod restarts both
      p.kill()
      p.communicate()
  out0, _ = _finish(_launch(inputs, run, 4))
  resumed = re.search(rf"resumed from {re.escape(run)}/checkpoints/(\d+) ", out0)
  assert resumed and int(resumed.group(1)) < 4, out0[-2000:]  # the resumed run trains

  want, got = _losses(reference), _losses(run)
  assert sorted(got) == [1, 2, 3, 4]
  for step in range(1, 5):
    np.testing.assert_allclose(got[step], [want[step][0]] * len(got[step]), rtol=1e-6,
                               err_msg=f"step {step}")
  assert checkpointing.read_meta(f"{run}/checkpoints/4")["step"] == 4
  records = fileio.read_jsonl(f"{reference}/eval/results.jsonl")
  assert [r["step"] for r in records] == [2, 4]
  assert all(r["tasks"]["arc_easy"]["n"] == 6 for r in records)

  series = f"{gcs_bucket}/series.jsonl"
  assert cli.main(["eval", "--quiet", "--checkpoints", reference, "--tasks", "arc_easy",
                   "--task_modules", "evals.multiple_choice", "--data_dir", str(data_dir),
                   "--output", series]) == 0
  scored = fileio.read_jsonl(series)
  assert [r["step"] for r in scored] == [2, 4]
  assert scored[-1]["checkpoint"] == f"{reference}/checkpoints/4"
  # The same scores as the in-process evaluator gave the live parameters.
  assert [r["tasks"]["arc_easy"]["acc"] for r in scored] == [
      r["tasks"]["arc_easy"]["acc"] for r in records]

  report = f"{gcs_bucket}/report"
  assert cli.main(["analyze", "--results", reference, "--output", report]) == 0
  analysis = json.loads((fileio.resolve(report) / "analysis.json").read_text())
  assert list(analysis["series"]) and (fileio.resolve(report) / "index.html").is_file()
