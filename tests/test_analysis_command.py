import json
import subprocess
import sys

import analysis_fixtures as fx
from fineline import cli


def _analyze(capsys, *args):
  code = cli.main(["analyze", *map(str, args)])
  out, err = capsys.readouterr()
  assert "Traceback" not in out + err
  return code, out, err


def test_analyze_a_run_prints_where_the_report_is(tmp_path, capsys):
  run = fx.write_run(tmp_path / "run", fx.make_records())
  code, out, _ = _analyze(capsys, "--results", run, "--output", tmp_path / "rep",
                          "--budget_tokens", "5e9", "--target", "0.5")
  assert code == 0
  assert f"report: {tmp_path / 'rep' / 'report.md'}" in out
  assert "Regressed: grammar." in out
  analysis = json.loads((tmp_path / "rep" / "analysis.json").read_text())
  assert analysis["settings"]["budget_tokens"] == 5e9
  assert analysis["series"]["demo"]["tasks"]["copy_mc"]["fit"]["target"] == 0.5
  # Running again replaces the previous report and leaves no staging directories.
  assert _analyze(capsys, "--results", run, "--output", tmp_path / "rep")[0] == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "run"]


def test_released_hf_series_with_token_counts_only(tmp_path, capsys):
  files = []
  for model, scale in (("Amber-7B", 1), ("OpenLLaMA-7B", 2)):
    path = tmp_path / f"{model}.jsonl"
    recs = fx.make_records(model=model, with_step=False, seed=scale,
                           tokens_per_step=scale * fx.TOKENS_PER_STEP)
    path.write_text("\n".join(json.dumps(r) for r in recs))
    files.append(path)
  code, out, _ = _analyze(capsys, "--results", *files, "--output", tmp_path / "rep")
  assert code == 0 and "Amber-7B:" in out and "OpenLLaMA-7B:" in out
  md = (tmp_path / "rep" / "report.md").read_text()
  assert "### Amber-7B" in md and "| facts_gen | Amber-7B | OpenLLaMA-7B |" in md


def test_no_records_is_a_one_line_error(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  code, _, err = _analyze(capsys, "--results", tmp_path / "empty", "--output", tmp_path / "rep")
  assert code == 1 and "holds no result records" in err
  code, _, err = _analyze(capsys, "--results", tmp_path / "nope", "--output", tmp_path / "rep")
  assert code == 1 and "nope: no such file" in err
  assert not (tmp_path / "rep").exists()


def test_unreadable_and_invalid_files_are_named(tmp_path, capsys):
  (tmp_path / "bad.json").write_text("{\"model\": ")
  (tmp_path / "binary.jsonl").write_bytes(b"\x89PNG\xff\xfe")
  code, _, err = _analyze(capsys, "--results", tmp_path / "bad.json", tmp_path / "binary.jsonl",
                          "--output", tmp_path / "rep")
  assert code == 1 and len(err.strip().splitlines()) == 1
  assert "bad.json:1: not valid JSON" in err and "binary.jsonl: unreadable" in err
  assert not (tmp_path / "rep").exists()


def test_different_tasks_per_checkpoint_are_gaps_with_a_note(tmp_path, capsys):
  recs = fx.make_records()
  for i, rec in enumerate(recs):
    rec["tasks"] = {k: v for j, (k, v) in enumerate(rec["tasks"].items()) if (i + j) % 4}
  path = tmp_path / "uneven.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in recs))
  code, _, err = _analyze(capsys, "--results", path, "--output", tmp_path / "rep")
  assert code == 0 and "tasks missing at some checkpoints" in err
  assert "tasks missing at some checkpoints" in (tmp_path / "rep" / "report.md").read_text()


def test_refuses_to_overwrite_a_directory_that_is_not_a_report(tmp_path, capsys):
  run = fx.write_run(tmp_path / "run", fx.make_records())
  other = tmp_path / "mine"
  other.mkdir()
  (other / "notes.txt").write_text("keep me")
  code, _, err = _analyze(capsys, "--results", run, "--output", other)
  assert code == 1 and "not a report" in err
  assert (other / "notes.txt").read_text() == "keep me"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "run"]


def test_bad_flags_are_errors(tmp_path, capsys):
  run = fx.write_run(tmp_path / "run", fx.make_records())
  code, _, err = _analyze(capsys, "--results", run, "--output", tmp_path / "r", "--target", "2")
  assert code == 1 and "--target" in err


def test_analysis_needs_no_jax_or_tensorflow():
  code = ("import sys, fineline.cli, fineline.analysis.command; "
          "print(sorted(m for m in ('jax', 'flax', 'tensorflow', 'seqio', 'torch') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
