"""JSON values: type names for messages, the one check of what a state may hold, and
type-strict equality."""

from __future__ import annotations

import math
from typing import Any

from rstream.errors import InvalidJSON, InvalidJSONType

__all__ = ["MAX_DEPTH", "check_json", "json_equal", "json_type"]

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a state may have (the top object is depth 1)."""


def json_type(value: object) -> str:
    """``"null"``, ``"a boolean"``, ``"a number"``, ``"a string"``, ``"an array"``,
    ``"an object"``, or the Python type name of anything that is not JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _bad_string(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_json(value: object, *, max_depth: int = MAX_DEPTH, path: str = "$") -> None:
    """Check that ``value`` is plain JSON that every reader and writer can take.

    Allowed: ``dict`` with ``str`` keys, ``list``, ``str``, ``int``, finite
    ``float``, ``bool`` and ``None``, nested at most ``max_depth`` deep. Raises
    :class:`~rstream.errors.InvalidJSONType` (a ``TypeError``) for anything
    else, and :class:`~rstream.errors.InvalidJSON` (a ``ValueError``) for NaN,
    infinities, lone surrogates in strings or keys, and nesting too deep; both
    name the JSON path. Iterative, so no input reaches a ``RecursionError``.
    """
    stack: list[tuple[object, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        kind = type(item)
        if kind is dict or kind is list:
            if depth > max_depth:
                raise InvalidJSON(
                    f"nested deeper than {max_depth} levels; flatten the state", path=where
                )
            if kind is dict:
                for key, child in item.items():  # type: ignore[attr-defined]
                    if type(key) is not str:
                        raise InvalidJSONType(
                            f"object keys must be strings, not {type(key).__name__}", path=where
                        )
                    if _bad_string(key):
                        raise InvalidJSON("key holds a lone surrogate", path=f"{where}.{key!r}")
                    stack.append((child, f"{where}.{key}", depth + 1))
            else:
                for index, child in enumerate(item):  # type: ignore[arg-type]
                    stack.append((child, f"{where}[{index}]", depth + 1))
        elif kind is str:
            if _bad_string(item):  # type: ignore[arg-type]
                raise InvalidJSON("string holds a lone surrogate (not valid UTF-8)", path=where)
        elif kind is float:
            if not math.isfinite(item):  # type: ignore[arg-type]
                raise InvalidJSON(f"{item!r} is not a JSON number", path=where)
        elif item is None or kind is bool or kind is int:
            continue
        else:
            raise InvalidJSONType(
                f"{json_type(item)} is not a JSON value (use dict, list, str, int, float, "
                "bool or None)",
                path=where,
            )


def json_equal(a: object, b: object) -> bool:
    """Whether ``a`` and ``b`` are the same JSON value, type for type, all the way down.

    Unlike ``==``, ``True`` is not ``1``, ``1`` is not ``1.0`` and ``-0.0`` is
    not ``0.0``: values that differ as JSON text differ here, so a change of
    type alone counts as a change. Object key order does not matter.
    Iterative, so values of any depth compare without a ``RecursionError``.
    """
    stack: list[tuple[Any, Any]] = [(a, b)]
    while stack:
        x, y = stack.pop()
        if x is y:
            continue
        kind = type(x)
        if kind is not type(y):
            return False
        if kind is dict:
            if x.keys() != y.keys():
                return False
            stack.extend((value, y[key]) for key, value in x.items())
        elif kind is list:
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif x != y or (kind is float and math.copysign(1.0, x) != math.copysign(1.0, y)):
            return False
    return True
