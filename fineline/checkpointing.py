"""fineline's checkpoint format: an Orbax composite directory.

A checkpoint directory holds the items
  params  the model parameters (Orbax PyTree, any sharding, any dtype)
  meta    JSON: {"format": "fineline/1", "model_config": LlamaConfig.to_dict(), "step", "tokens", …}
and, when the trainer wrote it, further items (optimizer state, data-iterator position).
`fineline convert --from_hf` writes the same two items, so the trainer can start from an
imported model and evaluation reads both the same way. A training run keeps one such
directory per saved step under MODEL_DIR/checkpoints/<step>/.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fineline.models import llama
from fineline.models.config import LlamaConfig

FORMAT = "fineline/1"


def save_params(path: str, params, cfg: LlamaConfig, *, overwrite: bool = False,
                **meta: Any) -> None:
  """Writes params + meta as a checkpoint at `path`. Orbax writes to a temporary directory
  and renames it when complete, so an interrupted save leaves nothing restorable."""
  path = os.path.abspath(path)
  meta = {"format": FORMAT, "model_config": cfg.to_dict(), **meta}
  with _checkpointer() as ckptr:
    ckptr.save(path, ocp.args.Composite(params=ocp.args.PyTreeSave(params),
                                        meta=ocp.args.JsonSave(meta)), force=overwrite)


def read_meta(path: str) -> dict[str, Any]:
  """The `meta` item of a checkpoint; ValueError naming the path if it is not one."""
  path = os.path.abspath(path)
  if not os.path.isdir(os.path.join(path, "meta")):
    raise ValueError(f"{path} is not a fineline checkpoint (no 'meta' item)")
  with _checkpointer() as ckptr:
    meta = ckptr.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  if meta.get("format") != FORMAT:
    raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
  return meta


def load_params(path: str, *, shardings=None, as_numpy: bool = False,
                scan_layers: bool | None = None):
  """Restores (params, config, meta) from a checkpoint.

  shardings: a tree of jax.sharding.Sharding matching the params in the layout they will
  be used in (`scan_layers`), to restore straight onto a mesh; as_numpy: host numpy arrays
  (conversion); default: single-device jax arrays. `scan_layers` picks the layer layout of
  the returned tree, whatever layout the checkpoint was written in.
  """
  path = os.path.abspath(path)
  meta = read_meta(path)
  cfg = LlamaConfig.from_dict(meta["model_config"])
  want_scan = cfg.scan_layers if scan_layers is None else scan_layers
  direct = shardings is not None and not as_numpy and want_scan == cfg.scan_layers
  with _checkpointer() as ckptr:
    if direct:  # each device reads only its own shards
      restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings)
    else:
      stored = ckptr.metadata(path).item_metadata["params"]
      stored = stored.tree if hasattr(stored, "tree") else stored
      restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), stored)
    params = ckptr.restore(path, ocp.args.Composite(
        params=ocp.args.PyTreeRestore(restore_args=restore_args)))["params"]
  if not direct:
    params = _relayout(params, cfg.num_layers, want_scan)
    if not as_numpy:
      params = jax.device_put(params, shardings if shardings is not None else _default_sharding())
  return params, cfg.replace(scan_layers=want_scan), meta


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(
      params=ocp.PyTreeCheckpointHandler(), meta=ocp.JsonCheckpointHandler()))


def _relayout(params, num_layers: int, scan: bool):
  return llama.scan_layers(params, num_layers) if scan else llama.unscan_layers(params, num_layers)


def _default_sharding():
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
