"""`fineline train --gin_file=runs/….gin --gin.MODEL_DIR="'…'"`: one training job.

On a multi-host slice every host runs the same command; `--multihost` (or the coordinator
flags, for hosts that JAX cannot discover by itself) joins them with jax.distributed.
"""

from __future__ import annotations

import argparse

from fineline import cache
from fineline import ginconf
from fineline import multihost
from fineline.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  ginconf.add_gin_arguments(parser)
  multihost.add_arguments(parser)


def run(args) -> int:
  if not args.gin_file:
    raise UserError("fineline train needs at least one --gin_file (e.g. runs/tiny_cpu.gin)")
  multihost.initialize(args)
  cache.enable_compilation_cache()  # a resumed run loads its compiled step
  from fineline.training import trainer  # pylint: disable=import-outside-toplevel  (registers configurables)
  ginconf.parse(args.gin_file, args.gin_bindings, args.gin_search_path)
  try:
    ginconf.call(trainer.train, args.gin_file)
  except (trainer.NonFiniteLossError, trainer.CheckpointWriteError) as e:
    import sys  # pylint: disable=import-outside-toplevel
    print(f"fineline train: {e}", file=sys.stderr)
    return 3
  return 0
