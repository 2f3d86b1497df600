"""LlamaConfig: architecture apart from runtime numerics."""

from fineline.models import presets


def test_runtime_settings_leave_the_architecture_unchanged():
  base = presets.get_preset("tiny")
  other = base.replace(dtype="bfloat16", param_dtype="bfloat16", scan_layers=True,
                       remat_policy="full", attention_impl="dot")
  assert other.architecture() == base.architecture()
  assert set(base.runtime()) == {"dtype", "param_dtype", "scan_layers", "remat_policy",
                                 "attention_impl"}
  assert base.replace(num_layers=base.num_layers + 1).architecture() != base.architecture()
  assert {**base.architecture(), **base.runtime()} == base.to_dict()
