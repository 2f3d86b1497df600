"""The training loop: data → step → log → save → evaluate, resumable at any checkpoint."""

from __future__ import annotations

import os
import signal
import time

import gin
import jax

from fineline import checkpointing, fileio, partitioning, run_checkpoints
from fineline.data import pretrain
from fineline.errors import UserError
from fineline.training import metrics as metrics_lib
from fineline.training import optim
from fineline.training import run as run_lib


class NonFiniteLossError(RuntimeError):
  """Too many non-finite steps in a row."""


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (full disk, lost permissions, …)."""


@gin.configurable(denylist=["stop_event"])
def train(model_dir: str = gin.REQUIRED, preset: str = gin.REQUIRED, train_steps: int = gin.REQUIRED,
          batch_size: int = gin.REQUIRED, sequence_length: int = gin.REQUIRED, *,
          seed: int = 0, save_every_steps: int = 1000, keep_every_steps: int | None = None,
          keep_last: int = 3, log_every_steps: int = 10, num_microbatches: int = 1,
          z_loss: float = 0.0, compute_dtype: str = "float32", param_dtype: str = "float32",
          scan_layers: bool = False, remat_policy: str = "none", attention_impl: str = "auto",
          optimizer=optim.make_optimizer,
          data=pretrain.PretrainData, evaluator=None, init_from: str | None = None,
          max_consecutive_nonfinite: int = 5, loss_spike_factor: float = 1.5,
          async_checkpoints: bool = True, stop_event=None) -> dict:
  """Trains `preset` for `train_steps` steps of `batch_size` × `sequence_length` tokens.

  Resumes from the newest complete checkpoint under MODEL_DIR/checkpoints when there is one,
  else starts from `init_from` (a fineline checkpoint, e.g. an imported HF model) or from
  random init. Returns the final host-side record (step, loss, …).
  """
  fileio.check_access(model_dir, "MODEL_DIR", write=True)
  run = run_lib.build(**{name: value for name, value in locals().items()
                         if name in run_lib.BUILD_SETTINGS})
  cfg, mesh, train_step = run.cfg, run.mesh, run.train_step
  batches = data(sequence_length=sequence_length, global_batch_size=batch_size, seed=seed,
                 bos_id=cfg.bos_token_id, process_index=jax.process_index(),
                 process_count=jax.process_count())
  ckpts = run_checkpoints.RunCheckpoints(model_dir, keep_last=keep_last,
                                         keep_every=keep_every_steps,
                                         async_save=async_checkpoints)
  run_checkpoints.copy_tokenizer(model_dir, getattr(batches, "tokenizer_file", None))
  _write_config(model_dir)

  state, tokens = _initial_state(train_step, ckpts, batches, cfg, seed, init_from)
  step = int(state["step"])
  tokens_per_step = batch_size * sequence_length
  writer = metrics_lib.MetricsWriter(
      model_dir, flops_per_token=cfg.flops_per_token(sequence_length),
      peak_flops=metrics_lib.peak_flops_total())
  stop = _StopFlag(step, stop_event)
  loss_avg, record, stopping, pending = None, {}, False, None
  clock, window_tokens = _now(), 0
  try:
    while step < train_steps and not stopping:
      batch = partitioning.global_batch(mesh, next(batches), batch_size)
      state, step_metrics = train_step.step(state, batch)
      step += 1
      tokens += tokens_per_step
      window_tokens += tokens_per_step
      # Read the previous step's scalars only now, after this step is dispatched, so the host
      # never waits on the device between steps.
      if pending is not None:
        loss_avg = _observe(*pending, loss_avg, writer, ckpts, max_consecutive_nonfinite,
                            loss_spike_factor)
      pending = (step, step_metrics)
      if step % log_every_steps == 0 or step == train_steps:
        record = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        elapsed = _now() - clock
        record.update(tokens=tokens, step_time_s=elapsed / max(step % log_every_steps or log_every_steps, 1),
                      **writer.throughput(window_tokens, elapsed))
        writer.write(step, record)
        clock, window_tokens = _now(), 0
      stopping = stop.poll(step)
      if step % save_every_steps == 0 or step == train_steps or stopping:
        writer.flush()
        _save(ckpts, step, state, cfg, tokens, batches)
        if evaluator is not None:
          _evaluate(evaluator, ckpts, state, step, tokens, step // save_every_steps)
    if pending is not None:
      _observe(*pending, loss_avg, writer, ckpts, max_consecutive_nonfinite, loss_spike_factor)
    if stopping:
      _wait(ckpts, step)
      print(f"stopped by signal after step {step}; checkpoint {ckpts.path(step)} is complete",
            flush=True)
  finally:
    stop.restore()
    try:
      _wait(ckpts, step)
    finally:
      ckpts.close()
      writer.close()
  return {"step": step, "tokens": tokens, **record}


def _observe(step, step_metrics, loss_avg, writer, ckpts, max_consecutive_nonfinite,
             loss_spike_factor):
  """Host-side checks of one finished step: non-finite events and the stop after too many in
  a row, loss-spike events. Returns the updated running mean of the loss."""
  host = jax.device_get({k: step_metrics[k] for k in ("loss", "finite", "nonfinite_streak")})
  loss = float(host["loss"])
  if not host["finite"]:
    writer.event(step, "nonfinite_step", loss=loss, streak=int(host["nonfinite_streak"]))
    if host["nonfinite_streak"] >= max_consecutive_nonfinite:
      _wait(ckpts, step)
      latest = ckpts.latest_step()
      where = ckpts.path(latest) if latest is not None else "none (no checkpoint was written)"
      raise NonFiniteLossError(
          f"stopping at step {step}: {int(host['nonfinite_streak'])} steps in a row had a "
          f"non-finite loss or gradient; their updates were skipped. Newest complete "
          f"checkpoint: {where}")
    return loss_avg
  if loss_avg is not None and loss > loss_spike_factor * loss_avg:
    writer.event(step, "loss_spike", loss=loss, running_mean=loss_avg)
  return loss if loss_avg is None else 0.9 * loss_avg + 0.1 * loss


def _initial_state(train_step, ckpts, batches, cfg, seed, init_from):
  latest = ckpts.latest_step()
  if latest is not None:
    abstract = run_checkpoints.abstract_with_shardings(train_step.abstract_state,
                                                       train_step.state_shardings)
    state, meta, data_state = ckpts.restore(latest, abstract)
    if data_state:
      batches.set_state(data_state)
    print(f"resumed from {ckpts.path(latest)} (step {latest}, {meta.get('tokens', 0):,} tokens)",
          flush=True)
    return state, int(meta.get("tokens", 0))
  if init_from:
    params, loaded_cfg, _ = checkpointing.load_params(
        init_from, shardings=train_step.state_shardings["params"], scan_layers=cfg.scan_layers)
    theirs, ours = loaded_cfg.architecture(), cfg.architecture()
    if theirs != ours:
      diff = {k: (v, ours[k]) for k, v in theirs.items() if ours[k] != v}
      raise UserError(f"train.init_from={init_from}: its architecture differs from the preset "
                       f"(field: (checkpoint, preset)): {diff}")
    print(f"initialised from {init_from}", flush=True)
    return train_step.init_from_params(params), 0
  return train_step.init(jax.random.key(seed)), 0


def _save(ckpts, step, state, cfg, tokens, batches):
  meta = {"model_config": cfg.to_dict(), "step": step, "tokens": tokens}
  try:
    ckpts.save(step, state, meta, batches.get_state())
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(ckpts, step, e) from e


def _wait(ckpts, step):
  try:
    ckpts.wait()
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(ckpts, step, e) from e


def _write_error(ckpts, step, e):
  try:
    latest = ckpts.latest_step()
  except Exception:  # pylint: disable=broad-except
    latest = None
  return CheckpointWriteError(
      f"could not write the checkpoint of step {step} under {ckpts.directory}: {e}. "
      f"Nothing partial is restorable; newest complete checkpoint: "
      f"{ckpts.path(latest) if latest is not None else 'none'}")


def _evaluate(evaluator, ckpts, state, step, tokens, save_index):
  # Evaluating while an async save is still writing can hang; let the save finish first.
  # A failing task is caught at the suite's task boundary and recorded; training goes on.
  _wait(ckpts, step)
  evaluator.maybe_evaluate(state["params"], step=step, tokens=tokens, save_index=save_index)


def _write_config(model_dir: str) -> None:
  if jax.process_index() == 0:
    fileio.write_text(fileio.resolve(model_dir) / "config.gin", gin.config_str())


class _StopFlag:
  """Whether to save and stop after the current step: on SIGTERM (what a preempted VM
  receives), SIGINT, or `event` set.

  One process: signal handlers set a flag that `poll` reads. Several processes: every host
  must stop after the same step, and asking the others each step would sync host and
  device every step. JAX's preemption service (part of the coordination service that
  `jax.distributed` starts) catches SIGTERM on any host, agrees with the others on the
  next step all of them can still reach, and `reached_preemption_sync_point(step)` is
  True there on every host; until a notice arrives each call only compares two local
  counters. SIGINT and the event become a SIGTERM to this process, so they take that path.
  """

  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, step: int, event=None):
    self._event = event
    self._signalled = False
    self._previous = {}
    self._coordinated = jax.process_count() > 1
    if self._coordinated:
      self._reached(step)  # fails here, before training, if the service is off
    # The preemption service installed its own SIGTERM handler: leave that one in place.
    for signum in self._SIGNALS[1:] if self._coordinated else self._SIGNALS:
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread
        pass

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self._signalled:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the final save
    self._signalled = True
    if self._coordinated:
      os.kill(os.getpid(), signal.SIGTERM)

  def poll(self, step: int) -> bool:
    """Whether to stop after `step`; every host gets the same answer at the same step (a
    host that missed the signal must still join the final save)."""
    if self._event is not None and self._event.is_set() and not self._signalled:
      self._handle(signal.SIGTERM, None)
    return self._reached(step) if self._coordinated else self._signalled

  @staticmethod
  def _reached(step: int) -> bool:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError as e:
      raise RuntimeError(f"a run of {jax.process_count()} processes stops on SIGTERM through "
                         f"JAX's preemption service, which is off: set "
                         f"jax_enable_preemption_service before jax.distributed.initialize "
                         f"({e})") from e

  def restore(self):
    for signum, previous in self._previous.items():
      if previous is not None:
        signal.signal(signum, previous)


def _now() -> float:
  return time.perf_counter()
