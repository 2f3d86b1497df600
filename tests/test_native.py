"""Building and loading the native CPU kernels, and falling back to XLA without them."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from fineline.models import attention
from fineline.models import native
from fineline.models.matmul import matmul


def test_a_failed_build_falls_back_to_xla_with_a_warning(monkeypatch, tmp_path, caplog):
  monkeypatch.setenv("CXX", "false")
  monkeypatch.setenv("FINELINE_CACHE_DIR", str(tmp_path))
  native.available.cache_clear()
  try:
    assert not native.available()
    assert "native CPU kernels unavailable" in caplog.text and "false failed" in caplog.text
    r = np.random.default_rng(0)
    q, k, v = (jnp.asarray(r.standard_normal((1, 8, 2, 4), np.float32)) for _ in range(3))
    mask = attention.causal_mask(jnp.arange(8)[None], jnp.arange(8)[None])
    np.testing.assert_allclose(attention.attend(q, k, v, mask, "dot", True),
                               attention.dot_attention(q, k, v, mask, True), rtol=1e-6)
    a = q.reshape(8, 8)
    np.testing.assert_allclose(matmul(a, a, transpose_a=True), a.T @ a, rtol=1e-5, atol=1e-5)
    assert list(tmp_path.glob("kernels/*.so")) == []  # nothing half-written left behind
  finally:
    monkeypatch.undo()
    native.available.cache_clear()


def test_switched_off_by_the_environment(monkeypatch):
  monkeypatch.setenv("FINELINE_NATIVE", "0")
  native.available.cache_clear()
  try:
    assert not native.applies(jnp.ones((2, 2)))
  finally:
    monkeypatch.undo()
    native.available.cache_clear()


def test_loading_the_kernels_leaves_the_process_floating_point_mode_alone():
  """-ffast-math would link a constructor that sets flush-to-zero for the whole process:
  numpy, XLA and torch would then drop subnormal results after the library loads."""
  if not native.available():
    pytest.skip("native CPU kernels could not be built here")
  script = ("import numpy as np\n"
            "from fineline.models import native\n"
            "assert native.available()\n"
            "print(np.float32(1e-38) * np.float32(1e-3) > 0)\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
  assert result.stdout.strip() == "True"
