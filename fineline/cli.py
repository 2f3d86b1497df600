"""`fineline <command> …`: picks the command's module and hands it the remaining arguments.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`; modules are
imported only when their command runs, so `fineline analyze` never loads JAX.

Errors: bad input (`errors.UserError`, and a missing, existing or forbidden file) prints
one line naming what to fix; anything else is a bug and raises with its traceback.
`--debug` (before or after the command) shows the traceback for user errors too.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fineline import errors

COMMANDS = {
    "convert": ("fineline.convert.command", "convert checkpoints between Hugging Face and fineline"),
    "train": ("fineline.training.command", "train a model from gin config files"),
    "plan": ("fineline.plan", "lower a configured train step ahead of time: memory and FLOPs"),
    "eval": ("fineline.evaluation.command", "score checkpoints on downstream tasks"),
    "analyze": ("fineline.analysis.command", "report capability dynamics from evaluation records"),
}

USER_ERRORS = (errors.UserError, FileNotFoundError, FileExistsError, PermissionError)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  debug = "--debug" in argv
  argv = [a for a in argv if a != "--debug"]
  if not argv or argv[0] not in COMMANDS:
    lines = "\n".join(f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items())
    print(f"usage: fineline [--debug] <command> [options]\n\ncommands:\n{lines}\n\n"
          "--debug: show the traceback of every error, bad input included", file=sys.stderr)
    return 0 if argv and argv[0] in ("-h", "--help") else 2
  name, rest = argv[0], argv[1:]
  module = importlib.import_module(COMMANDS[name][0])
  parser = argparse.ArgumentParser(prog=f"fineline {name}", description=COMMANDS[name][1])
  module.add_arguments(parser)
  try:
    args = parser.parse_args(rest)
    return module.run(args) or 0
  except USER_ERRORS as e:
    if debug:
      raise
    # Bad input is the user's to fix: say what is wrong, without a traceback.
    print(f"fineline {name}: error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
