"""Executing untrusted programs (model-written code and its tests): one process each.

`run_program(source, limits)` writes the program to a fresh temporary directory and runs
it in a process of its own (`sandbox_guard.py`; this interpreter, or the system's
`python3`, see `interpreter`), never in the calling process. The program gets

  - kernel resource limits: CPU seconds, address space, open files, file size (its
    stdout and stderr are files, so this also bounds its output) and, when we run as
    root, a user id of its own with a process limit of one: no fork, no signalling
    other users' processes, no writing where only root may;
  - an audit hook refusing process creation, signals, sockets, native code, and writes
    or deletions outside its work directory;
  - a new network namespace (`unshare --net`: no interface but a downed loopback) where
    the kernel allows it; otherwise the hook alone keeps sockets from being created;
  - with a mount namespace too (as root), a private tmpfs over /tmp, /var/tmp and
    /dev/shm, so that even past the hook nothing it writes there outlives it, and its
    work directory a tmpfs of `max_work_dir_bytes`;
  - a wall-clock limit, after which its whole process group is killed;
  - a work directory that is removed afterwards, whatever happened.

The result says whether the program exited cleanly and, if not, why: `passed`, or
`failed: <last line of stderr>`, `timed out`, `CPU time limit`, `output limit`,
`memory limit`. `run_programs` runs many at once on a small pool of threads (each
merely waits on its process).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Sequence

_GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_guard.py")
# Unprivileged user ids handed out one per running program (no passwd entry needed).
_UID_BASE = 1_900_000_000
_uids = itertools.count()
_uid_lock = threading.Lock()
# World-writable directories a program could leave files in: in a mount namespace of its
# own each gets a fresh tmpfs that disappears with the program.
_PRIVATE_DIRS = tuple(dict.fromkeys(("/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir())))


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-program limits. `timeout_s` is wall time (interpreter start-up included);
  `cpu_seconds` follows HF code_eval's 3 s per program."""
  timeout_s: float = 10.0
  cpu_seconds: int = 3
  max_memory_bytes: int = 512 << 20
  max_output_bytes: int = 1 << 20  # any file it writes, stdout and stderr included
  max_work_dir_bytes: int = 64 << 20  # all files in its work dir (with a mount namespace)
  max_open_files: int = 64
  max_processes: int = 1
  audit_hook: bool = True  # off only to check the kernel's limits alone (tests)


@dataclasses.dataclass(frozen=True)
class Result:
  passed: bool
  result: str  # "passed" or why not
  returncode: int | None
  stdout: str  # the first few KiB
  stderr: str  # the last few KiB


_TAIL = 4096


@functools.lru_cache(maxsize=None)
def namespaces() -> tuple[str, ...]:
  """The `unshare` options that work here (root, or a kernel allowing them): a network
  namespace and, as root, a mount namespace too."""
  tool = shutil.which("unshare")
  if tool is None:
    return ()
  for options in (("--net", "--mount"), ("--net",)):
    try:
      if subprocess.run([tool, *options, "true"], capture_output=True,
                        timeout=10).returncode == 0:
        return options
    except (OSError, subprocess.SubprocessError):
      pass
  return ()


def network_namespace_available() -> bool:
  return "--net" in namespaces()


def _next_uid() -> int:
  with _uid_lock:
    return _UID_BASE + next(_uids) % 1_000_000


@functools.lru_cache(maxsize=None)
def interpreter() -> tuple[str, bool]:
  """(Python to run programs with, whether it runs them under a user id of their own).

  As root, programs run unprivileged, so the interpreter's standard library must be
  readable by any user: this one's if so (tried by importing a few modules as such a
  user), else the system's `python3`. Without root, or without such a Python, programs
  run as the caller with the audit hook and the resource limits."""
  if os.geteuid() != 0:
    return sys.executable, False
  candidates = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
  for python in dict.fromkeys(c for c in candidates if os.path.isfile(c)):
    try:
      probe = subprocess.run(
          [python, "-I", "-B", "-c", "import collections, math, re, socket, typing"],
          user=_UID_BASE - 1, group=_UID_BASE - 1, extra_groups=[], capture_output=True,
          timeout=30, cwd="/")
    except (OSError, subprocess.SubprocessError):
      continue
    if probe.returncode == 0:
      return python, True
  return sys.executable, False


def run_program(source: str, limits: Limits = Limits()) -> Result:
  """Runs `source` as a Python program under `limits`; see the module docstring."""
  root = tempfile.mkdtemp(prefix="fineline-sandbox-")
  try:
    return _run_in(root, source, limits)
  finally:
    shutil.rmtree(root, ignore_errors=True)


def _run_in(root: str, source: str, limits: Limits) -> Result:
  work = os.path.join(root, "work")
  os.mkdir(work)
  program = os.path.join(root, "program.py")
  with open(program, "w", encoding="utf-8") as f:
    f.write(source)
  python, own_user = interpreter()
  uid = _next_uid() if own_user else None
  if uid is not None:
    os.chmod(root, 0o711)  # the program's user may enter its work dir, not list the rest
    os.chown(work, uid, uid)
  spec = {"program": program, "workdir": work, "uid": uid,
          "cpu_seconds": max(1, int(limits.cpu_seconds)),
          "max_memory_bytes": limits.max_memory_bytes,
          "max_file_bytes": limits.max_output_bytes,
          "max_work_dir_bytes": limits.max_work_dir_bytes,
          "max_open_files": limits.max_open_files,
          "max_processes": limits.max_processes, "audit_hook": limits.audit_hook,
          "private_dirs": list(_PRIVATE_DIRS) if "--mount" in namespaces() else []}
  command = [python, "-I", "-B", _GUARD, json.dumps(spec)]
  if namespaces():
    command = [shutil.which("unshare"), *namespaces(), "--"] + command
  out_path, err_path = os.path.join(root, "stdout"), os.path.join(root, "stderr")
  with open(out_path, "wb") as out, open(err_path, "wb") as err:
    proc = subprocess.Popen(command, cwd=work, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=err, start_new_session=True, close_fds=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8",
                                 "PYTHONIOENCODING": "utf-8"})
    # A blocking wait with a timer, not Popen.wait(timeout), which polls in sleeps of up
    # to 50 ms: most programs finish in less.
    expired = threading.Event()

    def expire():
      expired.set()
      _kill_group(proc.pid)

    timer = threading.Timer(limits.timeout_s, expire)
    timer.start()
    try:
      proc.wait()
    finally:
      timer.cancel()
      _kill_group(proc.pid)
      proc.wait()
    timed_out = expired.is_set()
  stdout, stderr = _head(out_path), _tail(err_path)
  flooded = max(os.path.getsize(out_path), os.path.getsize(err_path)) >= limits.max_output_bytes
  reason = _reason(proc.returncode, stderr, timed_out, flooded, limits)
  return Result(reason == "passed", reason, proc.returncode, stdout, stderr)


def _kill_group(pgid: int) -> None:
  try:
    os.killpg(pgid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def _reason(returncode: int, stderr: str, timed_out: bool, flooded: bool,
            limits: Limits) -> str:
  if timed_out:
    return f"timed out: no exit within {limits.timeout_s:g} s (wall)"
  if returncode == 0:
    return "passed"
  if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
    return f"CPU time limit: more than {limits.cpu_seconds} s"
  if returncode == -signal.SIGXFSZ or flooded or "[Errno 27] File too large" in stderr:
    return f"output limit: more than {limits.max_output_bytes} bytes written"
  lines = [line for line in stderr.splitlines() if line.strip()]
  last = lines[-1].strip() if lines else f"exit status {returncode}"
  if last.startswith("MemoryError"):
    return f"memory limit: more than {limits.max_memory_bytes} bytes ({last})"
  return f"failed: {last[:300]}"


def _head(path: str) -> str:
  with open(path, "rb") as f:
    return f.read(_TAIL).decode("utf-8", "replace")


def _tail(path: str) -> str:
  with open(path, "rb") as f:
    f.seek(max(0, os.path.getsize(path) - _TAIL))
    return f.read().decode("utf-8", "replace")


def default_workers() -> int:
  # Programs mostly wait on interpreter start-up, so more than the cores pay off.
  return max(4, min(16, 2 * (os.cpu_count() or 1)))


def run_programs(sources: Sequence[str], limits: Limits = Limits(),
                 workers: int | None = None) -> list[Result]:
  """`run_program` on each source, `workers` at a time; results in input order."""
  if not sources:
    return []
  with concurrent.futures.ThreadPoolExecutor(workers or default_workers()) as pool:
    return list(pool.map(lambda s: run_program(s, limits), sources))
