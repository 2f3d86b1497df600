"""Runs one untrusted Python program inside the sandbox process (`sandbox.py` starts it).

  python -I -B sandbox_guard.py '{"program": …, "workdir": …, "cpu_seconds": …, …}'

Standalone on purpose (no fineline import): it runs as root just long enough to read the
program, set the resource limits and drop to the sandbox's own unprivileged user, then
installs an audit hook and executes the program as `__main__` in this process. The hook
refuses what a benchmark solution never needs and an escape does: creating processes,
signalling others, sockets, loading native code, and writing or deleting anything outside
the work directory. The kernel's limits stand behind it should the hook be bypassed.
"""

import json
import os
import resource
import sys

_DENIED = frozenset((
    "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn", "os.system",
    "os.startfile", "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
    "socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo",
    "socket.sendto", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
    "os.setuid", "os.setgid", "os.chroot", "pty.spawn",
))
# Events whose path arguments must lie inside the work directory.
_PATH_EVENTS = frozenset((
    "os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.symlink", "os.link", "os.chmod",
    "os.chown", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile",
    "shutil.move", "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod", "os.setxattr",
    "os.removexattr",
))
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC = 0x2, 0x4, 0x1000, 0x4000


def _mount(source, target, fstype, flags, data):
  import ctypes  # pylint: disable=import-outside-toplevel
  libc = ctypes.CDLL(None, use_errno=True)
  enc = lambda x: None if x is None else os.fsencode(x)
  if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
    errno = ctypes.get_errno()
    raise OSError(errno, f"sandbox: mount {source} on {target}: {os.strerror(errno)}")


def _private_dirs(dirs, keep):
  """In this process's own mount namespace: a fresh tmpfs over each world-writable
  directory, so whatever lands there vanishes with the namespace; `keep` (the sandbox's
  directory, inside one of them) is bound back at its own path."""
  for directory in dirs:
    if not os.path.isdir(directory):
      continue
    inside = keep.startswith(directory.rstrip(os.sep) + os.sep)
    fd = os.open(keep, os.O_PATH | os.O_DIRECTORY) if inside else None
    _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=64m,mode=1777")
    if inside:
      os.makedirs(keep)
      _mount(f"/proc/self/fd/{fd}", keep, None, _MS_BIND | _MS_REC, None)
      os.close(fd)


def _limit(kind, value):
  resource.setrlimit(kind, (value, value))


def _inside(path, workdir) -> bool:
  if isinstance(path, int):  # an already open descriptor
    return True
  real = os.path.realpath(os.fsdecode(path))
  return real == workdir or real.startswith(workdir + os.sep)


def _hook(workdir):
  def audit(event, args):
    # Loading a library (numpy's import does) is harmless; reaching into it is not.
    if event in _DENIED or (event.startswith("ctypes.") and event != "ctypes.dlopen"):
      raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
      path, mode, flags = args
      writing = (mode is not None and any(c in mode for c in "wax+")) or (
          flags is not None and flags & _WRITE_FLAGS)
      if writing and path is not None and not _inside(path, workdir):
        raise PermissionError(f"sandbox: writing {path!r} outside the work directory")
    elif event in _PATH_EVENTS:
      for arg in args:
        if isinstance(arg, (str, bytes, os.PathLike)) and not _inside(arg, workdir):
          raise PermissionError(f"sandbox: {event} on {arg!r} outside the work directory")
  return audit


def main(spec):
  workdir = os.path.realpath(spec["workdir"])
  with open(spec["program"], encoding="utf-8") as f:
    source = f.read()
  if spec.get("private_dirs"):
    _private_dirs(spec["private_dirs"], os.path.dirname(workdir))
    # The work dir itself a small tmpfs: many files of the allowed size cannot fill a disk.
    owner = spec.get("uid") or 0
    _mount("tmpfs", workdir, "tmpfs", _MS_NOSUID | _MS_NODEV,
           f"size={spec['max_work_dir_bytes']},mode=0700,uid={owner},gid={owner}")
  os.chdir(workdir)
  _limit(resource.RLIMIT_CORE, 0)
  _limit(resource.RLIMIT_FSIZE, spec["max_file_bytes"])
  _limit(resource.RLIMIT_NOFILE, spec["max_open_files"])
  _limit(resource.RLIMIT_AS, spec["max_memory_bytes"])
  # The soft CPU limit sends SIGXCPU; the hard one a second later, SIGKILL.
  resource.setrlimit(resource.RLIMIT_CPU, (spec["cpu_seconds"], spec["cpu_seconds"] + 1))
  uid = spec.get("uid")
  if uid is not None:
    # A user id of its own: the process limit counts only this program's processes, and
    # it may signal no other process nor write where only root may.
    _limit(resource.RLIMIT_NPROC, spec["max_processes"])
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
  sys.argv = [os.path.join(workdir, "program.py")]
  sys.path[0] = workdir
  code = compile(source, "program.py", "exec")
  if spec.get("audit_hook", True):
    sys.addaudithook(_hook(workdir))
  exec(code, {"__name__": "__main__", "__builtins__": __builtins__})  # pylint: disable=exec-used


if __name__ == "__main__":
  main(json.loads(sys.argv[1]))
