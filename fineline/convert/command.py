"""`fineline convert`: Hugging Face LLaMA directory ↔ fineline checkpoint."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  direction = parser.add_mutually_exclusive_group(required=True)
  direction.add_argument("--from_hf", metavar="DIR",
                         help="Hugging Face LLaMA directory to import as a fineline checkpoint")
  direction.add_argument("--to_hf", metavar="CKPT",
                         help="fineline checkpoint to export as a Hugging Face directory")
  parser.add_argument("--out", required=True, help="output checkpoint (--from_hf) or directory (--to_hf)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                      help="cast the weights (default: keep the stored dtype)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run(args: argparse.Namespace) -> int:
  from fineline.convert import hf  # JAX and Orbax load only when a conversion runs
  if args.from_hf:
    cfg = hf.import_hf(args.from_hf, args.out, dtype=args.dtype, overwrite=args.overwrite)
  else:
    cfg = hf.export_hf(args.to_hf, args.out, dtype=args.dtype, overwrite=args.overwrite)
  print(f"wrote {args.out}: {cfg.num_params():,} parameters, {cfg.num_layers} layers, "
        f"{cfg.param_dtype if args.dtype is None else args.dtype}")
  return 0
