"""Streaming reads and writes of Hugging Face weight files (safetensors and PyTorch `.bin`).

Reading yields one tensor at a time as a host numpy array in its stored dtype (bfloat16 as
`ml_dtypes.bfloat16`), so a caller that converts and keeps each tensor holds about one copy
of the model. Writing emits safetensors shards one at a time straight from the arrays'
memory, bfloat16 included, without passing through float32.

PyTorch `.bin` files are pickles; they are opened with `torch.load(weights_only=True)`,
which refuses anything but tensors and plain containers, and memory-mapped where the file
format allows. torch is needed only for them and is imported only then.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pickle
import queue
import threading
from collections.abc import Iterator

import ml_dtypes
import numpy as np

from fineline.errors import UserError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"

_ST_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16",
              np.dtype(ml_dtypes.bfloat16): "bfloat16", np.dtype(np.float64): "float64"}


_FROM_ST = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16), "F64": np.dtype(np.float64),
            "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64),
            "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
            "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_)}


def as_dtype(name: str | None):
  """numpy dtype for a name such as "bfloat16", "float32", "float16" (None stays None)."""
  if name is None:
    return None
  if name in ("bfloat16", "bf16"):
    return np.dtype(ml_dtypes.bfloat16)
  try:
    dtype = np.dtype({"fp32": "float32", "fp16": "float16"}.get(name, name))
  except TypeError:
    dtype = None
  if dtype not in _ST_DTYPES:
    raise UserError(f"unsupported dtype {name!r}; use float32, bfloat16 or float16")
  return dtype


def dtype_name(dtype) -> str:
  return _ST_DTYPES[np.dtype(dtype)]


class WeightFiles:
  """The weight files of an HF checkpoint directory and which tensor lives in which file."""

  def __init__(self, directory: str):
    self.directory = directory
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"{directory}: no such directory")
    names = set(os.listdir(directory))
    if SAFETENSORS_INDEX in names:
      self.kind, self.files = "safetensors", self._indexed(SAFETENSORS_INDEX)
    elif SAFETENSORS_SINGLE in names:
      self.kind, self.files = "safetensors", [SAFETENSORS_SINGLE]
    elif BIN_INDEX in names:
      self.kind, self.files = "bin", self._indexed(BIN_INDEX)
    elif BIN_SINGLE in names:
      self.kind, self.files = "bin", [BIN_SINGLE]
    else:
      raise FileNotFoundError(
          f"{directory}: no weights found (expected {SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX}, "
          f"{BIN_SINGLE} or {BIN_INDEX})")
    for fname in self.files:
      if not os.path.isfile(self.path(fname)):
        raise FileNotFoundError(f"{self.path(fname)}: weight file listed in the index is missing")

  def _indexed(self, index_name: str) -> list[str]:
    index_path = os.path.join(self.directory, index_name)
    try:
      with open(index_path) as f:
        self.weight_map = dict(json.load(f)["weight_map"])
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(f"{index_path}: unreadable index ({e})") from e
    return sorted(set(self.weight_map.values()))

  def path(self, fname: str) -> str:
    return os.path.join(self.directory, fname)

  def tensor_names(self) -> dict[str, str]:
    """name → file, read from the index or the safetensors headers (cheap); for an
    unindexed `.bin` the file is opened (memory-mapped) to list its tensors."""
    if getattr(self, "weight_map", None) is not None:
      return dict(self.weight_map)
    names = {}
    for fname in self.files:
      for name in (_safetensors_keys(self.path(fname)) if self.kind == "safetensors"
                   else _bin_state(self.path(fname)).keys()):
        names[name] = fname
    return names

  def tensor_specs(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]] | None:
    """name → (dtype, shape) from the safetensors headers, without reading any tensor;
    None for PyTorch `.bin` files, which tell only once loaded."""
    if self.kind != "safetensors":
      return None
    specs = {}
    for fname in self.files:
      specs.update(_safetensors_specs(self.path(fname)))
    return specs

  def iter_tensors(self, wanted=None) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) for every tensor, file by file; `wanted(name)` False skips a tensor
    without reading it."""
    for fname in self.files:
      path = self.path(fname)
      if self.kind == "safetensors":
        yield from _iter_safetensors(path, wanted)
      else:
        yield from _iter_bin(path, wanted)


def _safetensors_keys(path: str) -> list[str]:
  from safetensors import safe_open
  try:
    with safe_open(path, framework="numpy") as f:
      return list(f.keys())
  except Exception as e:  # SafetensorError, OSError: the message names the file either way
    raise UserError(f"{path}: unreadable safetensors file ({_brief(e)})") from e


def _safetensors_specs(path: str) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
  """name → (dtype, shape), in the file's order, read and validated by safetensors."""
  from safetensors import safe_open
  try:
    with safe_open(path, framework="numpy") as f:
      stored = {name: (f.get_slice(name).get_dtype(), f.get_slice(name).get_shape())
                for name in f.keys()}
  except Exception as e:
    raise UserError(f"{path}: unreadable safetensors file ({_brief(e)})") from e
  specs = {}
  for name, (st_dtype, shape) in stored.items():
    if st_dtype not in _FROM_ST:
      raise UserError(f"{path}: tensor {name!r} has unsupported dtype {st_dtype}")
    specs[name] = (_FROM_ST[st_dtype], tuple(shape))
  return specs


def _iter_safetensors(path, wanted):
  """safetensors' own reader validates the file; the bytes are then read with plain file
  reads at the header's offsets rather than through its memory map, whose touched pages
  would count towards the process's memory until the whole file is closed."""
  specs = _safetensors_specs(path)
  with open(path, "rb") as f:
    header_len = int.from_bytes(f.read(8), "little")
    offsets = {name: entry["data_offsets"] for name, entry in json.loads(f.read(header_len)).items()
               if name != "__metadata__"}
    for name, (dtype, shape) in specs.items():
      if wanted is not None and not wanted(name):
        continue
      begin, end = offsets[name]
      count = (end - begin) // dtype.itemsize
      array = np.fromfile(f, dtype=dtype, count=count, offset=8 + header_len + begin - f.tell())
      if array.size != count:
        raise UserError(f"{path}: tensor {name!r} is truncated")
      yield name, array.reshape(shape)


def _bin_state(path: str):
  try:
    import torch
  except ImportError as e:
    raise UserError(f"{path}: reading PyTorch .bin checkpoints needs torch "
                     "(pip install 'fineline[test]' or torch)") from e
  try:
    try:
      return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
      if "mmap" not in str(e):  # only the legacy (non-zip) format cannot be memory-mapped
        raise
      return torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    # torch's own message suggests weights_only=False, i.e. running the file's code: no.
    raise UserError(f"{path}: unreadable PyTorch checkpoint: not a torch.save file, or it "
                     "holds objects other than tensors, which are never unpickled") from e
  except Exception as e:
    raise UserError(f"{path}: unreadable PyTorch checkpoint ({_brief(e)})") from e


def _iter_bin(path, wanted):
  import torch
  state = _bin_state(path)
  if not isinstance(state, dict):
    raise UserError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
  for name in list(state):
    tensor = state.pop(name)
    if wanted is not None and not wanted(name):
      continue
    if not isinstance(tensor, torch.Tensor):
      raise UserError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor")
    yield name, torch_to_numpy(tensor)
  del state


def _brief(e: Exception) -> str:
  """The first line of a library's error: the command line reports one line."""
  lines = str(e).strip().splitlines()
  return f"{type(e).__name__}: {lines[0] if lines else ''}"


def torch_to_numpy(tensor) -> np.ndarray:
  """A host copy in the same dtype; bfloat16 goes through its bits, not through float32."""
  import torch
  tensor = tensor.detach().cpu().contiguous()
  if tensor.dtype == torch.bfloat16:
    return tensor.view(torch.int16).numpy().copy().view(ml_dtypes.bfloat16)
  return tensor.numpy().copy()


def reuse_freed_memory() -> None:
  """Has glibc keep freed tensors' memory for the next tensors instead of returning it.

  Every tensor a conversion reads, transposes or restores lands in a fresh buffer
  (tensorstore even reads each array through a temporary buffer of its size). Memory that
  is new to the process costs the kernel a page fault and a zeroed page per 4 KiB, which
  took a quarter of a conversion's CPU time. Tensors are freed as soon as they are
  converted and the next ones are of the same sizes, so reusing their memory keeps peak
  memory near one copy of the model:
    M_ARENA_MAX 1            reader, writer and tensorstore threads share one arena, so
                             what one thread frees serves another
    M_MMAP_THRESHOLD 256 MiB tensors come from that arena rather than from memory maps of
                             their own, which are unmapped on free
    M_TRIM_THRESHOLD 1 GiB   freed memory at the arena's top stays for reuse
  No effect off glibc.
  """
  import ctypes
  import ctypes.util
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt(-8, 1)  # M_ARENA_MAX
    libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
  except (OSError, AttributeError):
    pass


class ShardedSafetensorsWriter:
  """Writes tensors into `model-0000i-of-0000n.safetensors` shards of at most
  `max_shard_bytes` each (a single `model.safetensors` when one suffices) plus
  `model.safetensors.index.json`. Tensors are written shard by shard in the order given and
  dropped once on disk; the shard count comes from `planned_bytes`, so file names are final
  when written. Tensors are spread evenly over as many shards as `max_shard_bytes` needs,
  so the first shards are complete, and written in the background, early in an export."""

  def __init__(self, out_dir: str, planned: list[tuple[str, int]], max_shard_bytes: int):
    self.out_dir = out_dir
    self.groups = _fill_shards(planned, max_shard_bytes)
    total = sum(nbytes for _, nbytes in planned)
    for step in range(20):  # the smallest even limit that needs no more shards
      limit = min(max_shard_bytes, -(-total * (20 + step) // (20 * len(self.groups))))
      even = _fill_shards(planned, limit)
      if len(even) == len(self.groups):
        self.groups = even
        break
    n = len(self.groups)
    self.file_of = {name: (SAFETENSORS_SINGLE if n == 1 else
                           f"model-{i + 1:05d}-of-{n:05d}.safetensors")
                    for i, group in enumerate(self.groups) for name in group}
    self.pending: dict[str, np.ndarray] = {}
    self.written: set[str] = set()
    self.total_bytes = 0
    self._next_group = 0
    # One shard is written in the background while the caller converts the next one
    # (serialize_file releases the GIL); at most one is in flight, so memory stays bounded.
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="shard-writer")
    self._in_flight: concurrent.futures.Future | None = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    try:
      if self._in_flight is not None and exc[0] is not None:
        concurrent.futures.wait([self._in_flight])  # never leave a write into a removed dir
      else:
        self._wait()
    finally:
      self._executor.shutdown()

  def add(self, name: str, array: np.ndarray) -> None:
    if name not in self.file_of:
      raise ValueError(f"tensor {name!r} was not planned for this export")
    self.pending[name] = np.ascontiguousarray(array)
    while (self._next_group < len(self.groups)
           and all(n in self.pending for n in self.groups[self._next_group])):
      group = self.groups[self._next_group]
      self._next_group += 1
      self._wait()
      arrays = {n: self.pending.pop(n) for n in group}
      self._in_flight = self._executor.submit(self._write, group, arrays)

  def _wait(self) -> None:
    future, self._in_flight = self._in_flight, None
    if future is not None:
      future.result()

  def _write(self, group: list[str], arrays: dict[str, np.ndarray]) -> None:
    from safetensors import TensorSpec, serialize_file
    specs = {name: TensorSpec(dtype=dtype_name(a.dtype), shape=list(a.shape),
                              data_ptr=a.ctypes.data, data_len=a.nbytes)
             for name, a in arrays.items()}
    # `arrays` keeps every buffer alive while the serializer reads from the raw pointers.
    serialize_file(specs, os.path.join(self.out_dir, self.file_of[group[0]]),
                   metadata={"format": "pt"})
    self.total_bytes += sum(a.nbytes for a in arrays.values())
    self.written.update(group)

  def close(self) -> None:
    self._wait()
    missing = [name for name in self.file_of if name not in self.written]
    if missing:
      raise ValueError(f"export incomplete: tensors never written: {missing[:5]}")
    if len(self.groups) > 1:
      index = {"metadata": {"total_size": self.total_bytes},
               "weight_map": dict(sorted(self.file_of.items()))}
      with open(os.path.join(self.out_dir, SAFETENSORS_INDEX), "w") as f:
        json.dump(index, f, indent=2)


def _fill_shards(planned: list[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
  """Names in order, a new shard whenever the next tensor would overflow this one."""
  groups: list[list[str]] = [[]]
  size = 0
  for name, nbytes in planned:
    if groups[-1] and size + nbytes > max_shard_bytes:
      groups.append([])
      size = 0
    groups[-1].append(name)
    size += nbytes
  return groups


def prefetched(items: Iterator, depth: int = 2) -> Iterator:
  """Runs `items` in a background thread up to `depth` ahead, so file reads (which release
  the GIL) overlap with the caller's work on earlier items. Errors surface in the caller;
  stopping early stops the thread."""
  slots: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()
  done = object()

  def put(entry) -> bool:
    while not stop.is_set():
      try:
        slots.put(entry, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in items:
        if not put((item, None)):
          return
      put((done, None))
    except BaseException as e:  # handed to the consumer, which re-raises it
      put((done, e))

  thread = threading.Thread(target=produce, name="weights-prefetch", daemon=True)
  thread.start()
  try:
    while True:
      item, error = slots.get()
      if error is not None:
        raise error
      if item is done:
        return
      yield item
  finally:
    stop.set()
    thread.join()
