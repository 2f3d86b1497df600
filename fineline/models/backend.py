"""The platform a program is being built for, which decides the model's kernels.

`fineline plan` compiles TPU programs in a CPU process, so the process's default backend
does not say where a traced program will run; the mesh in context (`jax.set_mesh`, as
`partitioning.activation_rules` sets it) does. Without a mesh, the default backend runs it.
"""

from __future__ import annotations

import jax

PLATFORMS = ("cpu", "gpu", "tpu")


def target_platform() -> str:
  """'cpu', 'gpu' or 'tpu': the platform of the mesh in context, else the default backend."""
  device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
  platform = device.platform if device is not None else jax.default_backend()
  return "gpu" if platform in ("cuda", "rocm") else platform
