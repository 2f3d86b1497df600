"""Reads evaluation result records (and a run's training metrics) into aligned series.

A series is one model or run: its checkpoints sorted by training tokens, the training loss
at each, and one `TaskTrack` per task with NaN where a checkpoint lacks the task. Nothing
here judges the numbers; that is `stats` and `findings`.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import json
import math
import pathlib
from typing import Any, Sequence

import numpy as np

from fineline import capabilities, fileio
from fineline.analysis import events as events_lib
from fineline.errors import UserError

# Preference order of a task's primary metric; the last two are lower-is-better.
PRIMARY_METRICS = ("acc_norm", "acc", "exact_match", "bits_per_byte", "perplexity")
LOWER_IS_BETTER = ("bits_per_byte", "perplexity", "word_perplexity", "byte_perplexity")
PARAMETER_FIELDS = ("parameters", "n_params")  # a record's model size, for FLOPs
LOSS_WINDOW_STEPS = 5  # logged training steps averaged into one checkpoint's loss
LOSS_SOURCES = ("training loss (metrics.jsonl)", "record loss")  # then language-model tasks


@dataclasses.dataclass
class TaskTrack:
  """One task's primary metric across a series' checkpoints (NaN where missing)."""
  name: str
  capability: str
  metric: str
  chance: float | None  # None: no random baseline (lower-is-better metrics)
  score: np.ndarray
  stderr: np.ndarray

  @property
  def higher_is_better(self) -> bool:
    return self.metric not in LOWER_IS_BETTER

  @property
  def normalized(self) -> np.ndarray:
    """(score - chance) / (1 - chance); NaN for metrics without a baseline."""
    return (self.score - (self.chance or 0.0)) / self._scale()

  @property
  def normalized_stderr(self) -> np.ndarray:
    return self.stderr / self._scale()

  def _scale(self) -> float:
    return np.nan if self.chance is None or self.chance >= 1 else 1.0 - self.chance

  def oriented(self) -> tuple[np.ndarray, np.ndarray]:
    """(value, stderr) where higher is better: log-perplexity and bits per byte negated."""
    if self.metric.endswith("perplexity"):
      with np.errstate(invalid="ignore", divide="ignore"):
        return -np.log(self.score), self.stderr / self.score
    return (self.score if self.higher_is_better else -self.score), self.stderr


@dataclasses.dataclass
class Series:
  """One model or run: checkpoints sorted by training tokens."""
  name: str
  source: str
  tokens: np.ndarray
  steps: list[int | None]
  checkpoints: list[str]
  loss: np.ndarray
  loss_source: str | None
  tasks: dict[str, TaskTrack]
  # Training events (events.py) on the token axis, and the model size where known.
  events: list[dict] = dataclasses.field(default_factory=list)
  parameters: float | None = None

  @property
  def groups(self) -> dict[str, list[str]]:
    groups = collections.defaultdict(list)
    for name, track in sorted(self.tasks.items()):
      groups[track.capability].append(name)
    return dict(sorted(groups.items()))


@dataclasses.dataclass
class _Source:
  label: str  # run directory name, file stem or directory name
  files: list[pathlib.Path]
  metrics: pathlib.Path | None = None


def _is_run_dir(path: pathlib.Path) -> bool:
  return fileio.log_exists(path / "eval" / "results.jsonl")


def _expand(path: pathlib.Path) -> list[_Source]:
  if not path.exists():
    raise FileNotFoundError(f"{path}: no such file or directory")
  if path.is_file():
    return [_Source(path.stem, [path])]
  if _is_run_dir(path):
    metrics = path / "metrics.jsonl"
    return [_Source(path.name, [path / "eval" / "results.jsonl"],
                    metrics if fileio.log_exists(metrics) else None)]
  runs = [_expand(child)[0] for child in sorted(path.iterdir()) if _is_run_dir(child)]
  files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl"))
  if not runs and not files:
    raise UserError(f"{path}: holds no result records (expected eval/results.jsonl, "
                     "run directories, or *.jsonl / *.json files)")
  return runs + ([_Source(path.name, files)] if files else [])


def _read_json_objects(path: pathlib.Path, notes: list[str]) -> list[tuple[str, Any]]:
  """(location, object) pairs from a JSON document or a JSON-lines file (a `fileio.JsonlLog`
  in either layout)."""
  try:
    text = (fileio.read_jsonl_text(path) if path.suffix == ".jsonl"
            else path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError) as e:
    notes.append(f"{path}: unreadable ({e.__class__.__name__}: {e}); skipped")
    return []
  doc_error = None
  if path.suffix == ".json":
    try:
      doc = json.loads(text)
      return [(f"{path}[{i}]", r) for i, r in enumerate(doc)] if isinstance(doc, list) else [
          (str(path), doc)]
    except json.JSONDecodeError as e:
      doc_error = e  # unless it is JSON lines under a .json name
  objects, problems = [], []
  for lineno, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      objects.append((f"{path}:{lineno}", json.loads(line)))
    except json.JSONDecodeError as e:
      problems.append(f"{path}:{lineno}: not valid JSON ({e.msg}); skipped")
  if doc_error is not None and problems:
    problems = [f"{path}:{doc_error.lineno}: not valid JSON ({doc_error.msg}); skipped"]
    objects = []
  notes.extend(problems)
  return objects


def _number(value: Any) -> float | None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value) if math.isfinite(value) else None


def _value(task: Any, key: str) -> float:
  """task[key] as a float, NaN when the task or the number is missing."""
  value = _number(task.get(key)) if isinstance(task, dict) else None
  return np.nan if value is None else value


def _check_record(record: Any) -> str | None:
  """Why `record` is not a usable result record, or None."""
  if not isinstance(record, dict):
    return "not a JSON object"
  if not isinstance(record.get("tasks"), dict):
    return "no 'tasks' object"
  if not record["tasks"]:
    return "no scored task" + (f" (errors: {sorted(record['errors'])})"
                               if isinstance(record.get("errors"), dict) else "")
  for field in ("tokens", "step"):
    if record.get(field) is not None and _number(record[field]) is None:
      return f"'{field}' is {record[field]!r}, not a number"
  return None


def _read_metrics(path: pathlib.Path, notes: list[str]) -> list[dict[str, float]]:
  rows = {}
  for _, obj in _read_json_objects(path, notes):
    if isinstance(obj, dict) and _number(obj.get("step")) is not None:
      # A resumed run logs replayed steps again; the later line is the one that counts.
      rows[_number(obj["step"])] = {k: _number(v) for k, v in obj.items()
                                    if _number(v) is not None}
  return [rows[s] for s in sorted(rows)]


def _from_metrics(metrics: list[dict[str, float]], step: float | None) -> tuple[Any, Any]:
  """(tokens, mean training loss of the last logged steps up to `step`), None if unknown."""
  if step is None or not metrics:
    return None, None
  end = bisect.bisect_right(metrics, step, key=lambda m: m["step"])
  losses = [m["loss"] for m in metrics[max(end - LOSS_WINDOW_STEPS, 0):end] if "loss" in m]
  tokens = None
  if end and metrics[end - 1]["step"] == step:
    tokens = metrics[end - 1].get("tokens")
  if tokens is None and step > 0:  # constant batch: scale from a neighbouring logged step
    near = [m for m in metrics[max(end - 1, 0):end + 1] if "tokens" in m and m["step"] > 0]
    if near:
      near_m = min(near, key=lambda m: abs(m["step"] - step))
      tokens = near_m["tokens"] * step / near_m["step"]
  return tokens, (float(np.mean(losses)) if losses else None)


def _record_losses(record: dict[str, Any], metric_loss: float | None) -> dict[str, float]:
  """Candidate losses of one checkpoint by source, most trusted first."""
  found = {}
  if metric_loss is not None:
    found[LOSS_SOURCES[0]] = metric_loss
  if _number(record.get("loss")) is not None:
    found[LOSS_SOURCES[1]] = _number(record["loss"])
  for name, task in sorted(record["tasks"].items()):
    if not isinstance(task, dict):
      continue
    capability = task.get("capability") or (capabilities.lookup(name) or ("", 0))[0]
    if capability != capabilities.LANGUAGE_MODELING:
      continue
    if _number(task.get("bits_per_byte")) is not None:
      found.setdefault(f"{name} bits_per_byte", _number(task["bits_per_byte"]))
    elif (_number(task.get("perplexity")) or 0) > 0:
      found.setdefault(f"{name} log-perplexity", math.log(_number(task["perplexity"])))
  return found


def _build_series(name: str, label: str, entries: list[dict[str, Any]],
                  notes: list[str]) -> Series:
  by_tokens = {}
  for entry in entries:
    if entry["tokens"] in by_tokens:
      notes.append(f"{name}: two records at {entry['tokens']:.4g} tokens; kept the later "
                   f"({entry['where']})")
    by_tokens[entry["tokens"]] = entry
  entries = [by_tokens[t] for t in sorted(by_tokens)]
  tokens = np.array([e["tokens"] for e in entries], dtype=float)
  # One loss source for the whole series, so values are comparable.
  counts = collections.Counter(s for e in entries for s in e["losses"])
  order = sorted(counts, key=lambda s: (LOSS_SOURCES.index(s) if s in LOSS_SOURCES else 2, s))
  loss_source = next((s for s in order if counts[s] * 2 >= len(entries)), None)
  loss = np.array([e["losses"].get(loss_source, np.nan) for e in entries], dtype=float)
  task_names = sorted({t for e in entries for t in e["record"]["tasks"]})
  tasks = {}
  for task in task_names:
    track = _build_track(name, task, [e["record"]["tasks"].get(task) for e in entries], notes)
    if track is not None:
      tasks[task] = track
  gaps = [t for t, tr in tasks.items() if np.isnan(tr.score).any()]
  if gaps:
    notes.append(f"{name}: tasks missing at some checkpoints (shown as gaps): "
                 + ", ".join(f"{t} ({int(np.isnan(tasks[t].score).sum())}/{len(entries)})"
                             for t in gaps))
  sizes = {_number(e["record"].get(k)) for e in entries for k in PARAMETER_FIELDS} - {None}
  if len(sizes) > 1:
    notes.append(f"{name}: records give several model sizes {sorted(sizes)}; none used")
  return Series(name, label, tokens, [e["record"].get("step") for e in entries],
                [str(e["record"].get("checkpoint") or e["where"]) for e in entries],
                loss, loss_source, tasks, parameters=sizes.pop() if len(sizes) == 1 else None)


def _build_track(series: str, task: str, values: list[Any], notes: list[str]) -> TaskTrack | None:
  present = [v for v in values if isinstance(v, dict)]
  # The evaluator's declared `primary_metric` first, then the default preference.
  declared = [v["primary_metric"] for v in present if isinstance(v.get("primary_metric"), str)]
  metric = next((m for m in (*declared[-1:], *PRIMARY_METRICS)
                 if any(_number(v.get(m)) is not None for v in present)), None)
  if metric is None:
    notes.append(f"{series}: task {task} has none of the metrics {', '.join(PRIMARY_METRICS)}; "
                 "left out")
    return None
  known = capabilities.lookup(task)
  declared = collections.Counter(v["capability"] for v in present
                                 if isinstance(v.get("capability"), str))
  capability = declared.most_common(1)[0][0] if declared else (known or ["other"])[0]
  if len(declared) > 1:
    notes.append(f"{series}: task {task} has capabilities {sorted(declared)}; "
                 f"used {capability}")
  chances = [_number(v.get("chance")) for v in present if _number(v.get("chance")) is not None]
  chance = None if metric in LOWER_IS_BETTER else (chances or [known and known[1]])[-1]
  if chance is None and metric not in LOWER_IS_BETTER:
    chance = 0.0
    if metric != "exact_match":
      notes.append(f"{series}: task {task} gives no chance level and is not a known task; "
                   "normalised against 0")
  score = np.array([_value(v, metric) for v in values], dtype=float)
  stderr = np.array([_value(v, f"{metric}_stderr") for v in values], dtype=float)
  if metric in ("acc", "acc_norm", "exact_match"):
    # A mean of 0/1 scores without its stderr: the sample standard error from `n`.
    counts = np.array([_value(v, "n") for v in values], dtype=float)
    fill = np.isnan(stderr) & np.isfinite(score) & (counts > 1)
    stderr[fill] = np.sqrt(score[fill] * (1 - score[fill]) / (counts[fill] - 1))
  return TaskTrack(task, capability, metric, chance, score, stderr)


def load_series(paths: Sequence[str | pathlib.Path]) -> tuple[list[Series], list[str]]:
  """Reads run directories, record files or directories of them into series.

  Returns (series sorted by name, notes on what was skipped or filled in). Raises
  FileNotFoundError for a missing path and ValueError when no usable record remains.
  """
  notes: list[str] = []
  sources = list({tuple(map(str, s.files)): s  # a path given twice counts once
                  for p in paths for s in _expand(fileio.check_access(p, "--results"))}.values())
  grouped = collections.defaultdict(list)
  run_events = {}
  for source in sources:
    metrics = _read_metrics(source.metrics, notes) if source.metrics else []
    run_events[source.label] = events_lib.from_metrics(metrics)
    for path in source.files:
      for where, record in _read_json_objects(path, notes):
        problem = _check_record(record)
        if problem:
          notes.append(f"{where}: {problem}; skipped")
          continue
        if isinstance(record.get("errors"), dict) and record["errors"]:
          notes.append(f"{where}: tasks that failed there: {', '.join(sorted(record['errors']))}")
        step = _number(record.get("step"))
        metric_tokens, metric_loss = _from_metrics(metrics, step)
        tokens = _number(record.get("tokens"))
        if tokens is None and metric_tokens is not None:
          tokens = metric_tokens
          notes.append(f"{where}: no token count in the record; took {tokens:.6g} from "
                       f"{source.metrics.name} at step {step:g}")
        if tokens is None:
          notes.append(f"{where}: no token count (record or training metrics); skipped")
          continue
        model = record.get("model") if isinstance(record.get("model"), str) else None
        grouped[(model or source.label, source.label)].append(
            {"where": where, "record": record, "tokens": tokens,
             "losses": _record_losses(record, metric_loss)})
  if not grouped:
    detail = ("; ".join(notes[:5])) if notes else "the inputs hold no records"
    raise UserError(f"no usable result records in {', '.join(map(str, paths))}: {detail}")
  names = collections.Counter(model for model, _ in grouped)
  series = [_build_series(model if names[model] == 1 else f"{model} ({label})", label, entries,
                          notes) for (model, label), entries in grouped.items()]
  for one in series:
    one.events = list(run_events.get(one.source, []))
  return sorted(series, key=lambda s: s.name), notes
