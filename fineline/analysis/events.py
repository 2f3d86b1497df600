"""Training events on the token axis: learning-rate drops and loss spikes.

From a run's `metrics.jsonl` (its `learning_rate` and `loss` columns) or, for released
series whose logs are not public, a `--schedule` JSON file such as DeepSeek's published
multi-step schedule:

    [{"tokens": 1.6e12, "label": "lr x0.316"}, {"tokens": 1.8e12, "label": "lr x0.1"}]

An entry may name `series` (a series name) to apply to that series only; `kind` defaults to
"lr_drop". Rate drops are tested for slope changes; loss spikes are only marked.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from fineline import fileio
from fineline.errors import UserError

LR_DROP_RATIO = 0.8  # a logged rate below this fraction of the previous one is a drop
LR_DROP_SPAN = 3  # ... provided the previous LR_DROP_SPAN logged rates were steady
LOSS_SPIKE_MADS = 8.0  # loss above the running median by this many median deviations
LOSS_WINDOW = 20  # logged steps in that running window
KINDS = ("lr_drop", "loss_spike")


def from_metrics(rows: list[dict[str, float]]) -> list[dict]:
  """Rate drops (steps, not the smooth decay of a cosine) and loss spikes in logged rows."""
  events = []
  rows = [r for r in rows if "tokens" in r]
  rates = [r.get("learning_rate") for r in rows]
  for i in range(LR_DROP_SPAN, len(rows)):
    prev = rates[i - LR_DROP_SPAN:i]
    if rates[i] is None or any(r is None or r <= 0 for r in prev):
      continue
    steady = max(prev) <= min(prev) / LR_DROP_RATIO ** 0.25
    if steady and rates[i] < LR_DROP_RATIO * prev[-1]:
      events.append({"tokens": rows[i]["tokens"], "step": rows[i]["step"], "kind": "lr_drop",
                     "label": f"lr {prev[-1]:.3g} → {rates[i]:.3g}"})
  losses = np.array([r.get("loss", np.nan) for r in rows], dtype=float)
  for i in range(LOSS_WINDOW, len(rows)):
    window = losses[i - LOSS_WINDOW:i]
    window = window[np.isfinite(window)]
    if len(window) < LOSS_WINDOW // 2 or not math.isfinite(losses[i]):
      continue
    median = float(np.median(window))
    mad = float(np.median(np.abs(window - median))) or 1e-12
    continues = bool(events) and events[-1]["kind"] == "loss_spike" and (
        events[-1]["step"] == rows[i - 1]["step"])  # one spike, however many rows long
    if losses[i] > median + LOSS_SPIKE_MADS * mad and not continues:
      events.append({"tokens": rows[i]["tokens"], "step": rows[i]["step"], "kind": "loss_spike",
                     "label": f"loss spike {losses[i]:.3g} (median {median:.3g})"})
  return events


def read_schedule(path: str | pathlib.Path) -> list[dict]:
  """Events from a schedule file; ValueError naming the file and entry when malformed."""
  path = fileio.resolve(path)
  try:
    doc = json.loads(path.read_text(encoding="utf-8"))
  except FileNotFoundError:
    raise FileNotFoundError(f"--schedule {path}: no such file") from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"--schedule {path}: not a JSON file ({e})") from None
  if isinstance(doc, dict):
    doc = doc.get("events")
  if not isinstance(doc, list) or not doc:
    raise UserError(f"--schedule {path}: expected a non-empty JSON list of events "
                     '(or {"events": [...]}), each {"tokens": N, "label": "..."}')
  events = []
  for i, entry in enumerate(doc):
    tokens = entry.get("tokens") if isinstance(entry, dict) else None
    if isinstance(tokens, bool) or not isinstance(tokens, (int, float)) or not tokens > 0:
      raise UserError(f"--schedule {path}: entry {i} needs a positive number 'tokens', "
                       f"got {entry!r}")
    kind = entry.get("kind", "lr_drop")
    if kind not in KINDS:
      raise UserError(f"--schedule {path}: entry {i} has kind {kind!r}; known: {KINDS}")
    events.append({"tokens": float(tokens), "step": entry.get("step"), "kind": kind,
                   "label": str(entry.get("label") or f"{kind} at {tokens:.4g} tokens"),
                   "series": entry.get("series"), "source": str(path)})
  return sorted(events, key=lambda e: e["tokens"])
