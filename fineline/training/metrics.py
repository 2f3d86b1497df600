"""Training metrics: TensorBoard event files, MODEL_DIR/metrics.jsonl and a console line.

Only process 0 writes. MODEL_DIR may be a URL: metrics.jsonl is then a `fileio.JsonlLog` of
part objects, and the TensorBoard events are written locally and uploaded at each `flush`
(the trainer flushes at every save) and at `close`. Throughput is reported as tokens/s and
as MFU: model FLOPs (`LlamaConfig.flops_per_token`) against the devices' peak. The peak
comes from a table of published dense bf16 figures per chip; on CPU it is measured at
start-up by timing a jnp.dot.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from fineline import fileio

# Dense bf16 peak FLOP/s per device (one jax device: a TPU chip, or a GPU).
PEAK_FLOPS_PER_DEVICE = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def measure_cpu_flops(n: int = 1024, repeats: int = 5) -> float:
  """FLOP/s of this host's CPU on an fp32 n×n matmul (best of `repeats`)."""
  a = jnp.ones((n, n), jnp.float32)
  dot = jax.jit(lambda x, y: x @ y)
  dot(a, a).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 / best


def peak_flops_total(devices=None) -> float:
  """Peak FLOP/s of all devices of the run (NaN for an accelerator not in the table)."""
  devices = jax.devices() if devices is None else devices
  kind = devices[0].device_kind
  if devices[0].platform == "cpu":
    # Faked CPU devices share the host's cores: the host's peak is the whole budget.
    return measure_cpu_flops() * jax.process_count()
  for name, flops in sorted(PEAK_FLOPS_PER_DEVICE.items(), key=lambda kv: -len(kv[0])):
    if kind.startswith(name):
      return flops * len(devices)
  logging.warning("no peak FLOP/s known for device kind %r; MFU not reported", kind)
  return float("nan")


class MetricsWriter:
  """Appends one record per logged step to metrics.jsonl and TensorBoard; prints a line."""

  def __init__(self, model_dir, *, flops_per_token: float, peak_flops: float,
               store_interval_s: float = 60.0):
    self.is_writer = jax.process_index() == 0
    self.flops_per_token = flops_per_token
    self.peak_flops = peak_flops
    self.model_dir = fileio.resolve(model_dir)
    self._jsonl = None
    self._tb = None
    self._tb_dir = None
    if self.is_writer:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      remote = fileio.is_url(self.model_dir)
      self._jsonl = fileio.JsonlLog(self.model_dir / "metrics.jsonl",
                                    min_interval_s=store_interval_s if remote else 0.0)
      self._tb_dir = tempfile.mkdtemp(prefix=".fineline-tb-") if remote else None
      self._tb = SummaryWriter(self._tb_dir or os.fspath(self.model_dir))

  def throughput(self, tokens: float, seconds: float) -> dict[str, float]:
    tokens_per_s = tokens / max(seconds, 1e-9)
    return {"tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * self.flops_per_token / self.peak_flops}

  def write(self, step: int, record: dict) -> None:
    """`record` holds host scalars; `step` the number of completed steps."""
    if not self.is_writer:
      return
    clean = {"step": step, **{k: _scalar(v) for k, v in record.items()}}
    self._jsonl.append(clean)
    for key, value in clean.items():
      if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
        self._tb.add_scalar(f"train/{key}", value, step)
    self._tb.flush()
    if "loss" in clean:
      print(_console_line(clean), flush=True)

  def event(self, step: int, kind: str, **fields) -> None:
    """A one-off event (loss spike, skipped step, …) as its own JSON line."""
    if not self.is_writer:
      return
    record = {"step": step, "event": kind, **{k: _scalar(v) for k, v in fields.items()}}
    self._jsonl.append(record)
    print(f"step {step:>7}  EVENT {kind}: " + ", ".join(f"{k}={v}" for k, v in fields.items()),
          flush=True)

  def flush(self) -> None:
    """Makes everything written so far durable (on a store: new part objects, uploads)."""
    if self.is_writer:
      self._jsonl.flush()
      self._tb.flush()
      self._upload_events()

  def close(self) -> None:
    if self.is_writer:
      self._jsonl.close()
      self._tb.close()
      self._upload_events()
      if self._tb_dir:
        shutil.rmtree(self._tb_dir, ignore_errors=True)

  def _upload_events(self) -> None:
    # An event file is rewritten whole: TensorBoard reads the longer object from the start.
    for name in os.listdir(self._tb_dir) if self._tb_dir else ():
      fileio.copy_into(os.path.join(self._tb_dir, name), self.model_dir / name)


def _scalar(v):
  if isinstance(v, (np.ndarray, jax.Array)):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/inf
  return v


def _console_line(r: dict) -> str:
  parts = [f"step {r['step']:>7}", f"loss {_fmt(r.get('loss'), '.4f')}",
           f"lr {_fmt(r.get('learning_rate'), '.2e')}", f"gnorm {_fmt(r.get('grad_norm'), '.3f')}",
           f"tok {r.get('tokens', 0):,}", f"{_fmt(r.get('tokens_per_s'), ',.0f')} tok/s",
           f"MFU {_fmt(100 * r['mfu'] if isinstance(r.get('mfu'), float) else None, '.1f')}%"]
  return "  ".join(parts)


def _fmt(v, spec: str) -> str:
  return format(v, spec) if isinstance(v, (int, float)) else str(v)
