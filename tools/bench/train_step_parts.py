"""Where the train step's time goes: its parts, fineline against transformers + PyTorch.

Each part runs forward and backward on the same config and batch as `train_step.py`, the
two sides timed alternately in this one process:
  head    embedding, final norm, LM head and cross-entropy (the model with no layers)
  body    the layers and final norm (hidden states, no head), gradients of every weight
  attention  the attention core of one layer (causal, B×S×H×Dh), gradients of q, k, v: the
             model's own path (on the CPU the native kernel; FINELINE_NATIVE=0 times
             XLA's paths throughout)
Prints min / median milliseconds of each side and the ratio of medians (with `--json`,
one JSON object).

  JAX_PLATFORMS=cpu python tools/bench/train_step_parts.py [--repeats 5] [--json]

Native kernels against XLA:CPU: run it once as above and once with FINELINE_NATIVE=0 and
compare fineline's times. Recorded when the native products were introduced: XLA:CPU's
matrix products ran 10–25% slower than OpenBLAS's on the model's float32 shapes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from fineline.models import attention, llama, presets
from fineline.models.config import LlamaConfig
from fineline.training.loss import next_token_loss
from train_step import hf_llama_config  # this script's folder is on sys.path


def head_parts(cfg: LlamaConfig, tokens_BxS1: np.ndarray):
  """(fineline, torch) callables: the loss of the model with no layers, and its gradients."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  cfg = dataclasses.replace(cfg, num_layers=0)
  model = llama.Llama(cfg)
  params = llama.init_params(cfg, jax.random.key(0))
  batch = {"inputs": jnp.asarray(tokens_BxS1[:, :-1]), "targets": jnp.asarray(tokens_BxS1[:, 1:]),
           "weights": jnp.ones(tokens_BxS1[:, 1:].shape, jnp.float32)}
  grad_fn = jax.jit(jax.grad(lambda p: next_token_loss(p, batch, model=model)[0]))
  th_model = transformers.LlamaForCausalLM(hf_llama_config(cfg)).float().train()
  inputs, targets = (torch.from_numpy(a.astype(np.int64)) for a in (tokens_BxS1[:, :-1],
                                                                    tokens_BxS1[:, 1:]))

  def torch_head():
    th_model.zero_grad(set_to_none=True)
    logits = th_model(input_ids=inputs).logits
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                      targets.reshape(-1)).backward()

  return lambda: jax.block_until_ready(grad_fn(params)), torch_head


def body_parts(cfg: LlamaConfig, tokens_BxS: np.ndarray):
  """(fineline, torch) callables: Σ hidden ⊙ c over the final-normed hidden states, and its
  gradients w.r.t. every weight (c fixed, random)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  model = llama.Llama(cfg)
  params = llama.init_params(cfg, jax.random.key(0))
  tokens = jnp.asarray(tokens_BxS)
  c_np = np.random.default_rng(1).standard_normal((*tokens_BxS.shape, cfg.hidden_size),
                                                  np.float32)
  c = jnp.asarray(c_np)
  grad_fn = jax.jit(jax.grad(
      lambda p: jnp.sum(model.apply({"params": p}, tokens, return_hidden=True) * c)))
  th_body = transformers.LlamaForCausalLM(hf_llama_config(cfg)).float().train().model
  th_tokens, th_c = torch.from_numpy(tokens_BxS.astype(np.int64)), torch.from_numpy(c_np)

  def torch_body():
    th_body.zero_grad(set_to_none=True)
    (th_body(input_ids=th_tokens).last_hidden_state * th_c).sum().backward()

  return lambda: jax.block_until_ready(grad_fn(params)), torch_body


def attention_parts(cfg: LlamaConfig, batch_size: int, seq_len: int):
  """(fineline, torch) callables: causal attention of one layer, its vjp against dout."""
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  shape = (batch_size, seq_len, cfg.num_heads, cfg.resolved_head_dim)
  q_np, k_np, v_np, dout_np = (rng.standard_normal(shape, np.float32) for _ in range(4))
  index_BxS = jnp.broadcast_to(jnp.arange(seq_len), (batch_size, seq_len))
  mask_BxSxS = attention.causal_mask(index_BxS, index_BxS)

  @jax.jit
  def fineline_attention(q, k, v, dout):
    out, vjp = jax.vjp(lambda q, k, v: attention.attend(q, k, v, mask_BxSxS, cfg.attention_impl,
                                                         causal=True), q, k, v)
    return out, vjp(dout)

  args = tuple(jnp.asarray(a) for a in (q_np, k_np, v_np, dout_np))
  # torch's layout: B×H×S×Dh.
  th_q, th_k, th_v = (torch.from_numpy(a.transpose(0, 2, 1, 3).copy()).requires_grad_()
                      for a in (q_np, k_np, v_np))
  th_dout = torch.from_numpy(dout_np.transpose(0, 2, 1, 3).copy())

  def torch_attention():
    for t in (th_q, th_k, th_v):
      t.grad = None
    torch.nn.functional.scaled_dot_product_attention(th_q, th_k, th_v,
                                                     is_causal=True).backward(th_dout)

  return lambda: jax.block_until_ready(fineline_attention(*args)), torch_attention


def time_alternately(parts: dict, repeats: int) -> dict:
  """{name: (min_s, median_s)}, after one warm-up call each, the calls interleaved."""
  for fn in parts.values():
    fn()
  times = {name: [] for name in parts}
  for _ in range(repeats):
    for name, fn in parts.items():
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", default="bench-58m")
  ap.add_argument("--batch_size", type=int, default=8)
  ap.add_argument("--seq_len", type=int, default=512)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--json", action="store_true", help="print one JSON object")
  args = ap.parse_args(argv)

  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  cfg = presets.get_preset(args.preset)
  B, S = args.batch_size, args.seq_len
  tokens_BxS1 = np.random.default_rng(0).integers(0, cfg.vocab_size, (B, S + 1), dtype=np.int32)
  builders = {"head": lambda: head_parts(cfg, tokens_BxS1),
              "body": lambda: body_parts(cfg, tokens_BxS1[:, :-1]),
              "attention": lambda: attention_parts(cfg, B, S)}
  result = {"preset": args.preset, "batch_size": B, "seq_len": S, "parts": {}}
  for part, build in builders.items():
    fineline_fn, torch_fn = build()
    timed = time_alternately({"fineline": fineline_fn, "torch": torch_fn}, args.repeats)
    result["parts"][part] = {
        **{f"{side}_ms": [round(1e3 * t, 1) for t in timed[side]] for side in timed},
        "torch_over_fineline": round(timed["torch"][1] / timed["fineline"][1], 3)}
  if args.json:
    print(json.dumps(result))
    return
  print(f"{args.preset}  batch {B}×{S}  fp32, forward+backward, min / median ms")
  for part, r in result["parts"].items():
    (f_min, f_med), (t_min, t_med) = r["fineline_ms"], r["torch_ms"]
    print(f"  {part:10s} fineline {f_min:8.1f} / {f_med:8.1f}   torch {t_min:8.1f} / {t_med:8.1f}"
          f"   torch/fineline {r['torch_over_fineline']:.3f}×")


if __name__ == "__main__":
  main()
