"""Joining the hosts of a multi-host slice: `--multihost` and the coordinator flags that
`fineline train` and `fineline eval` share.

Every host runs the same command. `jax.distributed.initialize` must run before JAX touches
a device; it also starts the preemption service, which the trainer's stop on SIGTERM relies
on (`training/trainer.py`).
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--multihost", action="store_true",
                      help="call jax.distributed.initialize() (auto-detected on Cloud TPU pods)")
  parser.add_argument("--coordinator_address", default=None, help="host:port of process 0")
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)


def initialize(args) -> None:
  """Joins the other hosts when the flags ask for it; a no-op otherwise."""
  if not (args.multihost or args.coordinator_address):
    return
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_enable_preemption_service", True)
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(args.coordinator_address, num_processes=args.num_processes,
                             process_id=args.process_id)
