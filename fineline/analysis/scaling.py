"""Across sizes and series: FLOPs axes, the tokens each run needs to reach one score, and
how well one run's task-to-task relation predicts another's.

numpy only; series come from `records`, curves are normalised scores.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np

FLOPS_PER_PARAMETER_TOKEN = 6.0  # training FLOPs ≈ 6·N·D (forward and backward passes)
SHARED_LEVEL_FRACTION = 0.5  # compare at this fraction of the lowest run's best score


def flops(series) -> np.ndarray | None:
  """Training FLOPs at each checkpoint, None when the model size is unknown."""
  if not series.parameters:
    return None
  return FLOPS_PER_PARAMETER_TOKEN * series.parameters * np.asarray(series.tokens, dtype=float)


def first_reach(tokens, y, level: float) -> float | None:
  """Tokens where y first reaches `level`, interpolated in log tokens; None if it never does."""
  t, y = np.asarray(tokens, dtype=float), np.asarray(y, dtype=float)
  mask = np.isfinite(t) & np.isfinite(y) & (t > 0)
  t, y = t[mask], y[mask]
  above = np.flatnonzero(y >= level)
  if not len(above):
    return None
  i = int(above[0])
  if i == 0:
    return float(t[0])
  frac = (level - y[i - 1]) / (y[i] - y[i - 1])
  return float(10 ** (math.log10(t[i - 1]) + frac * (math.log10(t[i]) - math.log10(t[i - 1]))))


def same_score(series_list) -> list[dict]:
  """Per task shared by 2+ series: a level every series reaches, and each one's cost to it."""
  rows = []
  tasks = sorted({t for s in series_list for t, tr in s.tasks.items() if tr.chance is not None})
  for task in tasks:
    having = [s for s in series_list if task in s.tasks and np.isfinite(
        s.tasks[task].normalized).any()]
    if len(having) < 2:
      continue
    best = min(float(np.nanmax(s.tasks[task].normalized)) for s in having)
    if not best > 0:
      rows.append({"task": task, "level": None, "reason": "a series never rises above chance"})
      continue
    level = SHARED_LEVEL_FRACTION * best
    reach = {}
    for s in having:
      at = first_reach(s.tokens, s.tasks[task].normalized, level)
      reach[s.name] = {"tokens": at, "parameters": s.parameters,
                       "flops": (FLOPS_PER_PARAMETER_TOKEN * s.parameters * at
                                 if at is not None and s.parameters else None)}
    rows.append({"task": task, "level": level, "reach": reach, "reason": None})
  return rows


def _fit_line(x, y):
  mask = np.isfinite(x) & np.isfinite(y)
  if mask.sum() < 3 or np.ptp(x[mask]) == 0:
    return None
  slope, intercept = np.polyfit(x[mask], y[mask], 1)
  return float(intercept), float(slope)


def cross_series_prediction(series_list, min_points: int = 4) -> list[dict]:
  """Each task predicted in series B from the mean of its group's other tasks in B, with
  the relation (intercept, slope) fitted on series A: task-to-task prediction carried to
  an unseen run. R² is over B's checkpoints, so it is out of sample by construction."""
  rows = []
  for a, b in itertools.permutations(series_list, 2):
    for group, names in sorted(a.groups.items()):
      shared = [t for t in names if t in b.tasks and a.tasks[t].chance is not None
                and b.tasks[t].chance is not None]
      if len(shared) < 2:
        continue
      for task in shared:
        others = [t for t in shared if t != task]
        with warnings.catch_warnings():
          warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are gaps
          x_a = np.nanmean(np.vstack([a.tasks[t].normalized for t in others]), axis=0) \
              if len(others) > 1 else a.tasks[others[0]].normalized
          x_b = np.nanmean(np.vstack([b.tasks[t].normalized for t in others]), axis=0) \
              if len(others) > 1 else b.tasks[others[0]].normalized
        line = _fit_line(x_a, a.tasks[task].normalized)
        y_b = b.tasks[task].normalized
        mask = np.isfinite(x_b) & np.isfinite(y_b)
        if line is None or mask.sum() < min_points or np.ptp(y_b[mask]) == 0:
          continue
        pred = line[0] + line[1] * x_b[mask]
        ss_tot = float(((y_b[mask] - y_b[mask].mean()) ** 2).sum())
        rows.append({"fitted_on": a.name, "predicted": b.name, "capability": group,
                     "task": task, "n": int(mask.sum()),
                     "r2": 1 - float(((y_b[mask] - pred) ** 2).sum()) / ss_tot})
  return rows
