"""`fineline train --gin_file=runs/….gin --gin.MODEL_DIR="'…'"`: one training job.

On a multi-host slice every host runs the same command; `--multihost` (or the coordinator
flags, for hosts that JAX cannot discover by itself) joins them with jax.distributed.
"""

from __future__ import annotations

import argparse

from fineline import cache
from fineline import ginconf
from fineline.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  ginconf.add_gin_arguments(parser)
  parser.add_argument("--multihost", action="store_true",
                      help="call jax.distributed.initialize() (auto-detected on Cloud TPU pods)")
  parser.add_argument("--coordinator_address", default=None, help="host:port of process 0")
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)


def initialize_distributed(args) -> None:
  """Joins the other hosts before JAX touches a device."""
  if not (args.multihost or args.coordinator_address):
    return
  import jax  # pylint: disable=import-outside-toplevel
  if _cpu_only():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(args.coordinator_address, num_processes=args.num_processes,
                             process_id=args.process_id)


def _cpu_only() -> bool:
  import os  # pylint: disable=import-outside-toplevel
  return os.environ.get("JAX_PLATFORMS", "") == "cpu"


def run(args) -> int:
  if not args.gin_file:
    raise UserError("fineline train needs at least one --gin_file (e.g. runs/tiny_cpu.gin)")
  initialize_distributed(args)
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
