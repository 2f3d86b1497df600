"""Statistics of capability dynamics over checkpoints (numpy and scipy only).

Every function takes plain arrays (NaN marks a missing checkpoint) and returns plain
dicts, so `findings` can put them into the report and `analysis.json` as they are.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import optimize
from scipy import stats as sps

PHASES = ("at_chance", "rising", "saturated", "regressing")
PHASE_Z = 2.0  # slope t and distance from chance, in stderr, that decide a phase
DROP_Z = 2.5  # last two points this many combined stderr below the peak: regressing
SIMILARITY_POINTS = 16  # log-spaced points two trajectories are compared on
LOTO_MIN_POINTS = 4  # shared checkpoints leave-one-task-out needs
FIT_MIN_POINTS = 5  # checkpoints a saturating fit needs


def _finite(*arrays: np.ndarray) -> np.ndarray:
  mask = np.ones(len(arrays[0]), dtype=bool)
  for a in arrays:
    mask &= np.isfinite(np.asarray(a, dtype=float))
  return mask


def correlation(x: np.ndarray, y: np.ndarray) -> dict[str, float] | None:
  """Spearman and Pearson correlation over the points where both are known."""
  x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
  mask = _finite(x, y)
  if mask.sum() < 3 or np.ptp(x[mask]) == 0 or np.ptp(y[mask]) == 0:
    return None
  spearman = sps.spearmanr(x[mask], y[mask])
  pearson = sps.pearsonr(x[mask], y[mask])
  return {"n": int(mask.sum()), "spearman": float(spearman.statistic),
          "spearman_p": float(spearman.pvalue), "pearson": float(pearson.statistic),
          "pearson_p": float(pearson.pvalue)}


def common_log_grid(token_arrays: list[np.ndarray], points: int = 16) -> np.ndarray | None:
  """Log-spaced tokens over the range every array covers, or None without overlap."""
  positive = [np.asarray(t, dtype=float)[np.asarray(t) > 0] for t in token_arrays]
  if any(len(t) < 2 for t in positive):
    return None
  lo, hi = max(t.min() for t in positive), min(t.max() for t in positive)
  return np.geomspace(lo, hi, points) if hi > lo else None


def resample_log(tokens: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
  """Linear interpolation in log tokens; NaN outside the known points."""
  tokens, values = np.asarray(tokens, dtype=float), np.asarray(values, dtype=float)
  mask = _finite(tokens, values) & (tokens > 0)
  if mask.sum() < 2:
    return np.full(len(grid), np.nan)
  return np.interp(np.log(grid), np.log(tokens[mask]), values[mask], left=np.nan, right=np.nan)


def trajectory_similarity(tokens_a, values_a, tokens_b, values_b,
                          points: int = SIMILARITY_POINTS) -> dict[str, float] | None:
  """Correlation of two trajectories resampled on their common log-token grid."""
  grid = common_log_grid([np.asarray(tokens_a)[_finite(values_a)],
                          np.asarray(tokens_b)[_finite(values_b)]], points)
  if grid is None:
    return None
  result = correlation(resample_log(tokens_a, values_a, grid),
                       resample_log(tokens_b, values_b, grid))
  if result is not None:
    result.update(tokens_from=float(grid[0]), tokens_to=float(grid[-1]))
  return result


def leave_one_task_out(values_by_task: dict[str, np.ndarray],
                       min_points: int = LOTO_MIN_POINTS) -> dict[str, dict[str, float] | None]:
  """Predicts each task's trajectory from the mean of the group's other tasks.

  Per held-out task: ordinary least squares y = α + β·mean(others) over the checkpoints
  where both are known. `r2` is out of sample twice over: the task is absent from its
  predictor, and each checkpoint is predicted by a fit without it (leave-one-out
  residuals e/(1-h)); `r2_fit` is the in-sample R².
  """
  result = {}
  for task, y in values_by_task.items():
    others = [v for t, v in values_by_task.items() if t != task]
    if not others:
      result[task] = None
      continue
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are gaps
      x = np.nanmean(np.vstack(others), axis=0)
    mask = _finite(x, y)
    ys, xs = np.asarray(y, dtype=float)[mask], x[mask]
    ss_tot = float(((ys - ys.mean()) ** 2).sum()) if len(ys) else 0.0
    if mask.sum() < min_points or ss_tot == 0 or np.ptp(xs) == 0:
      result[task] = None
      continue
    design = np.column_stack([np.ones_like(xs), xs])
    coef, *_ = np.linalg.lstsq(design, ys, rcond=None)
    residual = ys - design @ coef
    hat = np.einsum("ij,jk,ik->i", design, np.linalg.inv(design.T @ design), design)
    press = float(((residual / np.clip(1 - hat, 1e-9, None)) ** 2).sum())
    result[task] = {"n": int(mask.sum()), "r2": 1 - press / ss_tot,
                    "r2_fit": 1 - float((residual ** 2).sum()) / ss_tot,
                    "intercept": float(coef[0]), "slope": float(coef[1])}
  return result


def _saturating(t_rel, a, b, c):
  return a - b * t_rel ** (-c)


def _saturating_jac(t_rel, a, b, c):
  power = t_rel ** (-c)
  return np.column_stack([np.ones_like(t_rel), -power, b * power * np.log(t_rel)])


def fit_saturating(tokens, y, sigma=None, *, a_bounds=(-np.inf, np.inf),
                   min_points: int = FIT_MIN_POINTS,
                   min_r2: float = 0.8) -> dict:
  """Fits y = a − b·(tokens/t_ref)^(−c), b ≥ 0, 0.01 ≤ c ≤ 3 (scipy curve_fit, bounds).

  t_ref is the last checkpoint's tokens, so `a − b` is the fitted value there. `usable`
  says whether the fit may be extrapolated (enough points, R² ≥ min_r2); `reason` says
  why not.
  """
  tokens, y = np.asarray(tokens, dtype=float), np.asarray(y, dtype=float)
  mask = _finite(tokens, y) & (tokens > 0)
  n = int(mask.sum())
  if n < min_points:
    return {"usable": False, "n": n, "reason": f"{n} checkpoints; a fit needs {min_points}"}
  t, ys = tokens[mask], y[mask]
  t_ref = float(t.max())
  sig = None
  if sigma is not None and np.isfinite(np.asarray(sigma, dtype=float)[mask]).all():
    sig = _floor_sigma(np.asarray(sigma, dtype=float)[mask])
  span = max(float(np.ptp(ys)), 1e-6)
  best = None
  for c0 in (0.1, 0.3, 0.7, 1.5):
    a0 = float(np.clip(ys[np.argmax(t)] + 0.1 * span, a_bounds[0] + 1e-9, a_bounds[1] - 1e-9))
    p0 = (a0, max(a0 - ys[np.argmax(t)], 1e-3 * span), c0)
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params, cov = optimize.curve_fit(
            _saturating, t / t_ref, ys, p0=p0, sigma=sig, absolute_sigma=sig is not None,
            bounds=([a_bounds[0], 0.0, 0.01], [a_bounds[1], np.inf, 3.0]), jac=_saturating_jac,
            max_nfev=2000)
    except (RuntimeError, ValueError):
      continue
    sse = float(((ys - _saturating(t / t_ref, *params)) ** 2).sum())
    if best is None or sse < best[1]:
      best = (params, sse, cov)
  if best is None:
    return {"usable": False, "n": n, "reason": "curve_fit did not converge"}
  (a, b, c), sse, cov = best
  ss_tot = float(((ys - ys.mean()) ** 2).sum())
  r2 = 1 - sse / ss_tot if ss_tot > 0 else 0.0
  fit = {"a": float(a), "b": float(b), "c": float(c), "t_ref": t_ref, "r2": float(r2), "n": n,
         "rmse": math.sqrt(sse / n), "usable": r2 >= min_r2, "reason": None,
         # Parameter covariance, scaled up when the points scatter more than their stderr.
         "cov": (np.asarray(cov) * (max(1.0, float((((ys - _saturating(t / t_ref, a, b, c))
                                                      / sig) ** 2).sum()) / max(n - 3, 1))
                                    if sig is not None else 1.0)).tolist()}
  if r2 < min_r2:
    fit["reason"] = f"R² {r2:.2f} below {min_r2}: the curve does not describe the points"
  return fit


def predict(fit: dict, tokens: float) -> float:
  return float(_saturating(tokens / fit["t_ref"], fit["a"], fit["b"], fit["c"]))


def predict_se(fit: dict, tokens: float) -> float:
  """Standard error of the fitted curve at `tokens` (delta method on the covariance)."""
  grad = _saturating_jac(np.array([tokens / fit["t_ref"]]), fit["a"], fit["b"], fit["c"])[0]
  return float(math.sqrt(max(grad @ np.asarray(fit["cov"]) @ grad, 0.0)))


def tokens_to_reach(fit: dict, level: float) -> float | None:
  """Tokens where the fitted curve reaches `level`; None when the asymptote is below it."""
  if level >= fit["a"] or fit["b"] <= 0:
    return None
  return float(fit["t_ref"] * ((fit["a"] - level) / fit["b"]) ** (-1.0 / fit["c"]))


def _floor_sigma(sigma: np.ndarray) -> np.ndarray:
  # A stderr of 0 (an accuracy of exactly 0 or 1) would give that point infinite weight.
  positive = sigma[sigma > 0]
  floor = 0.5 * float(np.median(positive)) if len(positive) else 1e-6
  return np.maximum(sigma, floor)


def slope_test(tokens, y, sigma=None) -> dict[str, float]:
  """Weighted least-squares slope of y against log10(tokens) and its standard error.

  With per-point stderr the weights are 1/σ² and the error is the propagated one, scaled
  up by sqrt(χ²/dof) when the points scatter more than their stderr says; without
  stderr it is the ordinary residual-based error.
  """
  x = np.log10(np.asarray(tokens, dtype=float))
  y = np.asarray(y, dtype=float)
  known = sigma is not None and np.isfinite(np.asarray(sigma, dtype=float)).all()
  w = 1 / _floor_sigma(np.asarray(sigma, dtype=float)) ** 2 if known else np.ones_like(y)
  xm = (w * x).sum() / w.sum()
  sxx = float((w * (x - xm) ** 2).sum())
  if sxx == 0:
    return {"slope": 0.0, "slope_se": math.inf, "t": 0.0}
  slope = float((w * (x - xm) * (y - (w * y).sum() / w.sum())).sum() / sxx)
  residual = y - ((w * y).sum() / w.sum() + slope * (x - xm))
  dof = max(len(y) - 2, 1)
  chi2_dof = float((w * residual ** 2).sum()) / dof
  se = math.sqrt((max(1.0, chi2_dof) if known else chi2_dof) / sxx)
  t = slope / se if se > 0 else math.copysign(math.inf, slope) if slope else 0.0
  return {"slope": slope, "slope_se": se, "t": float(t)}


def classify_phase(tokens, y, sigma=None, chance: float | None = None, *, window: int = 4,
                   z: float = PHASE_Z) -> dict:
  """at_chance | rising | saturated | regressing over the last `window` checkpoints.

  y is higher-is-better. At chance: the recent weighted mean is within z stderr of chance
  and the best score so far never rose significantly above it. Regressing: the recent
  slope is significantly negative, or the mean of the last two points lies more than
  2.5 combined stderr below the earlier peak. Rising: significantly positive slope.
  Saturated: none of these (above chance, no significant change).
  """
  tokens, y = np.asarray(tokens, dtype=float), np.asarray(y, dtype=float)
  sigma = np.full_like(y, np.nan) if sigma is None else np.asarray(sigma, dtype=float)
  mask = _finite(tokens, y) & (tokens > 0)
  if mask.sum() < 3:
    return {"phase": None, "reason": f"{int(mask.sum())} checkpoints; a phase needs 3"}
  t, ys, sig = tokens[mask], y[mask], sigma[mask]
  k = min(max(window, 3), len(ys))
  rt, ry, rs = t[-k:], ys[-k:], sig[-k:]
  has_sigma = np.isfinite(rs).all()
  test = slope_test(rt, ry, rs if has_sigma else None)
  if has_sigma:
    w = 1 / _floor_sigma(rs) ** 2
    level, level_se = float((w * ry).sum() / w.sum()), float(1 / math.sqrt(w.sum()))
  else:
    level, level_se = float(ry.mean()), float(ry.std(ddof=1) / math.sqrt(k))
  tail = min(2, len(ys) - 1)
  peak_i = int(np.argmax(ys[:-tail]))
  peak = float(ys[peak_i])
  peak_se = float(sig[peak_i]) if np.isfinite(sig[peak_i]) else level_se * math.sqrt(k)
  recent = float(ys[-tail:].mean())
  recent_se = (float(np.sqrt((sig[-tail:] ** 2).sum())) / tail if np.isfinite(sig[-tail:]).all()
               else peak_se / math.sqrt(tail))
  drop_z = (peak - recent) / max(math.hypot(peak_se, recent_se), 1e-12)
  at_chance = chance is not None and level - chance <= z * level_se
  peak_above_chance = chance is None or peak - chance > z * max(peak_se, 1e-12)
  detail = dict(test, level=level, level_se=level_se, peak=peak, drop_z=float(drop_z),
                window=k)
  if at_chance and not peak_above_chance:
    phase = "at_chance"
  elif test["t"] < -z or drop_z > DROP_Z:
    phase = "regressing"
  elif at_chance:
    phase = "at_chance"
  elif test["t"] > z:
    phase = "rising"
  else:
    phase = "saturated"
  return dict(detail, phase=phase)
