import base64
import csv
import json

import pytest
from matplotlib import image as mpimg

import analysis_fixtures as fx
from fineline.analysis import findings
from fineline.analysis import records
from fineline.analysis import report


def _build(tmp_path, inputs):
  series, notes = records.load_series(inputs)
  result = findings.analyze(series, notes)
  out = tmp_path / "report"
  out.mkdir()
  images = report.write_report(out, series, result)
  return out, images, result


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("analysis_report")
  return _build(tmp_path, [fx.write_run(tmp_path / "run", fx.make_records())])


def test_report_from_a_run_directory(built):
  out, images, _ = built
  names = sorted(p.name for p in images)
  assert names == ["group_arithmetic.png", "group_copying.png", "group_facts.png",
                   "group_grammar.png", "heatmap_demo.png", "loss_vs_capability.png"]
  for path in images:
    assert path.read_bytes()[:4] == b"\x89PNG" and mpimg.imread(path).shape[0] > 100
  md = (out / "report.md").read_text()
  state = md.index("## Verdict")
  assert state < md.index("## Per-task findings") < md.index("## Methods")
  assert "Still improving significantly: facts." in md
  assert "Regressed: grammar." in md and "Stalled: copying." in md
  assert "Spearman and Pearson" in md and "curve_fit" in md  # methods stated
  index = (out / "index.html").read_text()
  assert "Regressed: grammar." in index
  for path in images:  # embedded: the page stands alone
    embedded = base64.b64encode(path.read_bytes()).decode()
    assert f'<img src="data:image/png;base64,{embedded}"' in index
  assert 'src="plots/' not in index and '<a href="#verdict">Verdict</a>' in index
  analysis = json.loads((out / "analysis.json").read_text())  # strict JSON: no NaN
  task = analysis["series"]["demo"]["tasks"]["grammar_mc"]
  assert task["phase"] == "regressing" and task["loss_spearman"] is not None
  assert analysis["series"]["demo"]["groups"]["grammar"]["verdict"].startswith("regressing")


def test_tables_hold_every_checkpoint_raw_normalised_and_grouped(built):
  out, _, _ = built
  with (out / "tables" / "scores.csv").open() as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 10 and float(rows[-1]["tokens"]) == fx.STEPS[-1] * fx.TOKENS_PER_STEP
  with (out / "tables" / "normalized.csv").open() as f:
    norm = list(csv.DictReader(f))
  raw, scaled = float(rows[-1]["grammar_mc"]), float(norm[-1]["grammar_mc"])
  assert abs(scaled - (raw - 0.5) / 0.5) < 1e-9
  with (out / "tables" / "groups.csv").open() as f:
    groups = list(csv.DictReader(f))
  assert float(groups[-1]["grammar"]) == scaled  # one task: its own aggregate
  assert (out / "tables" / "scores.md").read_text().startswith("| series | checkpoint |")


def test_report_with_gaps_notes_them(tmp_path):
  recs = fx.make_records()
  for rec in recs[2::3]:
    del rec["tasks"]["arith_mc"]
  out, images, _ = _build(tmp_path, [fx.write_run(tmp_path / "run", recs)])
  md = (out / "report.md").read_text()
  assert "arith_mc (3/10)" in md
  with (out / "tables" / "scores.csv").open() as f:
    assert [r["arith_mc"] for r in csv.DictReader(f)][2] == ""
  assert len(images) == 6


def test_one_checkpoint_gives_tables_only(tmp_path):
  out, images, _ = _build(tmp_path, [fx.write_run(tmp_path / "run", fx.make_records()[:1])])
  assert images == [] and not (out / "plots").exists()
  assert (out / "tables" / "scores.csv").is_file()
  assert "dynamics need at least 3" in (out / "report.md").read_text()
