"""Mutations: build them from two states, apply them, and undo them.

See :mod:`rstream.core.mutation` and ``docs/mutation.rst`` for the format.
"""

from __future__ import annotations

from rstream.core.mutation import (
    JSONObject,
    Mutation,
    apply_mutation,
    apply_mutation_with_inverse,
    build_mutation,
    copy_json,
)
from rstream.errors import MutationError

__all__ = [
    "JSONObject",
    "Mutation",
    "MutationError",
    "apply_mutation",
    "apply_mutation_with_inverse",
    "build_mutation",
    "copy_json",
]
