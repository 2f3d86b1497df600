"""What gin's errors say, read from their text: the one place that depends on it.

gin-config 0.5 raises plain RuntimeError / ValueError whose only account of what went
wrong is the message. `ginconf` turns two of them into errors that say what to set; these
readers find the names in gin's wording. tests/test_gin_errors.py provokes both errors
with the installed gin, so a release that rewords them fails there first; pyproject.toml
pins gin-config to the 0.5 series.
"""

from __future__ import annotations

import re

_MISSING = re.compile(r"Required bindings for `([\w./]+)` not provided in config: \[(.*)\]")
_UNKNOWN = re.compile(r"Configurable '([\w./]+)' doesn't have a parameter named '(\w+)'")


def missing_required(error: Exception) -> tuple[str, list[str]] | None:
  """(configurable, [parameter, …]) of gin's error for unbound `gin.REQUIRED` parameters."""
  m = _MISSING.search(str(error))
  if not m:
    return None
  return m.group(1), [n.strip(" '\"") for n in m.group(2).split(",")]


def unknown_parameter(error: Exception | str) -> tuple[str, str] | None:
  """(configurable, parameter) of gin's error for a binding of a parameter that does not
  exist."""
  m = _UNKNOWN.search(str(error))
  return (m.group(1), m.group(2)) if m else None
