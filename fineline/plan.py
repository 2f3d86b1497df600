"""`fineline plan --gin_file=… --target=tpu-v4-512`: compile a configured train step ahead of time.

Lowers the exact step `fineline train` would run, on abstract arrays placed on the
configured mesh, and reports what each device would hold and what a step costs — so a pod
configuration is checked before TPU time is spent. With a TPU `--target`, libtpu (the `tpu`
extra) describes the slice's chips and the real TPU compiler compiles the step on this
machine, with the TPU's kernels (splash attention); its memory analysis is what the chips
would hold. `--target cpu` compiles for faked CPU devices instead: XLA:CPU's figures, which
only estimate an accelerator's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys

from fineline import ginconf
from fineline.errors import UserError

_GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Target:
  """A Cloud TPU slice as libtpu's topology names it: one JAX device per chip."""
  topology: str
  chip_config: str  # v4's "megacore" joins a chip's two cores into one device, as on Cloud TPU
  chips: int
  hbm_bytes: int
  chip: str  # a metrics.PEAK_FLOPS_PER_DEVICE key


TARGETS = {
    "tpu-v4-8": Target("v4:2x2x1", "megacore", 4, 32 * _GIB, "TPU v4"),
    "tpu-v4-32": Target("v4:2x2x4", "megacore", 16, 32 * _GIB, "TPU v4"),
    "tpu-v4-128": Target("v4:4x4x4", "megacore", 64, 32 * _GIB, "TPU v4"),
    "tpu-v4-512": Target("v4:4x8x8", "megacore", 256, 32 * _GIB, "TPU v4"),
    "tpu-v5p-8": Target("v5p:2x2x1", "default", 4, 95 * _GIB, "TPU v5p"),
    "tpu-v5p-128": Target("v5p:4x4x4", "default", 64, 95 * _GIB, "TPU v5p"),
    "tpu-v5p-512": Target("v5p:4x8x8", "default", 256, 95 * _GIB, "TPU v5p"),
    "tpu-v5e-16": Target("v5e:4x4", "default", 16, 16 * _GIB, "TPU v5e"),
    "tpu-v5e-256": Target("v5e:16x16", "default", 256, 16 * _GIB, "TPU v5e"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  ginconf.add_gin_arguments(parser)
  parser.add_argument("--target", default="cpu",
                      help=f"what to compile for: {', '.join(TARGETS)} (the TPU compiler, "
                      "needs the tpu extra), or cpu (faked CPU devices; default)")
  parser.add_argument("--num_devices", type=int, default=None,
                      help="faked CPU devices when the mesh has a -1 axis (default: 8); a TPU "
                      "target always uses all its chips")
  parser.add_argument("--chip", default=None,
                      help="chip whose peak sets the step-time estimate (default: the target's; "
                      "see metrics.PEAK_FLOPS_PER_DEVICE)")
  parser.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation")
  parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def run(args) -> int:
  if not args.gin_file:
    raise UserError("fineline plan needs at least one --gin_file")
  if args.target != "cpu" and args.target not in TARGETS:
    raise UserError(f"--target {args.target!r} is unknown; use one of {', '.join(TARGETS)}, "
                     "or cpu for faked CPU devices")
  from fineline import partitioning  # pylint: disable=import-outside-toplevel
  from fineline.training import trainer  # pylint: disable=import-outside-toplevel,unused-import  (registers train)
  ginconf.parse(args.gin_file, args.gin_bindings, args.gin_search_path)
  import jax  # pylint: disable=import-outside-toplevel
  # Before the backend starts: this process runs on its CPU whatever it compiles for.
  jax.config.update("jax_platforms", "cpu")
  target = TARGETS.get(args.target)
  needed = partitioning.devices_needed()
  if target is None:
    num_devices = needed or args.num_devices or 8
    jax.config.update("jax_num_cpu_devices", num_devices)
    devices = jax.devices()[:num_devices]
  else:
    devices = tpu_devices(args.target)
    if needed is not None and needed != len(devices):
      raise UserError(f"the mesh {partitioning.mesh_axes()} needs {needed} devices but "
                       f"--target {args.target} has {len(devices)} chips; pass the target's "
                       "mesh file (gin/mesh/) or bind mesh_axes to match")
  report = plan(devices=devices, chip=args.chip or (target.chip if target else "TPU v4"),
                mfu=args.mfu, hbm_bytes=target.hbm_bytes if target else None)
  report["target"] = args.target
  print(json.dumps(report) if args.json else format_report(report))
  if report["fits"] is False:
    need = (f"the TPU compiler says {report['compiler_error']!r}" if report["compiler_error"]
            else f"the step needs {report['per_device_bytes'] / _GIB:.2f} GiB per device")
    print(f"fineline plan: {need}, but a {report['chip']} chip has "
          f"{report['hbm_bytes'] / _GIB:.0f} GiB of HBM: lower train.batch_size or raise "
          "train.num_microbatches, set train.remat_policy = 'full', shard over more chips "
          "(mesh_axes.fsdp), or pick a larger --target", file=sys.stderr)
    return 1
  return 0


def tpu_devices(target: str) -> list:
  """The chips of a TPU slice, described by libtpu on any machine (no TPU needed)."""
  spec = TARGETS[target]
  try:
    from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
    topology = topologies.get_topology_desc(
        platform="tpu", topology_name=spec.topology, chip_config_name=spec.chip_config,
        chips_per_host_bounds=(2, 2, 1), num_slices=1)
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(f"--target {target}: libtpu could not describe topology "
                       f"{spec.topology} ({e}); install the tpu extra: "
                       "pip install 'fineline[tpu]'") from None
  return list(topology.devices)


def plan(*, devices, chip: str = "TPU v4", mfu: float = 0.4, hbm_bytes: int | None = None) -> dict:
  """Compiles the configured step for `devices` (CPU, or TPU descriptions); returns figures."""
  import jax  # pylint: disable=import-outside-toplevel
  from fineline import partitioning, run_checkpoints  # pylint: disable=import-outside-toplevel
  from fineline.models import attention  # pylint: disable=import-outside-toplevel
  from fineline.training import metrics, trainer  # pylint: disable=import-outside-toplevel
  from fineline.training import run as run_lib  # pylint: disable=import-outside-toplevel
  from fineline.training import step as step_lib  # pylint: disable=import-outside-toplevel

  peak = metrics.PEAK_FLOPS_PER_DEVICE.get(chip)
  if peak is None:
    raise UserError(f"--chip {chip!r} unknown; known: {', '.join(metrics.PEAK_FLOPS_PER_DEVICE)}")
  settings = run_lib.configured_arguments(trainer.train, run_lib.BUILD_SETTINGS)
  run = run_lib.build(**settings, devices=devices)
  cfg, mesh, ts = run.cfg, run.mesh, run.train_step
  batch_size, seq_len = settings["batch_size"], settings["sequence_length"]
  microbatches = settings["num_microbatches"]
  num_devices = len(devices)
  abstract_state = run_checkpoints.abstract_with_shardings(ts.abstract_state, ts.state_shardings)
  abstract_batch = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=ts.batch_sharding),
      step_lib.abstract_batch(batch_size, seq_len))
  lowered = ts.lower(abstract_state, abstract_batch)
  compiler_error = memory = cost = None
  try:
    compiled = lowered.compile()
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  except jax.errors.JaxRuntimeError as e:
    # The TPU compiler refuses a program that cannot fit in HBM: that is the plan's answer.
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    compiler_error = str(e).strip().splitlines()[0]
  figure = lambda name: getattr(memory, name, None)
  arguments, outputs, temp = (figure("argument_size_in_bytes"), figure("output_size_in_bytes"),
                              figure("temp_size_in_bytes"))
  per_device = None
  if None not in (arguments, outputs, temp):
    # Donated state aliases its output: those bytes are held once.
    per_device = arguments + outputs - (figure("alias_size_in_bytes") or 0) + temp
  formula_flops = cfg.flops_per_token(seq_len) * batch_size * seq_len
  step_time = formula_flops / (num_devices * peak * mfu)
  platform = devices[0].platform
  return {
      "preset": settings["preset"], "mesh": dict(mesh.shape), "devices": num_devices,
      "device_kind": devices[0].device_kind,
      "attention": attention.resolve_impl(cfg.attention_impl, platform, cfg.dtype),
      # Pallas (Mosaic) kernels in the program, e.g. splash attention's forward and backward.
      "tpu_kernels": sorted(set(re.findall(r'kernel_name\s*=\s*"?(\w+)', lowered.as_text()))),
      "global_batch": batch_size, "sequence_length": seq_len, "microbatches": microbatches,
      "params": cfg.num_params(),
      "param_bytes_per_device": partitioning.bytes_per_device(
          ts.abstract_state["params"], ts.state_shardings["params"]),
      "optimizer_bytes_per_device": partitioning.bytes_per_device(
          ts.abstract_state["opt_state"], ts.state_shardings["opt_state"]),
      "argument_bytes_per_device": arguments, "output_bytes_per_device": outputs,
      "temp_bytes_per_device": temp, "per_device_bytes": per_device,
      "hbm_bytes": hbm_bytes,
      "fits": (False if compiler_error else None if hbm_bytes is None or per_device is None
               else per_device <= hbm_bytes),
      "compiler_error": compiler_error,
      "flops_per_step": formula_flops,
      "compiled_flops_per_device": (cost or {}).get("flops"),
      "chip": chip, "assumed_mfu": mfu, "step_time_s": step_time,
      "tokens_per_s_per_chip": batch_size * seq_len / step_time / num_devices,
  }


def format_report(r: dict) -> str:
  gib = lambda b: ("n/a" if b is None else f"{b / _GIB:,.2f} GiB" if b >= _GIB
                   else f"{b / 2**20:,.2f} MiB")
  flops = lambda f: "n/a" if f is None else f"{f:.3e}"
  compiler = "XLA CPU" if r["target"] == "cpu" else "TPU compiler"
  if r["compiler_error"]:
    verdict = f"of {gib(r['hbm_bytes'])} HBM: DOES NOT FIT ({r['compiler_error']})"
  elif r["hbm_bytes"] is None:
    verdict = "(no HBM figure for faked CPU devices)"
  else:
    verdict = (f"of {gib(r['hbm_bytes'])} HBM ({100 * r['per_device_bytes'] / r['hbm_bytes']:.0f}%):"
               f" {'fits' if r['fits'] else 'DOES NOT FIT'}")
  lines = [
      f"target {r['target']}: {r['devices']} × {r['device_kind']}; attention {r['attention']}"
      + (f" (TPU kernels: {', '.join(r['tpu_kernels'])})" if r["tpu_kernels"] else ""),
      f"preset {r['preset']}: {r['params'] / 1e6:,.1f}M parameters",
      f"mesh {r['mesh']} ({r['devices']} devices); global batch {r['global_batch']} × "
      f"{r['sequence_length']} tokens in {r['microbatches']} microbatch(es)",
      "per device:",
      f"  parameters            {gib(r['param_bytes_per_device'])}",
      f"  optimizer state       {gib(r['optimizer_bytes_per_device'])}",
      f"  arguments (state+batch) {gib(r['argument_bytes_per_device'])}  ({compiler} memory analysis)",
      f"  outputs               {gib(r['output_bytes_per_device'])}",
      f"  activations/temp      {gib(r['temp_bytes_per_device'])}",
      f"  total                 {gib(r['per_device_bytes'])} {verdict}",
      "FLOPs per step:",
      f"  6N + attention formula {flops(r['flops_per_step'])}",
      f"  compiled (per device)  {flops(r['compiled_flops_per_device'])}  (XLA cost analysis; a scanned layer loop is counted once)",
      f"step time at {100 * r['assumed_mfu']:.0f}% MFU on {r['chip']}: {r['step_time_s']:.4g} s "
      f"({r['tokens_per_s_per_chip']:,.0f} tokens/s per chip)",
  ]
  return "\n".join(lines)
