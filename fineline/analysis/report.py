"""Writes a report directory: tables, plots, report.md, index.html and analysis.json.

The report is built once as a list of blocks (heading, paragraph, list, table, image) and
rendered to both Markdown and HTML, so the two always say the same.
"""

from __future__ import annotations

import csv
import html
import json
import math
import pathlib
import re
from typing import Any

import numpy as np

from fineline.analysis import findings as findings_lib
from fineline.analysis import plots
from fineline.analysis import records as records_lib

METHODS = [
    "Primary metric per task: the record's primary_metric when it names a reported number; "
    "else acc_norm, else acc, else exact_match, else bits_per_byte or perplexity (lower is "
    "better; negated, perplexity as -log, where a direction matters). "
    "Normalised score = (score - chance) / (1 - chance); capability aggregate = mean "
    "normalised score of the group's tasks, only at checkpoints where all of them were "
    "evaluated, stderr propagated.",
    "Training loss per checkpoint: mean of the last 5 logged training losses at or before "
    "its step (metrics.jsonl); else the record's own loss; else a language-modelling task's "
    "bits per byte or log-perplexity. The source used is named per series.",
    "Loss correlation: Spearman and Pearson (scipy.stats) between the training loss and the "
    "task's score over the checkpoints where both are known (3 or more). A healthy run has "
    "a negative correlation for accuracy-like metrics.",
    "Phase: over the last W checkpoints, weighted least-squares slope of the score against "
    "log10(tokens) with weights 1/stderr², its error propagated from the per-point stderr "
    "(inflated by sqrt(χ²/dof) when the points scatter more). At chance: the recent weighted "
    "mean is within 2 stderr of chance and no earlier point rose significantly above it. "
    "Regressing: slope t < -2, or the last two points 2.5 combined stderr below the earlier "
    "peak. Rising: slope t > 2. Saturated: otherwise. Groups are judged the same way on "
    "their aggregate (chance = 0); where no aggregate can be judged (no normalised task, "
    "too few checkpoints with all tasks), by their most telling task phase: regressing, "
    "then rising, saturated, at chance.",
    "Saturating fit: score = a - b·(tokens/t_ref)^(-c), b ≥ 0, 0.01 ≤ c ≤ 3, by "
    "scipy.optimize.curve_fit with bounds, weighted by stderr, on normalised scores "
    "(a ≤ 1); t_ref = last checkpoint's tokens. Predictions at the budget and tokens to the "
    "target (default: 90% of the fitted asymptote) are given only when the fit has 5 or more "
    "points and R² ≥ the threshold, within 100x the last checkpoint's tokens, and (for the "
    "default target) when the asymptote is identified (a below its bound of 1, c above its "
    "lower bound); otherwise the prediction is refused and the reason stated.",
    "Similarity across series: both normalised trajectories linearly interpolated in "
    "log(tokens) onto 16 log-spaced points over the token range both cover, then Pearson "
    "and Spearman correlation of the resampled values.",
    "Task-to-task predictability: for each task of a group, least squares of its normalised "
    "trajectory on the mean of the group's other tasks; R² is leave-one-task-out (the task "
    "is not in its predictor) and leave-one-checkpoint-out (PRESS residuals).",
]


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
  blocks = [("h", 1, "Capability dynamics report"), ("h", 2, "Optimization state")]
  for name, entry in result["series"].items():
    blocks.append(("h", 3, f"{name} — {entry['checkpoints']} checkpoint(s), up to "
                           f"{plots.human_tokens(entry['tokens'][-1])} tokens"))
    blocks.append(("ul", entry["verdict"]["text"]))
    blocks.append(("table", ["capability", "phase", "verdict"],
                   [[g, r["phase"], r["verdict"]] for g, r in entry["groups"].items()]))
  if result["notes"]:
    blocks += [("h", 2, "Notes"), ("ul", result["notes"])]
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
  blocks.append(("h", 2, "Task-to-task predictability within a group (leave-one-task-out R²)"))
  rows = [[name, g, t, v["r2"], v["r2_fit"], v["n"]] for name, entry in result["series"].items()
          for g, r in entry["groups"].items() for t, v in r["leave_one_task_out"].items() if v]
  blocks.append(("table", ["series", "capability", "held-out task", "R² (out of sample)",
                           "R² (in sample)", "checkpoints"], rows) if rows else
                ("p", "Not available: needs 2+ tasks of a group with 4+ shared checkpoints."))
  blocks.append(("h", 2, "Similarity of dynamics across series"))
  sims = [s for s in result["similarity"] if s.get("pearson") is not None]
  blocks.append(("table", ["task or group", "series A", "series B", "Pearson", "Spearman",
                           "tokens"],
                 [[s.get("task") or f"{s['capability']} (group mean)", s["a"], s["b"],
                   s["pearson"], s["spearman"],
                   f"{plots.human_tokens(s['tokens_from'])}–{plots.human_tokens(s['tokens_to'])}"]
                  for s in sims]) if sims else
                ("p", result.get("similarity_note") or
                 "No pair of series shares a task over a common token range."))
  if images:
    blocks.append(("h", 2, "Plots"))
    blocks += [("img", rel, alt) for rel, alt in images]
  blocks += [("h", 2, "Tables"),
             ("ul", [f"tables/{n}.csv and tables/{n}.md" for n in ("scores", "normalized",
                                                                   "groups")]),
             ("h", 2, "Methods"), ("ul", METHODS)]
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


def _html(blocks) -> str:
  e = html.escape
  body = []
  for block in blocks:
    kind = block[0]
    if kind == "h":
      body.append(f"<h{block[1]}>{e(block[2])}</h{block[1]}>")
    elif kind == "p":
      body.append(f"<p>{e(block[1])}</p>")
    elif kind == "ul":
      body.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in block[1]) + "</ul>")
    elif kind == "table":
      head = "".join(f"<th>{e(h)}</th>" for h in block[1])
      rows = "".join("<tr>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in row) + "</tr>"
                     for row in block[2])
      body.append(f"<table><tr>{head}</tr>{rows}</table>")
    elif kind == "img":
      body.append(f'<figure><img src="{e(block[1])}" alt="{e(block[2])}">'
                  f"<figcaption>{e(block[2])}</figcaption></figure>")
  style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:"
           "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
           "img{max-width:100%}")
  return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Capability dynamics"
          f"</title><style>{style}</style></head><body>\n" + "\n".join(body)
          + "\n</body></html>\n")


def write_report(out_dir: pathlib.Path, series_list: list[records_lib.Series],
                 result: dict) -> list[pathlib.Path]:
  """Writes everything into `out_dir` (which must exist); returns the plot paths."""
  (out_dir / "tables").mkdir()
  for name, (header, rows) in _tables(series_list).items():
    _write_csv(out_dir / "tables" / f"{name}.csv", header, rows)
    (out_dir / "tables" / f"{name}.md").write_text(_md_table(header, rows) + "\n",
                                                   encoding="utf-8")
  images = []
  if any(len(s.tokens) >= 2 for s in series_list):
    (out_dir / "plots").mkdir()
    for group in sorted({g for s in series_list for g in s.groups}):
      path = plots.plot_group(out_dir / "plots" / f"group_{slug(group)}.png", group, series_list)
      images.append(path)
    images.append(plots.plot_loss(out_dir / "plots" / "loss_vs_capability.png", series_list))
    for i, series in enumerate(series_list):
      name = slug(series.name)
      if sum(slug(s.name) == name for s in series_list) > 1:
        name += f"_{i}"  # names that differ only in characters a file name cannot hold
      images.append(plots.plot_heatmap(out_dir / "plots" / f"heatmap_{name}.png", series))
  images = [p for p in images if p is not None]
  image_refs = [(p.relative_to(out_dir).as_posix(), p.stem.replace("_", " ")) for p in images]
  blocks = _blocks(series_list, result, image_refs)
  (out_dir / "report.md").write_text(_markdown(blocks), encoding="utf-8")
  (out_dir / "index.html").write_text(_html(blocks), encoding="utf-8")
  (out_dir / "analysis.json").write_text(json.dumps(jsonable(result), indent=1, allow_nan=False)
                                         + "\n", encoding="utf-8")
  return images
