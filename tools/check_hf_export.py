"""Loads an exported Hugging Face directory with `transformers` and checks it against the
fineline checkpoint it came from: same logits on a prompt, and a short greedy continuation.

  python tools/check_hf_export.py --checkpoint RUN/checkpoints/STEP --hf_dir RUN/hf
"""

import argparse
import sys

import jax.numpy as jnp
import numpy as np
import torch
import transformers

from fineline import checkpointing
from fineline.models import llama


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--hf_dir", required=True)
  parser.add_argument("--prompt", default="The dogs near the river")
  parser.add_argument("--tolerance", type=float, default=1e-4)
  args = parser.parse_args()

  tokenizer = transformers.AutoTokenizer.from_pretrained(args.hf_dir)
  model = transformers.AutoModelForCausalLM.from_pretrained(args.hf_dir, dtype=torch.float32).eval()
  ids = tokenizer(args.prompt, return_tensors="pt").input_ids
  with torch.no_grad():
    hf_logits = model(ids).logits.numpy()
    generated = model.generate(ids, max_new_tokens=12, do_sample=False)
  params, cfg, _ = checkpointing.load_params(args.checkpoint)
  ours = np.asarray(llama.Llama(cfg).apply({"params": params}, jnp.asarray(ids.numpy())))
  diff = float(np.abs(ours - hf_logits).max())
  text = tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)
  print(f"transformers loaded {args.hf_dir}: {model.num_parameters():,} parameters; "
        f"max |logit difference| vs fineline = {diff:.2e}")
  print(f"greedy continuation of {args.prompt!r}: {text!r}")
  if diff > args.tolerance:
    print(f"error: logits differ by more than {args.tolerance}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
