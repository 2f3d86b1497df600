"""Named model sizes, and the mapping between LlamaConfig and a Hugging Face `config.json`."""

from __future__ import annotations

from typing import Any

from fineline.models.config import LlamaConfig

_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
           num_heads=32, num_kv_heads=32, max_length=2048)

PRESETS: dict[str, LlamaConfig] = {
    # Tests: a few hundred thousand parameters, compiles in seconds.
    "tiny": LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=176, num_layers=2,
                        num_heads=4, num_kv_heads=2, max_length=256),
    # The demo: trains on two CPU cores in a few minutes on the bundled skills corpus.
    "demo": LlamaConfig(vocab_size=512, hidden_size=192, intermediate_size=512, num_layers=4,
                        num_heads=6, num_kv_heads=2, max_length=256, tie_embeddings=True),
    "bench-58m": LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376,
                             num_layers=8, num_heads=8, num_kv_heads=8, max_length=2048),
    "125m": LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_layers=12,
                        num_heads=12, num_kv_heads=12, max_length=2048, tie_embeddings=True),
    "1b": LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_layers=22,
                      num_heads=32, num_kv_heads=4, max_length=2048, rms_norm_eps=1e-5),
    "openllama-3b": LlamaConfig(vocab_size=32000, hidden_size=3200, intermediate_size=8640,
                                num_layers=26, num_heads=32, num_kv_heads=32, max_length=2048),
    "openllama-7b": LlamaConfig(**_7B),
    "openllama-13b": LlamaConfig(vocab_size=32000, hidden_size=5120, intermediate_size=13824,
                                 num_layers=40, num_heads=40, num_kv_heads=40, max_length=2048),
    "amber-7b": LlamaConfig(**_7B),
    "deepseek-7b": LlamaConfig(vocab_size=102400, hidden_size=4096, intermediate_size=11008,
                               num_layers=30, num_heads=32, num_kv_heads=32, max_length=4096,
                               bos_token_id=100000, eos_token_id=100001),
    "deepseek-67b": LlamaConfig(vocab_size=102400, hidden_size=8192, intermediate_size=22016,
                                num_layers=95, num_heads=64, num_kv_heads=8, max_length=4096,
                                bos_token_id=100000, eos_token_id=100001),
    "yi-34b": LlamaConfig(vocab_size=64000, hidden_size=7168, intermediate_size=20480,
                          num_layers=60, num_heads=56, num_kv_heads=8, max_length=4096,
                          rope_theta=5e6, rms_norm_eps=1e-5),
}


def get_preset(name: str, **overrides: Any) -> LlamaConfig:
  """The named preset, with runtime fields (dtype, scan_layers, …) overridden."""
  if name not in PRESETS:
    raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
  return PRESETS[name].replace(**overrides)


def from_hf_config(hf: dict[str, Any], **overrides: Any) -> LlamaConfig:
  """LlamaConfig from a Hugging Face LLaMA `config.json` (old `rope_theta` or new
  `rope_parameters` form). Raises ValueError naming what is not LLaMA."""
  archs = hf.get("architectures") or []
  model_type = hf.get("model_type", "llama")
  if model_type != "llama" or any(a != "LlamaForCausalLM" for a in archs):
    raise ValueError(
        f"not a LLaMA checkpoint: model_type={model_type!r}, architectures={archs}; "
        "fineline reads LlamaForCausalLM checkpoints only")
  for flag in ("attention_bias", "mlp_bias"):
    if hf.get(flag):
      raise ValueError(f"config.json sets {flag}=true; fineline's LLaMA has no biases")
  rope = dict(hf.get("rope_parameters") or {})
  legacy_scaling = hf.get("rope_scaling")
  if legacy_scaling:
    rope = {**legacy_scaling, **rope}
  theta = rope.pop("rope_theta", None) or hf.get("rope_theta") or 10000.0
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  scaling = None
  if rope_type == "llama3":
    scaling = {"rope_type": "llama3", **{k: rope[k] for k in (
        "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}}
  elif rope_type != "default":
    raise ValueError(f"config.json rope type {rope_type!r} is not supported (default, llama3)")
  num_heads = hf["num_attention_heads"]
  kw = dict(
      vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
      num_heads=num_heads, num_kv_heads=hf.get("num_key_value_heads") or num_heads,
      head_dim=hf.get("head_dim"), rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
      rope_theta=float(theta), rope_scaling=scaling,
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_length=hf.get("max_position_embeddings", 2048),
      bos_token_id=_first(hf.get("bos_token_id"), 1), eos_token_id=_first(hf.get("eos_token_id"), 2))
  if kw["head_dim"] == kw["hidden_size"] // num_heads:
    kw["head_dim"] = None
  kw.update(overrides)
  return LlamaConfig(**kw)


def to_hf_config(cfg: LlamaConfig, torch_dtype: str = "float32") -> dict[str, Any]:
  """A `config.json` dict that `transformers.LlamaConfig` reads back to the same model."""
  hf = {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.resolved_head_dim, "hidden_act": "silu", "rms_norm_eps": cfg.rms_norm_eps,
      "max_position_embeddings": cfg.max_length, "tie_word_embeddings": cfg.tie_embeddings,
      "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
      "initializer_range": 0.02, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
      "rope_theta": cfg.rope_theta, "rope_scaling": cfg.rope_scaling,
      "torch_dtype": torch_dtype, "use_cache": True,
  }
  return hf


def _first(value, default):
  if isinstance(value, list):
    return value[0] if value else default
  return default if value is None else value
