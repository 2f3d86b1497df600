"""fineline's checkpoint format: an Orbax composite directory.

A checkpoint directory holds the items
  params  the model parameters (Orbax PyTree, any sharding, any dtype)
  meta    JSON: {"format": "fineline/1", "model_config": LlamaConfig.to_dict(), "step", "tokens", …}
and, when the trainer wrote it, further items (optimizer state, data-iterator position).
`fineline convert --from_hf` writes the same two items, so the trainer can start from an
imported model and evaluation reads both the same way. A training run keeps one such
directory per saved step under MODEL_DIR/checkpoints/<step>/ (`fineline.run_checkpoints`).
Paths may be local or URLs (gs://…).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fineline import fileio, orbax_pending
from fineline.errors import UserError
from fineline.models import llama
from fineline.models.config import LlamaConfig

FORMAT = "fineline/1"
PendingArray = orbax_pending.PendingArray


def save_params(path, params, cfg: LlamaConfig, *, overwrite: bool = False,
                compress: bool = True, **meta: Any) -> None:
  """Writes params + meta as a checkpoint at `path`. Orbax writes to a temporary directory
  and renames it when complete, so an interrupted save leaves nothing restorable.
  compress=False skips zstd: several times faster to write, needs no buffers beyond the
  arrays themselves (conversion uses it); either kind reads back the same way. Leaves may
  be `PendingArray`s that another thread fills in while the save runs."""
  path = fileio.resolve(path)
  meta = {"format": FORMAT, "model_config": cfg.to_dict(), **meta}
  with _checkpointer(compress=compress) as ckptr:
    ckptr.save(path, ocp.args.Composite(params=ocp.args.PyTreeSave(params),
                                        meta=ocp.args.JsonSave(meta)), force=overwrite)


def read_meta(path) -> dict[str, Any]:
  """The `meta` item of a checkpoint; ValueError naming the path if it is not one."""
  path = fileio.resolve(path)
  if not (path / "meta").is_dir():
    raise UserError(f"{path} is not a fineline checkpoint (no 'meta' item)")
  with _checkpointer() as ckptr:
    meta = ckptr.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  if meta.get("format") != FORMAT:
    raise UserError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
  return meta


def load_params(path, *, shardings=None, as_numpy: bool = False,
                scan_layers: bool | None = None):
  """Restores (params, config, meta) from a checkpoint.

  shardings: a tree of jax.sharding.Sharding matching the params in the layout they will
  be used in (`scan_layers`), to restore straight onto a mesh; as_numpy: host numpy arrays
  (conversion); default: single-device jax arrays. `scan_layers` picks the layer layout of
  the returned tree, whatever layout the checkpoint was written in.
  """
  path = fileio.resolve(path)
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


def iter_params(path, groups: list[list[str]]):
  """Restores a checkpoint's params as host numpy arrays in the unscanned layout, one group
  of top-level entries (e.g. one layer) at a time, so a consumer can convert and drop each
  group while the next is read. Yields one dict per group, holding the entries of the group
  that the checkpoint has; entries named in no group come last as one further dict (only
  when there are any). A checkpoint with scanned layers is restored whole, then split."""
  path = fileio.resolve(path)
  read_meta(path)  # a clear error for anything but a fineline checkpoint
  with _checkpointer() as ckptr:
    stored = ckptr.metadata(path).item_metadata["params"]
    stored = dict(stored.tree if hasattr(stored, "tree") else stored)
    named = {name for group in groups for name in group}
    if "layers" in stored:  # scanned: per-layer entries exist only after unstacking
      params, _, _ = load_params(path, as_numpy=True, scan_layers=False)
      stored, restore = params, lambda sub: {k: params.pop(k) for k in sub}
    else:
      def restore(sub):
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), sub)
        return ckptr.restore(path, ocp.args.Composite(params=ocp.args.PyTreeRestore(
            item=sub, restore_args=restore_args, partial_restore=True)))["params"]
    extra = [name for name in stored if name not in named]
    for group in [*groups, extra] if extra else groups:
      sub = {name: stored[name] for name in group if name in stored}
      yield restore(sub) if sub else {}


def _checkpointer(compress: bool = True) -> ocp.Checkpointer:
  # ocp.Checkpointer saves synchronously, so host arrays need not be deep-copied first.
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(
      params=ocp.PyTreeCheckpointHandler(type_handler_registry=orbax_pending.handler_registry(),
                                         use_compression=compress),
      meta=ocp.JsonCheckpointHandler()))


def _relayout(params, num_layers: int, scan: bool):
  return llama.scan_layers(params, num_layers) if scan else llama.unscan_layers(params, num_layers)


def _default_sharding():
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
