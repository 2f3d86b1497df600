"""The one Orbax internal fineline relies on: fails here, by name, if an upgrade changes it."""

import inspect

import orbax.checkpoint as ocp

from fineline import orbax_pending


def test_numpy_handler_still_writes_each_leaf_through_the_overridden_coroutine():
  hook = getattr(ocp.type_handlers.NumpyHandler, orbax_pending.HOOK, None)
  assert hook is not None, f"NumpyHandler.{orbax_pending.HOOK} is gone: rework PendingArrayHandler"
  assert inspect.iscoroutinefunction(hook)
  assert list(inspect.signature(hook).parameters) == ["self", "value", "tspec", "ts_context"]
  # tests/test_checkpointing.py round-trips PendingArray saves through it.
