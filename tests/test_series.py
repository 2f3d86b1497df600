"""Checkpoint series: discovery, resumable evaluation, `fineline eval --checkpoints`."""

import json
import os

import pytest

from eval_fixtures import write_eval_data
from hf_fixtures import make_sentencepiece_tokenizer

from fineline import cli
from fineline.evaluation import series


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A run directory with two saves of a tiny model and its tokenizer."""
  import jax
  from fineline import checkpointing
  from fineline.models import llama
  from fineline.models.config import LlamaConfig
  model_dir = tmp_path_factory.mktemp("run")
  make_sentencepiece_tokenizer(model_dir / "tokenizer")
  cfg = LlamaConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1,
                    num_heads=2, num_kv_heads=1, max_length=128)
  for step in (10, 5):
    params = llama.init_params(cfg, jax.random.PRNGKey(step))
    checkpointing.save_params(str(model_dir / "checkpoints" / str(step)), params, cfg,
                              step=step, tokens=step * 256)
  return model_dir


def _hf_like(path):
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write("{}")
  return str(path)


def test_discovers_run_dir_hf_series_and_list_file(run_dir, tmp_path):
  ckpts = series.discover([str(run_dir)])
  assert [(c.step, c.tokens) for c in ckpts] == [(5, 1280), (10, 2560)]
  assert ckpts[0].path == str(run_dir / "checkpoints" / "5")

  hf = tmp_path / "hf_series"
  for name in ("Amber-Reproduce-88.08B", "Amber-Reproduce-41.94B", "notes"):
    (_hf_like(hf / name) if name != "notes" else os.makedirs(hf / name))
  got = series.discover([str(hf)])
  assert [os.path.basename(c.path) for c in got] == ["Amber-Reproduce-41.94B",
                                                     "Amber-Reproduce-88.08B"]
  assert [c.tokens for c in got] == [41_940_000_000, 88_080_000_000]
  assert series.discover([_hf_like(tmp_path / "ckpt_012")])[0].step == 12

  listing = tmp_path / "list.txt"
  listing.write_text("# path step tokens\nhf_series/Amber-Reproduce-41.94B 10 4.194e10\n"
                     + json.dumps({"path": str(run_dir / "checkpoints" / "5"), "step": 7})
                     + "\n")
  got = series.discover([str(listing)])
  assert [(c.step, c.tokens) for c in got] == [(10, 41_940_000_000), (7, 1280)]

  listing.write_text("hf_series/missing 3\n")
  with pytest.raises(FileNotFoundError, match=r"list.txt:1: .*missing"):
    series.discover([str(listing)])


def test_interrupted_series_resumes_without_redoing(tmp_path):
  ckpts = [series.Checkpoint(str(tmp_path / f"c{i}"), step=i) for i in range(4)]
  output = str(tmp_path / "series.jsonl")
  evaluated = []

  def evaluate_one(ckpt, fail_at=None):
    if ckpt.step == fail_at:
      raise KeyboardInterrupt  # the run is killed while scoring this checkpoint
    evaluated.append(ckpt.step)
    return {"checkpoint": ckpt.path, "step": ckpt.step, "tasks": {}}

  with pytest.raises(KeyboardInterrupt):
    series.evaluate_series(ckpts, output, lambda c: evaluate_one(c, fail_at=2), progress=False)
  assert evaluated == [0, 1]
  with open(output, "a") as f:
    f.write('{"checkpoint": "torn')  # a record cut short by the kill
  assert series.evaluate_series(ckpts, output, evaluate_one, progress=False) == 2
  assert evaluated == [0, 1, 2, 3]
  assert [r["step"] for r in series.read_records(output)] == [0, 1, 2, 3]
  assert series.evaluate_series(ckpts, output, evaluate_one, progress=False) == 0


def test_eval_checkpoints_command_writes_one_record_each_and_resumes(run_dir, tmp_path, capsys):
  data_dir = write_eval_data(tmp_path / "data", tasks=("arc_easy",), n=4)
  output = tmp_path / "series.jsonl"
  args = ["eval", "--quiet", "--checkpoints", str(run_dir), "--tasks", "arc_easy",
          "--data_dir", data_dir, "--output", str(output), "--batch_size", "4"]
  assert cli.main(args) == 0
  records = [json.loads(l) for l in output.read_text().splitlines()]
  assert [(r["step"], r["tokens"]) for r in records] == [(5, 1280), (10, 2560)]
  assert all(r["tasks"]["arc_easy"]["n"] == 4 for r in records)
  capsys.readouterr()
  assert cli.main(args) == 0
  assert "evaluated 0 checkpoint(s); 2 already in" in capsys.readouterr().out
  assert len(output.read_text().splitlines()) == 2
