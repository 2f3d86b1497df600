"""`fineline plan --gin_file=…`: compile a configured train step ahead of time, on CPU.

Lowers the exact step `fineline train` would run, on abstract arrays placed on the
configured mesh (faked CPU devices stand in for the pod's chips), and prints what each
device would hold and what a step costs — so a pod configuration is checked before TPU time
is spent. Memory figures come from XLA's compiled memory analysis of the CPU compilation;
an accelerator's compiler fuses and schedules differently, so treat them as estimates.
"""

from __future__ import annotations

import argparse

from fineline import ginconf


def add_arguments(parser: argparse.ArgumentParser) -> None:
  ginconf.add_gin_arguments(parser)
  parser.add_argument("--num_devices", type=int, default=None,
                      help="devices to fake when the mesh has a -1 axis (default: 8)")
  parser.add_argument("--chip", default="TPU v4",
                      help="chip whose peak sets the step-time estimate (see metrics.PEAK_FLOPS_PER_DEVICE)")
  parser.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation")


def _query(name: str):
  import gin  # pylint: disable=import-outside-toplevel
  try:
    value = gin.query_parameter(name)
  except ValueError:
    return None
  return value.scoped_configurable_fn() if hasattr(value, "scoped_configurable_fn") else value


def run(args) -> int:
  if not args.gin_file:
    raise ValueError("fineline plan needs at least one --gin_file")
  from fineline import partitioning  # pylint: disable=import-outside-toplevel
  from fineline.training import trainer  # pylint: disable=import-outside-toplevel,unused-import
  ginconf.parse(args.gin_file, args.gin_bindings, args.gin_search_path)
  num_devices = partitioning.devices_needed() or args.num_devices or 8
  import jax  # pylint: disable=import-outside-toplevel
  # Before the backend starts: plan always runs on (faked) CPU devices.
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", num_devices)
  report = plan(num_devices=num_devices, chip=args.chip, mfu=args.mfu)
  print(format_report(report))
  return 0


def plan(*, num_devices: int, chip: str = "TPU v4", mfu: float = 0.4) -> dict:
  """Compiles the configured step on `num_devices` CPU devices; returns the figures."""
  import jax  # pylint: disable=import-outside-toplevel
  from fineline import checkpointing, partitioning  # pylint: disable=import-outside-toplevel
  from fineline.models import llama, presets  # pylint: disable=import-outside-toplevel
  from fineline.training import metrics, optim  # pylint: disable=import-outside-toplevel
  from fineline.training import step as step_lib  # pylint: disable=import-outside-toplevel

  get = lambda k, default=None: _query(f"train.{k}") if _query(f"train.{k}") is not None else default
  cfg = presets.get_preset(get("preset"), dtype=get("compute_dtype", "float32"),
                           param_dtype=get("param_dtype", "float32"),
                           scan_layers=get("scan_layers", False),
                           remat_policy=get("remat_policy", "none"))
  batch_size, seq_len = get("batch_size"), get("sequence_length")
  microbatches = get("num_microbatches", 1)
  devices = jax.devices()[:num_devices]
  if len(devices) < num_devices:
    raise ValueError(f"the mesh needs {num_devices} devices but only {len(devices)} exist; "
                     "run plan in a fresh process")
  mesh = partitioning.make_mesh(devices)
  opt, schedule = optim.make_optimizer()
  ts = step_lib.make_train_step(llama.Llama(cfg), opt, mesh, schedule=schedule,
                                num_microbatches=microbatches, z_loss=get("z_loss", 0.0))
  abstract_state = checkpointing.abstract_with_shardings(ts.abstract_state, ts.state_shardings)
  abstract_batch = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=ts.batch_sharding),
      step_lib.abstract_batch(batch_size, seq_len))
  compiled = ts.lower(abstract_state, abstract_batch).compile()
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  formula_flops = cfg.flops_per_token(seq_len) * batch_size * seq_len
  peak = metrics.PEAK_FLOPS_PER_DEVICE.get(chip)
  if peak is None:
    raise ValueError(f"--chip {chip!r} unknown; known: {', '.join(metrics.PEAK_FLOPS_PER_DEVICE)}")
  return {
      "preset": get("preset"), "mesh": dict(mesh.shape), "num_devices": num_devices,
      "global_batch": batch_size, "sequence_length": seq_len, "microbatches": microbatches,
      "params": cfg.num_params(),
      "param_bytes_per_device": partitioning.bytes_per_device(
          ts.abstract_state["params"], ts.state_shardings["params"]),
      "optimizer_bytes_per_device": partitioning.bytes_per_device(
          ts.abstract_state["opt_state"], ts.state_shardings["opt_state"]),
      "argument_bytes_per_device": getattr(memory, "argument_size_in_bytes", None),
      "temp_bytes_per_device": getattr(memory, "temp_size_in_bytes", None),
      "output_bytes_per_device": getattr(memory, "output_size_in_bytes", None),
      "compiled_flops_per_device": (cost or {}).get("flops"),
      "formula_flops_per_step": formula_flops,
      "chip": chip, "assumed_mfu": mfu,
      "step_time_s": formula_flops / (num_devices * peak * mfu),
      "tokens_per_s_per_chip": batch_size * seq_len / (formula_flops / (num_devices * peak * mfu)) / num_devices,
  }


def format_report(r: dict) -> str:
  gib = lambda b: ("n/a" if b is None else f"{b / 2**30:,.2f} GiB" if b >= 2**30
                   else f"{b / 2**20:,.2f} MiB")
  flops = lambda f: "n/a" if f is None else f"{f:.3e}"
  lines = [
      f"preset {r['preset']}: {r['params'] / 1e6:,.1f}M parameters",
      f"mesh {r['mesh']} ({r['num_devices']} devices); global batch {r['global_batch']} × "
      f"{r['sequence_length']} tokens in {r['microbatches']} microbatch(es)",
      "per device:",
      f"  parameters            {gib(r['param_bytes_per_device'])}",
      f"  optimizer state       {gib(r['optimizer_bytes_per_device'])}",
      f"  activations/temp      {gib(r['temp_bytes_per_device'])}  (XLA CPU memory analysis)",
      f"  arguments (state+batch) {gib(r['argument_bytes_per_device'])}",
      "FLOPs per step:",
      f"  6N + attention formula {flops(r['formula_flops_per_step'])}",
      f"  compiled (per device)  {flops(r['compiled_flops_per_device'])}  (XLA cost analysis; a scanned layer loop is counted once)",
      f"step time at {100 * r['assumed_mfu']:.0f}% MFU on {r['chip']}: {r['step_time_s']:.4g} s "
      f"({r['tokens_per_s_per_chip']:,.0f} tokens/s per chip)",
  ]
  return "\n".join(lines)
