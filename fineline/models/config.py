"""The LLaMA family's hyperparameters: one frozen dataclass, serialisable to JSON."""

from __future__ import annotations

import dataclasses
from typing import Any


def _runtime(default):
  return dataclasses.field(default=default, metadata={"runtime": True})


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture and numerics of one LLaMA-family model.

  Architecture fields decide the parameter tree and what it computes (`architecture()`);
  the fields marked `_runtime` (`dtype`, `param_dtype`, `scan_layers`, `remat_policy`,
  `attention_impl`) only decide how it runs (`runtime()`), so a checkpoint loads under
  other runtime settings.
  """

  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_layers: int = 32
  num_heads: int = 32
  num_kv_heads: int = 32
  head_dim: int | None = None  # None: hidden_size // num_heads
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  # None, or the llama3 scaling: {"rope_type": "llama3", "factor", "low_freq_factor",
  # "high_freq_factor", "original_max_position_embeddings"}.
  rope_scaling: dict[str, Any] | None = None
  tie_embeddings: bool = False
  max_length: int = 2048
  bos_token_id: int = 1
  eos_token_id: int = 2
  dtype: str = _runtime("float32")  # activations and matmuls
  param_dtype: str = _runtime("float32")
  scan_layers: bool = _runtime(False)
  remat_policy: str = _runtime("none")  # none | full | dots | dots_with_no_batch_dims
  # auto | dot | splash | cudnn; auto picks by platform (see attention.resolve_impl).
  attention_impl: str = _runtime("auto")

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
    if self.head_dim is None and self.hidden_size % self.num_heads:
      raise ValueError(
          f"hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads}); "
          "set head_dim")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy {self.remat_policy!r}; known: {sorted(REMAT_POLICIES)}")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(
          f"attention_impl {self.attention_impl!r}; known: {', '.join(ATTENTION_IMPLS)}")
    if self.rope_scaling is not None and self.rope_scaling.get("rope_type", "default") not in (
        "default", "llama3"):
      raise ValueError(f"rope scaling {self.rope_scaling.get('rope_type')!r} is not supported; "
                       "supported: default, llama3")

  @property
  def kv_dim(self) -> int:
    return self.resolved_head_dim * self.num_kv_heads

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads

  def replace(self, **changes) -> "LlamaConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def architecture(self) -> dict[str, Any]:
    """The fields that decide the parameter tree and the function it computes."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if not f.metadata.get("runtime")}

  def runtime(self) -> dict[str, Any]:
    """The fields that decide only how the model runs (numerics, layout, kernels)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.metadata.get("runtime")}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "LlamaConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"unknown LlamaConfig fields: {sorted(unknown)}")
    return cls(**d)

  def num_params(self) -> int:
    d, f, v, hd = self.hidden_size, self.intermediate_size, self.vocab_size, self.resolved_head_dim
    attn = d * hd * (2 * self.num_heads + 2 * self.num_kv_heads)
    per_layer = attn + 3 * d * f + 2 * d
    return v * d * (1 if self.tie_embeddings else 2) + self.num_layers * per_layer + d

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token as PaLM (appendix B) counts them: 6N + 12·L·H·Dh·T.

    N counts the weights used in matmuls: the input embedding is a gather, so an untied
    table is left out, while a tied one is counted once, as the LM head.
    """
    d = self.hidden_size
    matmul_params = self.num_params() - (2 * self.num_layers + 1) * d  # norms are not matmuls
    if not self.tie_embeddings:
      matmul_params -= self.vocab_size * d
    attn = 12 * self.num_layers * self.num_heads * self.resolved_head_dim * seq_len
    return 6.0 * matmul_params + attn


REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims")
ATTENTION_IMPLS = ("auto", "dot", "splash", "cudnn")
