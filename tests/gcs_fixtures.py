"""A real Cloud Storage API for tests: gcp-storage-emulator on a free localhost port.

`gcs_bucket` (import it into a test module) starts the emulator (gcs_emulator_main.py: with
the generation headers real Cloud Storage sends) once per session with an in-memory bucket,
points the clients at it the standard way while the tests that use it run
(`STORAGE_EMULATOR_HOST` for gcsfs, `TENSORSTORE_GCS_HTTP_URL` for TensorStore, and
`EPATH_USE_TF=false` so etils takes gcsfs rather than TF's gfile, which ignores emulators)
and yields a fresh `gs://…` prefix per test. `emulator_env()` gives subprocesses the same.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

BUCKET = "fineline-test"
MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gcs_emulator_main.py")
_state: dict = {}

# etils picks its gs:// backend once per process, at the first path it handles, so this is
# set on import (collection), before any test runs. Local paths never use TF's gfile, so no
# other test sees a difference.
os.environ["EPATH_USE_TF"] = "false"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def emulator_env() -> dict:
  host = _state["host"]
  return {"STORAGE_EMULATOR_HOST": host, "TENSORSTORE_GCS_HTTP_URL": host,
          "EPATH_USE_TF": "false", "GOOGLE_CLOUD_PROJECT": "test"}


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
  port = _free_port()
  log_path = tmp_path_factory.mktemp("gcs") / "emulator.log"
  log = open(log_path, "w", encoding="utf-8")  # pylint: disable=consider-using-with
  proc = subprocess.Popen([sys.executable, MAIN, str(port), BUCKET],
                          stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 30
  while True:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      break
    except OSError:
      if proc.poll() is not None or time.time() > deadline:
        proc.kill()
        pytest.fail(f"gcp-storage-emulator did not start (see {log.name})")
      time.sleep(0.1)
  _state["host"] = f"http://127.0.0.1:{port}"
  try:
    yield _state["host"]
  finally:
    proc.kill()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def gcs_bucket(gcs_emulator, monkeypatch):
  """A fresh gs:// prefix in the emulator's bucket, with this process's clients pointed at it."""
  del gcs_emulator
  for key, value in emulator_env().items():
    monkeypatch.setenv(key, value)
  return f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}"
