"""What live subscribers are handed (against a real server): private copies by
default, which never change under their owner and share nothing with another
subscriber; with ``copy=False``, the tail's own shared, read-only states."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from rstream.client.client import Client
from rstream.core.entry import Entry, EntryKind
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
    }


def entry(i: int) -> Entry:
    """Step ``i`` as an entry of its own (a write of a state may amend the one
    before it, which a subscriber then never sees): a snapshot, then mutations."""
    if i == 0:
        return Entry(T0, EntryKind.SNAPSHOT, state(0))
    return Entry(T0 + i, EntryKind.MUTATION, build_mutation(state(i - 1), state(i)))


def containers(value: Any) -> Iterator[int]:
    """The ids of every dict and list in ``value``."""
    if isinstance(value, dict):
        yield id(value)
        for item in value.values():
            yield from containers(item)
    elif isinstance(value, list):
        yield id(value)
        for item in value:
            yield from containers(item)


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
