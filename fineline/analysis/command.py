"""`fineline analyze --results RUN_OR_FILES… --output REPORT_DIR`.

The report is built in a staging directory and published by `fileio.atomic_output` at the
end, so a failure never leaves a half-written report; an existing report directory is
replaced, any other non-empty directory is left alone. Inputs and output may be URLs.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

from fineline import fileio
from fineline.analysis import events
from fineline.analysis import findings
from fineline.analysis import records
from fineline.analysis import report
from fineline.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--results", nargs="+", required=True, metavar="RUN_OR_FILES",
                      help="fineline run directories, result-record .jsonl/.json files, or "
                           "directories of them")
  parser.add_argument("--output", required=True, metavar="REPORT_DIR",
                      help="directory to write the report into")
  parser.add_argument("--budget_tokens", type=float, default=None,
                      help="planned token budget for fitted predictions (default: 2x each "
                           "series' last checkpoint)")
  parser.add_argument("--target", type=float, default=None,
                      help="normalised score whose token cost to predict (default: 90%% of "
                           "each task's fitted asymptote)")
  parser.add_argument("--window", type=int, default=4,
                      help="checkpoints in the window that decides each task's phase")
  parser.add_argument("--fit_min_r2", type=float, default=0.8,
                      help="R² below which a fitted curve is not extrapolated")
  parser.add_argument("--schedule", default=None, metavar="FILE",
                      help='JSON list of training events for released series, e.g. '
                           '[{"tokens": 1.6e12, "label": "lr x0.316"}] (see '
                           "fineline/analysis/events.py); run directories' own rate drops "
                           "come from metrics.jsonl")
  parser.add_argument("--model_size", action="append", default=[], metavar="SERIES=PARAMS",
                      help="parameter count of a series (repeatable), e.g. amber=6.7e9: "
                           "aligns runs on training FLOPs too")


def _check_args(args: argparse.Namespace) -> None:
  if args.budget_tokens is not None and not args.budget_tokens > 0:
    raise UserError(f"--budget_tokens must be positive, got {args.budget_tokens}")
  if args.target is not None and not 0 < args.target <= 1:
    raise UserError(f"--target is a normalised score in (0, 1], got {args.target}")
  if args.window < 3:
    raise UserError(f"--window must be at least 3 checkpoints, got {args.window}")


def _model_sizes(values: list[str]) -> dict[str, float]:
  sizes = {}
  for value in values:
    name, eq, number = value.rpartition("=")
    try:
      size = float(number) if eq and name else math.nan
    except ValueError:
      size = math.nan
    if not size > 0:
      raise UserError(f"--model_size {value!r}: expected SERIES=PARAMS with a positive "
                       "parameter count, e.g. amber=6.7e9")
    sizes[name] = size
  return sizes


def _check_output(output) -> None:
  fileio.check_access(output.parent, "--output", write=True)
  if output.exists():
    if not output.is_dir():
      raise FileExistsError(f"{output}: exists and is not a directory")
    if any(output.iterdir()) and not (output / "analysis.json").is_file():
      raise FileExistsError(f"{output}: a non-empty directory that is not a report; "
                            "choose another --output")


def run(args: argparse.Namespace) -> int:
  _check_args(args)
  output = fileio.resolve(args.output)
  _check_output(output)
  sizes = _model_sizes(args.model_size)
  schedule = events.read_schedule(args.schedule) if args.schedule else []
  series_list, notes = records.load_series(args.results)
  unknown = sorted(set(sizes) - {s.name for s in series_list})
  if unknown:
    raise UserError(f"--model_size names series {unknown} that the records do not hold; "
                     f"series: {[s.name for s in series_list]}")
  for series in series_list:
    series.parameters = sizes.get(series.name, series.parameters)
  for note in notes:
    print(f"note: {note}", file=sys.stderr)
  result = findings.analyze(series_list, notes, budget_tokens=args.budget_tokens,
                            target=args.target, window=args.window, min_r2=args.fit_min_r2,
                            schedule=schedule)
  try:
    with fileio.atomic_output(output) as staging:
      pathlib.Path(staging).mkdir()
      report.write_report(pathlib.Path(staging), series_list, result)
  except OSError as e:
    if isinstance(e, (FileExistsError, PermissionError)):
      raise
    raise UserError(f"writing the report to {output}: {e}") from e
  for name, entry in result["series"].items():
    print(f"{name}: " + " ".join(entry["verdict"]["text"]))
  print(f"report: {output / 'report.md'} (and {output / 'index.html'})")
  return 0
