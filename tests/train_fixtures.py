"""Shared pieces of the training tests: a small generated corpus and a tiny run config."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys

import sentencepiece as spm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the cat dog sat on mat ran fast slow big small red blue green apple banana count one "
         "two three four five add plus minus equals").split()


def make_corpus(directory: str, num_docs: int = 1200, num_files: int = 4) -> str:
  """JSONL files of random word documents and a SentencePiece tokenizer trained on them."""
  os.makedirs(directory, exist_ok=True)
  rng = random.Random(0)
  docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(num_docs)]
  per_file = num_docs // num_files
  for i in range(num_files):
    with open(os.path.join(directory, f"part{i}.jsonl"), "w", encoding="utf-8") as f:
      for doc in docs[i * per_file:(i + 1) * per_file]:
        f.write(json.dumps({"text": doc}) + "\n")
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(docs), model_prefix=os.path.join(directory, "tokenizer"),
      vocab_size=100, model_type="bpe", pad_id=0, bos_id=1, eos_id=2, unk_id=3, minloglevel=2)
  return directory


def run_gin(corpus: str, path: str, schedule_steps: int = 12, **macros) -> str:
  """A gin file training `tiny` on `corpus`; `macros` override the defaults below."""
  values = dict(TRAIN_STEPS=12, BATCH_SIZE=4, SEQUENCE_LENGTH=32, SAVE_EVERY_STEPS=4,
                KEEP_EVERY_STEPS=8, LOG_EVERY_STEPS=1, LEARNING_RATE=3e-3, WARMUP_STEPS=2)
  values.update(macros)
  lines = ["include 'runs/pretrain.gin'", "include 'models/tiny.gin'", "include 'mesh/cpu.gin'"]
  lines += [f"{k} = {v!r}" for k, v in values.items()]
  lines += ["register_local_task.name = 'test_corpus'",
            f"register_local_task.file_patterns = '{corpus}/*.jsonl'",
            f"register_local_task.tokenizer = '{corpus}/tokenizer.model'",
            f"register_local_task.cache_dir = '{corpus}/cache'",
            "PretrainData.task = @register_local_task()",
            "PretrainData.shuffle_buffer_size = 50",
            # The schedule's length is fixed, so runs cut at other TRAIN_STEPS match step by step.
            f"warmup_cosine.total_steps = {schedule_steps}"]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return path


def env(num_devices: int = 1) -> dict:
  e = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
           XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
           PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return e


def free_port() -> int:
  """A localhost port for a jax.distributed coordinator."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def fineline(args, num_devices: int = 1, timeout: int = 240, **kw) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "fineline.cli", *args], env=env(num_devices),
                        cwd=REPO, capture_output=True, text=True, timeout=timeout, **kw)


def read_metrics(model_dir: str) -> list[dict]:
  with open(os.path.join(model_dir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def losses_by_step(model_dir: str) -> dict[int, list[float]]:
  out: dict[int, list[float]] = {}
  for r in read_metrics(model_dir):
    if "loss" in r and "event" not in r:
      out.setdefault(r["step"], []).append(r["loss"])
  return out
