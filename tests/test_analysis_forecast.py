import dataclasses
import json
import math

import numpy as np

import analysis_fixtures as fx
from fineline.analysis import forecast
from fineline.analysis import records

T0 = fx.STEPS[0] * fx.TOKENS_PER_STEP
STEPS = [100 * i for i in range(1, 31)]  # 30 checkpoints


def _series(tmp_path, curves, n):
  tasks = {f"t{i}": (curve, "g", 0.25, "acc") for i, curve in enumerate(curves)}
  path = tmp_path / "r.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in fx.make_records(tasks=tasks, steps=STEPS,
                                                                     n=n, seed=7)))
  return records.load_series([path])[0]


def test_backtested_error_matches_the_noise_the_records_were_built_with(tmp_path):
  # Twelve tasks rising linearly in log tokens, scored on n items each (binomial noise).
  n = 3000
  curves = [(lambda i: lambda t: 0.3 + 0.02 * i + 0.25 * math.log10(t / T0))(i)
            for i in range(12)]
  series_list = _series(tmp_path, curves, n)
  noise = float(np.median(series_list[0].tasks["t0"].normalized_stderr))
  result = forecast.backtest(series_list)
  rows = {(r["method"], r["fraction"]): r for r in result["rows"]}
  for fraction in forecast.FRACTIONS:
    row = rows["log-linear", fraction]
    assert row["predictions"] == 12 and row["status"] == "ok", row
    assert row["coverage"] >= forecast.COVERAGE_FLOOR
    # Errors in units of the spread the records' noise implies: about unit normal.
    made = [p for p in result["predictions"] if p["method"] == "log-linear"
            and p["fraction"] == fraction]
    z = [abs(p["error"]) / p["spread"] for p in made]
    assert 0.3 < float(np.median(z)) < 1.5, (fraction, z)
  # With 40% seen, the error is of the order of the last score's own noise.
  assert rows["log-linear", 0.4]["median_abs_error"] < 2 * noise


def test_a_method_whose_intervals_miss_is_refused_and_says_so(tmp_path):
  # Every task sits at chance through 40% of the run, then jumps: early fits cannot know.
  curves = [(lambda i: lambda t: 0.25 if t < 16 * T0 / 2 else 0.7 + 0.01 * i)(i)
            for i in range(8)]
  result = forecast.backtest(_series(tmp_path, curves, 2000))
  row = next(r for r in result["rows"] if r["method"] == "log-linear" and r["fraction"] == 0.4)
  assert row["status"].startswith("refused: back-tested coverage")
  assert not any(p["trusted"] for p in result["predictions"]
                 if p["method"] == "log-linear" and p["fraction"] == 0.4)


def test_too_few_checkpoints_are_reasons_not_errors():
  result = forecast.predict_final("saturating", [1e9, 2e9, 3e9], [0.1, 0.2, 0.3],
                                  [0.01] * 3, 2)
  assert "needs 5" in result["reason"]
  assert forecast.predict_final("log-linear", [1e9, 2e9, 3e9], [0.1, 0.2, 0.3], [0.01] * 3,
                                3)["reason"] == "nothing left to predict"


def test_each_series_gets_its_own_rows_beside_the_pooled_ones(tmp_path):
  curves = [(lambda i: lambda t: 0.3 + 0.02 * i + 0.25 * math.log10(t / T0))(i)
            for i in range(6)]
  (one,) = _series(tmp_path, curves, 3000)
  other = dataclasses.replace(one, name="other")
  rows = forecast.backtest([one, other])["rows"]
  scopes = {r["series"] for r in rows}
  assert scopes == {forecast.ALL_SERIES, "demo", "other"}
  pooled = next(r for r in rows if r["series"] == forecast.ALL_SERIES and r["fraction"] == 0.4
                and r["method"] == "log-linear")
  assert pooled["predictions"] == 12
