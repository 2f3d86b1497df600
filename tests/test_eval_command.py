"""`fineline eval` end to end: against lm-evaluation-harness on the same HF model and data,
on a fineline checkpoint, on an 8-device mesh, and with a dataset or a mesh wrong."""

import json
import os
import subprocess
import sys

import pytest

from eval_fixtures import SCHEMAS, write_eval_data
from hf_fixtures import make_hf_llama_dir

import train_fixtures
from fineline import cli

TASKS = ("arc_easy", "winogrande", "lambada")  # multiple choice, partial scoring, greedy
LM_EVAL_CONFIGS = {"arc_easy": "arc/arc_easy.yaml", "winogrande": "winogrande/default.yaml",
                   "lambada": "lambada/lambada_openai.yaml"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("eval_command")
  hf_dir = make_hf_llama_dir(tmp / "hf", tokenizer="sentencepiece")
  data_dir = write_eval_data(tmp / "data", tasks=TASKS, n=10)
  return tmp, hf_dir, data_dir


def _eval(*args):
  return cli.main(["eval", "--quiet", *map(str, args)])


def _lm_eval(hf_dir, data_dir, num_fewshot):
  """lm-eval's simple_evaluate with its HF backend on the same directory and JSON data."""
  import lm_eval
  from lm_eval.api.task import ConfigurableTask
  from lm_eval.models.huggingface import HFLM
  from lm_eval.tasks._yaml_loader import load_yaml
  tasks = []
  for task in TASKS:
    cfg = load_yaml(os.path.join(os.path.dirname(lm_eval.tasks.__file__), LM_EVAL_CONFIGS[task]))
    files = {s: os.path.join(data_dir, task, f"{s}.jsonl") for s in SCHEMAS[task][1]}
    cfg.update(task=task, dataset_path="json", dataset_name=None,
               dataset_kwargs={"data_files": files})
    tasks.append(ConfigurableTask(config=cfg))
  lm = HFLM(pretrained=hf_dir, batch_size=8, device="cpu", dtype="float32")
  out = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot,
                                bootstrap_iters=0, log_samples=True)
  return out["results"], out["samples"]


ARGS = ("--tasks", ",".join(TASKS), "--num_fewshot", 1)


@pytest.fixture(scope="module")
def hf_record(setup):
  tmp, hf_dir, data_dir = setup
  output, samples = tmp / "hf.json", tmp / "hf_samples.jsonl"
  assert _eval("--checkpoint", hf_dir, *ARGS, "--data_dir", data_dir, "--output", output,
               "--samples", samples) == 0
  return json.loads(output.read_text()), samples


def test_hf_dir_scores_equal_lm_eval(setup, hf_record):
  _, hf_dir, data_dir = setup
  record, samples = hf_record
  theirs, their_samples = _lm_eval(hf_dir, data_dir, num_fewshot=1)
  for task in TASKS:
    mine = record["tasks"][task]
    for metric in ("acc", "acc_norm"):
      if f"{metric},none" in theirs[task]:
        assert mine[metric] == theirs[task][f"{metric},none"], (task, metric)
    if task == "lambada":
      assert mine["perplexity"] == pytest.approx(theirs[task]["perplexity,none"], rel=1e-4)
    assert mine["n"] == len(their_samples[task])
  # Per-request log-likelihoods agree, request by request.
  mine_ll = {}
  for row in map(json.loads, samples.read_text().splitlines()):
    mine_ll[(row["task"], row["doc"], row.get("choice") or 0)] = row["loglikelihood"]
  compared = 0
  for task in TASKS:
    for sample in their_samples[task]:
      for choice, resp in enumerate(sample["resps"]):
        assert mine_ll[(task, sample["doc_id"], choice)] == pytest.approx(
            float(resp[0][0]), abs=1e-4)
        compared += 1
  assert compared == len(mine_ll)


@pytest.fixture(scope="module")
def ckpt(setup):
  from fineline.convert.hf import import_hf
  tmp, hf_dir, _ = setup
  import_hf(hf_dir, str(tmp / "ckpt"))
  return tmp / "ckpt"


def _loglikelihoods(samples_path):
  rows = map(json.loads, samples_path.read_text().splitlines())
  return {(r["task"], r["doc"], r.get("choice") or 0): r["loglikelihood"] for r in rows}


def test_fineline_checkpoint_gives_the_same_record(setup, ckpt, hf_record):
  tmp, _, data_dir = setup
  output = tmp / "ckpt.json"
  assert _eval("--checkpoint", ckpt, *ARGS, "--data_dir", data_dir, "--output", output,
               "--model", "tiny") == 0
  record, record_hf = json.loads(output.read_text()), hf_record[0]
  assert set(record) == {"model", "checkpoint", "step", "tokens", "tasks"}
  assert (record["model"], record["step"], record["tokens"]) == ("tiny", 0, 0)
  assert record["checkpoint"] == str(ckpt)
  arc = record["tasks"]["arc_easy"]
  for key in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n", "num_fewshot",
              "capability", "chance"):
    assert key in arc
  assert (arc["n"], arc["num_fewshot"], arc["capability"], arc["chance"], arc["split"]) == (
      10, 1, "commonsense_reasoning", 0.25, "test")
  assert set(record["tasks"]["lambada"]) >= {"acc", "acc_stderr", "perplexity", "n"}
  for task in TASKS:
    assert record["tasks"][task]["acc"] == record_hf["tasks"][task]["acc"]
  assert record["tasks"]["lambada"]["perplexity"] == pytest.approx(
      record_hf["tasks"]["lambada"]["perplexity"], rel=1e-5)


def test_missing_dataset_names_task_and_directory(setup, tmp_path, capsys):
  _, hf_dir, _ = setup
  empty = tmp_path / "no_data"
  empty.mkdir()
  output = tmp_path / "r.json"
  assert _eval("--checkpoint", hf_dir, "--tasks", "piqa", "--data_dir", empty,
               "--output", output) == 1
  err = capsys.readouterr().err
  assert "'piqa'" in err and str(empty) in err and "get_eval_data.sh" in err
  assert not output.exists()


def test_sharded_over_a_mesh_gives_the_one_device_record(setup, ckpt, hf_record):
  tmp, _, data_dir = setup
  output, samples = tmp / "mesh.json", tmp / "mesh_samples.jsonl"
  args = ["eval", "--quiet", "--checkpoint", ckpt, *ARGS, "--data_dir", data_dir, "--output",
          output, "--samples", samples, "--mesh", "data=2,fsdp=4"]
  run = train_fixtures.fineline(list(map(str, args)), num_devices=8)
  assert run.returncode == 0, run.stderr[-4000:]
  assert "scoring on a mesh of {'data': 2, 'fsdp': 4, 'tensor': 1} (8 devices" in run.stderr
  record, one_device = json.loads(output.read_text()), hf_record[0]
  for task in TASKS:
    mine, want = record["tasks"][task], one_device["tasks"][task]
    assert mine["n"] == want["n"]
    for metric in ("acc", "acc_norm"):
      assert mine.get(metric) == want.get(metric), (task, metric)
  assert record["tasks"]["lambada"]["perplexity"] == pytest.approx(
      one_device["tasks"]["lambada"]["perplexity"], rel=1e-4)
  mine_ll, want_ll = _loglikelihoods(samples), _loglikelihoods(hf_record[1])
  assert mine_ll.keys() == want_ll.keys()
  for key, value in want_ll.items():
    assert mine_ll[key] == pytest.approx(value, abs=1e-4), key


@pytest.mark.parametrize("mesh, message", [
    ("data=2,fdsp=4", "--mesh data=2,fdsp=4: unknown axis 'fdsp'; the axes are data, fsdp, tensor"),
    ("data=3", "--mesh data=3: mesh_axes: {'data': 3, 'fsdp': 1, 'tensor': 1} needs 3 devices, "
               "but 1 are available; make the sizes multiply to 1, or set one of them to -1"),
    ("data=two", "--mesh data=two: 'data=two' needs a positive size or -1"),
])
def test_bad_mesh_says_what_to_change(setup, tmp_path, capsys, mesh, message):
  _, hf_dir, data_dir = setup
  output = tmp_path / "r.json"
  assert _eval("--checkpoint", hf_dir, "--tasks", "arc_easy", "--data_dir", data_dir,
               "--output", output, "--mesh", mesh) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith(f"fineline eval: error: {message}") and "\n" not in err
  assert not output.exists()


def test_two_hosts_score_a_series_together_and_process_0_writes(setup, ckpt, hf_record, tmp_path):
  """Two processes × 4 devices; the output file is on process 0's disk only (process 1 is
  given a path that does not exist), and it already holds the first checkpoint."""
  _, hf_dir, data_dir = setup
  series = tmp_path / "series.txt"
  series.write_text(f"{ckpt} 1\n{hf_dir} 2\n")
  output = tmp_path / "series.jsonl"
  output.write_text(json.dumps({**hf_record[0], "checkpoint": str(ckpt), "step": 1}) + "\n")
  port = train_fixtures.free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "fineline.cli", "eval", "--quiet", "--checkpoints", str(series),
       *map(str, ARGS), "--data_dir", str(data_dir),
       "--output", str(output if i == 0 else tmp_path / "elsewhere" / "series.jsonl"),
       "--mesh", "data=2,fsdp=4", "--coordinator_address", f"127.0.0.1:{port}",
       "--num_processes", "2", "--process_id", str(i)],
      env=train_fixtures.env(4), cwd=train_fixtures.REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  assert "evaluated 1 checkpoint(s); 1 already in" in outs[0][0]
  assert not (tmp_path / "elsewhere").exists()
  records = [json.loads(line) for line in output.read_text().splitlines()]
  assert [(r["checkpoint"], r["step"]) for r in records] == [(str(ckpt), 1), (str(hf_dir), 2)]
  for task in TASKS:
    assert records[1]["tasks"][task]["acc"] == hf_record[0]["tasks"][task]["acc"]


def test_eval_command_loads_neither_tensorflow_nor_seqio(setup, hf_record, tmp_path):
  """The command a user runs imports only what scoring needs; its record is the same."""
  import subprocess
  import sys
  _, hf_dir, data_dir = setup
  output = tmp_path / "cold.json"
  code = ("import sys\nfrom fineline import cli\n"
          f"rc = cli.main(['eval', '--quiet', '--checkpoint', {str(hf_dir)!r}, '--tasks', "
          f"{ARGS[1]!r}, '--num_fewshot', '1', '--data_dir', {str(data_dir)!r}, "
          f"'--output', {str(output)!r}])\n"
          "loaded = [m for m in ('tensorflow', 'seqio', 'keras', 'clu', 'tensorflow_datasets',"
          " 'torch') if m in sys.modules]\n"
          "print('LOADED', loaded)\nsys.exit(rc)\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, check=False, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "LOADED []" in result.stdout
  drop = lambda r: {t: {k: v for k, v in m.items() if k != "seconds"}
                    for t, m in r["tasks"].items()}
  assert drop(json.loads(output.read_text())) == drop(hf_record[0])
