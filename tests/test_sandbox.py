"""The sandbox: each escape attempt fails, is reported, and leaves nothing behind."""

import glob
import os
import signal
import socket
import subprocess
import tempfile
import uuid

import pytest

from fineline.evaluation import sandbox

KERNEL_ONLY = sandbox.Limits(audit_hook=False)
own_user = pytest.mark.skipif(not sandbox.interpreter()[1],
                              reason="needs root and a Python any user can read")


def _sandbox_dirs():
  return set(glob.glob(os.path.join(tempfile.gettempdir(), "fineline-sandbox-*")))


def _sandbox_processes():
  """Processes running under one of the sandbox's user ids."""
  found = []
  for status in glob.glob("/proc/[0-9]*/status"):
    try:
      with open(status) as f:
        uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
    except (OSError, StopIteration):
      continue
    if uid >= sandbox._UID_BASE - 1:  # pylint: disable=protected-access
      found.append(status)
  return found


@pytest.fixture
def clean():
  before = _sandbox_dirs()
  yield
  assert _sandbox_dirs() == before, "a sandbox directory was left behind"
  assert not _sandbox_processes(), "a sandboxed process outlived its run"


def test_program_passes_and_fails_with_reason(clean):
  ok = sandbox.run_program("import math\nassert math.gcd(12, 18) == 6\nprint('done')")
  assert ok.passed and ok.result == "passed" and ok.stdout == "done\n"
  bad = sandbox.run_program("def f(x):\n  return x + 1\nassert f(1) == 3, 'wrong'")
  assert not bad.passed and bad.result == "failed: AssertionError: wrong"


def test_files_inside_the_work_dir_are_allowed_and_removed(clean):
  res = sandbox.run_program("open('notes.txt', 'w').write('x')\n"
                            "import os\nassert os.listdir('.') == ['notes.txt']")
  assert res.passed, res.stderr


@pytest.mark.parametrize("limits", [sandbox.Limits(), KERNEL_ONLY], ids=["hook", "kernel"])
def test_fork_bomb_fails(clean, limits):
  if not limits.audit_hook and not sandbox.interpreter()[1]:
    pytest.skip("the process limit needs a user id of the program's own")
  res = sandbox.run_program("import os\nwhile True:\n  os.fork()", limits)
  assert not res.passed
  assert "os.fork is not allowed" in res.result or "Resource temporarily unavailable" in res.result


@pytest.mark.parametrize("limits", [sandbox.Limits(), KERNEL_ONLY], ids=["hook", "kernel"])
def test_writing_outside_the_work_dir_fails(clean, tmp_path, limits):
  if not limits.audit_hook and not sandbox.interpreter()[1]:
    pytest.skip("needs a user id of the program's own")
  target = tmp_path / "escaped.txt"  # a directory only root may write
  res = sandbox.run_program(f"open({str(target)!r}, 'w').write('x')", limits)
  # Refused, or (in a mount namespace) the directory is not even there.
  assert not res.passed and ("Permission" in res.result or "No such file" in res.result)
  assert not target.exists()


def test_writing_to_a_world_writable_dir_fails(clean):
  target = os.path.join(tempfile.gettempdir(), f"fineline-escape-{uuid.uuid4().hex}")
  for program in (f"open({target!r}, 'w').write('x')",
                  f"import os\nos.mkdir({target!r})",
                  f"import os\nfd = os.open({target!r}, os.O_CREAT | os.O_WRONLY)"):
    res = sandbox.run_program(program)
    assert not res.passed and "outside the work directory" in res.result
    assert not os.path.exists(target)


@pytest.mark.skipif("--mount" not in sandbox.namespaces(), reason="no mount namespace here")
def test_past_the_hook_world_writable_dirs_are_private(clean):
  name = f"fineline-escape-{uuid.uuid4().hex}"
  dirs = ("/tmp", "/var/tmp", "/dev/shm")
  program = "\n".join(f"open('{d}/{name}', 'w').write('x')" for d in dirs)
  # The program sees its own /tmp: the files it wrote and its sandbox directory only.
  program += (f"\nimport os\nseen = sorted(os.listdir('/tmp'))\nassert seen[0] == {name!r}"
              "\nassert len(seen) == 2 and seen[1].startswith('fineline-sandbox-'), seen")
  res = sandbox.run_program(program, KERNEL_ONLY)
  assert res.passed, res.result  # written, but into the program's own tmpfs
  for d in dirs:
    assert not os.path.exists(os.path.join(d, name))


@pytest.mark.parametrize("limits", [sandbox.Limits(), KERNEL_ONLY], ids=["hook", "kernel"])
def test_opening_a_socket_fails(clean, limits):
  if not limits.audit_hook and not sandbox.network_namespace_available():
    pytest.skip("no network namespace here; the audit hook alone blocks sockets")
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    res = sandbox.run_program(
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", limits)
    assert not res.passed
    assert "socket" in res.result or "refused" in res.result or "unreachable" in res.result
    with pytest.raises(socket.timeout):
      server.accept()  # nothing got through


@pytest.mark.parametrize("limits", [sandbox.Limits(), KERNEL_ONLY], ids=["hook", "kernel"])
def test_killing_the_parent_or_another_process_fails(clean, limits):
  if not limits.audit_hook and not sandbox.interpreter()[1]:
    pytest.skip("needs a user id of the program's own")
  victim = subprocess.Popen(["sleep", "60"])
  try:
    for pid in ("os.getppid()", str(victim.pid)):
      res = sandbox.run_program(f"import os, signal\nos.kill({pid}, signal.SIGKILL)", limits)
      assert not res.passed
      assert "os.kill is not allowed" in res.result or "not permitted" in res.result
    assert victim.poll() is None
  finally:
    victim.kill()
    victim.wait()


def test_infinite_loop_hits_the_cpu_limit(clean):
  res = sandbox.run_program("while True:\n  pass", sandbox.Limits(cpu_seconds=1))
  assert not res.passed and res.result.startswith("CPU time limit")
  # Ignoring SIGXCPU does not help: the hard limit kills.
  res = sandbox.run_program("import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
                            "while True:\n  pass", sandbox.Limits(cpu_seconds=1))
  assert not res.passed and res.result.startswith("CPU time limit")


def test_sleeping_program_is_killed_at_the_wall_timeout(clean):
  res = sandbox.run_program("import time\ntime.sleep(60)", sandbox.Limits(timeout_s=1.0))
  assert not res.passed and res.result.startswith("timed out")
  assert res.returncode == -signal.SIGKILL


def test_one_gigabyte_allocation_fails(clean):
  res = sandbox.run_program("buf = bytearray(1 << 30)\nbuf[-1] = 1")
  assert not res.passed and res.result.startswith("memory limit")


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_printing_100_megabytes_fails(clean, stream):
  res = sandbox.run_program(f"import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n"
                            f"  sys.{stream}.write(chunk)\nsys.{stream}.flush()")
  assert not res.passed and res.result.startswith("output limit")
  assert len(res.stdout) <= 4096 and len(res.stderr) <= 4096


def test_many_programs_run_concurrently_in_order(clean):
  sources = [f"assert {i} % 3 != 0" for i in range(12)]
  results = sandbox.run_programs(sources, workers=4)
  assert [r.passed for r in results] == [i % 3 != 0 for i in range(12)]


@pytest.mark.skipif("--mount" not in sandbox.namespaces(), reason="no mount namespace here")
def test_many_files_cannot_fill_the_disk(clean):
  res = sandbox.run_program("chunk = b'x' * (1 << 20)\nfor i in range(100):\n"
                            "  with open(f'f{i}', 'wb') as f:\n    f.write(chunk)",
                            sandbox.Limits(max_work_dir_bytes=8 << 20))
  assert not res.passed and "No space left on device" in res.result
