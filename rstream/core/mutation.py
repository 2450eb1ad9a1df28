"""Mutations: what changed between two states, in the Go library's "mutate" format.

A mutation is a JSON object that mirrors the state's shape (see
``docs/mutation.rst``). The top level always names fields of the state. Below
it, a value is one of:

* a non-object (number, string, bool, null, array): set the field to it;
* an *operator object*, whose keys all start with ``$``, applied in the fixed
  order ``$set``, ``$push``, ``$pull``, ``$truncate``, ``$mutateIdx``,
  ``$unset`` (unknown operators are ignored);
* any other object: a mutation of the sub-object (``{}`` changes nothing).

:func:`apply_mutation` never changes its inputs. It copies only the objects and
arrays on the changed paths, so a result shares its unchanged subtrees with the
old state (and the values of ``$set``/``$push`` with the mutation): treat
states as read-only, or :func:`copy_json` them before changing them in place.

Errors in a mutation raise :class:`~rstream.MutationError` with the JSON path of
the problem: ``$`` is the state, ``.name`` a field whose name is an identifier,
``["any name"]`` any other field (JSON-quoted) and ``[3]`` an array item, as in
``$.tasks[3].name`` or ``$.sensors["temp-1"]``. A mutation that recurses
into an object or array deeper than :data:`~rstream.core.jsontype.MAX_DEPTH`
is one of them: recursion is bounded, so no input reaches a ``RecursionError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from math import copysign
from typing import Any, NoReturn, TypeAlias

from rstream.core.jsontype import MAX_DEPTH, copy_json, json_equal, json_type
from rstream.errors import MutationError

__all__ = [
    "MAX_MUTATION_DEPTH",
    "JSONObject",
    "Mutation",
    "apply_mutation",
    "apply_mutation_with_inverse",
    "build_mutation",
    "copy_json",
]

JSONObject: TypeAlias = "dict[str, Any]"
Mutation: TypeAlias = "dict[str, Any]"

MAX_MUTATION_DEPTH = 2 * MAX_DEPTH + 1
"""Deepest nesting a mutation for a state within ``MAX_DEPTH`` needs: each level of
the state costs at most two (``{"$mutateIdx": {"3": ...}}``), ``$set`` one more."""

_MISSING: Any = object()  # a key that is absent (or removed by $unset)
_SAME: Any = object()  # build: nothing to change
_EMPTY: dict[str, Any] = {}  # recursion into a missing or null value starts here; never changed


# -- apply ---------------------------------------------------------------------


class _InvalidMutationError(Exception):
    """An invalid mutation; ``parts`` collects the path innermost first while unwinding."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parts: list[str | int] = []


def apply_mutation(state: JSONObject, mutation: Mutation) -> JSONObject:
    """The state after ``mutation``; neither argument is changed.

    The result shares unchanged subtrees with ``state`` and ``mutation`` (see
    the module docs). Raises :class:`~rstream.MutationError` if the mutation is
    invalid for this state.
    """
    _check_objects(state, mutation)
    try:
        return _apply_fields(state, mutation, None, 1)
    except _InvalidMutationError as fail:
        raise MutationError(fail.reason, _format_path(fail.parts)) from None


def apply_mutation_with_inverse(
    state: JSONObject, mutation: Mutation
) -> tuple[JSONObject, Mutation]:
    """The state after ``mutation`` and the mutation that undoes it.

    ``apply_mutation(new_state, inverse) == state`` always. The inverse costs
    O(size of ``mutation``): for every field the mutation sets or operates on,
    it holds ``{"$set": <old value>}`` (the old value itself, shared) or
    ``{"$unset": true}`` when the field was missing.
    """
    _check_objects(state, mutation)
    inverse: dict[str, Any] = {}
    try:
        return _apply_fields(state, mutation, inverse, 1), inverse
    except _InvalidMutationError as fail:
        raise MutationError(fail.reason, _format_path(fail.parts)) from None


def _check_objects(state: object, mutation: object) -> None:
    if type(state) is not dict:
        raise MutationError(f"the state must be a JSON object, not {_json_type(state)}", "$")
    if type(mutation) is not dict:
        raise MutationError(f"a mutation must be a JSON object, not {_json_type(mutation)}", "$")


def _undo(prev: Any) -> dict[str, Any]:
    """The inverse of any change to a field whose old value was ``prev``."""
    return {"$unset": True} if prev is _MISSING else {"$set": prev}


def _check_depth(depth: int) -> None:
    """Refuse to recurse into a container deeper than any state may be (see MAX_DEPTH)."""
    if depth > MAX_DEPTH:
        _fail(f"mutation is nested too deeply: a state has at most {MAX_DEPTH} levels")


def _apply_fields(
    old: dict[str, Any], mutation: dict[str, Any], inverse: dict[str, Any] | None, depth: int
) -> dict[str, Any]:
    """Apply a field mutation to the object ``old``, at ``depth`` (the state is 1);
    fills ``inverse`` when given."""
    _check_depth(depth)
    new = old.copy()
    for key, change in mutation.items():
        if depth > 1 and type(key) is str and key[:1] == "$":
            _fail(f"mutation object mixes operators ({key}) with fields")
        if type(change) is not dict:
            if inverse is not None:
                inverse[key] = _undo(old.get(key, _MISSING))
            new[key] = change
            continue
        if not change:
            continue
        prev = old.get(key, _MISSING)
        try:
            if inverse is not None and type(prev) is dict and not _is_operators(change):
                sub: dict[str, Any] = {}
                value = _apply_fields(prev, change, sub, depth + 1)
                if sub:
                    inverse[key] = sub
            else:
                value = _apply_nested(prev, change, depth + 1)
                if inverse is not None:
                    inverse[key] = _undo(prev)
        except _InvalidMutationError as fail:
            fail.parts.append(key)
            raise
        if value is _MISSING:
            new.pop(key, None)
        else:
            new[key] = value
    return new


def _is_operators(change: dict[Any, Any]) -> bool:
    """Whether a non-empty mutation object is an operator object (its first key says)."""
    first = next(iter(change))
    return type(first) is str and first[:1] == "$"


def _apply_nested(prev: Any, change: dict[Any, Any], depth: int) -> Any:
    """The new value of a field or item at ``depth`` whose mutation is the non-empty
    object ``change``."""
    first = next(iter(change))
    if type(first) is str and first[:1] == "$":
        return _apply_operators(prev, change, depth)
    if type(prev) is dict:
        return _apply_fields(prev, change, None, depth)
    if prev is None or prev is _MISSING:
        return _apply_fields(_EMPTY, change, None, depth)
    _fail(f"cannot apply a field mutation to {_json_type(prev)}")


def _apply_operators(prev: Any, ops: dict[Any, Any], depth: int) -> Any:
    """The new value of ``prev`` after the operator object ``ops``, at ``depth``:
    each operator present, in the fixed order of :data:`_OPERATORS`."""
    for key in ops:
        if type(key) is not str or key[:1] != "$":
            _fail(f"mutation object mixes operators ({next(iter(ops))}) with fields ({key!r})")
    value = prev
    for name, operator in _OPERATORS:
        arg = ops.get(name, _MISSING)
        if arg is not _MISSING:
            value = operator(value, arg, depth)
    return value


def _set(value: Any, arg: Any, depth: int) -> Any:
    return arg


def _push(value: Any, arg: Any, depth: int) -> Any:
    if type(arg) is not list:
        _fail(f"$push takes an array, not {_json_type(arg)}")
    return value + arg if type(value) is list else arg


def _pull(value: Any, arg: Any, depth: int) -> Any:
    if type(arg) is not list:
        _fail(f"$pull takes an array of indexes, not {_json_type(arg)}")
    for index in arg:
        if type(index) is not int or index < 0:
            _fail(f"$pull index {index!r} is not a non-negative integer")
    if not arg or value is None or value is _MISSING:
        return value
    if type(value) is not list:
        _fail(f"$pull needs an array, found {_json_type(value)}")
    size = len(value)
    if max(arg) >= size:
        _fail(f"$pull index {max(arg)} is out of range for {size} item(s)")
    drop = set(arg)
    return [item for i, item in enumerate(value) if i not in drop]


def _truncate(value: Any, arg: Any, depth: int) -> Any:
    if type(arg) is not int or arg < 0:
        _fail(f"$truncate takes a non-negative integer, not {arg!r}")
    if value is None or value is _MISSING:
        return value
    if type(value) is not list:
        _fail(f"$truncate needs an array, found {_json_type(value)}")
    return value[:arg] if arg < len(value) else value


def _mutate_idx(value: Any, arg: Any, depth: int) -> Any:
    if type(arg) is not dict:
        _fail(f"$mutateIdx takes an object of index to mutation, not {_json_type(arg)}")
    return _apply_indexes(value, arg, depth) if arg else value


def _unset(value: Any, arg: Any, depth: int) -> Any:
    # null deletes too, as in the Go and JavaScript implementations.
    if arg is None or arg is True:
        return _MISSING
    if arg is not False:
        _fail(f"$unset takes true or null (false does nothing), not {_json_type(arg)}")
    return value


_OPERATORS: tuple[tuple[str, Callable[[Any, Any, int], Any]], ...] = (
    ("$set", _set),
    ("$push", _push),
    ("$pull", _pull),
    ("$truncate", _truncate),
    ("$mutateIdx", _mutate_idx),
    ("$unset", _unset),
)
"""The operators in the order they apply, whatever the order of the keys:
``(key, function(value, argument, depth) -> new value)``."""


def _apply_indexes(items: Any, changes: dict[Any, Any], depth: int) -> list[Any]:
    """``$mutateIdx`` on ``items``, an array at ``depth``."""
    if type(items) is not list:
        _fail(f"$mutateIdx needs an array, found {_json_type(items)}")
    _check_depth(depth)
    size = len(items)
    out = items.copy()
    for key, change in changes.items():
        index = _parse_index(key)
        if index < 0 or index >= size:
            _fail(f"$mutateIdx index {key!r} is out of range for {size} item(s)")
        if type(change) is not dict:
            out[index] = change
            continue
        if not change:
            continue
        try:
            value = _apply_nested(out[index], change, depth + 1)
            if value is _MISSING:
                _fail("$unset cannot remove an array item; use $pull")
        except _InvalidMutationError as fail:
            fail.parts.append(index)
            raise
        out[index] = value
    return out


def _parse_index(key: object) -> int:
    """A ``$mutateIdx`` key: a decimal string such as ``"12"`` (or an int from Python)."""
    if type(key) is int:
        return key
    if type(key) is str and key.isascii() and key.isdigit() and (key == "0" or key[0] != "0"):
        return int(key) if len(key) < 19 else -1  # -1: out of range for any array
    _fail(f"$mutateIdx key {key!r} is not a decimal array index")


def _fail(reason: str) -> NoReturn:
    raise _InvalidMutationError(reason)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _format_path(parts: list[str | int]) -> str:
    """``$.tasks[3].name`` from parts collected innermost first."""
    out = ["$"]
    for part in reversed(parts):
        if type(part) is int:
            out.append(f"[{part}]")
        elif type(part) is str and _IDENTIFIER.match(part):
            out.append("." + part)
        else:
            out.append(f"[{json.dumps(str(part), ensure_ascii=False)}]")
    return "".join(out)


def _json_type(value: object) -> str:
    return "a missing value" if value is _MISSING else json_type(value)


# -- build ---------------------------------------------------------------------


def build_mutation(old: JSONObject, new: JSONObject) -> Mutation:
    """The mutation that turns ``old`` into ``new``: ``apply_mutation(old, m) == new``.

    The result is exact about types (``True`` replaces ``1``, ``1.0`` replaces
    ``1``, ``-0.0`` replaces ``0.0``), is ``{}`` exactly when the states are
    :func:`~rstream.core.jsontype.json_equal`, and may share subtrees with
    ``new``. A new or retyped object is sent with ``$set``; arrays are diffed
    item by item (see ``docs/mutation.rst``). Objects and arrays deeper than
    :data:`~rstream.core.jsontype.MAX_DEPTH` are not diffed but replaced whole,
    so the law holds at any depth and no input reaches a ``RecursionError``.
    """
    if type(old) is not dict or type(new) is not dict:
        raise TypeError(
            f"build_mutation takes two JSON objects (dicts), not "
            f"{type(old).__name__} and {type(new).__name__}"
        )
    return _diff_fields(old, new, 1)


def _diff_fields(old: dict[str, Any], new: dict[str, Any], depth: int) -> dict[str, Any]:
    """The field mutation from ``old`` to ``new``, objects at ``depth`` (the state is 1)."""
    out: dict[str, Any] = {}
    kept = 0
    inner = depth + 1
    for key, after in new.items():
        before = old.get(key, _MISSING)
        if before is after:
            kept += 1
            continue
        if before is not _MISSING:
            kept += 1
        change = _diff_value(before, after, inner)
        if change is not _SAME:
            out[key] = change
    if kept != len(old):
        for key in old:
            if key not in new:
                out[key] = {"$unset": True}
    return out


def _diff_value(before: Any, after: Any, depth: int) -> Any:
    """The change from ``before`` to ``after``, a value at ``depth``; _SAME for none."""
    kind = type(after)
    if kind is dict:
        if type(before) is not dict:
            return {"$set": after}
        if depth > MAX_DEPTH:  # too deep to recurse into (apply refuses it too)
            return _SAME if json_equal(before, after) else {"$set": after}
        change = _diff_fields(before, after, depth)
        if not change:
            return _SAME
        for key in change:
            if type(key) is str and key[:1] == "$":
                # A plain object with a "$" key would read as operators.
                return {"$set": after}
        return change
    if kind is list:
        if type(before) is not list:
            return after
        if depth > MAX_DEPTH:
            return _SAME if json_equal(before, after) else after
        return _diff_list(before, after, depth)
    if (
        type(before) is kind
        and before == after
        # 0.0 == -0.0, but they are different JSON.
        and (kind is not float or before or copysign(1.0, before) == copysign(1.0, after))
    ):
        return _SAME
    return after


def _diff_list(before: list[Any], after: list[Any], depth: int) -> Any:
    """The change from array ``before`` to array ``after`` at ``depth``; _SAME for none."""
    old_size = len(before)
    new_size = len(after)
    if not old_size or not new_size:
        return after if old_size != new_size else _SAME
    common = min(old_size, new_size)
    changes: dict[str, Any] = {}
    replaced = 0
    inner = depth + 1
    for i in range(common):
        item_before = before[i]
        item_after = after[i]
        if item_before is item_after:
            continue
        change = _diff_value(item_before, item_after, inner)
        if change is not _SAME:
            changes[str(i)] = change
            if type(change) is not dict or "$set" in change:
                replaced += 1
    if replaced * 2 > common:
        # Most kept items are replaced outright: the whole array is smaller.
        return after
    out: dict[str, Any] = {}
    if new_size > old_size:
        out["$push"] = after[old_size:]
    elif new_size < old_size:
        out["$truncate"] = new_size
    if changes:
        out["$mutateIdx"] = changes
    return out if out else _SAME
