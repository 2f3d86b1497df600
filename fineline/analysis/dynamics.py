"""Cross-capability dynamics: lead–lag, emergence points and slope changes at events.

numpy and scipy only, plain arrays in (NaN marks a missing checkpoint), plain dicts out,
each with `reason` set instead of a number when the data cannot say.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

LEAD_LAG_SHARE = 1 / 3  # lags searched either way, as a share of the grid's steps
LEAD_MIN_POINTS = 8  # common checkpoints a lead–lag estimate needs
LEAD_MAX_GRID = 400  # points of the uniform token grid at most
LEAD_BOOTSTRAP = 400  # moving-block resamples for the lag interval
LEAD_PERMUTATIONS = 400  # shuffles of one differenced curve for the peak's p-value
EMERGENCE_Z = 2.0  # a task has left chance when its late scores are this many stderr above
EMERGENCE_GRID = 200  # candidate onsets between the first and last fitted checkpoint
EVENT_WINDOW = 6  # checkpoints each side of an event in its change-point test
EVENT_ALPHA = 0.01  # p-value below which a slope change is called significant
PLACEBO_ALPHA = 0.1  # share of placebo points that may reach an event's change
INTERVAL = 0.9  # coverage of every interval this module gives


def _xcorr(da: np.ndarray, db: np.ndarray, max_lag: int) -> np.ndarray:
  """Pearson correlation of da[..., i] with db[..., i + lag], lag = -max_lag..max_lag (last
  axis); rows of a batch are independent pairs."""
  da, db = np.atleast_2d(da), np.atleast_2d(db)
  out = np.full((da.shape[0], 2 * max_lag + 1), np.nan)
  n = da.shape[1]
  for k, lag in enumerate(range(-max_lag, max_lag + 1)):
    a, b = (da[:, :n - lag], db[:, lag:]) if lag >= 0 else (da[:, -lag:], db[:, :n + lag])
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
      out[:, k] = np.where(norm > 0, (a * b).sum(axis=1) / norm, np.nan)
  return out


def _noise(y: np.ndarray, se: np.ndarray | None) -> np.ndarray:
  """Per-point noise: the stderr where known, else the scatter about a 3-point mean."""
  if se is not None and np.isfinite(se).all() and (se > 0).any():
    return np.maximum(se, 0.5 * np.median(se[se > 0]))
  smooth = np.convolve(y, np.ones(3) / 3, mode="same")
  return np.full_like(y, float(np.std((y - smooth)[1:-1]) * math.sqrt(1.5)))


def lead_lag(tokens, a, b, se_a=None, se_b=None, *, seed: int = 0) -> dict:
  """How many tokens curve `a`'s rises precede `b`'s (negative: `b` leads).

  Both chance-normalised curves are put on a uniform token grid, differenced (so a shared
  upward trend does not correlate by itself), and cross-correlated; the lag of the peak
  times the grid step is the lead. Interval: the peak lag of curves redrawn from their
  stderrs (parametric bootstrap); p: the peak correlation against shuffles of `b`'s
  differences (permutation test).
  """
  tokens = np.asarray(tokens, dtype=float)
  arrays = [np.asarray(v, dtype=float) if v is not None else np.full(len(tokens), np.nan)
            for v in (a, b, se_a, se_b)]
  mask = np.isfinite(tokens) & np.isfinite(arrays[0]) & np.isfinite(arrays[1])
  t = tokens[mask]
  if len(t) < LEAD_MIN_POINTS:
    return {"reason": f"{len(t)} checkpoints where both are known; lead-lag needs "
                      f"{LEAD_MIN_POINTS}"}
  # Median spacing, coarsened where a few dense early checkpoints would make a huge grid.
  step = max(float(np.median(np.diff(t))), float(t[-1] - t[0]) / LEAD_MAX_GRID)
  if step <= 0:
    return {"reason": "checkpoints share a token count"}
  grid = np.arange(t[0], t[-1] + step * 1e-6, step)
  on_grid = lambda y: np.interp(grid, t, y)
  ya, yb = on_grid(arrays[0][mask]), on_grid(arrays[1][mask])
  na = on_grid(_noise(arrays[0][mask], arrays[2][mask]))
  nb = on_grid(_noise(arrays[1][mask], arrays[3][mask]))
  da, db = np.diff(ya), np.diff(yb)
  max_lag = max(1, int(len(da) * LEAD_LAG_SHARE))
  corr = _xcorr(da, db, max_lag)[0]
  if not np.isfinite(corr).any():
    return {"reason": "a curve does not change"}
  peak = int(np.nanargmax(corr))
  lag = peak - max_lag
  rng = np.random.default_rng(seed)
  draws = LEAD_BOOTSTRAP
  boot = _xcorr(np.diff(ya + na * rng.standard_normal((draws, len(ya))), axis=1),
                np.diff(yb + nb * rng.standard_normal((draws, len(yb))), axis=1), max_lag)
  lags = [int(np.nanargmax(c)) - max_lag for c in boot if np.isfinite(c).any()]
  shuffled = np.nanmax(_xcorr(np.broadcast_to(da, (LEAD_PERMUTATIONS, len(da))),
                              rng.permuted(np.tile(db, (LEAD_PERMUTATIONS, 1)), axis=1),
                              max_lag), axis=1)
  p = (1 + int((shuffled >= corr[peak]).sum())) / (1 + LEAD_PERMUTATIONS)
  lo, hi = np.quantile(lags, [(1 - INTERVAL) / 2, (1 + INTERVAL) / 2])
  return {"lead_tokens": lag * step, "lead_low": float(lo) * step, "lead_high": float(hi) * step,
          "lag_steps": lag, "max_lag_steps": max_lag, "at_edge": abs(lag) == max_lag,
          "grid_tokens": step, "correlation": float(corr[peak]), "p": float(p),
          "n": len(grid), "reason": None}


def _hinge_sse(x, y, w, grid) -> np.ndarray:
  """Weighted SSE of y = level + slope·max(0, x − onset), slope ≥ 0, at each onset of grid."""
  sw = w.sum()
  ym = (w * y).sum() / sw
  sse = np.empty(len(grid))
  for k, onset in enumerate(grid):
    h = np.maximum(0.0, x - onset)
    hc = h - (w * h).sum() / sw
    shh = (w * hc * hc).sum()
    slope = max(0.0, (w * hc * (y - ym)).sum() / shh) if shh > 0 else 0.0
    sse[k] = (w * (y - ym - slope * hc) ** 2).sum()
  return sse


def emergence(tokens, y, stderr, chance: float = 0.0) -> dict:
  """Tokens at which a (normalised, higher-is-better) task leaves chance, with an interval.

  A broken stick in log10 tokens, flat then rising, fitted by weighted least squares up to
  the first checkpoint halfway from chance to the best score (saturation after that would
  bend the stick). The interval is the likelihood-ratio one: every onset whose weighted
  χ² lies within the χ²(1) quantile of the best. Above chance at the first two
  checkpoints: the onset is earlier.
  """
  t, y = np.asarray(tokens, dtype=float), np.asarray(y, dtype=float)
  se = np.asarray(stderr, dtype=float)
  mask = np.isfinite(t) & np.isfinite(y) & (t > 0)
  if mask.sum() < 4:
    return {"emerged": None, "reason": f"{int(mask.sum())} checkpoints; emergence needs 4"}
  t, y, se = t[mask], y[mask], se[mask]
  known_se = np.isfinite(se).all() and (se > 0).any()
  se = np.maximum(se, 0.5 * np.median(se[se > 0])) if known_se else np.full_like(y, np.std(y))
  tail = slice(-2, None)
  late_z = (y[tail].mean() - chance) / (np.sqrt((se[tail] ** 2).sum()) / 2)
  if not late_z > EMERGENCE_Z:
    return {"emerged": False, "reason": f"still within {EMERGENCE_Z:g} stderr of chance"}
  if ((y[:2] - chance) > EMERGENCE_Z * se[:2]).all():
    return {"emerged": True, "tokens": None,
            "reason": "above chance from the first checkpoint: the onset is earlier"}
  half = chance + 0.5 * (y.max() - chance)
  end = max(int(np.argmax(y >= half)) + 1, 4)
  x = np.log10(t[:end])
  grid = np.linspace(x[0], x[-1], EMERGENCE_GRID)
  sse = _hinge_sse(x, y[:end], 1 / se[:end] ** 2, grid)
  best = int(np.argmin(sse))
  # Likelihood-ratio interval: onsets whose χ² is within the quantile of χ²(1) of the best,
  # the scale inflated when the points scatter more than their stderr says.
  scale = max(1.0, float(sse[best]) / max(end - 3, 1))
  inside = grid[sse <= sse[best] + scale * sps.chi2.ppf(INTERVAL, 1)]
  onset, lo, hi = grid[best], inside.min(), inside.max()
  return {"emerged": True, "tokens": float(10 ** onset), "low": float(10 ** lo),
          "high": float(10 ** hi), "n": end, "reason": None}


def slope_change(tokens, y, stderr, at: float, *, window: int = EVENT_WINDOW) -> dict:
  """Does the slope of y against log10(tokens) change at `at` tokens?

  Over the `window` checkpoints each side of `at`: y = α + β·x + δ·max(0, x − x_at)
  (continuous, kinked at the event) against the single slope δ = 0, by weighted least
  squares; δ's t-test with its error scaled up by sqrt(χ²/dof) when points scatter more
  than their stderr says.
  """
  t, y = np.asarray(tokens, dtype=float), np.asarray(y, dtype=float)
  se = np.asarray(stderr, dtype=float)
  mask = np.isfinite(t) & np.isfinite(y) & (t > 0)
  t, y, se = t[mask], y[mask], se[mask]
  before, after = np.flatnonzero(t < at)[-window:], np.flatnonzero(t > at)[:window]
  if len(before) < 2 or len(after) < 2:
    return {"reason": f"{len(before)} checkpoint(s) before and {len(after)} after; "
                      "the test needs 2 on each side"}
  idx = np.concatenate([before, after])
  x, ys = np.log10(t[idx]), y[idx]
  sig = se[idx]
  known = np.isfinite(sig).all() and (sig > 0).any()
  w = 1 / np.maximum(sig, 0.5 * np.median(sig[sig > 0])) ** 2 if known else np.ones_like(ys)
  design = np.column_stack([np.ones_like(x), x, np.maximum(0.0, x - math.log10(at))])
  sw = np.sqrt(w)
  coef, *_ = np.linalg.lstsq(design * sw[:, None], ys * sw, rcond=None)
  dof = len(ys) - 3
  chi2 = float((w * (ys - design @ coef) ** 2).sum())
  scale = max(1.0, chi2 / dof) if known and dof > 0 else (chi2 / dof if dof > 0 else np.inf)
  cov = np.linalg.inv(design.T @ (design * w[:, None])) * scale
  change, change_se = float(coef[2]), float(math.sqrt(cov[2, 2]))
  tstat = change / change_se if change_se > 0 else 0.0
  p = float(2 * sps.t.sf(abs(tstat), max(dof, 1)))
  return {"slope_before": float(coef[1]), "slope_after": float(coef[1] + coef[2]),
          "change": change, "change_se": change_se, "t": float(tstat), "p": p,
          "significant": p < EVENT_ALPHA, "n_before": len(before), "n_after": len(after),
          "reason": None}


def placebo(tokens, y, stderr, at: float, events: list[float], *,
            window: int = EVENT_WINDOW) -> dict:
  """The same test at checkpoints with no event nearby: a curve that bends by itself
  (rising into saturation) changes slope everywhere, not just at the event.

  Placebo points are the midpoints between consecutive checkpoints with `window` points on
  each side and no event within `window` checkpoints; `placebo_reach` counts those whose
  |t| reaches the event's, `placebo_p` is (1 + reach) / (1 + points).
  """
  t = np.asarray(tokens, dtype=float)
  t = t[np.isfinite(t) & np.isfinite(np.asarray(y, dtype=float))]
  event_index = [int(np.searchsorted(t, e)) for e in events]
  points = [0.5 * (t[i - 1] + t[i]) for i in range(window, len(t) - window + 1)
            if all(abs(i - j) > window for j in event_index)]
  found = slope_change(tokens, y, stderr, at, window=window)
  if found.get("reason") or not points:
    return {"placebo_n": len(points), "placebo_reach": None, "placebo_p": None}
  ts = [abs(slope_change(tokens, y, stderr, p, window=window).get("t", 0.0)) for p in points]
  reach = sum(v >= abs(found["t"]) for v in ts)
  return {"placebo_n": len(points), "placebo_reach": reach,
          "placebo_p": (1 + reach) / (1 + len(points))}
