"""Writes a report directory: tables, plots, report.md, index.html and analysis.json.

The report is built once as a list of blocks (heading, paragraph, list, table, image) and
rendered to both Markdown (plots beside it in plots/) and one self-contained HTML page
(`page`), so the two always say the same.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
import re
from typing import Any

import numpy as np

from fineline.analysis import findings as findings_lib
from fineline.analysis import methods
from fineline.analysis import page
from fineline.analysis import plots
from fineline.analysis import sections
from fineline.analysis import records as records_lib

def slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def _fmt(value: Any, digits: int = 4) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "–"
  if isinstance(value, float):
    return plots.human_tokens(value) if abs(value) >= 1e5 else f"{value:.{digits}g}"
  return str(value)


def jsonable(value: Any) -> Any:
  """NaN/inf become null (strict JSON); numpy scalars and arrays become Python values."""
  if isinstance(value, dict):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return jsonable(value.tolist())
  if isinstance(value, (np.floating, float)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def _tables(series_list) -> dict[str, tuple[list[str], list[list[Any]]]]:
  """Wide tables (one row per checkpoint) of scores, normalised scores and group means."""
  tasks = sorted({t for s in series_list for t in s.tasks})
  groups = sorted({g for s in series_list for g in s.groups})
  head = ["series", "checkpoint", "step", "tokens", "loss"]
  out = {"scores": (head + tasks, []), "normalized": (head + tasks, []),
         "groups": (head + groups, [])}
  for s in series_list:
    aggregates = {}
    for g, names in s.groups.items():
      scored = [t for t in names if s.tasks[t].chance is not None]
      if scored:
        aggregates[g] = findings_lib.group_aggregate(s, scored)[0]
    for i, tokens in enumerate(s.tokens):
      base = [s.name, s.checkpoints[i], s.steps[i], float(tokens), float(s.loss[i])]
      out["scores"][1].append(base + [s.tasks[t].score[i] if t in s.tasks else None
                                      for t in tasks])
      out["normalized"][1].append(base + [s.tasks[t].normalized[i] if t in s.tasks else None
                                          for t in tasks])
      out["groups"][1].append(base + [aggregates[g][i] if g in aggregates else None
                                      for g in groups])
  return out


def _write_csv(path: pathlib.Path, header: list[str], rows: list[list[Any]]) -> None:
  with path.open("w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for row in rows:
      writer.writerow(["" if v is None or (isinstance(v, float) and not math.isfinite(v))
                       else v for v in row])


def _md_table(header, rows) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
  return "\n".join(lines)


def _task_rows(entry: dict) -> list[list[Any]]:
  rows = []
  for task, r in entry["tasks"].items():
    detail, fit = r["phase_detail"], r["fit"] or {}
    usable = fit.get("usable")
    rows.append([task, r["capability"], r["metric"], r["last_score"], r["last_normalized"],
                 r["phase"] or f"– ({detail.get('reason')})",
                 f"{detail['slope']:+.3g} (t={detail['t']:.1f})" if "t" in detail else None,
                 r["loss_spearman"], r["loss_pearson"], fit.get("r2"),
                 fit.get("predicted_at_budget") if usable else None,
                 fit.get("tokens_to_target") if usable else None,
                 fit.get("reason") or ("–" if not fit else "ok")])
  return rows


def _blocks(series_list, result, images) -> list[tuple]:
  """`images`: (relative path, caption, section) with section "heatmap", "curves" or "other"."""
  shown = lambda section: [("img", rel, alt) for rel, alt, sec in images if sec == section]
  blocks = [("h", 1, "Capability dynamics report"), ("h", 2, "Verdict")]
  for name, entry in result["series"].items():
    blocks.append(("h", 3, f"{name} — {entry['checkpoints']} checkpoint(s), up to "
                           f"{plots.human_tokens(entry['tokens'][-1])} tokens"))
    blocks.append(("ul", entry["verdict"]["text"]))
    blocks.append(("table", ["capability", "phase", "verdict"],
                   [[g, r["phase"], r["verdict"]] for g, r in entry["groups"].items()]))
  if result["notes"]:
    blocks += [("h", 2, "Notes"), ("ul", result["notes"])]
  if shown("heatmap"):
    blocks += [("h", 2, "Task × checkpoint heat map"), *shown("heatmap")]
  blocks += [("h", 2, "Capability curves and training events"),
             ("p", "Per group: the mean normalised score and each task's score against "
                   "training tokens, ±1 stderr bands; vertical lines in a series' colour mark its "
                   "learning-rate drops (dashed) and loss spikes (dotted)."),
             *shown("curves"), *sections.event_blocks(result), *shown("other")]
  blocks += [("h", 2, "Per-task findings"),
             ("p", f"Phase window: last {result['settings']['window']} checkpoints. Fits are "
                   f"on normalised scores; the budget is each series' budget_tokens below.")]
  for name, entry in result["series"].items():
    blocks.append(("h", 3, f"{name} (budget {plots.human_tokens(entry['budget_tokens'])} "
                           f"tokens; loss: {entry['loss_source'] or 'none'})"))
    blocks.append(("table", ["task", "capability", "metric", "last", "last norm.", "phase",
                             "slope/10x tokens", "loss Spearman", "loss Pearson", "fit R²",
                             "at budget (norm.)", "tokens to target", "fit"],
                   _task_rows(entry)))
  blocks += sections.emergence_blocks(result) + sections.lead_lag_blocks(result)
  blocks += sections.forecast_blocks(result)
  blocks.append(("h", 2, "Task-to-task predictability within a group (leave-one-task-out R²)"))
  rows = [[name, g, t, v["r2"], v["r2_fit"], v["n"]] for name, entry in result["series"].items()
          for g, r in entry["groups"].items() for t, v in r["leave_one_task_out"].items() if v]
  blocks.append(("table", ["series", "capability", "held-out task", "R² (out of sample)",
                           "R² (in sample)", "checkpoints"], rows) if rows else
                ("p", "Not available: needs 2+ tasks of a group with 4+ shared checkpoints."))
  blocks += sections.across_blocks(result)
  blocks += [("h", 2, "Tables"),
             ("ul", [f"tables/{n}.csv and tables/{n}.md" for n in ("scores", "normalized",
                                                                   "groups")]),
             ("h", 2, "Methods"), ("ul", methods.methods(result["settings"]))]
  return blocks


def _markdown(blocks) -> str:
  parts = []
  for block in blocks:
    kind = block[0]
    if kind == "h":
      parts.append("#" * block[1] + " " + block[2])
    elif kind == "p":
      parts.append(block[1])
    elif kind == "ul":
      parts.append("\n".join(f"- {item}" for item in block[1]))
    elif kind == "table":
      parts.append(_md_table(block[1], block[2]))
    elif kind == "img":
      parts.append(f"![{block[2]}]({block[1]})")
  return "\n\n".join(parts) + "\n"


def write_report(out_dir: pathlib.Path, series_list: list[records_lib.Series],
                 result: dict) -> list[pathlib.Path]:
  """Writes everything into `out_dir` (which must exist); returns the plot paths."""
  (out_dir / "tables").mkdir()
  for name, (header, rows) in _tables(series_list).items():
    _write_csv(out_dir / "tables" / f"{name}.csv", header, rows)
    (out_dir / "tables" / f"{name}.md").write_text(_md_table(header, rows) + "\n",
                                                   encoding="utf-8")
  images = []  # (path, section)
  if any(len(s.tokens) >= 2 for s in series_list):
    (out_dir / "plots").mkdir()
    for i, series in enumerate(series_list):
      name = slug(series.name)
      if sum(slug(s.name) == name for s in series_list) > 1:
        name += f"_{i}"  # names that differ only in characters a file name cannot hold
      images.append((plots.plot_heatmap(out_dir / "plots" / f"heatmap_{name}.png", series),
                     "heatmap"))
    marks = {name: entry["studies"]["events"] for name, entry in result["series"].items()}
    for group in sorted({g for s in series_list for g in s.groups}):
      images.append((plots.plot_group(out_dir / "plots" / f"group_{slug(group)}.png", group,
                                      series_list, marks), "curves"))
    images.append((plots.plot_loss(out_dir / "plots" / "loss_vs_capability.png", series_list),
                   "other"))
  images = [(p, sec) for p, sec in images if p is not None]
  image_refs = [(p.relative_to(out_dir).as_posix(), p.stem.replace("_", " "), sec)
                for p, sec in images]
  blocks = _blocks(series_list, result, image_refs)
  (out_dir / "report.md").write_text(_markdown(blocks), encoding="utf-8")
  (out_dir / "index.html").write_text(page.render(blocks, out_dir, _fmt), encoding="utf-8")
  (out_dir / "analysis.json").write_text(json.dumps(jsonable(result), indent=1, allow_nan=False)
                                         + "\n", encoding="utf-8")
  return [p for p, _ in images]
