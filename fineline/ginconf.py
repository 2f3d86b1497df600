"""Gin configuration from the command line: `--gin_file=…` (repeatable) and `--gin.X=VALUE`.

`--gin.MODEL_DIR="'/tmp/run'"` binds the macro MODEL_DIR; `--gin.train.seed=3` binds a
parameter. Files are looked up as given, then under the repository's `gin/` directory and
any `--gin_search_path`. Errors name the binding and the file it came from.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import inspect
import logging
import os
import re
import sys
from typing import Callable, Sequence

import gin

from fineline.errors import UserError

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


def _tolerate_plain_directories() -> None:
  """gin's package-resource lookup reads an include such as 'runs/pretrain.gin' as package
  `runs` and raises TypeError when `runs` is merely a directory in the working directory
  (a namespace package, e.g. the run outputs beside a checkout). Such a path is no package
  resource: the lookup answers "not found" and the search goes on."""
  from gin import resource_reader  # pylint: disable=import-outside-toplevel

  def exists(config_path: str) -> bool:
    try:
      return resource_reader.system_path_file_exists(config_path)
    except TypeError:
      return False

  readers = gin.config._FILE_READERS  # pylint: disable=protected-access
  for i, (reader, check) in enumerate(readers):
    if check is resource_reader.system_path_file_exists:
      readers[i] = (reader, exists)


_tolerate_plain_directories()


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
  """Clears gin and parses `gin_files` then `bindings`; ValueError naming file and binding."""
  gin.clear_config()
  for path in [*search_paths, GIN_DIR, os.getcwd()]:
    gin.add_config_file_search_path(path)
  resolved = [_resolve(f, search_paths) for f in gin_files]
  for path in resolved:
    try:
      with _quiet_gin_lookups():
        gin.parse_config_file(path)
    except (ValueError, SyntaxError, ImportError) as e:
      raise UserError(f"gin file {path}: {_with_hint(e)}") from None
    except Exception as e:  # pylint: disable=broad-except  (tokenizer errors)
      raise UserError(f"gin file {path}: cannot parse: {e}") from None
  for line in bindings:
    try:
      gin.parse_config(line)
    except Exception as e:  # pylint: disable=broad-except
      raise UserError(f"command-line binding --gin.{line.replace(' = ', '=', 1)}: "
                       f"{_with_hint(e)}") from None
  _check_macros(resolved, bindings)
  gin.finalize()


def call(fn: Callable, gin_files: Sequence[str] = ()):
  """Calls a configurable, turning gin's missing-binding errors into ones that say what to set."""
  try:
    return fn()
  except RuntimeError as e:
    m = re.search(r"Required bindings for `([\w.]+)` not provided in config: \[(.*)\]", str(e))
    if not m:
      raise
    names = [n.strip(" '\"") for n in m.group(2).split(",")]
    missing = ", ".join(f"{m.group(1)}.{n}" for n in names)
    raise UserError(f"missing gin binding(s) {missing} (gin.REQUIRED); set them in a gin file "
                     f"or with --gin.{m.group(1)}.{names[0]}=… (files: {', '.join(gin_files) or 'none'})"
                     ) from None


@contextlib.contextmanager
def _quiet_gin_lookups():
  """gin logs an ERROR for each include it first looks for beside the including file."""
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    root.setLevel(level)


def _resolve(path: str, search_paths: Sequence[str]) -> str:
  for base in ["", *search_paths, GIN_DIR]:
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
  m = re.search(r"Configurable '([\w./]+)' doesn't have a parameter named '(\w+)'", error)
  if not m:
    return ""
  try:
    known = list(inspect.signature(gin.get_configurable(m.group(1))).parameters)
  except (ValueError, TypeError):
    return ""
  close = difflib.get_close_matches(m.group(2), known, n=1, cutoff=0.6)
  return (f"; did you mean {m.group(1)}.{close[0]}?" if close else
          f"; its parameters: {', '.join(known)}")


def _check_macros(files: Sequence[str], bindings: Sequence[str]) -> None:
  """Every %MACRO used must be set, and every macro set on the command line must be read.

  gin itself says the first only late and without the file, and the second never: a typo
  such as --gin.TRAIN_STEP=100 would train silently with the default.
  """
  texts = {f: _with_includes(f) for f in files}
  defined = set()
  for text in [*texts.values(), "\n".join(bindings)]:
    defined |= set(re.findall(r"^\s*([A-Za-z_][\w.]*)\s*=", text, re.M))
  read = set()
  for path, text in texts.items():
    for source, used in _macro_uses(text):
      read.add(used)
      if used not in defined:
        raise UserError(f"gin macro %{used} is used in {source or path} but never set; set it in "
                         f"a gin file or with --gin.{used}=…")
  read |= {used for _, used in _macro_uses("\n".join(line.partition("=")[2] for line in bindings))}
  for line in bindings:
    name, _, value = (part.strip() for part in line.partition("="))
    if "." in name or "/" in name or name in read:
      continue  # a parameter binding (gin checks it) or a macro something reads
    close = difflib.get_close_matches(name, sorted(read), n=1, cutoff=0.6)
    raise UserError(
        f"command-line binding --gin.{name}={value}: no gin file or binding reads the macro "
        f"{name}" + (f"; did you mean --gin.{close[0]}?" if close else
                     f"; macros read: {', '.join(sorted(read)) or 'none'}"))


def _with_includes(path: str, seen=None) -> str:
  seen = set() if seen is None else seen
  if path in seen:
    return ""
  seen.add(path)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  parts = [f"#@file {path}\n{text}"]
  for inc in re.findall(r"^\s*include\s+['\"]([^'\"]+)['\"]", text, re.M):
    try:
      parts.append(_with_includes(_resolve(inc, [os.path.dirname(path)]), seen))
    except FileNotFoundError:
      pass  # gin already reported it while parsing
  return "\n".join(parts)


def _macro_uses(text: str):
  source = None
  for line in text.splitlines():
    if line.startswith("#@file "):
      source = line[len("#@file "):]
      continue
    code = line.split("#", 1)[0]
    for name in re.findall(r"%([A-Za-z_][\w.]*)", code):
      if not name.startswith("gin."):
        yield source, name
