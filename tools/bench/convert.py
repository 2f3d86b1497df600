"""Benchmark: HF ↔ fineline conversion of a generated bf16 checkpoint, against plain safetensors.

Generates a Hugging Face LLaMA directory of a preset (default `1b`) in bfloat16, written
with safetensors straight from random numpy arrays, then measures, each in a fresh
subprocess:
  baseline  read every tensor with safetensors and write them all out again with safetensors
  import    fineline convert --from_hf (safetensors → Orbax checkpoint)
  export    fineline convert --to_hf   (Orbax checkpoint → safetensors)
Seconds are the work itself (after the interpreter's imports); CPU seconds are the same
work's user + system time over all threads; peak RSS is the process's high-water mark
(VmHWM), imports included. Targets: peak RSS ≤ 1.5× the model's size and
each direction within 2× of the baseline's time.

  python tools/bench/convert.py [--preset 1b] [--json] [--tmp /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import ml_dtypes
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from fineline.convert import hf  # noqa: E402
from fineline.models import presets  # noqa: E402

SHARD_BYTES = 1 << 30

# Each child prints one JSON line: {"seconds": …, "peak_rss": …, "cpu_seconds": …}.
_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
{imports}
cpu_at_start = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
start = time.perf_counter()
{work}
seconds = time.perf_counter() - start
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
cpu_seconds = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu_at_start
print(json.dumps({{"seconds": seconds, "peak_rss": peak, "cpu_seconds": cpu_seconds}}))
"""

_BASELINE_IMPORTS = "import glob, os\nimport ml_dtypes  # registers bfloat16 with numpy\nfrom safetensors import safe_open\nfrom safetensors.numpy import save_file"
_BASELINE_WORK = r"""
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst)
for path in sorted(glob.glob(os.path.join(src, "*.safetensors"))):
  with safe_open(path, framework="numpy") as f:
    tensors = {name: f.get_tensor(name) for name in f.keys()}
  save_file(tensors, os.path.join(dst, os.path.basename(path)), metadata={"format": "pt"})
  del tensors
"""


def _random_bf16(rng, shape):
  """Random bfloat16 of magnitude 2^-8 … 2^-4 (weight-like), straight from random bits."""
  bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
  exponent = (119 + (bits >> 7) % 4).astype(np.uint16)  # biased exponents 119 … 122
  return ((bits & 0x807F) | (exponent << 7)).view(ml_dtypes.bfloat16)


def generate_hf_checkpoint(out_dir: str, preset: str) -> int:
  """A bf16 HF LLaMA directory with random weights; returns the weights' size in bytes."""
  from safetensors.numpy import save_file
  cfg = presets.get_preset(preset)
  os.makedirs(out_dir)
  rng = np.random.default_rng(0)
  weight_map, shard, shard_bytes, total, index = {}, {}, 0, 0, 0
  layout = list(hf.tensor_layout(cfg).items())

  def flush():
    nonlocal shard, shard_bytes, index
    index += 1
    fname = f"model-{index:05d}-of-NNNNN.safetensors"
    save_file(shard, os.path.join(out_dir, fname), metadata={"format": "pt"})
    weight_map.update({name: fname for name in shard})
    shard, shard_bytes = {}, 0

  for name, (_, shape, _) in layout:
    w = _random_bf16(rng, shape)
    if shard and shard_bytes + w.nbytes > SHARD_BYTES:
      flush()
    shard[name] = w
    shard_bytes += w.nbytes
    total += w.nbytes
  flush()
  final = {}
  for name, fname in weight_map.items():  # shard count is known only now
    final[name] = fname.replace("NNNNN", f"{index:05d}")
  for fname in set(weight_map.values()):
    os.rename(os.path.join(out_dir, fname), os.path.join(out_dir, fname.replace("NNNNN", f"{index:05d}")))
  with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": final}, f)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(presets.to_hf_config(cfg, torch_dtype="bfloat16"), f)
  return total


def run_child(imports: str, work: str, *args: str) -> dict:
  code = _CHILD.format(root=ROOT, imports=imports, work=work)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
  if proc.returncode:
    raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="1b")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--tmp", default="/tmp", help="where to put the generated files")
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix="fineline-bench-convert-", dir=args.tmp)
  try:
    src, ckpt, back = (os.path.join(work, n) for n in ("hf", "ckpt", "hf_back"))
    t0 = time.perf_counter()
    size = generate_hf_checkpoint(src, args.preset)
    gen_seconds = time.perf_counter() - t0
    baseline = run_child(_BASELINE_IMPORTS, _BASELINE_WORK, src, os.path.join(work, "copy"))
    shutil.rmtree(os.path.join(work, "copy"))
    imported = run_child("from fineline.convert import hf",
                         "hf.import_hf(sys.argv[1], sys.argv[2])", src, ckpt)
    exported = run_child("from fineline.convert import hf",
                         "hf.export_hf(sys.argv[1], sys.argv[2])", ckpt, back)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  result = {
      "preset": args.preset, "model_bytes": size, "generate_seconds": round(gen_seconds, 2),
      "baseline_safetensors": baseline, "import_hf": imported, "export_hf": exported,
  }
  for key in ("import_hf", "export_hf"):
    r = result[key]
    r["rss_over_model"] = round(r["peak_rss"] / size, 3)
    r["time_over_baseline"] = round(r["seconds"] / baseline["seconds"], 3)
    r["seconds"] = round(r["seconds"], 2)
    r["cpu_seconds"] = round(r["cpu_seconds"], 2)
  baseline["rss_over_model"] = round(baseline["peak_rss"] / size, 3)
  baseline["seconds"] = round(baseline["seconds"], 2)
  baseline["cpu_seconds"] = round(baseline["cpu_seconds"], 2)
  if args.json:
    print(json.dumps(result))
    return 0
  gib = 1 << 30
  print(f"preset {args.preset}: model {size / gib:.2f} GiB (bf16), generated in {gen_seconds:.1f}s")
  print(f"{'':<22}{'seconds':>9}{'peak RSS GiB':>14}{'RSS/model':>11}{'time/baseline':>15}"
        f"{'CPU seconds':>13}")
  for key, label in (("baseline_safetensors", "safetensors read+write"),
                     ("import_hf", "import (--from_hf)"), ("export_hf", "export (--to_hf)")):
    r = result[key]
    print(f"{label:<22}{r['seconds']:>9.2f}{r['peak_rss'] / gib:>14.2f}{r['rss_over_model']:>11.2f}"
          f"{r.get('time_over_baseline', 1.0):>15.2f}{r['cpu_seconds']:>13.2f}")
  print("targets: RSS/model <= 1.5, time/baseline <= 2.0 (CPU seconds: all threads, user + "
        "system; on a busy machine they show the work done better than the seconds)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
