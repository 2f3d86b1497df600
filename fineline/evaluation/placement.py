"""Where scoring and generation put their batches: one device, or split over a mesh.

Shared by `scorer.Scorer` and `generate.Decoder`. Without a mesh, host arrays go to the
default device. With one, batch rows are split over the mesh's data axes (a batch's row
count is a multiple of their size, `rows` pads to it), other inputs are replicated, and
the model's activations take the mesh's logical axis rules while a call is traced.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np


class Placement:
  """Batches on `mesh` (split over its data axes), or on the default device when None."""

  def __init__(self, mesh=None):
    self.mesh = mesh
    self.row_multiple = 1
    if mesh is not None:
      from fineline import partitioning  # pylint: disable=import-outside-toplevel
      self.row_multiple = partitioning.data_parallel_size(mesh)

  def replicated(self):
    """The sharding of outputs every host reads (None without a mesh)."""
    if self.mesh is None:
      return None
    from fineline import partitioning  # pylint: disable=import-outside-toplevel
    return partitioning.replicated(self.mesh)

  def rows(self, n: int, batch_size: int) -> int:
    """Padded batch rows for `n`: a power of two (or `batch_size`), a multiple of the data
    axes."""
    size = 1 << max(0, n - 1).bit_length()
    if size > batch_size >= n:
      size = batch_size
    return -(-size // self.row_multiple) * self.row_multiple

  def put(self, x_np: np.ndarray, split: bool = True):
    """Host batch → device, split over the data axes (else replicated) on a mesh."""
    if self.mesh is None:
      return jnp.asarray(x_np)
    from fineline import partitioning  # pylint: disable=import-outside-toplevel
    from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
    spec = P("batch" if split else None, *([None] * (x_np.ndim - 1)))
    sharding = NamedSharding(self.mesh, partitioning.logical_to_mesh(spec))
    return jax.make_array_from_callback(x_np.shape, sharding, lambda index: x_np[index])

  def rules(self):
    """The context in which model calls are traced: the mesh's activation rules."""
    if self.mesh is None:
      return contextlib.nullcontext()
    from fineline import partitioning  # pylint: disable=import-outside-toplevel
    return partitioning.activation_rules(self.mesh)

  def fetch(self, x) -> np.ndarray:
    """A device array as host numpy, gathered from every host when it spans several."""
    if getattr(x, "is_fully_addressable", True):
      return np.asarray(x)
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
