"""Report blocks for the research analyses (`studies`): emergence, lead–lag, training
events, early prediction and comparisons across sizes and series. A block is a tuple:
("h", level, text), ("p", text), ("ul", items) or ("table", header, rows)."""

from __future__ import annotations

from fineline.analysis import forecast
from fineline.analysis.plots import human_tokens


def _span(low, high) -> str | None:
  if low is None or high is None:
    return None
  return f"{human_tokens(low)} – {human_tokens(high)}"


def _signed_tokens(value: float) -> str:
  return ("-" if value < 0 else "+") + human_tokens(abs(value))


def event_blocks(result: dict) -> list[tuple]:
  rows = []
  for name, entry in result["series"].items():
    for test in entry["studies"]["event_tests"]:
      if test.get("reason"):
        rows.append([name, test["event"], test["tokens"], test["capability"], None, None, None,
                     None, f"not tested: {test['reason']}"])
        continue
      rows.append([name, test["event"], test["tokens"], test["capability"],
                   test["slope_before"], test["slope_after"], test["change"], test["p"],
                   test["result"]])
  marked = [(name, e) for name, entry in result["series"].items()
            for e in entry["studies"]["events"]]
  blocks = [("h", 3, "Slope change at each learning-rate drop")]
  if rows:
    blocks.append(("table", ["series", "event", "tokens", "capability", "slope before",
                             "slope after", "change", "p", "result"], rows))
  else:
    blocks.append(("p", "No learning-rate drop in metrics.jsonl or --schedule"
                        + (f"; marked events: {len(marked)}." if marked else ".")))
  if marked:
    blocks.append(("ul", [f"{name}: {e['label']} at {human_tokens(e['tokens'])} tokens "
                          f"({e['kind']})" for name, e in marked]))
  return blocks


def emergence_blocks(result: dict) -> list[tuple]:
  rows = []
  for name, entry in result["series"].items():
    for task, em in entry["studies"]["emergence"].items():
      state = {True: "emerged", False: "at chance", None: "–"}[em.get("emerged")]
      rows.append([name, task, entry["tasks"][task]["capability"], state, em.get("tokens"),
                   _span(em.get("low"), em.get("high")), em.get("reason") or "ok"])
  return [("h", 2, "Emergence points"),
          ("table", ["series", "task", "capability", "state", "emerges at (tokens)",
                     "90% interval", "note"], rows) if rows else
          ("p", "No task with a chance level.")]


def lead_lag_blocks(result: dict) -> list[tuple]:
  rows = []
  for name, entry in result["series"].items():
    for r in entry["studies"]["lead_lag"]:
      if r.get("reason"):
        rows.append([name, r["a"], r["b"], None, None, None, None, r["reason"]])
        continue
      lead = r["lead_tokens"]
      says = (f"{r['a']} leads" if lead > 0 else f"{r['b']} leads" if lead < 0
              else "together") + ("" if r["p"] < 0.05 else " (not significant)") + (
                  "; at the largest lag searched: the lead may be longer" if r["at_edge"] else "")
      rows.append([name, r["a"], r["b"], _signed_tokens(lead),
                   f"{_signed_tokens(r['lead_low'])} … {_signed_tokens(r['lead_high'])}",
                   r["correlation"], r["p"], says])
  return [("h", 2, "Lead-lag between capability groups"),
          ("table", ["series", "group A", "group B", "A's lead (tokens)", "90% interval",
                     "peak correlation", "p", "reading"], rows) if rows else
          ("p", "Needs two capability groups with normalised tasks.")]


def forecast_blocks(result: dict) -> list[tuple]:
  early = result["across"]["early_prediction"]
  rows = [[r["series"], r["method"], f"{r['fraction']:.0%}", r["predictions"],
           r["median_abs_error"], r["coverage"], r["status"]] for r in early["rows"]]
  trusted = [[p["series"], p["task"], p["method"], f"{p['fraction']:.0%}", p["tokens_seen"],
              p["predicted"], f"{p['low']:.3f} – {p['high']:.3f}", p["actual"]]
             for p in early["predictions"] if p.get("trusted")]
  blocks = [("h", 2, "Early prediction, back-tested"),
            ("p", "Each task fitted on its first "
                  f"{', '.join(f'{x:.0%}' for x in forecast.FRACTIONS)} "
                  "of checkpoints predicts its last normalised score; errors pooled over all "
                  "tasks of all series (which decides whether a method is used), then per "
                  "series."),
            ("table", ["series", "method", "fraction seen", "predictions", "median abs. error",
                       f"coverage ({forecast.INTERVAL:.0%} interval)", "status"], rows)]
  if trusted:
    blocks += [("h", 3, "Predictions of methods whose back-test holds"),
               ("table", ["series", "task", "method", "seen", "tokens seen", "predicted",
                          "interval", "actual"], trusted)]
  return blocks


def across_blocks(result: dict) -> list[tuple]:
  across = result["across"]
  blocks = [("h", 2, "Across sizes and series")]
  sims = [s for s in result["similarity"] if s.get("pearson") is not None]
  blocks.append(("h", 3, "Curve shape across series"))
  blocks.append(("table", ["task or group", "series A", "series B", "axis", "Pearson",
                           "Spearman", "range"],
                 [[s.get("task") or f"{s['capability']} (group mean)", s["a"], s["b"],
                   s.get("axis", "tokens"), s["pearson"], s["spearman"],
                   f"{human_tokens(s['tokens_from'])}–{human_tokens(s['tokens_to'])}"
                   if s.get("axis", "tokens") == "tokens" else
                   f"{s['tokens_from']:.3g}–{s['tokens_to']:.3g} FLOPs"]
                  for s in sims]) if sims else
                ("p", result.get("similarity_note") or
                 "No pair of series shares a task over a common range."))
  same = [r for r in across["same_score"] if r.get("level") is not None]
  blocks.append(("h", 3, "Tokens (and FLOPs) to reach the same score"))
  if same:
    names = sorted({n for r in same for n in r["reach"]})
    header = ["task", "level (norm.)"] + [f"{n} tokens" for n in names]
    if across["flops_known"]:
      header += [f"{n} FLOPs" for n in names]
    rows = []
    for r in same:
      row = [r["task"], r["level"]] + [r["reach"].get(n, {}).get("tokens") for n in names]
      if across["flops_known"]:
        flops = [r["reach"].get(n, {}).get("flops") for n in names]
        row += [f"{v:.3g}" if v else None for v in flops]
      rows.append(row)
    blocks.append(("table", header, rows))
  else:
    blocks.append(("p", "Needs a task shared by two or more series."))
  cross = across["cross_series_prediction"]
  blocks.append(("h", 3, "Task-to-task prediction carried to another series"))
  blocks.append(("table", ["fitted on", "predicted", "capability", "task", "R²", "checkpoints"],
                 [[r["fitted_on"], r["predicted"], r["capability"], r["task"], r["r2"], r["n"]]
                  for r in cross]) if cross else
                ("p", "Needs two series sharing 2+ normalised tasks of a group."))
  return blocks
