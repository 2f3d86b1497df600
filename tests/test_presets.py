"""Presets have the published shapes; HF config.json maps both ways, old and new forms."""

import pytest
import torch
import transformers

from fineline.models import presets
from fineline.models.config import LlamaConfig


def _hf_param_count(cfg: LlamaConfig) -> int:
  hf_cfg = transformers.LlamaConfig(**presets.to_hf_config(cfg))
  with torch.device("meta"):  # shapes only, no memory
    model = transformers.LlamaForCausalLM(hf_cfg)
  return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_parameter_count_equals_transformers(name):
  cfg = presets.get_preset(name)
  assert cfg.num_params() == _hf_param_count(cfg)


def test_published_architectures():
  shape = lambda c: (c.num_layers, c.hidden_size, c.intermediate_size, c.num_heads,
                     c.num_kv_heads, c.vocab_size, c.max_length, c.rope_theta)
  assert shape(presets.get_preset("openllama-7b")) == (32, 4096, 11008, 32, 32, 32000, 2048, 1e4)
  assert shape(presets.get_preset("openllama-3b")) == (26, 3200, 8640, 32, 32, 32000, 2048, 1e4)
  assert shape(presets.get_preset("deepseek-67b")) == (95, 8192, 22016, 64, 8, 102400, 4096, 1e4)
  assert shape(presets.get_preset("yi-34b")) == (60, 7168, 20480, 56, 8, 64000, 4096, 5e6)
  bench = presets.get_preset("bench-58m")
  assert shape(bench)[:6] == (8, 512, 1376, 8, 8, 32000) and not bench.tie_embeddings
  assert 6.7e9 < presets.get_preset("amber-7b").num_params() < 6.8e9


def test_get_preset_overrides_and_unknown_names():
  assert presets.get_preset("tiny", scan_layers=True).scan_layers
  with pytest.raises(ValueError, match="unknown preset 'huge'.*openllama-7b"):
    presets.get_preset("huge")


@pytest.mark.parametrize("name", ["tiny", "demo", "1b", "yi-34b", "deepseek-67b"])
def test_hf_config_round_trip_through_transformers(name):
  cfg = presets.get_preset(name)
  written = transformers.LlamaConfig(**presets.to_hf_config(cfg)).to_dict()
  assert presets.from_hf_config(written) == cfg


BASE = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
        "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6}


@pytest.mark.parametrize("extra,theta", [
    ({}, 10000.0),  # absent: LLaMA's default
    ({"rope_theta": 5e6}, 5e6),  # older transformers
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 5e6}}, 5e6),  # newer
])
def test_rope_theta_forms(extra, theta):
  cfg = presets.from_hf_config({**BASE, **extra})
  assert cfg.rope_theta == theta and cfg.rope_scaling is None
  assert cfg == presets.get_preset("openllama-7b").replace(rope_theta=theta)


LLAMA3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}


@pytest.mark.parametrize("extra", [
    {"rope_theta": 5e5, "rope_scaling": {"rope_type": "llama3", **LLAMA3}},
    {"rope_theta": 5e5, "rope_scaling": {"type": "llama3", **LLAMA3}},
    {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, **LLAMA3}},
])
def test_llama3_scaling_forms(extra):
  cfg = presets.from_hf_config({**BASE, "num_key_value_heads": 8, **extra})
  assert cfg.rope_theta == 5e5 and cfg.num_kv_heads == 8
  assert cfg.rope_scaling == {"rope_type": "llama3", **LLAMA3}


@pytest.mark.parametrize("extra,words", [
    ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "MistralForCausalLM"),
    ({"architectures": ["BaichuanForCausalLM"]}, "BaichuanForCausalLM"),
    ({"attention_bias": True}, "attention_bias"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
])
def test_unsupported_configs_are_named(extra, words):
  with pytest.raises(ValueError, match=words):
    presets.from_hf_config({**BASE, **extra})
