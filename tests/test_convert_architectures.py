"""LLaMA's relatives (Baichuan2, older Yi, Amber's fp32 `.bin` shards) imported as LLaMA,
checked against their own forward pass: Baichuan's written out from its modeling code's
math here (transformers has no Baichuan class), the others through transformers' LLaMA."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from arch_fixtures import baichuan_state, to_yi_layout, write_baichuan_dir
from hf_fixtures import hf_logits, make_hf_llama_dir

from fineline import cli
from fineline.convert import hf
from fineline.models import llama

TOKENS_BxS = np.array([[1, 5, 300, 42, 7, 511, 2, 9, 100, 3]], np.int32)


def baichuan_reference_logits(state, config, tokens_BxS, norm_head=True):
  """Baichuan2-7B's forward pass in eval mode, from its published modeling code's math:
  RMSNorm; W_pack → q, k, v; half-split rotary (θ 10000); causal softmax attention;
  SwiGLU MLP; NormHead (rows L2-normalised before the product)."""
  D, H, eps = config["hidden_size"], config["num_attention_heads"], config["rms_norm_eps"]
  Dh = D // H
  tokens = torch.as_tensor(tokens_BxS, dtype=torch.long)
  B, S = tokens.shape
  inv_freq = 1.0 / (10000 ** (torch.arange(0, Dh, 2, dtype=torch.float32) / Dh))
  angles = torch.cat([torch.outer(torch.arange(S, dtype=torch.float32), inv_freq)] * 2, dim=-1)
  cos, sin = angles.cos(), angles.sin()

  def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

  def rotate(x):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin

  causal = torch.full((S, S), float("-inf")).triu(1)
  x = state["model.embed_tokens.weight"][tokens]
  with torch.no_grad():
    for i in range(config["num_hidden_layers"]):
      p = f"model.layers.{i}."
      h = rms(x, state[p + "input_layernorm.weight"])
      proj = h @ state[p + "self_attn.W_pack.weight"].T
      q, k, v = (t.reshape(B, S, H, Dh).transpose(1, 2) for t in proj.split(D, dim=-1))
      att = torch.softmax(rotate(q) @ rotate(k).transpose(-1, -2) / Dh ** 0.5 + causal, dim=-1)
      x = x + (att @ v).transpose(1, 2).reshape(B, S, D) @ state[p + "self_attn.o_proj.weight"].T
      h = rms(x, state[p + "post_attention_layernorm.weight"])
      gate, up = h @ state[p + "mlp.gate_proj.weight"].T, h @ state[p + "mlp.up_proj.weight"].T
      x = x + (F.silu(gate) * up) @ state[p + "mlp.down_proj.weight"].T
    x = rms(x, state["model.norm.weight"])
    head = state["lm_head.weight"]
    return (x @ (F.normalize(head) if norm_head else head).T).numpy()


def fineline_logits(directory):
  params, cfg, _ = hf.load_hf_checkpoint(str(directory))
  return np.asarray(llama.Llama(cfg).apply({"params": params}, TOKENS_BxS))


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_baichuan_logits_equal_its_eval_mode_forward(tmp_path, fmt):
  state, config = baichuan_state(seed=3)
  src = write_baichuan_dir(tmp_path / "baichuan", state, config, fmt=fmt)
  reference = baichuan_reference_logits(state, config, TOKENS_BxS)
  np.testing.assert_allclose(fineline_logits(src), reference, atol=1e-4, rtol=0)
  # Read as a plain LLaMA head the same weights give other logits: the test can tell.
  plain_head = baichuan_reference_logits(state, config, TOKENS_BxS, norm_head=False)
  assert not np.allclose(plain_head, reference, atol=1e-2)

  # Imported, then exported: a plain LLaMA checkpoint that transformers runs to the same logits.
  assert cli.main(["convert", "--from_hf", src, "--out", str(tmp_path / "ckpt")]) == 0
  assert cli.main(["convert", "--to_hf", str(tmp_path / "ckpt"), "--out",
                   str(tmp_path / "llama")]) == 0
  assert json.loads((tmp_path / "llama" / "config.json").read_text())["architectures"] == [
      "LlamaForCausalLM"]
  np.testing.assert_allclose(hf_logits(tmp_path / "llama", TOKENS_BxS), reference,
                             atol=1e-4, rtol=0)
  assert os.path.isfile(tmp_path / "ckpt" / "tokenizer" / "tokenizer.model")


def test_baichuan_bad_input_names_the_tensor_or_config(tmp_path):
  state, config = baichuan_state(seed=1)
  name = "model.layers.1.self_attn.W_pack.weight"
  bad = dict(state, **{name: state[name][:-4]})
  src = write_baichuan_dir(tmp_path / "short_pack", bad, config)
  with pytest.raises(ValueError, match=rf"short_pack: tensor '{name}' has shape \(188, 64\), "
                                       r"expected \(192, 64\)"):
    hf.load_hf_checkpoint(src)

  alibi = {k: v for k, v in config.items() if k != "max_position_embeddings"}
  src = write_baichuan_dir(tmp_path / "alibi", state, alibi)
  with pytest.raises(ValueError, match=r"alibi/config.json: .*13B ALiBi"):
    hf.load_hf_checkpoint(src)
  assert cli.main(["convert", "--from_hf", src, "--out", str(tmp_path / "out")]) != 0
  assert not os.path.exists(tmp_path / "out")


def test_older_yi_naming_converts_to_the_same_model(tmp_path):
  src = make_hf_llama_dir(tmp_path / "yi", num_heads=4, num_kv_heads=2, rope_theta=5e6, seed=4)
  expected = hf_logits(src, TOKENS_BxS)
  to_yi_layout(src)
  assert "ln1" in open(os.path.join(src, "model.safetensors"), "rb").read(4096).decode("latin1")
  np.testing.assert_allclose(fineline_logits(src), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("shards", [3, 6])
def test_amber_fp32_bin_with_any_shard_count(tmp_path, shards):
  src = make_hf_llama_dir(tmp_path / "amber", fmt="bin", shards=shards, num_kv_heads=4, seed=5)
  config = json.loads(open(os.path.join(src, "config.json")).read())
  for key in ("rope_parameters", "rope_theta"):  # Amber's config predates both: θ 10000
    config.pop(key, None)
  config.update({"rope_scaling": None, "pretraining_tp": 1, "torch_dtype": "float32"})
  with open(os.path.join(src, "config.json"), "w") as f:
    json.dump(config, f)
  index = json.loads(open(os.path.join(src, "pytorch_model.bin.index.json")).read())
  assert len(set(index["weight_map"].values())) >= shards  # the index says how many
  params, cfg, _ = hf.load_hf_checkpoint(src)
  assert cfg.param_dtype == "float32" and cfg.rope_theta == 10000.0
  ours = np.asarray(llama.Llama(cfg).apply({"params": params}, TOKENS_BxS))
  np.testing.assert_allclose(ours, hf_logits(src, TOKENS_BxS), atol=1e-4, rtol=0)
