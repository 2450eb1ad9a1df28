"""What live subscribers are handed (against a real server): private copies by
default, which never change under their owner and share nothing with another
subscriber; with ``copy=False``, the tail's own shared, read-only states. And
the copy itself (:func:`~rstream.core.jsontype.copy_json`), on every shape
it copies by a path of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from rstream.client.client import Client
from rstream.core.entry import Entry, EntryKind
from rstream.core.jsontype import MAX_DEPTH, copy_json, json_equal
from rstream.core.mutation import build_mutation
from tests.serverutil import running_server
from tests.threadutil import Collector

State = dict[str, Any]
STEPS = 6
T0 = 1_700_000_000.0


def state(i: int) -> State:
    """Step ``i`` of a state with nested objects and arrays; each step changes a
    little of it, so consecutive shared states share their unchanged parts."""
    return {
        "i": i,
        "pos": {"x": i * 0.5, "y": 1.0, "deep": {"tag": "a", "list": [1, 2, {"k": i}]}},
        "tasks": [{"id": n, "done": n < i} for n in range(4)],
        "config": {"mode": "auto", "limits": [10, 20, 30]},
        # Larger containers of flat records: the copy's C-call paths.
        "sensors": {f"s{n}": {"v": n * i, "ok": n != i} for n in range(10)},
        "log": [{"n": n, "at": i + n / 10} for n in range(12)],
    }


def entry(i: int) -> Entry:
    """Step ``i`` as an entry of its own (a write of a state may amend the one
    before it, which a subscriber then never sees): a snapshot, then mutations."""
    if i == 0:
        return Entry(T0, EntryKind.SNAPSHOT, state(0))
    return Entry(T0 + i, EntryKind.MUTATION, build_mutation(state(i - 1), state(i)))


def containers(value: Any) -> Iterator[int]:
    """The ids of every dict and list in ``value`` (iterative: any depth)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            yield id(item)
            todo += item.values()
        elif isinstance(item, list):
            yield id(item)
            todo += item


def write_steps(url: str, *subscribers: Collector) -> None:
    """Once every subscriber has step 0 (written before they subscribed), write
    steps 1..STEPS-1 and wait until every subscriber has all of them."""
    for subscriber in subscribers:
        subscriber.wait_for(lambda c: len(c.items) == 1)
    with Client(url) as writer:
        robot = writer.stream("robot")
        for i in range(1, STEPS):
            robot.append_entries([entry(i)])
    for subscriber in subscribers:
        subscriber.wait_for(lambda c: len(c.items) == STEPS)


def test_private_copies_never_change_under_their_owner_and_share_nothing() -> None:
    with running_server() as url, Client(url) as client:
        robot = client.stream("robot")
        robot.append_entries([entry(0)])
        vandal, keeper = Collector(), Collector()

        def vandalize(ts: Any, received: State) -> None:
            # Changes every state it receives, deep inside: nobody else may see it.
            received["pos"]["deep"]["list"][2]["k"] = "changed"
            received["tasks"].append("junk")
            received["config"]["limits"].clear()
            received["sensors"]["s3"]["v"] = "changed"
            received["log"][5]["n"] = "changed"
            vandal.on_state(ts, received)

        queue = robot.states(maxsize=100)
        robot.subscribe(keeper.on_state)
        robot.subscribe(vandalize)
        write_steps(url, keeper, vandal)
        queued = [queue.get(timeout=10)[1] for _ in range(STEPS)]
        kept = [s for _, s in keeper.items]
        # What the keeper holds is what was written, after every later state arrived.
        assert kept == [state(i) for i in range(STEPS)]
        assert queued == kept
        # Nothing shared between subscribers, nor between consecutive states.
        seen: set[int] = set()
        for received in [*kept, *queued, *(s for _, s in vandal.items)]:
            ids = set(containers(received))
            assert not ids & seen
            seen |= ids
        # The tail's own current state is untouched too.
        assert robot.latest(timeout=10)[1] == state(STEPS - 1)
        queue.close()


def test_a_state_kept_by_a_subscriber_does_not_change_when_it_is_changed_later() -> None:
    with running_server() as url, Client(url) as client:
        robot = client.stream("robot")
        robot.append_entries([entry(0)])
        first = Collector()
        robot.subscribe(first.on_state)
        first.wait_for(lambda c: len(c.items) == 1)
        held = first.items[0][1]
        frozen = json.dumps(held, sort_keys=True)
        write_steps(url, first)
        assert [s for _, s in first.items] == [state(i) for i in range(STEPS)]
        assert json.dumps(held, sort_keys=True) == frozen
        # Changing a later state leaves the held one alone (nothing shared between them).
        first.items[-1][1]["pos"]["deep"]["tag"] = "z"
        first.items[-1][1]["config"]["limits"].append(99)
        assert json.dumps(held, sort_keys=True) == frozen


def test_copy_false_hands_every_reader_the_same_shared_states() -> None:
    with running_server() as url, Client(url) as client:
        robot = client.stream("robot")
        robot.append_entries([entry(0)])
        one, two, private = Collector(), Collector(), Collector()
        queue = robot.states(maxsize=100, copy=False)
        robot.subscribe(one.on_state, copy=False)
        robot.subscribe(two.on_state, copy=False)
        robot.subscribe(private.on_state)
        write_steps(url, one, two, private)
        queued = [queue.get(timeout=10)[1] for _ in range(STEPS)]
        shared = [s for _, s in one.items]
        assert shared == [state(i) for i in range(STEPS)]
        for a, b, c in zip(shared, (s for _, s in two.items), queued, strict=True):
            assert a is b
            assert a is c
        # Consecutive shared states share what did not change between them.
        assert shared[1]["config"] is shared[2]["config"]
        # A default subscriber still gets its own copies.
        for mine, theirs in zip((s for _, s in private.items), shared, strict=True):
            assert mine == theirs
            assert not set(containers(mine)) & set(containers(theirs))
        queue.close()


def nested(depth: int) -> dict[str, Any]:
    """A state ``depth`` objects deep, with a list and a flat table at every level."""
    value: dict[str, Any] = {"leaf": [1.5, -0.0, None]}
    for level in range(depth - 1):
        value = {"next": value, "level": level, "rows": [{"k": level}] * 3}
    return value


COPY_CASES = {
    "scalars of every kind": {
        "t": True,
        "one": 1,
        "f": 1.0,
        "z": -0.0,
        "big": 2**80,
        "s": "x",
        "n": None,
    },
    "a flat table (list of flat dicts)": {"rows": [{"id": n, "ok": n % 2 == 0} for n in range(20)]},
    "a group of flat dicts": {"g": {f"k{n}": {"v": n, "u": "C"} for n in range(20)}},
    "a long flat list and dict": {"l": list(range(30)), "d": {f"k{n}": n for n in range(30)}},
    "a table whose one record nests": {
        "rows": [{"id": n} for n in range(19)] + [{"id": 19, "tags": ["a"]}]
    },
    "a long list of lists": {"m": [[n, n + 1] for n in range(20)]},
    "a long dict of mixed values": {f"k{n}": [n] if n % 3 else {"v": n} for n in range(20)},
    "empty containers": {"e": {}, "l": [], "rows": [{}] * 10},
    "the same dict twice": {"a": (shared := {"x": [1]}), "b": shared, "rows": [shared] * 10},
    "deeper than MAX_DEPTH": nested(MAX_DEPTH + 10),
}


@pytest.mark.parametrize("value", COPY_CASES.values(), ids=list(COPY_CASES))
def test_copy_json_is_exact_and_shares_no_container(value: dict[str, Any]) -> None:
    frozen = json.dumps(value)
    copy = copy_json(value)
    assert json_equal(copy, value)  # type for type: True is not 1, -0.0 keeps its sign
    assert not set(containers(copy)) & set(containers(value))
    # Changing every container of the copy leaves the original alone.
    for container in [c for c in _walk(copy) if isinstance(c, (dict, list))]:
        if isinstance(container, dict):
            container["added"] = 1
        else:
            container.append("added")
    assert json.dumps(value) == frozen


def test_copy_json_keeps_the_very_scalars_and_shares_other_types() -> None:
    big, text = 2**100 + 1, "a string that is not interned, " * 3
    custom = type("Custom", (dict,), {})(x=[1])
    value = {"big": big, "text": text, "rows": [{"b": big, "t": text}] * 10, "custom": custom}
    copy = copy_json(value)
    assert copy["big"] is big
    assert copy["text"] is text
    assert all(row["b"] is big and row["t"] is text for row in copy["rows"])
    assert copy["custom"] is custom  # a dict subclass is not JSON: shared, like copy_json
    assert copy_json(7) == 7
    assert copy_json([]) == []


def test_copy_json_of_a_list_and_of_a_very_deep_value() -> None:
    rows = [{"n": n} for n in range(10)]
    copy = copy_json(rows)
    assert copy == rows
    assert not set(map(id, copy)) & set(map(id, rows))
    deep = nested(3000)  # past the interpreter's recursion limit
    copied = copy_json(deep)
    assert not set(containers(copied)) & set(containers(deep))


def _walk(value: Any) -> Iterator[Any]:
    """Every value in ``value``, containers included (iterative)."""
    todo = [value]
    while todo:
        item = todo.pop()
        yield item
        if isinstance(item, dict):
            todo += item.values()
        elif isinstance(item, list):
            todo += item
