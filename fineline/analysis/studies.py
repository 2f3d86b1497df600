"""The research analyses over aligned series: lead–lag between capability groups, emergence
points, slope changes at training events, back-tested early prediction, and comparisons
across sizes and series. Plain dicts out, for `analysis.json` and the report."""

from __future__ import annotations

import itertools

import numpy as np

from fineline.analysis import dynamics
from fineline.analysis import forecast
from fineline.analysis import scaling


def _group_curves(series, aggregate) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  curves = {}
  for group, names in series.groups.items():
    scored = [t for t in names if series.tasks[t].chance is not None]
    if scored:
      curves[group] = aggregate(series, scored)
  return curves


def _event_result(test: dict) -> str:
  if not test["significant"]:
    return "no significant change"
  if test["placebo_reach"] and test["placebo_p"] > dynamics.PLACEBO_ALPHA:
    return (f"changes, but as much elsewhere (placebo p {test['placebo_p']:.2f} over "
            f"{test['placebo_n']} points): the curve bends by itself")
  return "slope changes at the event" + (
      f" ({test['placebo_reach']} of {test['placebo_n']} placebo points change as much)"
      if test["placebo_p"] is not None else " (no placebo points to compare)")


def series_studies(series, aggregate, schedule: list[dict]) -> dict:
  """Lead–lag, emergence and event tests of one series. `aggregate(series, tasks)` gives a
  group's (mean, stderr) normalised curve."""
  curves = _group_curves(series, aggregate)
  lead = []
  for a, b in itertools.combinations(sorted(curves), 2):
    result = dynamics.lead_lag(series.tokens, curves[a][0], curves[b][0], curves[a][1],
                               curves[b][1])
    lead.append({"a": a, "b": b, **result})
  emergence = {}
  for task, track in sorted(series.tasks.items()):
    if track.chance is not None:
      emergence[task] = dynamics.emergence(series.tokens, track.normalized,
                                           track.normalized_stderr, 0.0)
  events = sorted([*series.events, *(e for e in schedule
                                     if e.get("series") in (None, series.name))],
                  key=lambda e: e["tokens"])
  tests = []
  drops = [e["tokens"] for e in events if e["kind"] == "lr_drop"]
  for event in events:
    if event["kind"] != "lr_drop":
      continue
    for group, (mean, se) in sorted(curves.items()):
      test = dynamics.slope_change(series.tokens, mean, se, event["tokens"])
      if not test.get("reason"):
        test.update(dynamics.placebo(series.tokens, mean, se, event["tokens"], drops))
        test["result"] = _event_result(test)
      tests.append({"event": event["label"], "tokens": event["tokens"], "capability": group,
                    **test})
  return {"lead_lag": lead, "emergence": emergence, "events": events, "event_tests": tests}


def across_studies(series_list, aggregate) -> dict:
  """Back-tested early prediction over every series, and cross-size/series comparisons."""
  return {"early_prediction": forecast.backtest(series_list),
          "same_score": scaling.same_score(series_list),
          "cross_series_prediction": scaling.cross_series_prediction(series_list),
          "flops_known": [s.name for s in series_list if s.parameters]}
