"""fineline's checkpoint format: an Orbax composite directory.

A checkpoint directory holds the items
  params  the model parameters (Orbax PyTree, any sharding, any dtype)
  meta    JSON: {"format": "fineline/1", "model_config": LlamaConfig.to_dict(), "step", "tokens", …}
and, when the trainer wrote it, further items (optimizer state, data-iterator position).
`fineline convert --from_hf` writes the same two items, so the trainer can start from an
imported model and evaluation reads both the same way. A training run keeps one such
directory per saved step under MODEL_DIR/checkpoints/<step>/ (`RunCheckpoints`), with the
items `train_state` (optimizer state and step counters) and `data` (each host's data
iterator position, JSON) beside `params` and `meta`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fineline.models import llama
from fineline.models.config import LlamaConfig
from fineline.errors import UserError

FORMAT = "fineline/1"


def save_params(path: str, params, cfg: LlamaConfig, *, overwrite: bool = False,
                compress: bool = True, **meta: Any) -> None:
  """Writes params + meta as a checkpoint at `path`. Orbax writes to a temporary directory
  and renames it when complete, so an interrupted save leaves nothing restorable.
  compress=False skips zstd: several times faster to write, needs no buffers beyond the
  arrays themselves (conversion uses it); either kind reads back the same way. Leaves may
  be `PendingArray`s that another thread fills in while the save runs."""
  path = os.path.abspath(path)
  meta = {"format": FORMAT, "model_config": cfg.to_dict(), **meta}
  with _checkpointer(compress=compress) as ckptr:
    ckptr.save(path, ocp.args.Composite(params=ocp.args.PyTreeSave(params),
                                        meta=ocp.args.JsonSave(meta)), force=overwrite)


def read_meta(path: str) -> dict[str, Any]:
  """The `meta` item of a checkpoint; ValueError naming the path if it is not one."""
  path = os.path.abspath(path)
  if not os.path.isdir(os.path.join(path, "meta")):
    raise UserError(f"{path} is not a fineline checkpoint (no 'meta' item)")
  with _checkpointer() as ckptr:
    meta = ckptr.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  if meta.get("format") != FORMAT:
    raise UserError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
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


def iter_params(path: str, groups: list[list[str]]):
  """Restores a checkpoint's params as host numpy arrays in the unscanned layout, one group
  of top-level entries (e.g. one layer) at a time, so a consumer can convert and drop each
  group while the next is read. Yields one dict per group, holding the entries of the group
  that the checkpoint has; entries named in no group come last as one further dict (only
  when there are any). A checkpoint with scanned layers is restored whole, then split."""
  path = os.path.abspath(path)
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


class PendingArray:
  """A params leaf whose numpy array another thread is still producing (reading and
  converting weights): `save_params` starts writing at once and writes each pending
  leaf as soon as `set` hands over its array, so producing and writing overlap, and drops
  the array once written, so the model need not be in memory all at once. The checkpoint
  is the same as one saved from numpy arrays. The producer must `set` or `fail` every
  pending leaf, or the save never completes; a PendingArray is saved once."""

  def __init__(self, shape, dtype):
    self.shape, self.dtype = tuple(shape), np.dtype(dtype)
    self.ndim, self.size = len(self.shape), int(np.prod(self.shape))
    self._future: concurrent.futures.Future = concurrent.futures.Future()

  def set(self, array: np.ndarray) -> None:
    if array.shape != self.shape or array.dtype != self.dtype:
      raise UserError(f"pending {self.shape} {self.dtype} array set to "
                       f"{array.shape} {array.dtype}")
    self._future.set_result(array)

  def fail(self, error: BaseException) -> None:
    """Fails a leaf still to come; a leaf already written (its future dropped) stays."""
    future = self._future
    if future is not None and not future.done():
      future.set_exception(error)


class _PendingArrayHandler(ocp.type_handlers.NumpyHandler):
  """Writes a PendingArray exactly as NumpyHandler writes the array it becomes (same
  typestr, spec and metadata). Orbax writes all leaves concurrently, one `_open_and_write`
  each, so one leaf waiting here holds up none of the others."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._waiting = self._writing = 0

  async def _open_and_write(self, value, tspec, ts_context):
    if not isinstance(value, PendingArray):
      return await super()._open_and_write(value, tspec, ts_context)
    self._waiting += 1
    try:
      array = await _arrival(value._future)  # pylint: disable=protected-access
    except BaseException:
      # Orbax abandons the save at the first error; let the writes under way end first,
      # so none outlives the save (the producer fails all leaves once one fails).
      self._waiting -= 1
      while self._waiting or self._writing:
        await asyncio.sleep(0.01)
      raise
    self._waiting -= 1
    # Only this write holds the array now: once written, its memory serves later leaves,
    # so fresh pages (which the kernel must fault in and zero) are rarely needed.
    value._future = None  # pylint: disable=protected-access
    self._writing += 1
    try:
      await super()._open_and_write(array, tspec, ts_context)
    finally:
      self._writing -= 1


async def _arrival(future: concurrent.futures.Future):
  """`future`'s result, awaited without blocking the loop. Unlike asyncio.wrap_future,
  a result that comes after a failed save has closed the loop is simply dropped."""
  loop = asyncio.get_running_loop()
  arrived = loop.create_future()

  def settle():
    if not arrived.done():
      arrived.set_result(None)

  def wake(_):
    try:
      loop.call_soon_threadsafe(settle)
    except RuntimeError:  # loop closed: nobody waits any more
      pass

  future.add_done_callback(wake)
  await arrived
  return future.result()


def _checkpointer(compress: bool = True) -> ocp.Checkpointer:
  # ocp.Checkpointer saves synchronously, so host arrays need not be deep-copied first
  # (Orbax's default), which would hold a second copy of the model while it is written.
  th = ocp.type_handlers
  registry = th.create_type_handler_registry(*[
      (ty, th.NumpyHandler(deepcopy_host_arrays=False) if ty is np.ndarray
       else th.get_type_handler(ty)) for ty in th.supported_types()],
      (PendingArray, _PendingArrayHandler(deepcopy_host_arrays=False)))
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(
      params=ocp.PyTreeCheckpointHandler(type_handler_registry=registry, use_compression=compress),
      meta=ocp.JsonCheckpointHandler()))


def _relayout(params, num_layers: int, scan: bool):
  return llama.scan_layers(params, num_layers) if scan else llama.unscan_layers(params, num_layers)


def _default_sharding():
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


# --- Training runs: MODEL_DIR/checkpoints/<step>/ managed by Orbax ---------------------------


@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  state: dict


@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  pass


class DataStateHandler(ocp.CheckpointHandler):
  """Each host's data-iterator position as `process_<i>.json`: every host writes its own."""

  def save(self, directory, args: DataStateSave):
    path = os.path.join(os.fspath(directory), f"process_{jax.process_index()}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(args.state, f)

  def restore(self, directory, args: DataStateRestore | None = None):
    del args
    directory = os.fspath(directory)
    own = os.path.join(directory, f"process_{jax.process_index()}.json")
    path = own if os.path.exists(own) else os.path.join(directory, "process_0.json")
    if not os.path.exists(path):
      return None
    with open(path, encoding="utf-8") as f:
      return json.load(f)

  def metadata(self, directory):
    return None

  def finalize(self, directory):
    pass

  def close(self):
    pass


ocp.args.register_with_handler(DataStateHandler, for_save=True)(DataStateSave)
ocp.args.register_with_handler(DataStateHandler, for_restore=True)(DataStateRestore)


def ensure_writable(model_dir: str) -> None:
  """Creates MODEL_DIR and proves it takes a file; a clear error otherwise."""
  probe = os.path.join(model_dir, f".write_probe_{jax.process_index()}")
  try:
    os.makedirs(model_dir, exist_ok=True)
    with open(probe, "w", encoding="utf-8") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f"MODEL_DIR {model_dir} is not writable: {e}") from None


def copy_tokenizer(model_dir: str, tokenizer_file: str | None) -> None:
  """The run's tokenizer files, copied once to MODEL_DIR/tokenizer/ (by process 0)."""
  if not tokenizer_file or jax.process_index() != 0:
    return
  dest = os.path.join(model_dir, "tokenizer")
  if os.path.isdir(dest):
    return
  tmp = f"{dest}.tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  if os.path.isdir(tokenizer_file):
    shutil.copytree(tokenizer_file, tmp)
  else:
    os.makedirs(tmp)
    shutil.copy2(tokenizer_file, os.path.join(tmp, os.path.basename(tokenizer_file)))
  os.replace(tmp, dest)


class RunCheckpoints:
  """A run's checkpoints: async Orbax saves, a rolling window of the newest `keep_last`, and
  every `keep_every`-th step kept for good (the series that evaluation and analysis read).

  Orbax writes each save into a temporary directory and renames it when every host is done,
  so an interrupted save is never listed, let alone restored.
  """

  def __init__(self, model_dir: str, *, keep_last: int = 3, keep_every: int | None = None,
               async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(model_dir), "checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep_last, keep_period=keep_every or None, create=True,
        cleanup_tmp_directories=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"params": ocp.StandardCheckpointHandler(),
                       "train_state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler(),
                       "data": DataStateHandler()})

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: dict, meta: dict, data_state: dict | None) -> None:
    """Starts saving `state` (the train-step state) at `step`; returns once the arrays are
    copied off the devices, while the write goes on in the background."""
    train_state = {k: v for k, v in state.items() if k != "params"}
    self._manager.save(step, force=True, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state["params"]),
        train_state=ocp.args.StandardSave(train_state),
        meta=ocp.args.JsonSave({"format": FORMAT, **meta}),
        data=DataStateSave(data_state or {})))

  def restore(self, step: int, abstract_state) -> tuple[dict, dict, dict | None]:
    """(state, meta, data_state) of `step`, each array placed with the sharding its
    `abstract_state` leaf carries (any mesh or device count)."""
    abstract_train = {k: v for k, v in abstract_state.items() if k != "params"}
    out = self._manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state["params"]),
        train_state=ocp.args.StandardRestore(abstract_train),
        meta=ocp.args.JsonRestore(),
        data=DataStateRestore()))
    state = {"params": out["params"], **out["train_state"]}
    return state, out["meta"], out["data"] or None

  def wait(self) -> None:
    """Blocks until the save in flight is committed; re-raises its error, if any."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_with_shardings(abstract_tree, shardings):
  """ShapeDtypeStructs that carry the sharding to restore each leaf with."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)
