# Sourced by tools/*.sh: create or reuse .venv at the repository root and install fineline
# (with the test extra) into it. Re-installs only when pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
stamp=.venv/.fineline-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # torch is pinned to the CPU build in the test extra; see pyproject.toml.
  .venv/bin/pip install --quiet -e '.[test]'
  # libtpu, for `fineline plan --target tpu-…` (the TPU compiler on any machine): the jax[tpu]
  # of the jax just installed, so libtpu matches it and jax itself stays as it is.
  jax_version="$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("jax"))')"
  .venv/bin/pip install --quiet "jax[tpu]==$jax_version"
  touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
