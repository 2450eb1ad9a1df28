"""JSON values: type names for messages, the one check of what a state may hold, and
type-strict equality."""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import chain
from math import copysign
from typing import Any, TypeAlias

from rstream.errors import InvalidJSON, InvalidJSONType

__all__ = ["MAX_DEPTH", "check_json", "copy_json", "copy_walk", "json_equal", "json_type"]

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
    # A stack of containers still to look into, as nodes (container, depth,
    # parent node, key in the parent); the value itself is item 0 of a wrapper
    # list with no parent. Scalars are checked where they are met, and a path is
    # only spelled out for an error, from the chain of parents.
    stack: list[_Node] = [([value], 0, None, None)]
    key: Any  # a str when is_dict, else an int
    while stack:
        node = stack.pop()
        container, depth = node[0], node[1]
        is_dict = type(container) is dict
        for key, item in container.items() if is_dict else enumerate(container):
            if is_dict and type(key) is not str:
                raise InvalidJSONType(
                    f"object keys must be strings, not {type(key).__name__}",
                    path=_path(node, path),
                )
            if is_dict and not key.isascii() and _bad_string(key):
                raise InvalidJSON("key holds a lone surrogate", path=f"{_path(node, path)}.{key!r}")
            kind = type(item)
            if kind is dict or kind is list:
                if depth >= max_depth:
                    raise InvalidJSON(
                        f"nested deeper than {max_depth} levels; flatten the state",
                        path=_child_path(node, key, path),
                    )
                stack.append((item, depth + 1, node, key))
            elif kind is str:
                if not item.isascii() and _bad_string(item):
                    raise InvalidJSON(
                        "string holds a lone surrogate (not valid UTF-8)",
                        path=_child_path(node, key, path),
                    )
            elif kind is float:
                if not math.isfinite(item):
                    raise InvalidJSON(
                        f"{item!r} is not a JSON number", path=_child_path(node, key, path)
                    )
            elif item is not None and kind is not bool and kind is not int:
                raise InvalidJSONType(
                    f"{json_type(item)} is not a JSON value (use dict, list, str, int, float, "
                    "bool or None)",
                    path=_child_path(node, key, path),
                )


_Node: TypeAlias = "tuple[Any, int, _Node | None, Any]"


def _path(node: _Node, root: str) -> str:
    """The JSON path of the container in ``node`` (``root`` for the value itself)."""
    parts: list[str] = []
    while node[2] is not None and node[2][2] is not None:
        parts.append(_step(node[2][0], node[3]))
        node = node[2]
    return root + "".join(reversed(parts))


def _child_path(node: _Node, key: Any, root: str) -> str:
    """The JSON path of item ``key`` of the container in ``node``."""
    return root if node[2] is None else _path(node, root) + _step(node[0], key)


def _step(container: Any, key: Any) -> str:
    return f".{key}" if type(container) is dict else f"[{key}]"


def json_equal(a: object, b: object) -> bool:
    """Whether ``a`` and ``b`` are the same JSON value, type for type, all the way down.

    Unlike ``==``, ``True`` is not ``1``, ``1`` is not ``1.0`` and ``-0.0`` is
    not ``0.0``: values that differ as JSON text differ here, so a change of
    type alone counts as a change. Object key order does not matter.
    Iterative, so values of any depth compare without a ``RecursionError``.
    """
    if a is b:
        return True
    same = _equal_by_value(a, b)
    if same is False:
        return False
    stack: list[tuple[Any, Any]] = [([a], [b])]
    pairs: Iterable[tuple[Any, Any]]
    while stack:
        x, y = stack.pop()
        if type(x) is dict:
            if not same and x.keys() != y.keys():
                return False
            pairs = x.items()
        elif same or len(x) == len(y):
            pairs = enumerate(x)
        else:
            return False
        for key, u in pairs:
            v = y[key]
            kind = type(u)
            if kind is not type(v):
                return False
            if kind is dict or kind is list:
                if u is not v:
                    stack.append((u, v))
            elif (not same and u != v) or (
                kind is float and not u and copysign(1.0, u) != copysign(1.0, v)
            ):
                return False
    return True


_SCALARS = frozenset((str, int, float, bool, type(None)))
_DICTS = frozenset((dict,))
_values_of_all = chain.from_iterable
_FEW = 8  # containers this small are walked item by item: cheaper than the C calls' setup


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value that shares no dict or list with it.

    Dicts and lists are copied at every depth; scalars (immutable) are shared,
    and so are objects of any other type, dict and list subclasses included.
    Exact: the copy holds the very same scalars, so ``True`` stays a bool,
    ``-0.0`` keeps its sign and big ints are untouched. Any depth. Safe from
    any thread, as long as nobody changes ``value`` meanwhile.
    """
    kind = type(value)
    if kind is not dict and kind is not list:
        return value
    return _copy_container(value, MAX_DEPTH)


def _copy_container(value: Any, depth: int) -> Any:
    """``copy_json`` of a dict or list, recursing at most ``depth`` levels."""
    if len(value) > _FEW:
        # Flat containers and containers of flat dicts copied by C calls: a quarter less CPU.
        items = value.values() if type(value) is dict else value
        kinds = set(map(type, items))
        if _SCALARS.issuperset(kinds):
            return value.copy()
        if kinds == _DICTS and _SCALARS.issuperset(
            map(type, _values_of_all(map(dict.values, items)))
        ):
            copies = map(dict.copy, items)
            return dict(zip(value, copies, strict=True)) if type(value) is dict else list(copies)
    if depth <= 0:
        return copy_walk(value)  # deeper than any state may be
    copy = value.copy()
    # Replacing the value of an existing key does not disturb iterating a dict.
    for key, item in copy.items() if type(copy) is dict else enumerate(copy):
        if type(item) is dict or type(item) is list:
            copy[key] = _copy_container(item, depth - 1)
    return copy


def copy_walk(value: Any) -> Any:
    """:func:`copy_json` without its fast paths, iterative (no depth limit): the
    plain walk, kept for values deeper than :data:`MAX_DEPTH` and as the
    benchmarks' baseline."""
    kind = type(value)
    if kind is not dict and kind is not list:
        return value
    top = value.copy()
    todo: list[Any] = [top]  # copies whose own children are still the originals
    while todo:
        container = todo.pop()
        # Replacing the value of an existing key does not disturb iterating a dict.
        for key, item in container.items() if type(container) is dict else enumerate(container):
            kind = type(item)
            if kind is dict or kind is list:
                item = item.copy()
                container[key] = item
                todo.append(item)
    return top


def _equal_by_value(a: object, b: object) -> bool | None:
    """``a == b``, or None when ``==`` gives up (values nested about a thousand deep).

    Equal as JSON implies equal by ``==``, which C checks quickly: when it says
    yes, only the types and the signs of zeros are left to check.
    """
    try:
        return a == b
    except RecursionError:
        return None
