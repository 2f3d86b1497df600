"""Checkpoints that are LLaMA under other names, presented as Hugging Face LLaMA ones.

  Baichuan2-7B (`BaichuanForCausalLM`, model_type `baichuan`)
      model.layers.i.self_attn.W_pack.weight  (3·H·Dh)×D: q, k and v stacked on the output
          axis (rows 0:H·Dh, H·Dh:2·H·Dh, 2·H·Dh:3·H·Dh) → q_proj, k_proj, v_proj
      lm_head.weight: a NormHead, whose rows Baichuan L2-normalises before the product (in
          eval mode as in training); the rows are normalised here, once, so the imported
          model's logits are Baichuan's. Everything else (RMSNorm, half-split rotary, SwiGLU)
          is LLaMA's. Baichuan2-13B uses ALiBi positions instead of rotary ones: refused.
  Yi before its LLaMA renaming (`YiForCausalLM`, model_type `Yi`)
      model.layers.i.ln1 / ln2 → input_layernorm / post_attention_layernorm

`llama_config` turns such a config.json into a LLaMA one, `weight_files` wraps the
directory's `WeightFiles` so that the converter sees LLaMA's tensor names and layouts.
"""

from __future__ import annotations

import re

import numpy as np

from fineline.convert import weights_io
from fineline.errors import UserError

_W_PACK = re.compile(r"(model\.layers\.\d+\.self_attn\.)W_pack\.weight")
_YI_NORMS = re.compile(r"(model\.layers\.\d+\.)ln([12])\.weight")
_YI_NORM_NAMES = {"1": "input_layernorm", "2": "post_attention_layernorm"}


def architecture(hf: dict) -> str:
  """"llama", "baichuan" or "yi" for a config.json dict (anything else reads as "llama",
  which `presets.from_hf_config` then checks)."""
  archs = hf.get("architectures") or []
  model_type = str(hf.get("model_type", "")).lower()
  if "BaichuanForCausalLM" in archs or model_type == "baichuan":
    return "baichuan"
  if "YiForCausalLM" in archs or model_type == "yi":
    return "yi"
  return "llama"


def llama_config(hf: dict) -> dict:
  """The config.json of the same model as HF LLaMA would write it."""
  arch = architecture(hf)
  if arch == "llama":
    return hf
  if arch == "baichuan" and "max_position_embeddings" not in hf:
    # Baichuan's 13B models say so by omission: their modeling code uses ALiBi, not rotary.
    raise UserError("a Baichuan config without max_position_embeddings is the 13B "
                     "ALiBi model, which fineline's rotary LLaMA cannot represent; "
                     "Baichuan2-7B (rotary) converts")
  out = {k: v for k, v in hf.items() if k not in ("auto_map", "architectures", "model_type")}
  return {**out, "architectures": ["LlamaForCausalLM"], "model_type": "llama"}


def weight_files(files: weights_io.WeightFiles, hf: dict, cfg):
  """`files` as HF LLaMA's tensors: itself for LLaMA, else a renaming view."""
  arch = architecture(hf)
  return files if arch == "llama" else _RenamedWeights(files, arch, cfg)


class _RenamedWeights:
  """The `WeightFiles` interface the converter uses, under LLaMA's names and layouts."""

  def __init__(self, files: weights_io.WeightFiles, arch: str, cfg):
    self.files, self.arch, self.cfg = files, arch, cfg
    self.directory = files.directory

  def path(self, fname: str) -> str:
    return self.files.path(fname)

  def llama_names(self, name: str) -> list[str]:
    if self.arch == "baichuan":
      m = _W_PACK.fullmatch(name)
      if m:
        return [f"{m.group(1)}{p}_proj.weight" for p in "qkv"]
    if self.arch == "yi":
      m = _YI_NORMS.fullmatch(name)
      if m:
        return [f"{m.group(1)}{_YI_NORM_NAMES[m.group(2)]}.weight"]
    return [name]

  def tensor_names(self) -> dict[str, str]:
    return {llama: fname for name, fname in self.files.tensor_names().items()
            for llama in self.llama_names(name)}

  def tensor_specs(self):
    specs = self.files.tensor_specs()
    if specs is None:
      return None
    out = {}
    for name, (dtype, shape) in specs.items():
      parts = self.llama_names(name)
      if len(parts) == 3:
        self._check_pack(name, shape)
        shape = (shape[0] // 3,) + tuple(shape[1:])
      out.update({llama: (dtype, tuple(shape)) for llama in parts})
    return out

  def iter_tensors(self, wanted=None):
    keep = None if wanted is None else (lambda n: any(wanted(x) for x in self.llama_names(n)))
    for name, w in self.files.iter_tensors(keep):
      parts = self.llama_names(name)
      if len(parts) == 3:
        self._check_pack(name, w.shape)
        rows = w.shape[0] // 3
        for i, llama in enumerate(parts):
          yield llama, w[i * rows:(i + 1) * rows]
      elif self.arch == "baichuan" and name == "lm_head.weight":
        yield name, normalized_rows(w)
      else:
        yield parts[0], w

  def _check_pack(self, name: str, shape) -> None:
    cfg = self.cfg
    q_rows = cfg.num_heads * cfg.resolved_head_dim
    want = (3 * q_rows, cfg.hidden_size)
    if cfg.num_kv_heads != cfg.num_heads or tuple(shape) != want:
      raise UserError(
          f"{self.directory}: tensor {name!r} has shape {tuple(shape)}, expected {want}: "
          f"q, k and v of {cfg.num_heads} heads stacked, from config.json")


def normalized_rows(w: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm (computed in float32, stored in w's dtype), as
  `torch.nn.functional.normalize(w, dim=1)` does, with the same 1e-12 floor."""
  w32 = w.astype(np.float32)
  norms = np.sqrt(np.einsum("vd,vd->v", w32, w32))[:, None]
  return (w32 / np.maximum(norms, 1e-12)).astype(w.dtype)
