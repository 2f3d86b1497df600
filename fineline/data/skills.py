"""The bundled demo corpus: generated skills text, held-out evaluation items, its tokenizer.

`ensure_corpus()` materialises, from a seed and in a few seconds, everything the demo needs:

  DATA_DIR/
    manifest.json            generator fingerprint, parameters, sha256 of every file
    tasks.json               task name → {"kind", "path", "capability", "chance"}
    train/train-0000i-of-0000n.jsonl   one {"text": document} per line
    eval/<skill>_mc.jsonl    {"context", "choices", "gold"} per line
    eval/<skill>_gen.jsonl   {"context", "answer"} per line (greedy until "\\n")
    tokenizer/               tokenizer.model (SentencePiece BPE) + Hugging Face files

The skills differ in difficulty on purpose (see `skills_text.TASKS`). Trained on the `demo`
preset (16 × 128 tokens a step), subject-verb agreement saturates after about 600k tokens
(with an attractor noun it first falls to chance, following the nearer noun), number
comparison climbs slowly, facts about the synthetic world rise from about 300k to 800k
tokens, copying starts rising only after about 550k, and addition of unseen pairs and
two-hop recall stay near chance (tools/bench/skills_curves.py measures this). Files are built in a temporary directory and
renamed into place, and reused while the manifest still matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
import tempfile
from typing import Any

import sentencepiece as spm

from fineline.data import skills_text
from fineline.data import skills_world
from fineline.errors import UserError

# Bump when the generated content changes meaning; source edits also change the fingerprint.
GENERATOR_VERSION = 1
TASK_PREFIX = "skills_"
_MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class SkillsCorpus:
  """Paths of one materialised corpus."""
  root: str
  train_files: list[str]
  tokenizer_dir: str
  eval_dir: str
  # "skills_<skill>_mc" / "_gen" → {"kind": "multiple_choice"|"generation", "path",
  # "capability", "chance"}
  tasks: dict[str, dict[str, Any]]
  seed: int

  @property
  def tokenizer(self) -> str:
    """What `fineline.tokenizers.load_vocabulary` takes: the tokenizer directory."""
    return self.tokenizer_dir


def default_data_dir() -> str:
  base = os.environ.get("FINELINE_DATA_DIR")
  if base:
    return os.path.join(base, "skills")
  return os.path.join(os.path.expanduser("~"), ".cache", "fineline", "skills")


def ensure_corpus(data_dir: str | None = None, *, seed: int = 0, num_documents: int = 12000,
                  num_eval_items: int = 100, num_people: int = 48,
                  num_train_shards: int = 4) -> SkillsCorpus:
  """The corpus in `data_dir`, generated unless an identical one is already there."""
  data_dir = os.path.abspath(data_dir or default_data_dir())
  params = dict(seed=seed, num_documents=num_documents, num_eval_items=num_eval_items,
                num_people=num_people, num_train_shards=num_train_shards)
  fingerprint = _fingerprint(params)
  if _is_complete(data_dir, fingerprint):
    return _load(data_dir)
  if (os.path.isdir(data_dir) and os.listdir(data_dir)
      and not os.path.exists(os.path.join(data_dir, _MANIFEST))):
    raise UserError(f"{data_dir} holds files but no {_MANIFEST}: not a skills corpus "
                     "directory, so it is left alone; pass another data_dir")
  parent = os.path.dirname(data_dir)
  os.makedirs(parent, exist_ok=True)
  tmp_dir = tempfile.mkdtemp(prefix=".skills-build-", dir=parent)
  try:
    os.chmod(tmp_dir, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    write_corpus(tmp_dir, **params)
    _write_json(os.path.join(tmp_dir, _MANIFEST), {
        "fingerprint": fingerprint, "generator_version": GENERATOR_VERSION, "params": params,
        "files": _hash_files(tmp_dir)})
    _swap_into_place(tmp_dir, data_dir, fingerprint)
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  return _load(data_dir)


def write_corpus(out_dir: str, *, seed: int, num_documents: int, num_eval_items: int,
                 num_people: int, num_train_shards: int) -> None:
  """Generates every file of the corpus (but no manifest) into `out_dir`."""
  rng = random.Random(seed)
  world = skills_world.build_world(rng, num_people=num_people, num_copy_items=num_eval_items)
  tasks, items_by_task = {}, {}
  item_rng = random.Random(f"{seed}-eval")
  for skill, (build, capability, chance) in skills_text.TASKS.items():
    mc, gen = build(item_rng, world, num_eval_items)
    for form, items, kind, level in (("mc", mc, "multiple_choice", chance),
                                     ("gen", gen, "generation", 0.0)):
      path = f"eval/{skill}_{form}.jsonl"
      tasks[f"{TASK_PREFIX}{skill}_{form}"] = {"kind": kind, "path": path,
                                               "capability": capability, "chance": level}
      items_by_task[path] = items
  docs = skills_text.documents(random.Random(f"{seed}-train"), world, num_documents)
  _check_held_out(docs, items_by_task)

  os.makedirs(os.path.join(out_dir, "eval"))
  for path, items in items_by_task.items():
    _write_jsonl(os.path.join(out_dir, path), items)
  os.makedirs(os.path.join(out_dir, "train"))
  for shard in range(num_train_shards):
    _write_jsonl(os.path.join(out_dir, _shard_name(shard, num_train_shards)),
                 [{"text": d} for d in docs[shard::num_train_shards]])
  _write_json(os.path.join(out_dir, "tasks.json"), tasks)
  write_tokenizer(os.path.join(out_dir, "tokenizer"), docs, seed=seed)


def write_tokenizer(out_dir: str, documents: list[str], *, seed: int, vocab_size: int = 512,
                    max_length: int = 256) -> None:
  """A LLaMA-convention SentencePiece BPE model (unk 0, bos 1, eos 2, no pad, byte fallback,
  digits split) trained on `documents`, plus the files `transformers.AutoTokenizer` reads."""
  lines = [line for doc in documents for line in doc.split("\n")]
  model = io.BytesIO()
  spm.set_random_generator_seed(seed)
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
      model_type="bpe", byte_fallback=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2,
      pad_id=-1, character_coverage=1.0, normalization_rule_name="identity",
      remove_extra_whitespaces=False, add_dummy_prefix=True, allow_whitespace_only_pieces=True,
      input_sentence_size=len(lines), shuffle_input_sentence=False, num_threads=1,
      minloglevel=2)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
    f.write(model.getvalue())
  # transformers builds its fast LLaMA tokenizer from tokenizer.model on load.
  _write_json(os.path.join(out_dir, "tokenizer_config.json"), {
      "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
      "unk_token": "<unk>", "pad_token": None, "add_bos_token": True, "add_eos_token": False,
      "legacy": False, "clean_up_tokenization_spaces": False, "model_max_length": max_length})
  _write_json(os.path.join(out_dir, "special_tokens_map.json"),
              {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})


def read_items(path: str) -> list[dict[str, Any]]:
  """The items of one evaluation JSONL file."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _check_held_out(docs, items_by_task):
  # Prompts start a line, as every training example does ("7 + 81 =" inside "17 + 81 = 98"
  # is another prompt).
  text = "\n" + "\n".join(docs)
  for path, items in items_by_task.items():
    for item in items:
      if "\n" + item["context"] in text:
        raise AssertionError(f"held-out prompt of {path} occurs in the training text: "
                             f"{item['context']!r}")


def _fingerprint(params) -> str:
  digest = hashlib.sha256()
  digest.update(json.dumps({"version": GENERATOR_VERSION, "params": params,
                            "sentencepiece": spm.__version__}, sort_keys=True).encode())
  for source in (skills_world.__file__, skills_text.__file__, __file__):
    with open(source, "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()


def _is_complete(data_dir, fingerprint) -> bool:
  try:
    with open(os.path.join(data_dir, _MANIFEST)) as f:
      manifest = json.load(f)
  except (OSError, ValueError):
    return False
  if manifest.get("fingerprint") != fingerprint:
    return False
  return manifest.get("files") == _hash_files(data_dir)


def _hash_files(root) -> dict[str, str]:
  hashes = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, root)
      if rel == _MANIFEST:
        continue
      with open(path, "rb") as f:
        hashes[rel] = hashlib.sha256(f.read()).hexdigest()
  return dict(sorted(hashes.items()))


def _swap_into_place(tmp_dir, data_dir, fingerprint):
  """Renames the finished build over `data_dir`; a concurrent identical build may win."""
  old = None
  if os.path.exists(data_dir):
    old = tempfile.mkdtemp(prefix=".skills-old-", dir=os.path.dirname(data_dir))
    os.rmdir(old)
    try:
      os.rename(data_dir, old)
    except FileNotFoundError:
      old = None
  try:
    os.rename(tmp_dir, data_dir)
  except OSError:
    if not _is_complete(data_dir, fingerprint):
      raise
  if old:
    shutil.rmtree(old, ignore_errors=True)


def _load(data_dir) -> SkillsCorpus:
  with open(os.path.join(data_dir, _MANIFEST)) as f:
    manifest = json.load(f)
  with open(os.path.join(data_dir, "tasks.json")) as f:
    tasks = json.load(f)
  for spec in tasks.values():
    spec["path"] = os.path.join(data_dir, spec["path"])
  n = manifest["params"]["num_train_shards"]
  return SkillsCorpus(
      root=data_dir, train_files=[os.path.join(data_dir, _shard_name(i, n)) for i in range(n)],
      tokenizer_dir=os.path.join(data_dir, "tokenizer"), eval_dir=os.path.join(data_dir, "eval"),
      tasks=tasks, seed=manifest["params"]["seed"])


def _shard_name(index, count):
  return f"train/train-{index:05d}-of-{count:05d}.jsonl"


def _write_jsonl(path, records):
  with open(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")


def _write_json(path, obj):
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
