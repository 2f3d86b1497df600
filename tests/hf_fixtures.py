"""Small Hugging Face LLaMA checkpoints and tokenizers generated inside tests.

Tests import these as `from hf_fixtures import ...` (pytest puts tests/ on sys.path).
Everything is random-init or trained in-process in well under a couple of seconds, so no
test needs the network or a downloaded model.
"""

from __future__ import annotations

import io
import json
import os
import random

LLAMA_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")

# Strings tokenizer tests compare on; also part of the training text so merges exist.
VARIED_TEXTS = (
    "Hello world",
    "hello, World! How are you?",
    " leading space",
    "   three leading spaces",
    "trailing space ",
    "multiple   inner    spaces",
    "digits 0123456789 and 3.14159, 1,000,000",
    "line one\nline two\n\nline four",
    "tabs\tand\tmore",
    "unicode: café naïve Straße Ωμέγα",
    "日本語のテキスト and 中文",
    "emoji 🙂🚀 mixed👍🏽text",
    "full-width ＡＢＣ１２３ and ligature ﬁ",
    "Question: What is 12 + 30?\nAnswer: 42",
    "",
    " ",
    "a",
    "\n",
)


def _training_lines(seed: int = 0, n: int = 600) -> list[str]:
  rng = random.Random(seed)
  words = ("the quick brown fox jumps over lazy dog question answer model train token "
           "sentence piece byte pair encoding evaluation benchmark capability pretraining "
           "checkpoint loss accuracy science history language number").split()
  lines = list(VARIED_TEXTS)
  for _ in range(n):
    k = rng.randint(3, 12)
    parts = [rng.choice(words) for _ in range(k)]
    if rng.random() < 0.3:
      parts.insert(rng.randint(0, k), str(rng.randint(0, 99999)))
    if rng.random() < 0.2:
      parts.append(rng.choice(["?", "!", ".", ",", ":"]))
    line = " ".join(parts)
    lines.append(line.capitalize() if rng.random() < 0.5 else line)
  return [l for l in lines if l.strip()]


def make_sentencepiece_tokenizer(out_dir, *, vocab_size: int = 400, seed: int = 0,
                                 normalize: bool = False, add_bos_token: bool | None = True) -> str:
  """Trains a LLaMA-style SentencePiece BPE model (byte fallback, split digits, unk/bos/eos
  = 0/1/2) and writes `tokenizer.model` plus the HF files, so `AutoTokenizer` gives a LLaMA
  tokenizer (prepending BOS unless add_bos_token says otherwise; None leaves the flag out).
  normalize: the model carries SentencePiece's NFKC rules and whitespace collapsing, which
  transformers does not apply. Returns the directory."""
  import sentencepiece as spm
  os.makedirs(out_dir, exist_ok=True)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(_training_lines(seed)), model_writer=model,
      vocab_size=vocab_size, model_type="bpe", byte_fallback=True, split_digits=True,
      character_coverage=1.0, add_dummy_prefix=True, remove_extra_whitespaces=normalize,
      normalization_rule_name="nmt_nfkc" if normalize else "identity",
      allow_whitespace_only_pieces=True,
      unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
  with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
    f.write(model.getvalue())
  config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "add_bos_token": add_bos_token, "add_eos_token": False,
            "model_max_length": 2048, "clean_up_tokenization_spaces": False, "legacy": False}
  if add_bos_token is None:
    del config["add_bos_token"]
  _write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
  _write_json(os.path.join(out_dir, "special_tokens_map.json"),
              {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
  return str(out_dir)


def make_bpe_tokenizer(out_dir, *, vocab_size: int = 400, seed: int = 0) -> str:
  """Trains a byte-level BPE `tokenizers` model whose post-processor prepends BOS (as the
  LLaMA 3 and DeepSeek tokenizers do) and writes tokenizer.json + tokenizer_config.json."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  os.makedirs(out_dir, exist_ok=True)
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(LLAMA_SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(_training_lines(seed), trainer=trainer)
  bos_id = tok.token_to_id("<s>")
  tok.post_processor = processors.TemplateProcessing(
      single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)])
  tok.save(os.path.join(out_dir, "tokenizer.json"))
  _write_json(os.path.join(out_dir, "tokenizer_config.json"), {
      "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
      "unk_token": "<unk>", "model_max_length": 2048, "clean_up_tokenization_spaces": False})
  return str(out_dir)


def hf_llama_config(*, vocab_size: int = 512, hidden_size: int = 64, intermediate_size: int = 176,
                    num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                    tie: bool = False, rope_theta: float = 10000.0, rope_scaling=None,
                    max_length: int = 256, rms_norm_eps: float = 1e-6):
  """A `transformers.LlamaConfig` for a small model (eager attention, exact in float32)."""
  import transformers
  rope = {"rope_type": "default", "rope_theta": rope_theta}
  if rope_scaling:
    rope = {"rope_theta": rope_theta, **rope_scaling}
  cfg = transformers.LlamaConfig(
      vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
      num_hidden_layers=num_layers, num_attention_heads=num_heads,
      num_key_value_heads=num_kv_heads, max_position_embeddings=max_length,
      rms_norm_eps=rms_norm_eps, tie_word_embeddings=tie, rope_parameters=rope,
      bos_token_id=1, eos_token_id=2)
  cfg._attn_implementation = "eager"
  return cfg


def make_hf_model(seed: int = 0, dtype=None, **config_kw):
  """A random-init `LlamaForCausalLM` in eval mode; weights normal(0.02) as in HF's init,
  norm scales perturbed so a wrong norm mapping shows in the logits."""
  import torch
  import transformers
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(hf_llama_config(**config_kw)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.add_(0.1 * torch.randn_like(p))
  if dtype is not None:
    model = model.to(dtype)
  return model


def make_hf_llama_dir(path, *, fmt: str = "safetensors", shards: int = 1, dtype=None,
                      tokenizer: str | None = None, seed: int = 0, **config_kw) -> str:
  """Writes a random-init HF LLaMA checkpoint directory with `save_pretrained`.

  fmt: "safetensors" or "bin" (PyTorch pickles); shards > 1 splits the weights into about
  that many files with an index; dtype: a torch dtype (default float32); tokenizer:
  "sentencepiece", "bpe" or None. config_kw go to `hf_llama_config` (num_kv_heads, tie,
  rope_theta, rope_scaling, vocab_size, …). Returns the directory.
  """
  import torch
  model = make_hf_model(seed=seed, dtype=dtype or torch.float32, **config_kw)
  os.makedirs(path, exist_ok=True)
  if fmt not in ("safetensors", "bin"):
    raise ValueError(f"fmt {fmt!r}")
  shard_size = "200MB"
  if shards > 1:
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    shard_size = max(1, total // shards + 1)
  if fmt == "safetensors":
    model.save_pretrained(path, safe_serialization=True, max_shard_size=shard_size)
  else:
    _save_bin(model, path, shard_size if shards > 1 else None)
  if tokenizer == "sentencepiece":
    make_sentencepiece_tokenizer(path)
  elif tokenizer == "bpe":
    make_bpe_tokenizer(path)
  elif tokenizer is not None:
    raise ValueError(f"tokenizer {tokenizer!r}")
  return str(path)


def _save_bin(model, path, shard_bytes):
  """PyTorch `.bin` shards as older checkpoints ship them (transformers 5 writes only
  safetensors): pytorch_model.bin, or pytorch_model-0000i-of-0000n.bin with an index."""
  import torch
  model.config.save_pretrained(path)
  model.generation_config.save_pretrained(path)
  state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
  if model.config.tie_word_embeddings:
    state.pop("lm_head.weight", None)
  if not shard_bytes:
    torch.save(state, os.path.join(path, "pytorch_model.bin"))
    return
  groups, current, size = [], {}, 0
  for name, t in state.items():
    nbytes = t.numel() * t.element_size()
    if current and size + nbytes > shard_bytes:
      groups.append(current)
      current, size = {}, 0
    current[name] = t
    size += nbytes
  groups.append(current)
  weight_map = {}
  for i, group in enumerate(groups):
    fname = f"pytorch_model-{i + 1:05d}-of-{len(groups):05d}.bin"
    torch.save(group, os.path.join(path, fname))
    weight_map.update({name: fname for name in group})
  total = sum(t.numel() * t.element_size() for t in state.values())
  _write_json(os.path.join(path, "pytorch_model.bin.index.json"),
              {"metadata": {"total_size": total}, "weight_map": weight_map})


def hf_logits(model_or_dir, tokens_BxS):
  """float32 numpy logits of an HF model (or a directory loaded with AutoModelForCausalLM)."""
  import numpy as np
  import torch
  import transformers
  model = model_or_dir
  if isinstance(model_or_dir, (str, os.PathLike)):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        model_or_dir, attn_implementation="eager").eval()
  with torch.no_grad():
    out = model(torch.as_tensor(np.asarray(tokens_BxS), dtype=torch.long)).logits
  return out.float().numpy()


def _write_json(path, obj):
  with open(path, "w") as f:
    json.dump(obj, f, indent=2)
