#!/usr/bin/env bash
# Runs the test suite on CPU, setting up .venv first. Extra arguments go to pytest.
source "$(dirname "$0")/_venv.sh"
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=3
exec python -m pytest "$@"
