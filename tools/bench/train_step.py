"""Train-step throughput: fineline's jitted step against transformers + PyTorch AdamW.

Both sides train the same config (default `bench-58m`: untied, no biases, fp32) on the same
batch of B×S next-token predictions with AdamW under the same hyperparameters. The two steps
are timed alternately after warm-up, so load from other processes hits both alike; each
side's figure is the median step time. fineline's fraction of the CPU matmul peak uses
`LlamaConfig.flops_per_token` against a timed 2048² float32 `jnp.dot`.

  JAX_PLATFORMS=cpu python tools/bench/train_step.py [--json] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fineline import partitioning
from fineline.models import llama, presets
from fineline.models.config import LlamaConfig
from fineline.training import optim
from fineline.training import step as step_lib
from fineline.training.loss import next_token_loss

ADAMW = dict(learning_rate=3e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1)


def matmul_peak_flops(n: int = 2048, repeats: int = 10) -> float:
  """Best observed FLOP/s of an n×n float32 matmul: the CPU's practical peak."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    dot(a, a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 / best


def make_fineline_step(cfg: LlamaConfig, plain: bool = False):
  """(step, state) where step(state, batch) -> (state, loss) runs one AdamW update.

  By default this is the trainer's own step (`make_train_step` on a one-device mesh, with
  its finiteness guard and metrics); `plain` builds a bare optax step around the same loss,
  which shows what the trainer's extras cost.
  """
  tx, _ = optim.make_optimizer(learning_rate=ADAMW["learning_rate"], b1=ADAMW["b1"],
                               b2=ADAMW["b2"], eps=ADAMW["eps"],
                               weight_decay=ADAMW["weight_decay"], clip_norm=None)
  model = llama.Llama(cfg)
  if not plain:
    train = step_lib.make_train_step(model, tx, partitioning.make_mesh(jax.devices()[:1]))
    state = train.init(jax.random.key(0))

    def trainer_step(state, batch):
      state, metrics = train.step(state, batch)
      return state, metrics["loss"]

    return trainer_step, state

  def step(state, batch):
    params, opt_state = state
    grad_fn = jax.value_and_grad(next_token_loss, has_aux=True)
    (loss, _), grads = grad_fn(params, batch, model=model)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  params = llama.init_params(cfg, jax.random.key(0))
  return jax.jit(step, donate_argnums=(0,)), (params, tx.init(params))


def hf_llama_config(cfg: LlamaConfig):
  """transformers' LlamaConfig of `cfg`, with PyTorch's fused attention (sdpa)."""
  import transformers  # pylint: disable=g-import-not-at-top
  hf_cfg = transformers.LlamaConfig(**{
      k: v for k, v in presets.to_hf_config(cfg).items()
      if k not in ("architectures", "torch_dtype")})
  hf_cfg._attn_implementation = "sdpa"  # pylint: disable=protected-access
  return hf_cfg


def make_torch_step(cfg: LlamaConfig):
  """(step, model) for transformers' LlamaForCausalLM with torch.optim.AdamW."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(hf_llama_config(cfg)).float().train()
  # As fineline's optimizer: no weight decay on norm scales.
  decay = [p for p in model.parameters() if p.ndim > 1]
  no_decay = [p for p in model.parameters() if p.ndim <= 1]
  opt = torch.optim.AdamW(
      [{"params": decay, "weight_decay": ADAMW["weight_decay"]},
       {"params": no_decay, "weight_decay": 0.0}],
      lr=ADAMW["learning_rate"], betas=(ADAMW["b1"], ADAMW["b2"]), eps=ADAMW["eps"])

  def step(inputs, targets):
    logits = model(input_ids=inputs).logits
    # The same S predictions per row as fineline (no internal label shift).
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())

  return step, model


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", default="bench-58m")
  ap.add_argument("--batch_size", type=int, default=8)
  ap.add_argument("--seq_len", type=int, default=512)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--steps", type=int, default=5, help="timed steps per side")
  ap.add_argument("--skip_torch", action="store_true")
  ap.add_argument("--plain_step", action="store_true",
                  help="time a bare optax step instead of the trainer's make_train_step")
  ap.add_argument("--json", action="store_true", help="print one JSON object")
  args = ap.parse_args(argv)

  import torch  # pylint: disable=g-import-not-at-top
  threads = os.cpu_count() or 1
  torch.set_num_threads(threads)
  cfg = presets.get_preset(args.preset)
  B, S = args.batch_size, args.seq_len
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (B, S + 1), dtype=np.int32)
  batch = {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
           "weights": jnp.ones((B, S), jnp.float32)}
  t_inputs = torch.from_numpy(tokens[:, :-1].astype(np.int64))
  t_targets = torch.from_numpy(tokens[:, 1:].astype(np.int64))

  peak = matmul_peak_flops()
  fl_step, state = make_fineline_step(cfg, plain=args.plain_step)
  t0 = time.perf_counter()
  state, loss = fl_step(state, batch)
  jax.block_until_ready(loss)
  compile_s = time.perf_counter() - t0
  if not args.skip_torch:
    th_step, _ = make_torch_step(cfg)

  fl_times, th_times, fl_losses, th_losses = [], [], [], []
  for i in range(args.warmup + args.steps):
    t0 = time.perf_counter()
    state, loss = fl_step(state, batch)
    fl_losses.append(float(jax.block_until_ready(loss)))
    if i >= args.warmup:
      fl_times.append(time.perf_counter() - t0)
    if not args.skip_torch:
      t0 = time.perf_counter()
      th_losses.append(th_step(t_inputs, t_targets))
      if i >= args.warmup:
        th_times.append(time.perf_counter() - t0)

  # Other processes on the cores depress a single reading: keep the best of two.
  peak = max(peak, matmul_peak_flops())
  tokens_per_step = B * S
  fl_tps = tokens_per_step / statistics.median(fl_times)
  th_tps = tokens_per_step / statistics.median(th_times) if th_times else None
  mfu = fl_tps * cfg.flops_per_token(S) / peak
  result = {
      "preset": args.preset, "batch_size": B, "seq_len": S, "threads": threads,
      "fineline_step": "plain optax" if args.plain_step else "make_train_step",
      "fineline_tokens_per_s": round(fl_tps, 1),
      "torch_tokens_per_s": round(th_tps, 1) if th_tps else None,
      "ratio": round(fl_tps / th_tps, 3) if th_tps else None,
      "fineline_step_s": [round(t, 3) for t in fl_times],
      "torch_step_s": [round(t, 3) for t in th_times],
      "fineline_compile_s": round(compile_s, 1),
      "matmul_peak_gflops": round(peak / 1e9, 1),
      "fineline_peak_fraction": round(mfu, 3),
      "fineline_loss_first_last": [round(fl_losses[0], 4), round(fl_losses[-1], 4)],
      "torch_loss_first_last": ([round(th_losses[0], 4), round(th_losses[-1], 4)]
                                if th_losses else None),
  }
  if args.json:
    print(json.dumps(result))
    return
  print(f"{args.preset}  batch {B}×{S}  fp32 AdamW  {threads} threads")
  print(f"  fineline  {fl_tps:8.1f} tokens/s  ({mfu:.1%} of {peak / 1e9:.1f} GFLOP/s matmul peak)")
  if th_tps:
    print(f"  torch     {th_tps:8.1f} tokens/s")
    print(f"  ratio     {fl_tps / th_tps:8.3f}×")


if __name__ == "__main__":
  main()
