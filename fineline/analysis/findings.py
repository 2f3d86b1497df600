"""Turns aligned series into findings: per-task statistics, per-group verdicts, the verdict.

The returned dict is what `analysis.json` holds and what the report renders.
"""

from __future__ import annotations

import itertools

import numpy as np

from fineline.analysis import records as records_lib
from fineline.analysis import scaling
from fineline.analysis import stats
from fineline.analysis import studies

FORMAT = "fineline-analysis-v1"
MAX_EXTRAPOLATION = 100.0  # furthest multiple of the last checkpoint's tokens to predict at
PHASE_WORDS = {"rising": "still improving", "saturated": "stalled", "regressing": "regressing",
               "at_chance": "at chance"}


def group_aggregate(series: records_lib.Series, tasks: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """Mean normalised score of the group's tasks per checkpoint, and its stderr.

  Only checkpoints where every task was evaluated get a value: a mean over whichever tasks
  happen to be present would jump with the task mix rather than with the model.
  """
  norm = np.vstack([series.tasks[t].normalized for t in tasks])
  err = np.vstack([series.tasks[t].normalized_stderr for t in tasks])
  mean = norm.mean(axis=0)
  se = np.sqrt((err ** 2).sum(axis=0)) / len(tasks)
  return mean, se


def _task_findings(series, track, budget, target, window, min_r2) -> dict:
  y, y_se = track.oriented()
  phase = stats.classify_phase(series.tokens, y, y_se, track.chance, window=window)
  loss = stats.correlation(series.loss, track.score)
  normalised = track.chance is not None
  fit_y, fit_se = (track.normalized, track.normalized_stderr) if normalised else (y, y_se)
  fit = None
  if np.isfinite(fit_y).sum() >= 3:
    fit = stats.fit_saturating(series.tokens, fit_y, fit_se, min_r2=min_r2,
                               a_bounds=(-1.0, 1.0) if normalised else (-np.inf, np.inf))
    fit["scale"] = "normalised" if normalised else (
        f"-log({track.metric})" if track.metric.endswith("perplexity") else f"-{track.metric}")
    fit["budget_tokens"] = budget
    fit.update(predicted_at_budget=None, target=None, tokens_to_target=None)
    if fit.get("usable"):
      fit.update(_extrapolate(fit, budget, target if normalised else None, normalised))
  last = np.flatnonzero(np.isfinite(track.score))
  return {
      "capability": track.capability, "metric": track.metric, "chance": track.chance,
      "higher_is_better": track.higher_is_better, "n_points": int(len(last)),
      "last_score": float(track.score[last[-1]]) if len(last) else None,
      "last_normalized": float(track.normalized[last[-1]]) if len(last) and normalised else None,
      "phase": phase.get("phase"), "phase_detail": phase,
      "loss_spearman": loss["spearman"] if loss else None,
      "loss_pearson": loss["pearson"] if loss else None, "loss_correlation": loss, "fit": fit,
  }


def _extrapolate(fit: dict, budget: float, target: float | None, normalised: bool) -> dict:
  """Predictions from a usable fit, each refused (with the reason) where it would guess."""
  out, reasons = {}, []
  limit = MAX_EXTRAPOLATION * fit["t_ref"]
  if budget <= limit:
    out["predicted_at_budget"] = stats.predict(fit, budget)
  else:
    reasons.append(f"budget beyond {MAX_EXTRAPOLATION:g}x the last checkpoint: not predicted")
  if normalised:
    unbent = fit["a"] >= 1.0 - 1e-3 or fit["c"] <= 0.0105
    level = target if target is not None else 0.9 * fit["a"]
    out["target"] = level
    reach = stats.tokens_to_reach(fit, level)
    if unbent and target is None:
      reasons.append("the curve has not bent yet: its asymptote is not identified")
    elif reach is None:
      reasons.append(f"the fitted asymptote {fit['a']:.3f} stays below the target {level:.3f}")
    elif reach > limit:
      reasons.append(f"the target lies beyond {MAX_EXTRAPOLATION:g}x the last checkpoint")
    else:
      out["tokens_to_target"] = reach
  out["reason"] = "; ".join(reasons) or None
  return out


def _group_findings(series, names, task_results, window) -> dict:
  by_phase = {p: [t for t in names if task_results[t]["phase"] == p] for p in stats.PHASES}
  scored = [t for t in names if series.tasks[t].chance is not None]
  phase = {"phase": None, "reason": "no normalised task"}
  if scored:
    mean, se = group_aggregate(series, scored)
    phase = stats.classify_phase(series.tokens, mean, se, 0.0, window=window)
  if phase.get("phase") is None and any(by_phase.values()):
    # No aggregate to judge (no normalised task, or too few checkpoints with all tasks):
    # the most telling task phase speaks for the group.
    phase = {"phase": next(p for p in ("regressing", "rising", "saturated", "at_chance")
                           if by_phase[p]), "from": "task phases",
             "reason": phase.get("reason")}
  loto = stats.leave_one_task_out({t: series.tasks[t].normalized for t in scored}) if len(
      scored) > 1 else {}
  return {"tasks": names, "phase": phase.get("phase"), "phase_detail": phase,
          "tasks_by_phase": by_phase, "leave_one_task_out": loto,
          "verdict": _group_sentence(phase, by_phase)}


def _group_sentence(phase: dict, by_phase: dict) -> str:
  if phase.get("phase") is None:
    return f"no verdict ({phase.get('reason', 'too few checkpoints')})"
  words = PHASE_WORDS[phase["phase"]]
  if "t" in phase:
    words += (f" (aggregate slope {phase['slope']:+.3f} normalised per 10x tokens, "
              f"t = {phase['t']:.1f} over the last {phase['window']} checkpoints)")
  parts = [f"{PHASE_WORDS[p]}: {', '.join(ts)}" for p, ts in by_phase.items() if ts]
  return words + ("; " + "; ".join(parts) if parts else "")


def _verdict(series: records_lib.Series, result: dict) -> dict:
  groups, tasks = result["groups"], result["tasks"]
  pick = lambda p: [g for g, r in groups.items() if r["phase"] == p]
  rising = sorted((t for t, r in tasks.items() if r["phase"] == "rising"),
                  key=lambda t: -tasks[t]["phase_detail"]["t"])
  watch = [f"{t} (rising, t = {tasks[t]['phase_detail']['t']:.1f})" for t in rising[:5]]
  watch += [f"{t} (regressing)" for t, r in tasks.items() if r["phase"] == "regressing"]
  emerging = [t for t, r in tasks.items() if r["phase"] == "at_chance" and
              groups[r["capability"]]["phase"] == "rising"]
  watch += [f"{t} (at chance while its group rises: may emerge)" for t in emerging]
  untracked = [t for t in rising if tasks[t]["loss_spearman"] is not None
               and abs(tasks[t]["loss_spearman"]) < 0.5]
  if len(series.tokens) < 3:
    lines = [f"{len(series.tokens)} checkpoint(s): dynamics need at least 3, so no verdict; "
             "see the tables."]
    return {"improving": [], "stalled": [], "regressed": [], "at_chance": [], "watch": [],
            "text": lines}
  lines = [f"Still improving significantly: {', '.join(pick('rising')) or 'none'}.",
           f"Stalled: {', '.join(pick('saturated')) or 'none'}.",
           f"Regressed: {', '.join(pick('regressing')) or 'none'}.",
           f"Not yet above chance: {', '.join(pick('at_chance')) or 'none'}."]
  if untracked:
    lines.append("Training loss does not track " + ", ".join(untracked)
                 + " (|Spearman| < 0.5): watch these scores directly.")
  lines.append("Worth watching now: " + ("; ".join(watch) if watch else
                                         "nothing moves significantly; the run looks "
                                         "saturated on these tasks") + ".")
  return {"improving": pick("rising"), "stalled": pick("saturated"),
          "regressed": pick("regressing"), "at_chance": pick("at_chance"),
          "watch": watch, "text": lines}


def _trajectories(series: records_lib.Series) -> dict[tuple[str, str], np.ndarray]:
  """(kind, name) -> normalised trajectory (oriented for metrics without a baseline)."""
  out = {}
  for task, track in series.tasks.items():
    out[("task", task)] = track.normalized if track.chance is not None else track.oriented()[0]
  for group, names in series.groups.items():
    scored = [t for t in names if series.tasks[t].chance is not None]
    if scored:
      out[("group", group)] = group_aggregate(series, scored)[0]
  return out


def _similarity(series_list: list[records_lib.Series]) -> list[dict]:
  """Curve-shape similarity of each shared task and group, on tokens and (where both model
  sizes are known) on training FLOPs."""
  out = []
  for a, b in itertools.combinations(series_list, 2):
    ta, tb = _trajectories(a), _trajectories(b)
    axes = [("tokens", a.tokens, b.tokens)]
    if a.parameters and b.parameters:
      axes.append(("flops", scaling.flops(a), scaling.flops(b)))
    for (kind, name), (axis, xa, xb) in itertools.product(sorted(set(ta) & set(tb)), axes):
      sim = stats.trajectory_similarity(xa, ta[kind, name], xb, tb[kind, name])
      out.append({"level": kind, "task" if kind == "task" else "capability": name,
                  "a": a.name, "b": b.name, "axis": axis,
                  **(sim or {"pearson": None, "spearman": None,
                             "reason": f"no common {axis} range with 3+ varying points"})})
  return out


def analyze(series_list: list[records_lib.Series], notes: list[str], *,
            budget_tokens: float | None = None, target: float | None = None, window: int = 4,
            min_r2: float = 0.8, schedule: list[dict] | None = None) -> dict:
  """Findings for every series; the dict `analysis.json` holds."""
  notes = list(notes)
  result = {"format": FORMAT, "settings": {"budget_tokens": budget_tokens, "target": target,
                                           "window": window, "fit_min_r2": min_r2},
            "notes": notes, "series": {}}
  for series in series_list:
    budget = budget_tokens or 2.0 * float(series.tokens[-1])
    tasks = {t: _task_findings(series, tr, budget, target, window, min_r2)
             for t, tr in sorted(series.tasks.items())}
    groups = {g: _group_findings(series, names, tasks, window)
              for g, names in series.groups.items()}
    entry = {"source": series.source, "checkpoints": len(series.tokens),
             "tokens": series.tokens.tolist(), "steps": series.steps,
             "loss_source": series.loss_source, "budget_tokens": budget,
             "tasks": tasks, "groups": groups}
    if len(series.tokens) < 3:
      notes.append(f"{series.name}: {len(series.tokens)} checkpoint(s); tables only — phases, "
                   "fits and correlations need at least 3 checkpoints (fits 5)")
    if series.loss_source is None:
      notes.append(f"{series.name}: no training loss (no metrics.jsonl, record loss or "
                   "language-modelling task); loss correlations left out")
    entry["verdict"] = _verdict(series, entry)
    entry["studies"] = studies.series_studies(series, group_aggregate, schedule or [])
    if len(series.tasks) < 2:
      notes.append(f"{series.name}: one task; lead-lag and task-to-task prediction need two "
                   "capability groups or tasks")
    result["series"][series.name] = entry
  result["similarity"] = _similarity(series_list)
  result["across"] = studies.across_studies(series_list, group_aggregate)
  if len(series_list) < 2:
    result["similarity_note"] = "one series: similarity across model sizes needs two or more"
  return result
