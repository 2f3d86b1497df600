"""Small checkpoints in the layouts of LLaMA's relatives (Baichuan2, older Yi, DeepSeek's
tokenizer), written inside tests from random LLaMA models."""

from __future__ import annotations

import io
import json
import os

from hf_fixtures import _training_lines, make_bpe_tokenizer, make_hf_model


def baichuan_state(seed: int = 0, **config_kw):
  """(Baichuan2-layout state dict, its config.json dict) of a random model: W_pack holds
  q, k, v stacked; the NormHead's stored rows have norms far from 1, as trained ones do."""
  import torch
  heads = config_kw.setdefault("num_heads", 4)
  model = make_hf_model(seed=seed, num_kv_heads=heads, **config_kw)
  state = {k: v.clone() for k, v in model.state_dict().items()}
  for i in range(model.config.num_hidden_layers):
    prefix = f"model.layers.{i}.self_attn."
    state[prefix + "W_pack.weight"] = torch.cat(
        [state.pop(prefix + f"{p}_proj.weight") for p in "qkv"], dim=0)
  gen = torch.Generator().manual_seed(seed + 1)
  state["lm_head.weight"] *= 3 * torch.rand(state["lm_head.weight"].shape[0], 1, generator=gen)
  c = model.config
  config = {"architectures": ["BaichuanForCausalLM"], "model_type": "baichuan",
            "auto_map": {"AutoModelForCausalLM": "modeling_baichuan.BaichuanForCausalLM"},
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads, "hidden_act": "silu",
            "max_position_embeddings": c.max_position_embeddings, "model_max_length": 4096,
            "rms_norm_eps": c.rms_norm_eps, "bos_token_id": 1, "eos_token_id": 2,
            "pad_token_id": 0, "tie_word_embeddings": False, "z_loss_weight": 0,
            "torch_dtype": "float32"}
  return state, config


def write_baichuan_dir(path, state, config, *, shards: int = 2, fmt: str = "bin") -> str:
  """Baichuan's published file layout: `.bin` shards with their index (or one safetensors
  file), config.json, and a SentencePiece tokenizer read by its own `BaichuanTokenizer`."""
  import torch
  os.makedirs(path, exist_ok=True)
  names = list(state)
  if fmt == "safetensors":
    from safetensors.torch import save_file
    save_file({n: t.contiguous() for n, t in state.items()},
              os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    shards = 0
  per = -(-len(names) // max(shards, 1))
  weight_map = {}
  for s in range(shards):
    fname = f"pytorch_model-{s + 1:05d}-of-{shards:05d}.bin"
    torch.save({n: state[n].contiguous() for n in names[s * per:(s + 1) * per]},
               os.path.join(path, fname))
    weight_map.update({n: fname for n in names[s * per:(s + 1) * per]})
  if weight_map:
    _write_json(os.path.join(path, "pytorch_model.bin.index.json"), {"weight_map": weight_map})
  _write_json(os.path.join(path, "config.json"), config)
  make_plain_sentencepiece(path)
  _write_json(os.path.join(path, "tokenizer_config.json"), {
      "tokenizer_class": "BaichuanTokenizer", "add_bos_token": False, "add_eos_token": False,
      "auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaichuanTokenizer", None]},
      "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"})
  return str(path)


def make_plain_sentencepiece(out_dir, vocab_size: int = 400) -> str:
  """A SentencePiece model without the dummy "▁" prefix (as Baichuan's): tokenizers that
  treat it as LLaMA's would prepend one."""
  import sentencepiece as spm
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(_training_lines(1)), model_writer=model, vocab_size=vocab_size,
      model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=1.0,
      add_dummy_prefix=False, remove_extra_whitespaces=False,
      normalization_rule_name="identity", allow_whitespace_only_pieces=True,
      unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
  path = os.path.join(out_dir, "tokenizer.model")
  with open(path, "wb") as f:
    f.write(model.getvalue())
  return path


def to_yi_layout(directory) -> None:
  """Rewrites a single-file safetensors HF LLaMA directory as an older Yi checkpoint:
  `YiForCausalLM`, model_type `Yi`, norms named ln1 / ln2."""
  from safetensors.numpy import load_file, save_file
  path = os.path.join(directory, "model.safetensors")
  state = load_file(path)
  renamed = {k.replace("input_layernorm", "ln1").replace("post_attention_layernorm", "ln2"): v
             for k, v in state.items()}
  save_file(renamed, path, metadata={"format": "pt"})
  with open(os.path.join(directory, "config.json")) as f:
    config = json.load(f)
  config.update({"architectures": ["YiForCausalLM"], "model_type": "Yi",
                 "auto_map": {"AutoModelForCausalLM": "modeling_yi.YiForCausalLM"}})
  _write_json(os.path.join(directory, "config.json"), config)


def make_deepseek_tokenizer(out_dir) -> str:
  """A byte-level BPE `tokenizer.json` with DeepSeek's special-token names, whose
  post-processor prepends BOS, and its tokenizer_config.json (LlamaTokenizerFast class,
  BOS as an AddedToken dict); no SentencePiece model."""
  from tokenizers import Tokenizer
  make_bpe_tokenizer(out_dir)
  path = os.path.join(out_dir, "tokenizer.json")
  with open(path) as f:
    spec = json.load(f)
  names = {"<s>": "<｜begin▁of▁sentence｜>", "</s>": "<｜end▁of▁sentence｜>"}
  for token in spec["added_tokens"]:
    token["content"] = names.get(token["content"], token["content"])
  vocab = spec["model"]["vocab"]
  for old, new in names.items():
    vocab[new] = vocab.pop(old)
  spec["post_processor"]["special_tokens"] = {
      names["<s>"]: {"id": names["<s>"], "ids": [vocab[names["<s>"]]], "tokens": [names["<s>"]]}}
  for part in ("single", "pair"):
    for piece in spec["post_processor"][part]:
      if "SpecialToken" in piece:
        piece["SpecialToken"]["id"] = names["<s>"]
  with open(path, "w") as f:
    json.dump(spec, f, ensure_ascii=False)
  Tokenizer.from_file(path)  # still a valid tokenizer.json

  def added(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}
  _write_json(os.path.join(out_dir, "tokenizer_config.json"), {
      "tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True, "add_eos_token": False,
      "bos_token": added(names["<s>"]), "eos_token": added(names["</s>"]), "unk_token": None,
      "pad_token": None, "legacy": True, "model_max_length": 4096,
      "clean_up_tokenization_spaces": False, "sp_model_kwargs": {}})
  return str(out_dir)


def _write_json(path, obj):
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, ensure_ascii=False)
