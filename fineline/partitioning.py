"""The device mesh and the one table that maps the model's logical axes onto it.

Only this module knows the mesh axis names. The model names every parameter and main
activation with logical axes (`vocab embed heads kv_heads head_dim mlp norm layers`,
`batch length …`); `LOGICAL_AXIS_RULES` decides where each goes:

  data    pure data parallelism: params replicated, batch split.
  fsdp    batch split *and* params/optimizer state sharded along `embed` (ZeRO-3 style).
  tensor  Megatron-style model parallelism over heads, MLP width and vocabulary.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fineline.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

# Order matters: flax assigns rules first to last and never reuses a mesh axis within one
# array, so an activation's `embed` falls back to unsharded once `batch` took `fsdp`.
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("length", None),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
)


@gin.configurable
def mesh_axes(data: int = -1, fsdp: int = 1, tensor: int = 1) -> dict[str, int]:
  """The mesh as configured: one size per axis, at most one of them -1 (= the rest)."""
  return {"data": data, "fsdp": fsdp, "tensor": tensor}


def mesh_shape(num_devices: int) -> dict[str, int]:
  """The configured axis sizes with the `-1` resolved to the devices left over."""
  sizes = mesh_axes()
  if any(v == 0 or v < -1 for v in sizes.values()) or list(sizes.values()).count(-1) > 1:
    raise UserError(f"mesh_axes: sizes must be positive, with at most one -1; got {sizes}")
  fixed = math.prod(v for v in sizes.values() if v != -1)
  if -1 in sizes.values():
    if num_devices % fixed:
      raise UserError(f"mesh_axes: {num_devices} devices do not split into {sizes}; make "
                      f"the fixed sizes' product ({fixed}) divide {num_devices}")
    sizes = {k: (num_devices // fixed if v == -1 else v) for k, v in sizes.items()}
  if math.prod(sizes.values()) != num_devices:
    raise UserError(f"mesh_axes: {sizes} needs {math.prod(sizes.values())} devices, "
                    f"but {num_devices} are available; make the sizes multiply to "
                    f"{num_devices}, or set one of them to -1")
  return sizes


def parse_mesh(spec: str, flag: str = "--mesh") -> dict[str, int]:
  """`data=2,fsdp=4` → {"data": 2, "fsdp": 4, "tensor": 1}: axes left out have size 1, and
  one size may be -1 (the devices left over)."""
  sizes = {axis: 1 for axis in MESH_AXES}
  for part in filter(None, (p.strip() for p in spec.split(","))):
    axis, eq, value = part.partition("=")
    axis = axis.strip()
    if axis not in MESH_AXES:
      raise UserError(f"{flag} {spec}: unknown axis {axis!r}; the axes are "
                       f"{', '.join(MESH_AXES)} (e.g. {flag} data=2,fsdp=4)")
    try:
      sizes[axis] = int(value) if eq else None
    except ValueError:
      sizes[axis] = None
    if sizes[axis] is None or sizes[axis] == 0 or sizes[axis] < -1:
      raise UserError(f"{flag} {spec}: {part!r} needs a positive size or -1 "
                       f"(e.g. {axis}=2)")
  if list(sizes.values()).count(-1) > 1:
    raise UserError(f"{flag} {spec}: at most one axis may be -1")
  return sizes


def mesh_bindings(sizes: dict[str, int]) -> list[str]:
  """The gin bindings that make `sizes` the configured mesh."""
  return [f"mesh_axes.{axis} = {size}" for axis, size in sizes.items()]


def devices_needed() -> int | None:
  """Devices the configured mesh needs, or None when an axis is -1 (any count will do)."""
  sizes = mesh_axes()
  return None if -1 in sizes.values() else math.prod(sizes.values())


def make_mesh(devices=None) -> Mesh:
  """The mesh over all (global) devices, shaped by the gin-bound `mesh_shape`."""
  devices = jax.devices() if devices is None else devices
  sizes = mesh_shape(num_devices=len(devices))
  shape = tuple(sizes[a] for a in MESH_AXES)
  try:  # topology-aware placement on TPU/GPU; plain reshape elsewhere
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(shape, devices=devices, allow_split_physical_axes=True)
  except Exception as e:  # pylint: disable=broad-except
    # Correct either way, but a plain order may put a mesh axis's neighbours far apart on
    # the interconnect: say why it was not topology-aware.
    logging.warning("mesh %s: no topology-aware device order for %d %s devices (%s: %s); "
                    "using their plain order", dict(zip(MESH_AXES, shape)), len(devices),
                    devices[0].platform, type(e).__name__, e)
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def logical_to_mesh(spec: P) -> P:
  """A logical PartitionSpec (model names) → a mesh PartitionSpec."""
  return nn.logical_to_mesh_axes(tuple(spec), LOGICAL_AXIS_RULES)


def logical_shardings(mesh: Mesh, logical_specs):
  """A tree of logical PartitionSpecs → a tree of NamedShardings on `mesh`."""
  return jax.tree.map(lambda s: NamedSharding(mesh, logical_to_mesh(s)), logical_specs,
                      is_leaf=lambda x: isinstance(x, P))


def param_shardings(mesh: Mesh, boxed_abstract_params):
  """NamedShardings for a parameter tree boxed with logical axes (`llama.abstract_params`)."""
  return logical_shardings(mesh, nn.get_partition_spec(boxed_abstract_params))


def optimizer_shardings(mesh: Mesh, optimizer, abstract_params, params_sharding):
  """Shardings of `optimizer`'s state: moments follow their parameter, counters replicate."""
  abstract_state = jax.eval_shape(optimizer.init, abstract_params)
  return optax_tree_map_params(optimizer, abstract_state, params_sharding, replicated(mesh))


def optax_tree_map_params(optimizer, abstract_state, params_sharding, default):
  import optax  # pylint: disable=import-outside-toplevel
  return optax.tree_map_params(
      optimizer, lambda _, s: s, abstract_state, params_sharding,
      transform_non_params=lambda _: default,
      is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sequences split over every data-parallel axis; the length axis whole."""
  return NamedSharding(mesh, logical_to_mesh(P("batch", "length")))


def microbatch_sharding(mesh: Mesh) -> NamedSharding:
  """Microbatches stacked on a leading axis, M × B/M × S: each one split over the data axes
  like a whole batch. With microbatch m holding global rows m, m+M, m+2M, … (the
  reshape B → B/M × M, swapped), every device already holds its B/(M·D) rows of each
  microbatch, so forming them moves no data, and each scan step keeps every device busy."""
  return NamedSharding(mesh, logical_to_mesh(P(None, "batch", "length")))


def data_parallel_size(mesh: Mesh) -> int:
  """How many ways the global batch is split."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


@contextlib.contextmanager
def activation_rules(mesh: Mesh):
  """Around a jitted call (it traces there): the model's logical activation constraints
  resolve against `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
    yield


def global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray], global_batch_size: int):
  """This host's rows → global jax.Arrays split over the data axes (multi-host safe)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v, (global_batch_size,) + v.shape[1:])
          for k, v in local_batch.items()}


def bytes_per_device(abstract_tree, shardings) -> int:
  """Bytes the largest shard of each leaf occupies on one device, summed over the tree."""
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings)):
    shard = sharding.shard_shape(leaf.shape)
    total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
  return total
