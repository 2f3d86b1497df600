"""Early prediction of final scores, back-tested on the records themselves.

Each task's normalised curve is fitted on its first 10%, 20% and 40% of checkpoints and
the fit predicts the score at the last checkpoint, with an interval; the error against the
real last score, pooled over every task of every series, says how far such predictions can
be trusted. A method whose intervals miss too often at a fraction is refused there.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from fineline.analysis import stats

FRACTIONS = (0.1, 0.2, 0.4)
METHODS = ("log-linear", "saturating")
# Checkpoints each method needs to fit.
MIN_SEEN = {"log-linear": 3, "saturating": stats.FIT_MIN_POINTS}
INTERVAL = 0.9  # nominal coverage of a prediction interval
COVERAGE_FLOOR = 0.75  # back-tested coverage below which a method is refused
MIN_BACKTESTS = 5  # predictions a (method, fraction) needs before its coverage is judged
ALL_SERIES = "all series"  # the pooled rows, which decide whether a method is used


def _log_linear(t, y, se, t_final, se_final):
  """Weighted line in log10 tokens; interval from its covariance plus the final's noise."""
  x = np.log10(t)
  known = np.isfinite(se).all() and (se > 0).any()
  w = 1 / np.maximum(se, 0.5 * np.median(se[se > 0])) ** 2 if known else np.ones_like(y)
  design = np.column_stack([np.ones_like(x), x])
  sw = np.sqrt(w)
  coef, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
  dof = len(y) - 2
  chi2 = float((w * (y - design @ coef) ** 2).sum()) / dof
  cov = np.linalg.inv(design.T @ (design * w[:, None])) * (max(1.0, chi2) if known else chi2)
  x0 = np.array([1.0, math.log10(t_final)])
  pred = float(x0 @ coef)
  spread = math.sqrt(float(x0 @ cov @ x0) + se_final ** 2)
  # Known stderrs fix the scale (normal quantile); a scale estimated from the scatter is
  # uncertain itself (Student t).
  estimated = not known or chi2 > 1.0
  quantile = sps.t.ppf((1 + INTERVAL) / 2, dof) if estimated else sps.norm.ppf((1 + INTERVAL) / 2)
  return pred, spread, float(quantile)


def _saturating(t, y, se, t_final, se_final):
  fit = stats.fit_saturating(t, y, se, a_bounds=(-1.0, 1.0), min_points=MIN_SEEN["saturating"])
  if not fit.get("usable"):
    return None
  spread = math.sqrt(stats.predict_se(fit, t_final) ** 2 + se_final ** 2)
  if not math.isfinite(spread):
    return None
  return stats.predict(fit, t_final), spread, float(sps.norm.ppf((1 + INTERVAL) / 2))


_FITTERS = {"log-linear": _log_linear, "saturating": _saturating}


def predict_final(method: str, tokens, y, stderr, seen: int) -> dict:
  """Prediction of the last known score from the first `seen` known checkpoints."""
  t, y, se = (np.asarray(v, dtype=float) for v in (tokens, y, stderr))
  mask = np.isfinite(t) & np.isfinite(y) & (t > 0)
  t, y, se = t[mask], y[mask], se[mask]
  if seen < MIN_SEEN[method]:
    return {"reason": f"{seen} checkpoint(s) seen; {method} needs {MIN_SEEN[method]}"}
  if seen >= len(y):
    return {"reason": "nothing left to predict"}
  se_final = float(se[-1]) if math.isfinite(se[-1]) else 0.0
  out = _FITTERS[method](t[:seen], y[:seen], se[:seen], t[-1], se_final)
  if out is None:
    return {"reason": f"the {method} fit is not usable on {seen} checkpoints"}
  pred, spread, quantile = out
  half = spread * quantile
  return {"predicted": pred, "low": pred - half, "high": pred + half, "spread": spread,
          "actual": float(y[-1]),
          "error": pred - float(y[-1]), "covered": bool(abs(pred - y[-1]) <= half),
          "seen": seen, "tokens_seen": float(t[seen - 1]), "tokens_final": float(t[-1]),
          "reason": None}


def backtest(series_list) -> dict:
  """Per (method, fraction): median absolute error and coverage over all tasks of all series
  (pooled, which decides) and, with several series, of each series."""
  predictions = []
  for series in series_list:
    for task, track in sorted(series.tasks.items()):
      if track.chance is None:
        continue
      known = int(np.isfinite(track.score).sum())
      for method in METHODS:
        for fraction in FRACTIONS:
          seen = math.ceil(fraction * known - 1e-9)
          result = predict_final(method, series.tokens, track.normalized,
                                 track.normalized_stderr, seen)
          predictions.append({"series": series.name, "task": task, "method": method,
                              "fraction": fraction, **result})
  scopes = [ALL_SERIES] + ([s.name for s in series_list] if len(series_list) > 1 else [])
  rows = [_row(scope, method, fraction, [
      p for p in predictions if p["method"] == method and p["fraction"] == fraction
      and scope in (ALL_SERIES, p["series"])])
          for scope in scopes for method in METHODS for fraction in FRACTIONS]
  # A prediction is given when its method holds up pooled and, where there are enough to
  # judge, on its own series.
  status = {(r["series"], r["method"], r["fraction"]): r["status"] for r in rows}
  for p in predictions:
    key = (p["method"], p["fraction"])
    own = status.get((p["series"], *key), "ok")
    p["trusted"] = (p["reason"] is None and status[(ALL_SERIES, *key)] == "ok"
                    and not own.startswith("refused: back-tested coverage"))
  return {"rows": rows, "predictions": predictions}


def _row(scope: str, method: str, fraction: float, tried: list[dict]) -> dict:
  made = [p for p in tried if p["reason"] is None]
  row = {"series": scope, "method": method, "fraction": fraction, "predictions": len(made),
         "tried": len(tried), "median_abs_error": None, "coverage": None, "status": None}
  if made:
    row["median_abs_error"] = float(np.median([abs(p["error"]) for p in made]))
    row["coverage"] = float(np.mean([p["covered"] for p in made]))
  if len(made) < MIN_BACKTESTS:
    row["status"] = (f"refused: {len(made)} back-tested prediction(s); coverage needs "
                     f"{MIN_BACKTESTS} to be judged")
  elif row["coverage"] < COVERAGE_FLOOR:
    row["status"] = (f"refused: back-tested coverage {row['coverage']:.2f} below "
                     f"{COVERAGE_FLOOR:g} for {INTERVAL:.0%} intervals")
  else:
    row["status"] = "ok"
  return row
