import json
import math

import pytest

import analysis_fixtures as fx
from fineline import cli
from fineline.analysis import records
from fineline.analysis import scaling

T0 = fx.STEPS[0] * fx.TOKENS_PER_STEP


def _tasks(speed: float) -> dict:
  # Same shape, reached `speed` times sooner in tokens by the bigger model.
  curve = lambda shift: lambda t: min(0.25 + 0.3 * math.log10(speed * t / T0) + shift, 0.95)
  return {"a_mc": (curve(0.0), "grp", 0.25, "acc"), "b_mc": (curve(0.05), "grp", 0.25, "acc"),
          "c_mc": (curve(0.1), "grp", 0.25, "acc")}


def _write(tmp_path) -> list:
  lines = fx.make_records("small", _tasks(1.0), n=20000) + [
      dict(r, parameters=4e9) for r in fx.make_records("big", _tasks(2.0), n=20000, seed=1)]
  path = tmp_path / "sizes.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in lines))
  return path


def test_tokens_to_the_same_score_and_flops_across_sizes(tmp_path):
  path = _write(tmp_path)
  series_list, _ = records.load_series([path])
  big, small = series_list
  assert (big.parameters, small.parameters) == (4e9, None)
  small.parameters = 1e9
  rows = {r["task"]: r for r in scaling.same_score(series_list)}
  reach = rows["a_mc"]["reach"]
  # The big model needs half the tokens; at 4x the parameters, twice the FLOPs.
  assert reach["small"]["tokens"] / reach["big"]["tokens"] == pytest.approx(2.0, rel=0.1)
  assert reach["big"]["flops"] / reach["small"]["flops"] == pytest.approx(2.0, rel=0.1)
  assert scaling.flops(big)[0] == 6 * 4e9 * big.tokens[0]


def test_a_relation_fitted_on_one_size_predicts_another(tmp_path):
  series_list, _ = records.load_series([_write(tmp_path)])
  rows = scaling.cross_series_prediction(series_list)
  assert {(r["fitted_on"], r["predicted"]) for r in rows} == {("big", "small"), ("small", "big")}
  assert all(r["r2"] > 0.9 for r in rows), rows


def test_model_size_flag_aligns_on_flops_and_names_bad_input(tmp_path, capsys):
  path = _write(tmp_path)
  assert cli.main(["analyze", "--results", str(path), "--output", str(tmp_path / "rep"),
                   "--model_size", "small=1e9"]) == 0
  analysis = json.loads((tmp_path / "rep" / "analysis.json").read_text())
  flops = [s for s in analysis["similarity"] if s["axis"] == "flops"]
  assert flops and all(s["pearson"] > 0.9 for s in flops if s["pearson"] is not None)
  assert analysis["across"]["flops_known"] == ["big", "small"]
  assert cli.main(["analyze", "--results", str(path), "--output", str(tmp_path / "r2"),
                   "--model_size", "tiny=1e9"]) == 1
  assert "--model_size names series ['tiny']" in capsys.readouterr().err
  assert not (tmp_path / "r2").exists()
