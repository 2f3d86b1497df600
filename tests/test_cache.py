"""The local cache: JAX's compiled programs kept across commands."""

import os
import subprocess
import sys

_SCRIPT = """
from fineline import cache
cache.enable_compilation_cache()
import jax, jax.numpy as jnp
print(float(jax.jit(lambda x: jnp.sin(x) * 3)(jnp.arange(4.0)).sum()))
print(jax.config.jax_compilation_cache_dir)
"""


def _run(env):
  return subprocess.run([sys.executable, "-c", _SCRIPT], env={**os.environ, **env},
                        capture_output=True, text=True, check=True).stdout


def test_a_second_command_loads_the_programs_the_first_compiled(tmp_path):
  env = {"FINELINE_CACHE_DIR": str(tmp_path), "JAX_PLATFORMS": "cpu"}
  first = _run(env)
  entries = sorted(os.listdir(tmp_path / "jax"))
  assert entries, "nothing was written to the compilation cache"
  assert _run(env) == first
  assert sorted(os.listdir(tmp_path / "jax")) == entries  # loaded, not compiled again


def test_a_cache_directory_configured_for_jax_is_kept(tmp_path):
  theirs = tmp_path / "theirs"
  out = _run({"FINELINE_CACHE_DIR": str(tmp_path / "ours"), "JAX_PLATFORMS": "cpu",
              "JAX_COMPILATION_CACHE_DIR": str(theirs)})
  assert out.splitlines()[-1] == str(theirs)
  assert not (tmp_path / "ours" / "jax").exists()
