"""Gin configuration from the command line: `--gin_file=…` (repeatable) and `--gin.X=VALUE`.

`--gin.MODEL_DIR="'/tmp/run'"` binds the macro MODEL_DIR; `--gin.train.seed=3` binds a
parameter. Files are looked up as given, then under any `--gin_search_path` and the
repository's `gin/` directory; an `include` also beside the including file first. fineline
resolves includes itself and hands gin each file's text (`gin.parse_config`), so gin never
looks a path up as a Python package resource (a `runs/` directory in the working directory
would otherwise read as a package). Errors name the binding and the file it came from.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
import re
import sys
from typing import Callable, Sequence

import gin

from fineline import gin_errors

from fineline.errors import UserError

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


def add_gin_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds --gin_file/--gin_search_path and makes the parser collect `--gin.X=V` bindings into
  `args.gin_bindings` (argparse cannot declare a flag family itself)."""
  parser.add_argument("--gin_file", action="append", default=[], metavar="FILE",
                      help="gin config file (repeatable; searched in gin/ too)")
  parser.add_argument("--gin_search_path", action="append", default=[], metavar="DIR",
                      help="extra directory to look up gin files and includes in")
  parser.epilog = ((parser.epilog or "") + " Any --gin.NAME=VALUE binds a gin parameter or "
                   "macro, e.g. --gin.MODEL_DIR=\"'/tmp/run'\" --gin.train.seed=3.").strip()
  original = parser.parse_args

  def parse_args(args: Sequence[str] | None = None, namespace=None):
    bindings, rest = split_bindings(sys.argv[1:] if args is None else list(args))
    ns = original(rest, namespace)
    ns.gin_bindings = bindings
    return ns

  parser.parse_args = parse_args


def split_bindings(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """`--gin.X=V` / `--gin.X V` tokens → gin binding lines "X = V"; the rest untouched."""
  bindings, rest, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--gin.") and len(arg) > len("--gin."):
      name, eq, value = arg[len("--gin."):].partition("=")
      if not eq:
        if i + 1 >= len(argv):
          raise UserError(f"{arg} has no value; write {arg}=VALUE")
        i += 1
        value = argv[i]
      bindings.append(f"{name} = {value}")
    else:
      rest.append(arg)
    i += 1
  return bindings, rest


def parse(gin_files: Sequence[str], bindings: Sequence[str] = (),
          search_paths: Sequence[str] = ()) -> None:
  """Clears gin and parses `gin_files` then `bindings`; UserError naming file and binding."""
  gin.clear_config()
  sources: dict[str, str] = {}  # every file parsed, includes too → its text
  for path in [_resolve(f, search_paths) for f in gin_files]:
    _parse_file(path, search_paths, (), sources)
  for line in bindings:
    try:
      gin.parse_config(line)
    except Exception as e:  # pylint: disable=broad-except
      raise UserError(f"command-line binding --gin.{line.replace(' = ', '=', 1)}: "
                       f"{_with_hint(e)}") from None
  _check_macros(sources, bindings)
  gin.finalize()


def call(fn: Callable, gin_files: Sequence[str] = ()):
  """Calls a configurable, turning gin's missing-binding errors into ones that say what to set."""
  try:
    return fn()
  except RuntimeError as e:
    found = gin_errors.missing_required(e)
    if not found:
      raise
    configurable, names = found
    missing = ", ".join(f"{configurable}.{n}" for n in names)
    raise UserError(f"missing gin binding(s) {missing} (gin.REQUIRED); set them in a gin file "
                    f"or with --gin.{configurable}.{names[0]}=… (files: "
                    f"{', '.join(gin_files) or 'none'})") from None


_INCLUDE = re.compile(r"^\s*include\s+['\"]([^'\"]+)['\"]\s*(#.*)?$")


def _parse_file(path: str, search_paths: Sequence[str], chain: tuple[str, ...],
                sources: dict[str, str]) -> None:
  """Parses `path`'s includes (where they stand), then its own bindings; an include line
  is left blank so that gin's line numbers stay the file's. Adds each file to `sources`."""
  if path in chain:
    raise UserError(f"gin file {path}: includes itself via {' → '.join(chain)}")
  with open(path, encoding="utf-8") as f:
    sources[path] = f.read()
  lines = sources[path].split("\n")
  for i, line in enumerate(lines):
    m = _INCLUDE.match(line)
    if m:
      try:
        included = _resolve(m.group(1), search_paths, beside=os.path.dirname(path))
      except FileNotFoundError as e:
        raise UserError(f"gin file {path}, line {i + 1}: {e}") from None
      _parse_file(included, search_paths, (*chain, path), sources)
      lines[i] = ""
  try:
    gin.parse_config("\n".join(lines))
  except (ValueError, SyntaxError, ImportError) as e:
    raise UserError(f"gin file {path}: {_with_hint(e)}") from None
  except Exception as e:  # pylint: disable=broad-except  (tokenizer errors)
    raise UserError(f"gin file {path}: cannot parse: {e}") from None


def _resolve(path: str, search_paths: Sequence[str], beside: str | None = None) -> str:
  """`path` as given, else under the search paths and gin/; an include (`beside` its
  file's directory) is looked for there first."""
  for base in [*([beside] if beside else []), "", *search_paths, GIN_DIR]:
    candidate = os.path.join(base, path) if base else path
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(f"gin file {path} not found (looked in ., "
                          f"{', '.join([*search_paths, GIN_DIR])})")


def _with_hint(error: Exception) -> str:
  """gin's message with the closest known parameter after its first line (the rest is
  gin's pointer into the file)."""
  first, newline, rest = str(error).partition("\n")
  return first + _closest_parameter(first) + newline + rest


def _closest_parameter(error: str) -> str:
  """'; did you mean NAME?' for gin's unknown-parameter error, from the configurable's
  signature (gin.get_configurable), or '' when nothing is close."""
  found = gin_errors.unknown_parameter(error)
  if not found:
    return ""
  configurable, name = found
  try:
    known = list(inspect.signature(gin.get_configurable(configurable)).parameters)
  except (ValueError, TypeError):
    return ""
  close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
  return (f"; did you mean {configurable}.{close[0]}?" if close else
          f"; its parameters: {', '.join(known)}")


def _check_macros(sources: dict[str, str], bindings: Sequence[str]) -> None:
  """Every %MACRO used must be set, and every macro set on the command line must be read.

  gin itself says the first only late and without the file, and the second never: a typo
  such as --gin.TRAIN_STEP=100 would train silently with the default.
  """
  defined = set()
  for text in [*sources.values(), "\n".join(bindings)]:
    defined |= set(re.findall(r"^\s*([A-Za-z_][\w.]*)\s*=", text, re.M))
  read = set()
  for path, text in sources.items():
    for used in _macro_uses(text):
      read.add(used)
      if used not in defined:
        raise UserError(f"gin macro %{used} is used in {path} but never set; set it in "
                        f"a gin file or with --gin.{used}=…")
  read |= set(_macro_uses("\n".join(line.partition("=")[2] for line in bindings)))
  for line in bindings:
    name, _, value = (part.strip() for part in line.partition("="))
    if "." in name or "/" in name or name in read:
      continue  # a parameter binding (gin checks it) or a macro something reads
    close = difflib.get_close_matches(name, sorted(read), n=1, cutoff=0.6)
    raise UserError(
        f"command-line binding --gin.{name}={value}: no gin file or binding reads the macro "
        f"{name}" + (f"; did you mean --gin.{close[0]}?" if close else
                     f"; macros read: {', '.join(sorted(read)) or 'none'}"))


def _macro_uses(text: str):
  for line in text.splitlines():
    code = line.split("#", 1)[0]
    for name in re.findall(r"%([A-Za-z_][\w.]*)", code):
      if not name.startswith("gin."):
        yield name
