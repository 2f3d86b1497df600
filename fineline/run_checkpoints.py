"""A training run's checkpoints: MODEL_DIR/checkpoints/<step>/ managed by Orbax.

Each save is a fineline checkpoint (`fineline.checkpointing`: items `params` and `meta`)
with the items `train_state` (optimizer state and step counters) and `data` (each host's
data-iterator position, JSON) beside them. MODEL_DIR may be local or a URL (gs://…).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import orbax.checkpoint as ocp
from etils import epath

from fineline import fileio
from fineline.checkpointing import FORMAT


@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  state: dict


@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  pass


class DataStateHandler(ocp.CheckpointHandler):
  """Each host's data-iterator position as `process_<i>.json`: every host writes its own."""

  def save(self, directory, args: DataStateSave):
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # One object per host, written whole; Orbax commits the directory once all are done.
    (directory / f"process_{jax.process_index()}.json").write_text(json.dumps(args.state))

  def restore(self, directory, args: DataStateRestore | None = None):
    del args
    directory = epath.Path(directory)
    own = directory / f"process_{jax.process_index()}.json"
    path = own if own.exists() else directory / "process_0.json"
    if not path.exists():
      return None
    return json.loads(path.read_text())

  def metadata(self, directory):
    return None

  def finalize(self, directory):
    pass

  def close(self):
    pass


ocp.args.register_with_handler(DataStateHandler, for_save=True)(DataStateSave)
ocp.args.register_with_handler(DataStateHandler, for_restore=True)(DataStateRestore)


def copy_tokenizer(model_dir, tokenizer_file: str | None) -> None:
  """The run's tokenizer files, copied once to MODEL_DIR/tokenizer/ (by process 0)."""
  if not tokenizer_file or jax.process_index() != 0:
    return
  dest = fileio.resolve(model_dir) / "tokenizer"
  if dest.is_dir():
    return
  source = fileio.resolve(tokenizer_file)
  fileio.copy_into(source, dest if source.is_dir() else dest / source.name)


class RunCheckpoints:
  """A run's checkpoints: async Orbax saves, a rolling window of the newest `keep_last`, and
  every `keep_every`-th step kept for good (the series that evaluation and analysis read).

  Orbax commits a save only when every host is done (locally by renaming its temporary
  directory, on a bucket by a commit marker), so an interrupted save is never listed, let
  alone restored.
  """

  def __init__(self, model_dir, *, keep_last: int = 3, keep_every: int | None = None,
               async_save: bool = True):
    self.directory = fileio.resolve(model_dir) / "checkpoints"
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

  def path(self, step: int) -> epath.Path:
    return self.directory / str(step)

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
