"""A reference model of the mutation format and the writer, for property tests.

Deliberately simple and slow: no fast paths, no sharing, no caches, every rule
written out once as ``docs/mutation.rst`` and ``docs/core.rst`` state it.
``tests/test_reference_model.py`` checks the real implementation against it.

- :func:`apply` applies a mutation (raising :class:`Invalid` where the real one
  must raise ``MutationError``);
- :func:`build` builds the plainest correct mutation: ``$set`` every changed
  field, ``$unset`` every removed one;
- :class:`Writer` keeps the list of entries, with the whole state after each,
  that the writer's rules produce;
- :func:`rate_json` is ``RateConfig.to_json`` spelled out.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from rstream.core.jsontype import MAX_DEPTH, json_equal

MISSING: Any = object()  # a field that is not there
OPERATORS = ("$set", "$push", "$pull", "$truncate", "$mutateIdx", "$unset")
DEFAULT_EXAMPLES = 100


def reference_settings() -> settings:
    """Settings for the reference-model properties.

    With the ``CI`` environment variable set, the example count of the ``ci``
    profile (registered in ``tests/conftest.py``); otherwise a quick default,
    so the suite stays fast. Other property tests keep their own counts.
    """
    examples = settings.get_profile("ci").max_examples if os.environ.get("CI") else None
    return settings(max_examples=examples or DEFAULT_EXAMPLES, deadline=None)


def json_values(
    keys: st.SearchStrategy[str],
    scalars: st.SearchStrategy[Any],
    *,
    max_size: int = 3,
    max_leaves: int = 10,
) -> st.SearchStrategy[Any]:
    """JSON values: ``scalars`` in arrays and objects (with ``keys``) of up to ``max_size``."""
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=max_size) | st.dictionaries(keys, inner, max_size=max_size)
        ),
        max_leaves=max_leaves,
    )


class Invalid(Exception):
    """The mutation is invalid for the state (the real code raises MutationError)."""


# -- applying -------------------------------------------------------------------


def apply(state: Any, mutation: Any) -> dict[str, Any]:
    """The state after ``mutation``."""
    if type(state) is not dict or type(mutation) is not dict:
        raise Invalid("the state and the mutation must be objects")
    return apply_fields(state, mutation, depth=1)


def starts_with_dollar(key: object) -> bool:
    return isinstance(key, str) and key.startswith("$")


def apply_fields(obj: dict[str, Any], mutation: dict[str, Any], depth: int) -> dict[str, Any]:
    """A field mutation of ``obj``, an object ``depth`` levels down (the state is 1)."""
    if depth > MAX_DEPTH:
        raise Invalid("deeper than a state may be")
    result = copy.deepcopy(obj)
    for key, change in mutation.items():
        new = apply_value(result.get(key, MISSING), change, depth + 1)
        if new is MISSING:
            result.pop(key, None)
        else:
            result[key] = new
    return result


def apply_value(old: Any, change: Any, depth: int) -> Any:
    """The new value of a field or item (``MISSING`` when removed)."""
    if type(change) is not dict:
        return copy.deepcopy(change)
    if not change:
        return old  # {} changes nothing, and creates nothing
    operators = [starts_with_dollar(key) for key in change]
    if all(operators):
        return apply_operators(old, change, depth)
    if any(operators):
        raise Invalid("operators mixed with fields")
    if old is MISSING or old is None:
        return apply_fields({}, change, depth)
    if type(old) is dict:
        return apply_fields(old, change, depth)
    raise Invalid("a field mutation of a non-object")


def is_index(value: object) -> bool:
    return type(value) is int and value >= 0


def apply_operators(old: Any, ops: dict[str, Any], depth: int) -> Any:
    """The value after the operators in ``ops``, in the order of ``OPERATORS``."""
    value = copy.deepcopy(ops["$set"]) if "$set" in ops else old
    if "$push" in ops:
        value = push(value, ops["$push"])
    if "$pull" in ops:
        value = pull(value, ops["$pull"])
    if "$truncate" in ops:
        value = truncate(value, ops["$truncate"])
    if "$mutateIdx" in ops:
        value = mutate_indexes(value, ops["$mutateIdx"], depth)
    if "$unset" in ops:
        flag = ops["$unset"]
        if flag is True or flag is None:
            value = MISSING
        elif flag is not False:
            raise Invalid("$unset takes true, false or null")
    return value


def push(value: Any, items: Any) -> Any:
    if type(items) is not list:
        raise Invalid("$push takes an array")
    return value + copy.deepcopy(items) if type(value) is list else copy.deepcopy(items)


def pull(value: Any, indexes: Any) -> Any:
    if type(indexes) is not list or not all(is_index(i) for i in indexes):
        raise Invalid("$pull takes an array of indexes")
    if not indexes or value is None or value is MISSING:
        return value
    if type(value) is not list or max(indexes) >= len(value):
        raise Invalid("$pull needs an array long enough")
    return [item for i, item in enumerate(value) if i not in indexes]


def truncate(value: Any, size: Any) -> Any:
    if not is_index(size):
        raise Invalid("$truncate takes a non-negative integer")
    if value is None or value is MISSING:
        return value
    if type(value) is not list:
        raise Invalid("$truncate needs an array")
    return value[:size]


def mutate_indexes(value: Any, changes: Any, depth: int) -> Any:
    if type(changes) is not dict:
        raise Invalid("$mutateIdx takes an object")
    if not changes:
        return value
    if type(value) is not list:
        raise Invalid("$mutateIdx needs an array")
    if depth > MAX_DEPTH:
        raise Invalid("deeper than a state may be")
    value = list(value)
    for key, change in changes.items():
        index = parse_index(key)
        if index >= len(value):
            raise Invalid("$mutateIdx index out of range")
        item = apply_value(value[index], change, depth + 1)
        if item is MISSING:
            raise Invalid("an item cannot be unset")
        value[index] = item
    return value


def parse_index(key: object) -> int:
    """A ``$mutateIdx`` key: canonical ASCII decimal (an int, from Python)."""
    if type(key) is int:
        if key < 0:
            raise Invalid("negative index")
        return key
    digits = "0123456789"
    if not isinstance(key, str) or not key or any(c not in digits for c in key):
        raise Invalid("not a decimal index")
    if len(key) > 1 and key[0] == "0":
        raise Invalid("leading zero")
    return int(key)


# -- building -------------------------------------------------------------------


def build(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The plainest mutation from ``old`` to ``new``: whole values for what changed."""
    mutation: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old or not json_equal(old[key], value):
            mutation[key] = {"$set": copy.deepcopy(value)}
    for key in old:
        if key not in new:
            mutation[key] = {"$unset": True}
    return mutation


# -- the writer -----------------------------------------------------------------


class OutOfOrder(Exception):
    """The write is not after the writer's last change."""


class NoState(Exception):
    """A mutation with no state to apply it to, or one that does not apply."""


@dataclass
class Step:
    micros: int
    kind: str  # "snapshot" or "mutation"
    state: dict[str, Any]  # the whole state after this entry


@dataclass
class Writer:
    """The log the state-stream rules make, one writer's view of "its last change".

    ``last_change`` is per writer (a new Stream over the log starts without
    one); the log is shared.
    """

    keyframe_us: int
    change_us: int
    log: list[Step] = field(default_factory=list)

    def last(self, last_change: int | None) -> int | None:
        """The time a write must be after."""
        times = [self.log[-1].micros] if self.log else []
        if last_change is not None:
            times.append(last_change)
        return max(times) if times else None

    def when(self, given: int | None, now: int, last_change: int | None) -> int:
        last = self.last(last_change)
        if given is None:
            return now if last is None or now > last else last + 1
        if last is not None and given <= last:
            raise OutOfOrder
        return given

    def write_state(self, state: dict[str, Any], when: int) -> str:
        """The action a write at ``when`` takes, done to the log."""
        snapshots = [step.micros for step in self.log if step.kind == "snapshot"]
        if not self.log or when - snapshots[-1] > self.keyframe_us:
            action = "snapshot"
        elif json_equal(state, self.log[-1].state):
            return "none"
        elif self.log[-1].kind == "mutation" and when - self.log[-1].micros < self.change_us:
            action = "amend"
        else:
            action = "mutation"
        if action == "amend":
            self.log[-1].state = copy.deepcopy(state)
        else:
            self.log.append(Step(when, action, copy.deepcopy(state)))
        return action

    def write_entry(self, kind: str, data: dict[str, Any], when: int) -> None:
        if kind == "snapshot":
            state = copy.deepcopy(data)
        elif not self.log:
            raise NoState
        else:
            try:
                state = apply(self.log[-1].state, data)
            except Invalid:
                raise NoState from None
        self.log.append(Step(when, kind, state))

    def state_at(self, micros: int) -> dict[str, Any] | None:
        """The state of the newest entry at or before ``micros`` (None: none yet)."""
        before = [step for step in self.log if step.micros <= micros]
        return before[-1].state if before else None


def rate_json(keyframe: timedelta, change: timedelta) -> dict[str, Any]:
    """``RateConfig.to_json``: milliseconds, an int when whole."""

    def ms(value: timedelta) -> int | float:
        micros = value // timedelta(microseconds=1)
        return micros // 1000 if micros % 1000 == 0 else micros / 1000

    return {"keyframe_frequency": ms(keyframe), "change_frequency": ms(change)}
