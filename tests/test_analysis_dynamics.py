import json
import math

import numpy as np

import analysis_fixtures as fx
from fineline.analysis import findings
from fineline.analysis import records
from fineline.analysis import dynamics

STEP = 100
STEPS = [STEP * i for i in range(1, 41)]  # 40 evenly spaced checkpoints
TOKENS = np.array(STEPS, dtype=float) * fx.TOKENS_PER_STEP


def _sigmoid(center_step: float, width_steps: float = 300.0, top: float = 0.85):
  center, width = center_step * fx.TOKENS_PER_STEP, width_steps * fx.TOKENS_PER_STEP
  return lambda t: 0.25 + (top - 0.25) / (1 + math.exp(-(t - center) / width))


def _load(tmp_path, tasks, **kwargs):
  path = tmp_path / "r.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in fx.make_records(tasks=tasks, **kwargs)))
  return records.load_series([path])


def test_lead_of_one_group_over_another_is_recovered_in_tokens(tmp_path):
  # Group "early" rises 6 checkpoints (6·100 steps of tokens) before group "late".
  tasks = {f"{g[0]}{i}": (_sigmoid(center), g, 0.25, "acc")
           for g, center in (("early", 1500), ("late", 2100)) for i in (1, 2)}
  series_list, notes = _load(tmp_path, tasks, steps=STEPS, n=20000)
  result = findings.analyze(series_list, notes)
  (lead,) = result["series"]["demo"]["studies"]["lead_lag"]
  assert (lead["a"], lead["b"]) == ("early", "late")
  expected = 600 * fx.TOKENS_PER_STEP
  assert lead["lead_tokens"] == expected
  assert lead["lead_low"] <= expected <= lead["lead_high"]
  assert lead["lead_high"] - lead["lead_low"] <= 4 * STEP * fx.TOKENS_PER_STEP
  assert lead["p"] < 0.05
  swapped = dynamics.lead_lag(TOKENS, *(series_list[0].tasks[t].normalized for t in ("l1", "e1")))
  assert swapped["lead_tokens"] == -expected


def test_curves_that_rise_together_show_no_lead():
  rng = np.random.default_rng(3)
  curve = np.array([_sigmoid(2000)(t) for t in TOKENS])
  a = curve + 0.004 * rng.standard_normal(40)
  b = curve + 0.004 * rng.standard_normal(40)
  result = dynamics.lead_lag(TOKENS, a, b, np.full(40, 0.004), np.full(40, 0.004))
  assert result["lead_low"] <= 0 <= result["lead_high"]


def test_known_emergence_point_is_recovered_with_honest_intervals():
  onset = 2e9
  tokens = np.geomspace(2e8, 2e11, 24)
  se = np.full(24, 0.01)
  y = np.minimum(np.where(tokens < onset, 0.0, 0.3 * np.log10(tokens / onset)), 0.6)
  found = [dynamics.emergence(tokens, y + se * np.random.default_rng(s).standard_normal(24), se)
           for s in range(40)]
  assert all(r["emerged"] for r in found)
  fitted = [r for r in found if r["tokens"] is not None]
  assert len(fitted) >= 36
  assert abs(np.median([math.log10(r["tokens"] / onset) for r in fitted])) < 0.03
  coverage = np.mean([r["low"] <= onset <= r["high"] for r in fitted])
  assert 0.7 <= coverage <= 1.0  # nominal 90%
  flat = dynamics.emergence(tokens, se * np.random.default_rng(0).standard_normal(24), se)
  assert flat["emerged"] is False and "within" in flat["reason"]


def test_slope_changes_at_a_known_rate_drop_and_not_elsewhere():
  rng = np.random.default_rng(1)
  x = np.log10(TOKENS)
  drop = TOKENS[24] + 0.5 * (TOKENS[25] - TOKENS[24])
  se = np.full(40, 0.004)
  kinked = 0.2 + 0.3 * (x - x[0]) + 2.0 * np.maximum(0, x - math.log10(drop))
  result = dynamics.slope_change(TOKENS, kinked + se * rng.standard_normal(40), se, drop)
  assert result["significant"] and result["slope_after"] > result["slope_before"]
  assert abs(result["change"] - 2.0) < 4 * result["change_se"]
  straight = 0.2 + 0.3 * (x - x[0]) + se * rng.standard_normal(40)
  assert not dynamics.slope_change(TOKENS, straight, se, drop)["significant"]
  edge = dynamics.slope_change(TOKENS, straight, se, TOKENS[-1] * 2)
  assert "0 after" in edge["reason"]


def test_gaps_one_checkpoint_and_one_task_give_notes_not_crashes(tmp_path):
  tasks = {"solo": (_sigmoid(1500), "only", 0.25, "acc")}
  series_list, notes = _load(tmp_path, tasks, steps=STEPS[:1])
  result = findings.analyze(series_list, notes)
  studies = result["series"]["demo"]["studies"]
  assert studies["lead_lag"] == [] and "needs 4" in studies["emergence"]["solo"]["reason"]
  assert any("one task" in n for n in result["notes"])
  gappy = fx.make_records(tasks={"a": (_sigmoid(1500), "g1", 0.25, "acc"),
                                 "b": (_sigmoid(2000), "g2", 0.25, "acc")}, steps=STEPS[:9])
  for i in (2, 3, 4, 5):
    del gappy[i]["tasks"]["b"]
  path = tmp_path / "gaps.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in gappy))
  series_list, notes = records.load_series([path])
  result = findings.analyze(series_list, notes)
  (lead,) = result["series"]["demo"]["studies"]["lead_lag"]
  assert "lead-lag needs" in lead["reason"]


def test_placebo_points_expose_a_curve_that_bends_by_itself():
  # A sigmoid entering saturation bends near the event with no event at all: the kink test
  # alone calls it significant; placebo points away from the event mostly bend as much.
  se = np.full(40, 0.003)
  drop = 0.5 * (TOKENS[29] + TOKENS[30])
  flagged = 0
  for seed in range(6):
    noise = se * np.random.default_rng(seed).standard_normal(40)
    bending = np.array([_sigmoid(2500)(t) for t in TOKENS]) + noise
    assert dynamics.slope_change(TOKENS, bending, se, drop)["significant"]
    flagged += dynamics.placebo(TOKENS, bending, se, drop, [drop])["placebo_reach"] > 0
  assert flagged >= 4
  x = np.log10(TOKENS)
  kinked = 0.2 + 0.3 * x + 2.0 * np.maximum(0, x - math.log10(drop)) + noise
  assert dynamics.placebo(TOKENS, kinked, se, drop, [drop])["placebo_reach"] == 0
