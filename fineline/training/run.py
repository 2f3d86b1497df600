"""The run builder `fineline train` and `fineline plan` share: a preset, its runtime
settings and the mesh → the model, its sharded train step and their checks.

`train()`'s signature is the one place its settings and their defaults are stated;
`configured_arguments(train)` reads them as gin would call it, so `plan` lowers exactly the
step `train` would run.
"""

from __future__ import annotations

import dataclasses
import inspect

import gin
import jax

from fineline import partitioning
from fineline.errors import UserError
from fineline.models import attention, llama, presets
from fineline.models.config import LlamaConfig
from fineline.training import step as step_lib


@dataclasses.dataclass(frozen=True)
class Run:
  """What a run's settings build: the model config, the mesh, the model and its step."""
  cfg: LlamaConfig
  mesh: jax.sharding.Mesh
  model: llama.Llama
  train_step: step_lib.TrainStep


def build(*, preset: str, batch_size: int, sequence_length: int, num_microbatches: int,
          z_loss: float, compute_dtype: str, param_dtype: str, scan_layers: bool,
          remat_policy: str, attention_impl: str, optimizer, devices=None) -> Run:
  """The run of these `train` settings on `devices` (default: all); a UserError naming
  the binding when they cannot run there."""
  try:
    cfg = presets.get_preset(preset, dtype=compute_dtype, param_dtype=param_dtype,
                             scan_layers=scan_layers, remat_policy=remat_policy,
                             attention_impl=attention_impl)
  except ValueError as e:
    raise UserError(f"train.preset (macro PRESET): {e}") from None
  if sequence_length > cfg.max_length:
    raise UserError(f"train.sequence_length={sequence_length} exceeds preset {preset!r}'s "
                    f"max_length {cfg.max_length}")
  mesh = partitioning.make_mesh(devices)
  step_lib.check_batch_split(mesh, batch_size, num_microbatches)
  try:
    attention.resolve_impl(cfg.attention_impl, mesh.devices.flat[0].platform, cfg.dtype)
  except ValueError as e:
    raise UserError(f"train.attention_impl: {e}") from None
  opt, schedule = optimizer()
  model = llama.Llama(cfg)
  train_step = step_lib.make_train_step(model, opt, mesh, schedule=schedule,
                                        num_microbatches=num_microbatches, z_loss=z_loss)
  return Run(cfg, mesh, model, train_step)


BUILD_SETTINGS = tuple(name for name in inspect.signature(build).parameters
                       if name != "devices")
"""The `train` arguments `build` takes, by the same names."""


def configured_arguments(fn, names) -> dict:
  """`fn`'s arguments `names` as gin would call it: its signature's defaults, overlaid with
  the bindings of the parsed config (macros and references resolved). One left at
  gin.REQUIRED is a UserError naming it."""
  params = inspect.signature(fn).parameters
  bound = gin.get_bindings(fn)
  args = {name: bound.get(name, params[name].default) for name in names}
  missing = [name for name, value in args.items() if value is gin.REQUIRED]
  if missing:
    raise UserError(f"missing gin binding(s) {', '.join(f'{fn.__name__}.{m}' for m in missing)} "
                    f"(gin.REQUIRED); set them in a gin file or with --gin.{fn.__name__}."
                    f"{missing[0]}=…")
  return args
