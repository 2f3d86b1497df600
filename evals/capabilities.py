"""Capability groups and chance levels for registering tasks: the facts live in
`fineline.capabilities` (shared with the analysis, which needs no JAX); this module keeps
the names `evals` code already uses."""

from __future__ import annotations

from fineline.capabilities import (  # pylint: disable=unused-import
    CODE, COMMONSENSE, EXAMINATION, GROUPS, LANGUAGE_MODELING, MATH, READING, TASKS,
    WORLD_KNOWLEDGE, capability, chance, lookup)
