"""PNG plots of capability dynamics (matplotlib, Agg canvas; no pyplot global state)."""

from __future__ import annotations

import math
import pathlib

import numpy as np
from matplotlib import colormaps
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fineline.analysis import findings as findings_lib
from fineline.analysis import records as records_lib

MAX_TASK_PANELS = 11  # beyond this a group's tasks are in the tables only


def human_tokens(tokens: float) -> str:
  for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(tokens) >= size:
      return f"{tokens / size:.3g}{unit}"
  return f"{tokens:.3g}"


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
  FigureCanvasAgg(fig)
  fig.tight_layout()
  fig.savefig(path, dpi=100, format="png")
  return path


def _grid(panels: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list]:
  cols = min(3, panels)
  rows = math.ceil(panels / cols)
  fig = Figure(figsize=(width * cols, height * rows))
  return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(panels)]


def _colors(series_list) -> dict[str, tuple]:
  cmap = colormaps["tab10"]
  return {s.name: cmap(i % 10) for i, s in enumerate(series_list)}


def _line(ax, tokens, y, se, color, label):
  mask = np.isfinite(y) & (tokens > 0)
  if not mask.any():
    return
  ax.plot(tokens[mask], y[mask], "o-", color=color, label=label, markersize=3, linewidth=1.4)
  band = mask & np.isfinite(se)
  if band.any():
    ax.fill_between(tokens[band], (y - se)[band], (y + se)[band], color=color, alpha=0.2,
                    linewidth=0)


def _log_tokens_axis(ax) -> None:
  ax.set_xscale("log")
  ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: human_tokens(v)))
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.tick_params(axis="x", labelsize=7)


EVENT_STYLE = {"lr_drop": "--", "loss_spike": ":"}  # line style; colour: the series'


def _mark_events(ax, marks: list[tuple[dict, tuple]]) -> None:
  for event, color in marks:
    ax.axvline(event["tokens"], linewidth=1.2, alpha=0.8, color=color,
               linestyle=EVENT_STYLE.get(event["kind"], "-."))


def plot_group(path: pathlib.Path, group: str, series_list: list[records_lib.Series],
               events: dict[str, list[dict]] | None = None) -> pathlib.Path:
  """Group aggregate and each task's score against training tokens, one line per series,
  ±1 stderr bands, and vertical lines at each series' training `events` (by series name)."""
  colors = _colors(series_list)
  tasks = sorted({t for s in series_list for t, tr in s.tasks.items() if tr.capability == group})
  shown = tasks[:MAX_TASK_PANELS]
  fig, axes = _grid(len(shown) + 1)
  for series in series_list:
    scored = [t for t in series.groups.get(group, []) if series.tasks[t].chance is not None]
    if scored:
      mean, se = findings_lib.group_aggregate(series, scored)
      _line(axes[0], series.tokens, mean, se, colors[series.name], series.name)
    for ax, task in zip(axes[1:], shown):
      if task in series.tasks:
        track = series.tasks[task]
        _line(ax, series.tokens, track.score, track.stderr, colors[series.name], series.name)
  axes[0].set_title(f"{group}: mean normalised score")
  axes[0].axhline(0.0, color="grey", linestyle=":", linewidth=1)
  for ax, task in zip(axes[1:], shown):
    track = next(s.tasks[task] for s in series_list if task in s.tasks)
    ax.set_title(f"{task} ({track.metric})", fontsize=9)
    if track.chance is not None:
      ax.axhline(track.chance, color="grey", linestyle=":", linewidth=1, label="chance")
  marks = [(e, colors[s.name]) for s in series_list for e in (events or {}).get(s.name, [])
           if s.tokens.min() <= e["tokens"] <= s.tokens.max()]
  for ax in axes:
    if ax.has_data():
      _mark_events(ax, marks)
      _log_tokens_axis(ax)
    ax.set_xlabel("training tokens")
    ax.grid(True, alpha=0.3)
  if axes[0].has_data():
    axes[0].legend(fontsize=7)
  if len(tasks) > len(shown):
    fig.suptitle(f"{group}: first {len(shown)} of {len(tasks)} tasks (all in the tables)")
  return _save(fig, path)


def plot_loss(path: pathlib.Path, series_list: list[records_lib.Series]) -> pathlib.Path | None:
  """Each capability's mean normalised score against training loss; None without loss."""
  with_loss = [s for s in series_list if np.isfinite(s.loss).any()]
  groups = sorted({g for s in with_loss for g, ts in s.groups.items()
                   if any(s.tasks[t].chance is not None for t in ts)})
  if not groups:
    return None
  colors = _colors(series_list)
  fig, axes = _grid(len(groups))
  for ax, group in zip(axes, groups):
    for series in with_loss:
      scored = [t for t in series.groups.get(group, []) if series.tasks[t].chance is not None]
      if not scored:
        continue
      mean, _ = findings_lib.group_aggregate(series, scored)
      mask = np.isfinite(mean) & np.isfinite(series.loss)
      ax.plot(series.loss[mask], mean[mask], "o-", color=colors[series.name], markersize=3,
              label=series.name)
    ax.set_title(group)
    ax.set_xlabel(f"loss: {with_loss[0].loss_source}", fontsize=8)
    ax.set_ylabel("mean normalised score")
    ax.invert_xaxis()  # training moves to the right
    ax.grid(True, alpha=0.3)
  axes[0].legend(fontsize=7)
  return _save(fig, path)


def plot_heatmap(path: pathlib.Path, series: records_lib.Series) -> pathlib.Path | None:
  """Task × checkpoint normalised scores of one series; None without normalised tasks."""
  rows = sorted((t for t, tr in series.tasks.items() if tr.chance is not None),
                key=lambda t: (series.tasks[t].capability, t))
  if not rows:
    return None
  grid = np.vstack([series.tasks[t].normalized for t in rows])
  fig = Figure(figsize=(min(3 + 0.35 * grid.shape[1], 24), min(1.5 + 0.28 * len(rows), 30)))
  ax = fig.add_subplot(1, 1, 1)
  cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
  image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, vmin=min(
      0.0, np.nanmin(grid)), vmax=max(1e-6, np.nanmax(grid)), interpolation="nearest")
  fig.colorbar(image, ax=ax, label="normalised score (0 = chance)")
  ax.set_yticks(range(len(rows)), [f"{series.tasks[t].capability}/{t}" for t in rows],
                fontsize=7)
  every = max(1, grid.shape[1] // 20)
  ticks = list(range(0, grid.shape[1], every))
  ax.set_xticks(ticks, [human_tokens(series.tokens[i]) for i in ticks], rotation=60, fontsize=7)
  ax.set_xlabel("checkpoint (training tokens); grey = not evaluated")
  ax.set_title(f"{series.name}: normalised scores")
  return _save(fig, path)
