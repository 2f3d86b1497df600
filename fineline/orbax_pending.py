"""`PendingArray`: a checkpoint leaf written as soon as another thread produces it.

The one place fineline reaches into Orbax's serialization: `PendingArrayHandler` overrides
`NumpyHandler._open_and_write(value, tspec, ts_context)`, the per-leaf write coroutine,
which Orbax has no public hook for. pyproject.toml pins orbax-checkpoint to the minor
version this was written against, and tests/test_orbax_pending.py checks the hook's shape
first, so an upgrade that changes it fails there by name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import numpy as np
import orbax.checkpoint as ocp

from fineline.errors import UserError

HOOK = "_open_and_write"  # the overridden NumpyHandler coroutine


class PendingArray:
  """A params leaf whose numpy array another thread is still producing (reading and
  converting weights): `save_params` starts writing at once and writes each pending
  leaf as soon as `set` hands over its array, so producing and writing overlap, and drops
  the array once written, so the model need not be in memory all at once. The checkpoint
  is the same as one saved from numpy arrays. The producer must `set` or `fail` every
  pending leaf, or the save never completes; a PendingArray is saved once."""

  def __init__(self, shape, dtype):
    self.shape, self.dtype = tuple(shape), np.dtype(dtype)
    self.ndim, self.size = len(self.shape), int(np.prod(self.shape))
    self._future: concurrent.futures.Future = concurrent.futures.Future()

  def set(self, array: np.ndarray) -> None:
    if array.shape != self.shape or array.dtype != self.dtype:
      raise UserError(f"pending {self.shape} {self.dtype} array set to "
                      f"{array.shape} {array.dtype}")
    self._future.set_result(array)

  def fail(self, error: BaseException) -> None:
    """Fails a leaf still to come; a leaf already written (its future dropped) stays."""
    future = self._future
    if future is not None and not future.done():
      future.set_exception(error)


class PendingArrayHandler(ocp.type_handlers.NumpyHandler):
  """Writes a PendingArray exactly as NumpyHandler writes the array it becomes (same
  typestr, spec and metadata). Orbax writes all leaves concurrently, one `_open_and_write`
  each, so one leaf waiting here holds up none of the others."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._waiting = self._writing = 0

  async def _open_and_write(self, value, tspec, ts_context):
    if not isinstance(value, PendingArray):
      return await super()._open_and_write(value, tspec, ts_context)
    self._waiting += 1
    try:
      array = await _arrival(value._future)  # pylint: disable=protected-access
    except BaseException:
      # Orbax abandons the save at the first error; let the writes under way end first,
      # so none outlives the save (the producer fails all leaves once one fails).
      self._waiting -= 1
      while self._waiting or self._writing:
        await asyncio.sleep(0.01)
      raise
    self._waiting -= 1
    # Only this write holds the array now: once written, its memory serves later leaves,
    # so fresh pages (which the kernel must fault in and zero) are rarely needed.
    value._future = None  # pylint: disable=protected-access
    self._writing += 1
    try:
      await super()._open_and_write(array, tspec, ts_context)
    finally:
      self._writing -= 1


async def _arrival(future: concurrent.futures.Future):
  """`future`'s result, awaited without blocking the loop. Unlike asyncio.wrap_future,
  a result that comes after a failed save has closed the loop is simply dropped."""
  loop = asyncio.get_running_loop()
  arrived = loop.create_future()

  def settle():
    if not arrived.done():
      arrived.set_result(None)

  def wake(_):
    try:
      loop.call_soon_threadsafe(settle)
    except RuntimeError:  # loop closed: nobody waits any more
      pass

  future.add_done_callback(wake)
  await arrived
  return future.result()


def handler_registry():
  """Orbax's type handlers with PendingArray added and host numpy arrays not deep-copied
  before a synchronous save (which would hold a second copy of the model while written)."""
  th = ocp.type_handlers
  return th.create_type_handler_registry(*[
      (ty, th.NumpyHandler(deepcopy_host_arrays=False) if ty is np.ndarray
       else th.get_type_handler(ty)) for ty in th.supported_types()],
      (PendingArray, PendingArrayHandler(deepcopy_host_arrays=False)))
