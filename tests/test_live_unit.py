"""Unit tests of the live tail: the pure event logic, queues, health, and the
reconnect policy against scripted connections (``responses``, injected sleep)."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import queue
import random
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
import responses
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st
from responses.registries import OrderedRegistry

import rstream
from rstream.client.changelog import ChangeLog, Overflow
from rstream.client.health import TRANSITIONS, ConnectionState, HealthTracker
from rstream.client.live import LiveTail
from rstream.client.livestate import Change, LiveState, decode_window
from rstream.client.queues import StateQueue
from rstream.client.retry import MAX_RETRY_AFTER
from rstream.client.sse import EventStream
from rstream.client.subscription import Subscription
from rstream.client.transport import Transport
from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import apply_mutation, build_mutation
from rstream.core.timestamps import to_micros
from rstream.errors import (
    AuthError,
    ClientClosed,
    Disconnected,
    Gap,
    ProtocolError,
    Reconnected,
    ServerError,
    StreamNotFound,
    TransportError,
)

BASE = "http://rstream.test"
LIVE = f"{BASE}/v1/streams/robot-1/live"
T0 = 1_714_564_800_000_000  # 2024-05-01T12:00:00Z in micros


# -- helpers --------------------------------------------------------------------


def snap(i: int, data: dict[str, Any], rev: int) -> Entry:
    return Entry.from_micros(T0 + i * 1000, EntryKind.SNAPSHOT, data, rev)


def mut(i: int, data: dict[str, Any], rev: int) -> Entry:
    return Entry.from_micros(T0 + i * 1000, EntryKind.MUTATION, data, rev)


def ev(entry: Entry, event: str = "entry") -> tuple[str, str, str]:
    return (event, json.dumps(entry.to_json(with_rev=True)), str(entry.rev))


def sse(*events: tuple[str, str, str | None], retry: int | None = None) -> bytes:
    out = [] if retry is None else [f"retry: {retry}\n\n"]
    for name, data, event_id in events:
        head = f"event: {name}\n" + (f"id: {event_id}\n" if event_id is not None else "")
        out.append(head + "".join(f"data: {line}\n" for line in data.split("\n")) + "\n")
    return "".join(out).encode()


def states_of(entries: list[Entry]) -> list[tuple[int, dict[str, Any]]]:
    """Replay entries with the core: the state after each one."""
    out: list[tuple[int, dict[str, Any]]] = []
    state: dict[str, Any] = {}
    for entry in entries:
        state = entry.data if entry.is_snapshot else apply_mutation(state, entry.data)
        out.append((entry.micros, state))
    return out


# A small log: a window of 3 entries, then a new snapshot and a mutation.
LOG = [
    snap(0, {"battery": 1.0, "pos": [0, 0]}, 1),
    mut(1, {"battery": 0.9}, 2),
    mut(2, {"pos": {"$mutateIdx": {"0": 5}}}, 3),
    snap(3, {"battery": 0.8, "pos": [5, 0]}, 4),
    mut(4, {"mode": "dock"}, 5),
]


# -- LiveState: the pure event logic ----------------------------------------------


def test_fresh_start_delivers_every_state_exactly() -> None:
    live = LiveState()
    assert live.resume_rev is None
    assert not live.anchored
    assert live.current is None
    steps = live.feed_all([ev(e) for e in LOG])
    got = [(s.change.micros, s.change.state) for s in steps if s.change]
    assert got == states_of(LOG)
    assert [s.change.rev for s in steps if s.change] == [1, 2, 3, 4, 5]
    assert live.resume_rev == 5
    committed = [s.committed for s in steps if s.committed is not None]
    assert committed == [tuple(LOG[:3])]
    assert live.window() == LOG[3:]


def test_duplicates_are_skipped_never_delivered_twice() -> None:
    live = LiveState()
    live.feed_all([ev(e) for e in LOG[:3]])
    # A resume that overlaps: the same entries again, and one older by time.
    for entry in (LOG[0], LOG[1], LOG[2]):
        step = live.feed(*ev(entry))
        assert step.change is None
        assert not step.applied
    assert live.resume_rev == 3
    step = live.feed(*ev(LOG[3]))
    assert step.change is not None
    assert step.change.rev == 4


def test_amend_replaces_the_newest_mutation() -> None:
    live = LiveState()
    live.feed_all([ev(e) for e in LOG[:2]])
    amended = mut(1, {"battery": 0.85, "note": "x"}, 3)
    step = live.feed(*ev(amended, "amend"))
    assert step.change is not None
    assert step.change.state == {"battery": 0.85, "pos": [0, 0], "note": "x"}
    assert step.change.micros == amended.micros
    assert live.resume_rev == 3
    assert live.window() == [LOG[0], amended]


def test_entry_with_the_newest_timestamp_is_an_amend() -> None:
    # On a resume, an amended entry may come as "entry" with the newest timestamp.
    live = LiveState()
    live.feed_all([ev(e) for e in LOG[:2]])
    step = live.feed(*ev(mut(1, {"battery": 0.7}, 4)))
    assert step.change is not None
    assert step.change.state["battery"] == 0.7
    assert len(live.window() or []) == 2
    # And a snapshot-only window can have its snapshot replaced.
    live2 = LiveState()
    live2.feed(*ev(LOG[0]))
    step = live2.feed(*ev(snap(0, {"battery": 0.5}, 2)))
    assert step.change is not None
    assert step.change.state == {"battery": 0.5}


def test_reset_reanchors_and_reports_a_gap() -> None:
    live = LiveState()
    live.feed_all([ev(e) for e in LOG[:3]])
    step = live.feed("reset", json.dumps({"reason": "ahead", "revision": 2}), "2")
    assert step.applied
    assert step.change is None
    assert step.gap is None
    assert live.resume_rev is None
    assert not live.anchored
    # Mutations cannot come before the new window's snapshot.
    with pytest.raises(ProtocolError):
        live.feed(*ev(mut(9, {"a": 1}, 2)))
    step = live.feed(*ev(snap(7, {"fresh": True}, 2)))
    assert step.change is not None
    assert step.change.state == {"fresh": True}
    assert isinstance(step.gap, Gap)
    assert (step.gap.after_rev, step.gap.resumed_rev) == (3, 2)
    assert live.resume_rev == 2
    assert step.committed is None
    # The gap is reported once.
    assert live.feed(*ev(mut(8, {"b": 2}, 3))).gap is None


def test_the_window_holds_entries_as_their_text_and_reads_them_back_exactly() -> None:
    # After its snapshot, the window holds each entry as the text it came in (a str,
    # which the garbage collector never visits), or as the entry when its revision
    # is the event's id; reading the window decodes them back to the same entries.
    live = LiveState()
    without_rev = mut(3, {"mode": "dock"}, 9)
    text = json.dumps(without_rev.to_json())  # no "rev": the id gives it
    amended = mut(4, {"battery": 0.5, "pos": {"$mutateIdx": {"1": 2}}}, 11)
    live.feed_all([ev(e) for e in LOG[:3]])
    live.feed("entry", text, "9")
    live.feed(*ev(mut(4, {"battery": 0.6}, 10)))
    live.feed(*ev(amended, "amend"))
    held = live.held_window()
    assert held is not None
    assert held[0] == LOG[0]  # the snapshot, held decoded: its data is the state
    assert [type(item) for item in held] == [Entry, str, str, Entry, Entry]
    assert held[3] == without_rev
    assert held[-1] == amended  # the newest, decoded
    assert not any(gc.is_tracked(item) for item in held[1:3])
    assert live.window() == [*LOG[:3], without_rev, amended]
    assert decode_window(held) == live.window()
    # A new snapshot commits the window, decoded.
    step = live.feed(*ev(snap(5, {"battery": 0.4}, 12)))
    assert step.committed == (*LOG[:3], without_rev, amended)
    assert live.window() == [snap(5, {"battery": 0.4}, 12)]


def test_a_live_window_longer_than_max_window_is_not_kept() -> None:
    live = LiveState(max_window=2)
    steps = live.feed_all([ev(e) for e in LOG[:3]])  # 3 entries: one too many
    assert [s.change.state for s in steps if s.change] == [s for _, s in states_of(LOG[:3])]
    assert live.window() is None  # not kept: memory stays bounded
    amended = mut(2, {"pos": {"$mutateIdx": {"0": 7}}}, 4)
    step = live.feed(*ev(amended, "amend"))  # the newest entry is still known
    assert step.change is not None
    assert step.change.state["pos"] == [7, 0]
    step = live.feed(*ev(snap(3, {"battery": 0.8}, 5)))
    assert step.committed is None  # the incomplete window is not handed to the store
    assert live.window() == [snap(3, {"battery": 0.8}, 5)]


def test_rev_comes_from_the_event_id_when_the_entry_has_none() -> None:
    live = LiveState()
    data = json.dumps(LOG[0].to_json())
    live.feed("entry", data, "41")
    assert live.resume_rev == 41
    with pytest.raises(ProtocolError, match="without a revision"):
        LiveState().feed("entry", data, None)


@pytest.mark.parametrize(
    "obj",
    [
        {"timestamp": "2024-05-01T12:00:05Z", "type": 1, "data": {"a": 1}, "rev": 9},
        {"timestamp": "2024-05-01T12:00:05.25Z", "type": 1, "data": {"a": 1}},  # rev from id
        {"timestamp": "2024-05-01T14:00:05+02:00", "type": 1, "data": {"a": 1}, "rev": 9},
        {"timestamp": "2024-05-01T12:00:05Z", "type": "mutation", "data": {"a": 1}, "rev": 9},
        {"timestamp": "2024-05-01T12:00:05Z", "type": "SNAPSHOT", "data": {"a": 1}, "rev": 9},
        {"timestamp": "2024-05-01T12:00:05Z", "type": 0, "data": {}, "rev": 0},
        {"timestamp": "2024-05-01T12:00:05Z", "type": True, "data": {}, "rev": 9},
        {"timestamp": "2024-05-01T12:00:05Z", "type": 1.0, "data": {}, "rev": 9},
        {"timestamp": "2024-05-01T12:00:05Z", "type": 2, "data": {}, "rev": 9},
        {"timestamp": "2024-05-01T12:00:05Z", "type": 1, "data": [], "rev": 9},
        {"timestamp": "2024-05-01T12:00:05Z", "type": 1, "data": {}, "rev": -1},
        {"timestamp": "2024-05-01T12:00:05Z", "type": 1, "data": {}, "rev": True},
        {"timestamp": "2024-05-01T12:00:05Z", "type": 1, "data": {}, "rev": 9.0},
        {"timestamp": 1714564805, "type": 1, "data": {}, "rev": 9},
        {"timestamp": "2024-05-01 12:00:05", "type": 1, "data": {}, "rev": 9},
        {"type": 1, "data": {}, "rev": 9},
        {"timestamp": "2024-05-01T12:00:05Z", "data": {}, "rev": 9},
    ],
)
def test_entries_are_read_exactly_as_entry_from_json_reads_them(obj: dict[str, Any]) -> None:
    """The tail reads the server's plain form without Entry.from_json; anything it
    reads must be what Entry.from_json reads, and what it refuses, refused alike."""
    try:
        expected: Entry | str = Entry.from_json(obj, where="entry event")
    except (rstream.EntryFormatError, ValueError) as exc:
        expected = str(exc)
    live = LiveState()
    if not (isinstance(expected, Entry) and expected.is_snapshot):
        live.feed(*ev(snap(0, {"a": 0}, 1)))  # a mutation needs a window to extend
    if isinstance(expected, str):
        with pytest.raises(ProtocolError) as info:
            live.feed("entry", json.dumps(obj), "5")
        assert expected in str(info.value)
        return
    step = live.feed("entry", json.dumps(obj), "5")
    got = live.window()
    assert got is not None
    assert got[-1] == expected
    assert got[-1].rev == (expected.rev if expected.rev is not None else 5)
    assert step.change is not None
    assert step.change.micros == expected.micros


def test_unknown_events_are_ignored() -> None:
    live = LiveState()
    assert live.feed("message", "hello", None).change is None
    assert live.feed("future-thing", "{}", "9").change is None
    assert live.resume_rev is None


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("entry", "not json"),
        ("entry", "[1, 2]"),
        ("entry", '{"timestamp": "yesterday", "type": 0, "data": {}, "rev": 9}'),
        ("entry", '{"timestamp": "2024-05-01T12:00:09Z", "type": 7, "data": {}, "rev": 9}'),
        ("entry", '{"timestamp": "2024-05-01T12:00:09Z", "type": 1, "data": 3, "rev": 9}'),
        ("entry", '{"timestamp": "2024-05-01T12:00:09Z", "type": 1, "rev": 9}'),
        # a mutation that does not apply to the live state ($mutateIdx on a number)
        (
            "entry",
            '{"timestamp": "2024-05-01T12:00:09Z", "type": 1, '
            '"data": {"battery": {"$mutateIdx": {"0": 1}}}, "rev": 9}',
        ),
        # an amend whose timestamp is not the newest entry's
        ("amend", '{"timestamp": "2024-05-01T12:00:09Z", "type": 1, "data": {}, "rev": 9}'),
        # a snapshot replacing a mutation
        ("entry", json.dumps(snap(2, {}, 9).to_json(with_rev=True))),
        ("reset", "[]"),
        ("entry", "[" * 100_000),
    ],
)
def test_garbage_raises_protocol_error_and_changes_nothing(event: str, data: str) -> None:
    live = LiveState()
    live.feed_all([ev(e) for e in LOG[:3]])
    before = (live.current, live.window(), live.resume_rev)
    with pytest.raises(ProtocolError):
        live.feed(event, data, "9")
    assert (live.current, live.window(), live.resume_rev) == before


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["entry", "amend", "reset"]))
def test_fuzzed_event_data_only_ever_raises_protocol_error(data: str, event: str) -> None:
    live = LiveState()
    live.feed_all([ev(e) for e in LOG[:2]])
    with contextlib.suppress(ProtocolError):
        live.feed(event, data, "7")


def _random_log(rng: random.Random, n: int) -> list[Entry]:
    """A log the way a writer makes one: snapshots, mutations, some amends folded in."""
    entries: list[Entry] = []
    state: dict[str, Any] = {}
    for i in range(n):
        new = {"v": rng.randrange(4), "k": {"x": rng.random() < 0.5}, "l": [i % 3] * (i % 4)}
        if not entries or rng.random() < 0.2:
            entries.append(snap(i, new, i + 1))
        else:
            entries.append(mut(i, build_mutation(state, new), i + 1))
        state = new
    return entries


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5))))
def test_resumes_with_overlap_deliver_the_log_exactly_once(
    seed: int, cuts: list[tuple[int, int]]
) -> None:
    """Connections that end anywhere and resume with overlap deliver each state once."""
    log = _random_log(random.Random(seed), 30)
    live = LiveState()
    delivered: list[tuple[int, dict[str, Any]]] = []
    position = 0  # how far the "server" got
    for length, overlap in [*cuts, (len(log), 0)]:
        since = live.resume_rev
        start = 0 if since is None else max(since - overlap, 0)  # revs are 1-based positions
        end = min(max(start, position) + length, len(log))
        for entry in log[start:end]:
            step = live.feed(*ev(entry))
            if step.change:
                delivered.append((step.change.micros, step.change.state))
        position = max(position, end)
    assert delivered == states_of(log)


def test_event_stream_byte_by_byte_and_partial_event_at_eof() -> None:
    body = sse(*(ev(e) for e in LOG[:3]), retry=2000)
    cut = body.rindex(b"event: entry")  # the last event arrives incomplete
    body = body[: cut + 30]
    live = LiveState()
    events = EventStream(body[i : i + 1] for i in range(len(body)))
    got = [live.feed(e.event, e.data, e.id).change for e in events]
    assert [c.rev for c in got if c] == [1, 2]
    assert events.saw_eof_mid_event
    assert events.retry_ms == 2000
    assert live.resume_rev == 2


# -- health ----------------------------------------------------------------------


def test_health_transitions_follow_the_table() -> None:
    clock = iter(range(100, 200)).__next__
    tracker = HealthTracker(clock=lambda: float(clock()))
    assert tracker.snapshot().state is ConnectionState.IDLE
    tracker.connecting("http://a")
    tracker.move(ConnectionState.OPEN)
    tracker.data()
    tracker.move(ConnectionState.BACKOFF)
    tracker.connecting("http://b")
    health = tracker.snapshot()
    assert health.reconnects == 1
    assert health.url == "http://b"
    assert health.following
    assert health.last_data_at is not None
    with pytest.raises(RuntimeError, match="cannot go from CONNECTING to IDLE"):
        tracker.move(ConnectionState.IDLE)
    tracker.move(ConnectionState.FAILED, error=AuthError("no"))
    assert isinstance(tracker.snapshot().last_error, AuthError)
    assert not tracker.snapshot().following
    tracker.move(ConnectionState.CLOSED)
    assert TRANSITIONS[ConnectionState.CLOSED] == frozenset()
    for state in ConnectionState:  # every state is in the table, and CLOSED is reachable
        assert state in TRANSITIONS
        assert state is ConnectionState.CLOSED or ConnectionState.CLOSED in TRANSITIONS[state]


# -- the change log, queues and subscriptions -----------------------------------


def change(i: int, rev: int | None = None) -> Change:
    return Change(T0 + i, {"i": i, "nested": {"i": i}}, i + 1 if rev is None else rev)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def loaded_log(
    *changes: Change,
    capacity: int = 1000,
    fetch: Callable[[int], Iterator[Entry]] | None = None,
    clock: Callable[[], float] | None = None,
) -> ChangeLog:
    """A change log holding ``changes`` (default: change 0), loaded."""
    log = ChangeLog(capacity, fetch=fetch, name="robot-1", clock=clock or Clock())
    log.append(changes or [change(0)])
    log.mark_loaded()
    return log


def queue_of(
    log: ChangeLog, maxsize: int = 1000, overflow: Overflow = "block", **kwargs: Any
) -> StateQueue:
    return StateQueue(log.reader(overflow, maxsize), **kwargs)


def ids(q: StateQueue) -> list[int]:
    """Every state waiting in ``q`` (without waiting for more)."""
    out = []
    while True:
        try:
            out.append(q.get_nowait()[1]["i"])
        except rstream.Empty:
            return out


def test_every_subscriber_gets_the_current_state_once_then_every_change() -> None:
    log = ChangeLog(1000, name="robot-1")
    early = StateQueue(log.reader())  # before the stream is loaded
    log.append([change(i) for i in range(5)])  # the backlog: the live window
    assert ids(early) == []  # still loading: no replay of the window
    log.mark_loaded()
    late = queue_of(log)
    assert ids(early) == [4]  # the state once loaded, exactly once
    assert ids(late) == [4]  # the state current when it subscribed
    log.append([change(5), change(6)])
    assert ids(early) == [5, 6]
    assert ids(late) == [5, 6]
    notice = Disconnected("lost", url="http://x")
    log.notice(notice)
    after_notice = queue_of(log)
    assert ids(after_notice) == [6]  # the current state, not the notice before it


def test_queue_drop_oldest_and_latest() -> None:
    log = loaded_log()
    dropping = queue_of(log, 3, "drop_oldest")
    latest = queue_of(log, overflow="latest")
    seen: list[BaseException] = []
    latest.on_error = seen.append
    noticed = queue_of(log, overflow="latest", on_error=seen.append)
    log.append([change(1), change(2)])
    gap = Gap("g", after_rev=1, resumed_rev=2)
    log.notice(gap)
    log.append([change(3), change(4)])
    assert ids(dropping) == [2, 3, 4]
    assert dropping.dropped == 2
    assert ids(noticed) == [4]
    assert noticed.dropped == 4
    assert seen == [gap]  # notices are never skipped
    assert ids(latest) == [4]
    assert seen == [gap, gap]


def test_a_block_queue_gets_every_change_and_never_holds_the_producer_back() -> None:
    log = loaded_log(capacity=20_000)
    unread = queue_of(log, maxsize=5)  # never read while the stream moves on
    fast = queue_of(log, overflow="latest")
    for start in range(1, 10_001, 1000):
        log.append([change(i) for i in range(start, start + 1000)])  # never waits
        assert ids(fast)[-1] == start + 999
    assert unread.qsize() == 10_001
    assert unread.full()
    assert ids(unread) == list(range(10_001))
    assert unread.dropped == 0


def test_the_log_holds_only_what_readers_need_and_at_most_its_capacity() -> None:
    log = loaded_log(capacity=100)
    up_to_date = queue_of(log, overflow="latest")
    log.append([change(i) for i in range(1, 1000)])
    assert ids(up_to_date) == [999]
    assert log.held == 0  # nobody needs anything: only the current state is kept
    unread = queue_of(log)
    log.append([change(i) for i in range(1000, 2000)])
    assert log.held == 100  # the unread block queue holds back at most the capacity
    unread.close()
    log.append([change(2000)])
    assert log.held == 0


def _server_log(count: int, *, amend_last_at: int | None = None) -> list[Entry]:
    """A log with revisions: snapshots every 7 entries, mutations between."""
    entries: list[Entry] = []
    state: dict[str, Any] = {}
    for i in range(count):
        new = {"i": i, "nested": {"i": i}, "mode": ["a", "b", "c"][i % 3]}
        if i % 7 == 0:
            entries.append(Entry.from_micros(T0 + i, EntryKind.SNAPSHOT, new, i + 1))
        else:
            entries.append(
                Entry.from_micros(T0 + i, EntryKind.MUTATION, build_mutation(state, new), i + 1)
            )
        state = new
    return entries


class Feeder:
    """Feeds entries as the live tail does: events into LiveState, changes into the log."""

    def __init__(self, log: ChangeLog) -> None:
        self.log = log
        self.live = LiveState()

    def __call__(self, entries: list[Entry], event: str = "entry") -> None:
        for entry in entries:
            step = self.live.feed(*ev(entry, event))
            assert step.change is not None
            self.log.append([step.change])


def test_a_block_reader_out_of_memory_catches_up_from_the_server_exactly_once() -> None:
    server = _server_log(300)
    asked: list[int] = []

    def fetch(start: int) -> Iterator[Entry]:
        asked.append(start)
        yield from (e for e in server if e.micros >= start)

    log = ChangeLog(20, fetch=fetch, name="robot-1")
    feed = Feeder(log)
    feed(server[:10])
    log.mark_loaded()
    slow = queue_of(log)
    first = slow.get(timeout=1)  # the current state: change 9
    assert first[1]["i"] == 9
    feed(server[10:300])  # 290 changes: far more than the 20 held
    assert log.held == 20
    got = [first, *(slow.get_nowait() for _ in range(290))]
    assert [(to_micros(t), s) for t, s in got] == states_of(server)[9:]
    assert asked == [T0 + 9]  # one catch-up, from the last change given
    assert slow.lag == (0, 0.0)
    with pytest.raises(rstream.Empty):
        slow.get_nowait()  # nothing repeated where it rejoined the log


def test_catching_up_gives_an_amended_entry_again_as_a_replacement() -> None:
    server = _server_log(40)
    # Entry 9 is amended on the server (same time, a new revision) after the slow
    # reader was given it; the entries after it come later, with later revisions.
    amended_9 = Entry.from_micros(T0 + 9, EntryKind.MUTATION, {"i": 99}, 41)
    rest = [e.replace(rev=(e.rev or 0) + 32) for e in server[10:40]]
    on_server = [*server[:9], amended_9, *rest]
    log = ChangeLog(5, fetch=lambda start: iter([e for e in on_server if e.micros >= start]))
    feed = Feeder(log)
    feed(server[:10])
    log.mark_loaded()
    slow = queue_of(log)
    assert slow.get_nowait()[1]["i"] == 9
    feed([amended_9], "amend")
    feed(rest)
    got = ids(slow)
    assert got[0] == 99  # the amended state of entry 9, then every later one, once
    assert got[1:] == list(range(10, 40))


def test_a_failed_catch_up_is_reported_and_tried_again() -> None:
    server = _server_log(60)
    failures = [TransportError("server down")]

    def fetch(start: int) -> Iterator[Entry]:
        if failures:
            raise failures.pop()
        yield from (e for e in server if e.micros >= start)

    log = ChangeLog(5, fetch=fetch, name="robot-1")
    feed = Feeder(log)
    feed(server[:1])
    log.mark_loaded()
    errors: list[BaseException] = []
    slow = queue_of(log, on_error=errors.append)
    feed(server[1:60])
    assert ids(slow) == list(range(60))
    assert [str(e) for e in errors] == ["server down"]


def test_without_a_fetch_a_reader_out_of_memory_is_told_of_a_gap() -> None:
    log = ChangeLog(5, name="robot-1")
    feed = Feeder(log)
    feed(_server_log(30)[:1])
    log.mark_loaded()
    errors: list[BaseException] = []
    slow = queue_of(log, on_error=errors.append)
    feed(_server_log(30)[1:30])
    assert ids(slow) == [0, *range(25, 30)]
    assert len(errors) == 1
    assert isinstance(errors[0], Gap)


def test_the_queue_is_polled_like_queue_queue() -> None:
    log = loaded_log()
    with queue_of(log, maxsize=2) as q:
        assert (q.maxsize, q.qsize(), len(q), q.empty(), q.full()) == (2, 1, 1, False, False)
        assert q.get(True, 0.5)[1]["i"] == 0  # positional block and timeout
        assert q.empty()
        calls: list[Callable[[], object]] = [
            lambda: q.get(timeout=0.01),
            lambda: q.get(True, 0),
            lambda: q.get(block=False),
            q.get_nowait,
        ]
        for call in calls:
            with pytest.raises(queue.Empty) as info:
                call()
            assert isinstance(info.value, rstream.Empty)
            assert isinstance(info.value, rstream.RStreamError)
            assert not isinstance(info.value, OSError)
        log.append([change(1), change(2)])
        assert q.full()
        log.finish()
        assert [s["i"] for _, s in q] == [1, 2]  # iteration drains, then ends
        assert q.closed
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)


def test_close_wakes_a_blocked_get_and_iteration_ends() -> None:
    log = loaded_log()
    q = queue_of(log)
    assert q.get_nowait()[1]["i"] == 0
    raised: list[BaseException] = []

    def consumer() -> None:
        try:
            q.get()
        except ClientClosed as exc:
            raised.append(exc)

    thread = threading.Thread(target=consumer)
    thread.start()
    q.close()
    thread.join(5)
    assert not thread.is_alive()
    assert len(raised) == 1
    assert list(q) == []
    q.close()  # idempotent


def test_finish_drains_then_raises_the_fatal_error() -> None:
    log = loaded_log()
    q = queue_of(log)
    log.finish(StreamNotFound("gone", stream_id="robot-1"))
    assert q.get()[1]["i"] == 0
    with pytest.raises(StreamNotFound):
        q.get()
    with pytest.raises(StreamNotFound):  # iteration raises it too: it is not a normal end
        next(iter(q))
    with pytest.raises(StreamNotFound):
        log.reader()  # no later subscriber is left waiting


def test_each_consumer_gets_its_own_copy() -> None:
    log = loaded_log()
    a, b = queue_of(log), queue_of(log)
    state_a = a.get()[1]
    state_a["nested"]["i"] = "changed"
    assert b.get()[1] == {"i": 0, "nested": {"i": 0}}
    assert log.current(0) == change(0)


def test_queue_rejects_bad_arguments() -> None:
    log = loaded_log()
    with pytest.raises(rstream.ConfigError, match="overflow"):  # also a ValueError
        log.reader("drop_newest")
    with pytest.raises(rstream.ConfigError, match="maxsize"):
        log.reader("block", 0)
    with pytest.raises(rstream.ConfigError, match="lag_warning"):
        log.reader("block", 1, lag_warning=0)


def test_lag_is_visible_and_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = loaded_log(clock=clock)
    slow = queue_of(log)
    keeping_up = queue_of(log, overflow="latest")
    assert slow.lag == (1, 0.0)
    clock.now += 2
    log.append([change(1), change(2)])
    assert ids(keeping_up) == [2]
    clock.now += 11
    with caplog.at_level(logging.WARNING, logger="rstream"):
        log.append([change(3)])
        assert ids(keeping_up) == [3]
        clock.now += 5
        log.append([change(4)])  # still behind: not warned again within a minute
    assert slow.lag == (5, 18.0)
    assert keeping_up.lag == (1, 0.0)
    warnings = [r for r in caplog.records if "behind" in r.getMessage()]
    assert len(warnings) == 1
    assert "13.0 s" in warnings[0].getMessage()  # waiting for its first state since t=100
    lags = log.lags()
    assert [(lag.overflow, lag.entries) for lag in lags] == [("block", 5), ("latest", 1)]
    assert ids(slow) == [0, 1, 2, 3, 4]
    assert slow.lag == (0, 0.0)


def test_subscription_raising_callback_goes_to_on_error_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[BaseException] = []
    got: list[int] = []
    done = threading.Event()

    def on_state(ts: datetime, state: dict[str, Any]) -> None:
        if state["i"] == 1:
            raise RuntimeError("boom")
        got.append(state["i"])
        if state["i"] == 2:
            done.set()

    log = loaded_log()
    with caplog.at_level(logging.DEBUG, logger="rstream"):
        sub = Subscription(log.reader(), on_state, errors.append)
        sub.start()
        log.append([change(1), change(2)])
        assert done.wait(5)
        sub.close()
    assert got == [0, 2]
    assert [str(e) for e in errors] == ["boom"]
    assert not [r for r in caplog.records if r.exc_info]  # the caller handles it
    assert not sub.thread.is_alive()
    sub.close()


def test_a_raising_callback_without_on_error_is_logged_once_per_type_then_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = threading.Event()

    def on_state(ts: datetime, state: dict[str, Any]) -> None:
        if state["i"] == 50:
            done.set()
        raise (KeyError if state["i"] % 2 else ValueError)(state["i"])

    log = loaded_log()
    with caplog.at_level(logging.DEBUG, logger="rstream"):
        sub = Subscription(log.reader(), on_state)
        sub.start()
        log.append([change(i) for i in range(1, 51)])
        assert done.wait(5)
        sub.close()
    records = [r for r in caplog.records if "raised" in r.getMessage()]
    assert len(records) == 2  # one per exception type, each with its traceback
    assert all(r.exc_info for r in records)
    assert {r.exc_info[0] for r in records if r.exc_info} == {KeyError, ValueError}


@pytest.mark.parametrize(
    "callback",
    [lambda: None, lambda ts: None, lambda ts, state, extra: None, "not callable"],
)
def test_subscribe_checks_the_callback_takes_ts_and_state(callback: Any) -> None:
    log = loaded_log()
    with pytest.raises(TypeError, match="on_state"):
        Subscription(log.reader(), callback)


def test_callbacks_that_take_ts_and_state_are_accepted() -> None:
    class Handler:
        def __call__(self, ts: datetime, state: dict[str, Any], *more: object) -> None:
            pass

    log = loaded_log()
    for callback in (Handler(), lambda *args: None, lambda ts, state, extra=1: None, print):
        Subscription(log.reader(), callback).close()


def test_subscription_delivers_nothing_more_once_closed() -> None:
    """A dispatcher takes states out of the log in batches; closing the
    subscription still drops every state not yet handed to the callback."""
    entered, release = threading.Event(), threading.Event()
    got: list[int] = []

    def on_state(ts: datetime, state: dict[str, Any]) -> None:
        got.append(state["i"])
        entered.set()
        assert release.wait(5)

    log = loaded_log(*(change(i) for i in range(10)))
    sub = Subscription(log.reader(), on_state)
    log.append([change(i) for i in range(10, 20)])
    sub.start()
    assert entered.wait(5)
    sub._reader.close()  # while the callback runs
    release.set()
    sub.join(5)
    assert not sub.thread.is_alive()
    assert got == [9]
    assert sub.delivered == 1


def test_subscription_delivers_states_and_notices_in_order() -> None:
    events: list[object] = []
    done = threading.Event()
    gap = Gap("re-anchored", after_rev=3, resumed_rev=9)
    lost = Disconnected("lost", url="http://x")
    back = Reconnected("back", url="http://x", downtime=1.5)

    def on_state(ts: datetime, state: dict[str, Any]) -> None:
        events.append(state["i"])
        if state["i"] == 4:
            done.set()

    log = loaded_log()
    sub = Subscription(log.reader(), on_state, events.append)
    log.append([change(1)])
    log.notice(gap)
    log.append([change(2)])
    log.notice(lost)
    log.notice(back)
    log.append([change(3), change(4)])
    sub.start()
    assert done.wait(5)
    sub.close()
    assert events == [0, 1, gap, 2, lost, back, 3, 4]
    assert not sub.thread.is_alive()


# -- LiveTail against scripted connections --------------------------------------


class Waits:
    """An injected sleep: records each wait; after ``limit`` waits it closes the tail."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waits: list[float] = []
        self.tail: LiveTail | None = None
        self.done = threading.Event()

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if len(self.waits) >= self.limit:
            assert self.tail is not None
            self.tail.close()  # from the reader thread: must not join itself
            self.done.set()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(registry=OrderedRegistry, assert_all_requests_are_fired=False) as r:
        yield r


def make_tail(
    waits: Waits,
    *,
    token: str | Callable[[], str] | None = None,
    urls: str | list[str] = BASE,
    **kwargs: Any,
) -> tuple[LiveTail, Transport]:
    transport = Transport(urls, token=token, retry=tenacity.Retrying())
    tail = LiveTail(transport, "robot-1", sleep=waits, **kwargs)
    waits.tail = tail
    return tail, transport


def run_script(tail: LiveTail, transport: Transport, waits: Waits) -> None:
    tail.start()
    assert waits.done.wait(5), f"the tail did not reach {waits.limit} waits: {waits.waits}"
    tail.close()
    transport.close()


def add_sse(mocked: responses.RequestsMock, body: bytes, url: str = LIVE, **headers: str) -> None:
    mocked.add(
        responses.GET,
        url,
        body=body,
        status=200,
        content_type="text/event-stream",
        headers={"RStream-Heartbeat": "15", **headers},
    )


def add_error(mocked: responses.RequestsMock, status: int, code: str, **headers: str) -> None:
    mocked.add(
        responses.GET,
        LIVE,
        json={"error": {"code": code, "message": "scripted"}},
        status=status,
        headers=headers,
    )


def test_resume_sends_last_applied_revision(mocked: responses.RequestsMock) -> None:
    add_sse(mocked, sse(*(ev(e) for e in LOG[:3])))
    add_sse(mocked, sse(ev(LOG[2]), ev(LOG[3])))  # overlapping resume
    add_sse(mocked, b'event: entry\nid: 5\ndata: {"timestamp"')  # cut mid-event
    add_sse(mocked, sse(ev(LOG[4])))
    waits = Waits(4)
    tail, transport = make_tail(waits, wait=tenacity.wait_fixed(0))
    got: list[tuple[int, dict[str, Any]]] = []
    commits: list[list[Entry]] = []
    tail._on_commit = commits.append
    q = tail.states()
    run_script(tail, transport, waits)
    sent = [c.request.headers.get("Last-Event-ID") for c in mocked.calls]
    assert sent == [None, "3", "4", "4"]  # the cut event was not applied
    for ts, state in q:
        got.append((to_micros(ts), state))
    assert got == states_of(LOG)[2:]  # the state once loaded, then every change
    assert commits == [LOG[:3]]
    assert tail.health.state is ConnectionState.CLOSED
    assert tail.health.revision == 5


def test_garbage_event_reconnects_from_last_applied(mocked: responses.RequestsMock) -> None:
    add_sse(mocked, sse(ev(LOG[0]), ("entry", "{broken", "2"), ev(LOG[1])))
    add_sse(mocked, sse(ev(LOG[1])))
    waits = Waits(2)
    tail, transport = make_tail(waits, wait=tenacity.wait_fixed(0))
    q = tail.states()
    run_script(tail, transport, waits)
    assert [c.request.headers.get("Last-Event-ID") for c in mocked.calls][:2] == [None, "1"]
    assert [s for _, s in q] == [s for _, s in states_of(LOG[:2])]
    assert isinstance(tail.health.last_error, Exception)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_retryable_statuses_reconnect(mocked: responses.RequestsMock, status: int) -> None:
    add_error(mocked, status, "unavailable")
    add_sse(mocked, sse(ev(LOG[0])))
    waits = Waits(2)
    tail, transport = make_tail(waits, wait=tenacity.wait_fixed(0.25))
    q = tail.states()
    run_script(tail, transport, waits)
    assert len(mocked.calls) >= 2
    assert q.get()[1] == LOG[0].data
    assert waits.waits[0] == 0.25


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (404, "stream_not_found", StreamNotFound),
        (403, "forbidden", AuthError),
        (400, "invalid_stream_id", ServerError),
    ],
)
def test_fatal_statuses_stop_the_tail(
    mocked: responses.RequestsMock, status: int, code: str, error: type[Exception]
) -> None:
    # The answer waits until both subscribers are in: subscribe() starts the tail,
    # and a tail that has already failed refuses a new subscriber (see below).
    subscribed = threading.Event()

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        assert subscribed.wait(5)
        return status, {}, json.dumps({"error": {"code": code, "message": "scripted"}})

    mocked.add_callback(responses.GET, LIVE, callback=answer, content_type="application/json")
    waits = Waits(1)
    tail, transport = make_tail(waits)
    errors: list[BaseException] = []
    failed = threading.Event()

    def on_error(error: BaseException) -> None:
        errors.append(error)
        failed.set()

    tail.subscribe(lambda ts, s: None, on_error)
    q = tail.states()
    subscribed.set()
    assert failed.wait(5)
    with pytest.raises(error):
        q.get(timeout=5)
    assert [type(e) for e in errors] == [error]
    assert tail.health.state is ConnectionState.FAILED
    assert len(mocked.calls) == 1
    assert waits.waits == []
    with pytest.raises(error):
        tail.states()
    tail.close()
    transport.close()
    assert tail.health.state.name == "CLOSED"


def test_204_ends_the_tail(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, LIVE, status=204)
    tail, transport = make_tail(Waits(1))
    q = tail.states()
    assert list(q) == []  # iteration ends: no more states will come
    assert tail.health.state is ConnectionState.CLOSED
    assert len(mocked.calls) == 1
    tail.close()
    transport.close()


def test_after_204_new_subscribers_and_latest_are_told_not_left_waiting(
    mocked: responses.RequestsMock,
) -> None:
    mocked.add(responses.GET, LIVE, status=204)
    tail, transport = make_tail(Waits(1))
    assert list(tail.states()) == []  # the tail has ended
    with pytest.raises(ClientClosed, match="204"):
        tail.latest(timeout=5)  # not anchored and never will be: no wait for the timeout
    with pytest.raises(ClientClosed, match="204"):
        tail.states()  # a queue nobody would ever feed or finish
    assert len(mocked.calls) == 1
    tail.close()
    transport.close()


def test_401_asks_the_token_once_more_then_gives_up(mocked: responses.RequestsMock) -> None:
    add_error(mocked, 401, "unauthorized")
    add_error(mocked, 401, "unauthorized")
    asked: list[str] = []

    def token() -> str:
        asked.append(f"t{len(asked)}")
        return asked[-1]

    tail, transport = make_tail(Waits(1), token=token)
    q = tail.states()
    with pytest.raises(AuthError):
        q.get(timeout=5)
    assert [c.request.headers["Authorization"] for c in mocked.calls] == [
        "Bearer t0",
        "Bearer t1",
    ]
    assert tail.health.state is ConnectionState.FAILED
    tail.close()
    transport.close()


def test_token_is_asked_again_on_every_reconnect(mocked: responses.RequestsMock) -> None:
    add_error(mocked, 401, "unauthorized")  # expired: refreshed once, then accepted
    add_sse(mocked, sse(ev(LOG[0])))
    add_sse(mocked, sse(ev(LOG[1])))
    waits = Waits(2)
    counter = iter(range(100))
    tail, transport = make_tail(
        waits, token=lambda: f"t{next(counter)}", wait=tenacity.wait_fixed(0)
    )
    tail.start()
    run_script(tail, transport, waits)
    auth = [c.request.headers["Authorization"] for c in mocked.calls[:3]]
    assert auth == ["Bearer t0", "Bearer t1", "Bearer t2"]


def test_backoff_grows_and_resets_after_a_healthy_connection(
    mocked: responses.RequestsMock,
) -> None:
    for _ in range(4):
        add_error(mocked, 503, "unavailable")
    add_sse(mocked, sse(ev(LOG[0])))  # healthy: it applied an event
    for _ in range(2):
        add_error(mocked, 503, "unavailable")
    waits = Waits(7)
    tail, transport = make_tail(waits, wait=tenacity.wait_exponential(multiplier=0.5, max=30))
    run_script(tail, transport, waits)
    assert waits.waits == [0.5, 1.0, 2.0, 4.0, 0.5, 0.5, 1.0]


def test_backoff_grows_when_the_server_accepts_and_closes_at_once(
    mocked: responses.RequestsMock,
) -> None:
    for _ in range(5):
        add_sse(mocked, b": ping\n\n")  # no event: not a healthy connection
    waits = Waits(5)
    tail, transport = make_tail(waits, wait=tenacity.wait_exponential(multiplier=0.5, max=4))
    run_script(tail, transport, waits)
    assert waits.waits == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert tail.health.reconnects == 4


def test_long_open_connection_counts_as_healthy(mocked: responses.RequestsMock) -> None:
    add_error(mocked, 503, "unavailable")
    add_error(mocked, 503, "unavailable")
    add_sse(mocked, b": ping\n\n")
    now = [0.0]

    def clock() -> float:
        now[0] += 11.0  # each reading 11 s later: the quiet connection lasted long enough
        return now[0]

    waits = Waits(3)
    tail, transport = make_tail(
        waits, wait=tenacity.wait_exponential(multiplier=1, max=30), clock=clock
    )
    run_script(tail, transport, waits)
    assert waits.waits == [1.0, 2.0, 1.0]


def test_waits_never_go_below_server_retry_or_retry_after(
    mocked: responses.RequestsMock,
) -> None:
    add_sse(mocked, b"retry: 5000\n\n")
    add_error(mocked, 503, "unavailable", **{"Retry-After": "7"})
    add_sse(mocked, sse(ev(LOG[0])))
    add_sse(mocked, b"")
    waits = Waits(4)
    tail, transport = make_tail(waits)  # default: full jitter from 0.5 s
    run_script(tail, transport, waits)
    assert waits.waits[0] == 5.0  # retry: is a floor
    assert waits.waits[1] == 7.0  # so is Retry-After
    assert waits.waits[2] >= 5.0
    assert waits.waits[3] >= 5.0


def test_a_server_retry_beyond_the_cap_waits_the_cap(mocked: responses.RequestsMock) -> None:
    # The same cap as a blocking call's Retry-After (one rule: retry_floor).
    add_sse(mocked, b"retry: 900000\n\n")
    add_sse(mocked, sse(ev(LOG[0])))
    waits = Waits(1)
    tail, transport = make_tail(waits)
    run_script(tail, transport, waits)
    assert waits.waits == [MAX_RETRY_AFTER]


def test_default_backoff_is_full_jitter_with_a_cap(mocked: responses.RequestsMock) -> None:
    random.seed(1234)
    waits = Waits(40)  # every request fails to connect (nothing is registered)
    tail, transport = make_tail(waits)
    run_script(tail, transport, waits)
    for attempt, wait in enumerate(waits.waits, start=1):
        assert 0 <= wait <= min(30.0, 0.5 * 2 ** (attempt - 1))
    late = waits.waits[10:]
    assert max(late) > 15
    assert min(late) < max(late) / 2


def test_failover_to_the_next_url(mocked: responses.RequestsMock) -> None:
    other = "http://replica.test"
    mocked.add(responses.GET, LIVE, body=requests.ConnectionError("refused"))
    add_sse(mocked, sse(ev(LOG[0]), ev(LOG[1])), url=f"{other}/v1/streams/robot-1/live")
    # A healthy connection that ended: the tail stays with the server that answered.
    add_sse(mocked, sse(ev(LOG[2])), url=f"{other}/v1/streams/robot-1/live")
    waits = Waits(3)
    tail, transport = make_tail(waits, urls=[BASE, other], wait=tenacity.wait_fixed(0))
    q = tail.states()
    run_script(tail, transport, waits)
    hosts = [str(c.request.url).split("/v1")[0] for c in mocked.calls]
    assert hosts == [BASE, other, other]
    assert mocked.calls[2].request.headers["Last-Event-ID"] == "2"
    assert [s for _, s in q] == [s for _, s in states_of(LOG[:3])][1:]


def test_not_an_event_stream_reconnects(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, LIVE, body="<html>proxy</html>", content_type="text/html")
    waits = Waits(1)
    tail, transport = make_tail(waits, wait=tenacity.wait_fixed(0))
    run_script(tail, transport, waits)
    assert isinstance(tail.health.last_error, ProtocolError)


def test_subscriber_gets_current_state_first_then_changes(mocked: responses.RequestsMock) -> None:
    add_sse(mocked, sse(*(ev(e) for e in LOG[:3])))
    waits = Waits(1)
    tail, transport = make_tail(waits, wait=tenacity.wait_fixed(0))
    first = tail.states()
    run_script(tail, transport, waits)
    assert [s for _, s in first] == [states_of(LOG[:3])[-1][1]]  # not the window's replay
    # After closing, subscribing is refused.
    with pytest.raises(ClientClosed):
        tail.states()
    with pytest.raises(ClientClosed):
        tail.latest(timeout=0)


def test_latest_and_a_late_subscriber_see_the_current_state(
    mocked: responses.RequestsMock,
) -> None:
    add_sse(mocked, sse(*(ev(e) for e in LOG[:3])))
    add_sse(mocked, sse(ev(LOG[3])))
    gate = threading.Event()
    waits = Waits(2)

    def sleep(seconds: float) -> None:
        gate.wait(5)  # hold the second connection until the late subscriber is in
        waits(seconds)

    transport = Transport(BASE, retry=tenacity.Retrying())
    tail = LiveTail(transport, "robot-1", sleep=sleep, wait=tenacity.wait_fixed(0))
    waits.tail = tail
    _ts, state = tail.latest(timeout=5)
    assert state == states_of(LOG[:3])[-1][1]
    assert tail.live_window() == LOG[:3]
    state["pos"].append("mine")  # a private copy
    late = tail.states()
    gate.set()
    assert waits.done.wait(5)
    tail.close()
    transport.close()
    assert [s for _, s in late] == [states_of(LOG[:3])[-1][1], LOG[3].data]


def test_close_from_a_callback_does_not_deadlock(mocked: responses.RequestsMock) -> None:
    add_sse(mocked, sse(*(ev(e) for e in LOG)))
    transport = Transport(BASE, retry=tenacity.Retrying())
    tail = LiveTail(transport, "robot-1", sleep=lambda s: None, wait=tenacity.wait_fixed(0))
    closed = threading.Event()

    def on_state(ts: datetime, state: dict[str, Any]) -> None:
        tail.close()
        closed.set()

    sub = tail.subscribe(on_state)
    assert closed.wait(5)
    tail.close()
    transport.close()
    assert not sub.thread.is_alive()
    assert tail.health.state is ConnectionState.CLOSED


def test_latest_waits_a_finite_time_and_says_what_it_waited_for(
    mocked: responses.RequestsMock,
) -> None:
    # Every connection is refused: the tail never receives the stream's state.
    waits = Waits(10_000)
    tail, transport = make_tail(waits, wait=tenacity.wait_fixed(0.01))
    try:
        with pytest.raises(rstream.Timeout) as info:
            tail.latest(timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, rstream.RStreamError)
        message = str(info.value)
        assert "'robot-1'" in message
        assert "current state" in message
        assert "connection" in message
    finally:
        tail.close()
        transport.close()


def test_the_tail_never_switches_the_garbage_collector(
    mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A library does not change process-wide state: the collector is the application's.
    switched: list[str] = []
    monkeypatch.setattr(gc, "disable", lambda: switched.append("disable"))
    monkeypatch.setattr(gc, "enable", lambda: switched.append("enable"))
    add_sse(mocked, sse(*(ev(e) for e in LOG)))
    add_sse(mocked, sse(ev(LOG[4]), ("entry", "{broken", "6")))  # ProtocolError mid-chunk
    waits = Waits(2)
    tail, transport = make_tail(waits, wait=tenacity.wait_fixed(0))
    q = tail.states()
    run_script(tail, transport, waits)
    assert [s for _, s in q] == [states_of(LOG)[-1][1]]
    assert switched == []


def test_a_raising_token_callable_stops_the_tail_with_an_auth_error(
    mocked: responses.RequestsMock,
) -> None:
    def token() -> str:
        raise KeyError("vault unreachable")

    tail, transport = make_tail(Waits(1), token=token)
    q = tail.states()
    with pytest.raises(AuthError, match="vault unreachable"):
        q.get(timeout=5)
    assert len(mocked.calls) == 0
    tail.close()
    transport.close()


# -- the change log as a whole: a model check ----------------------------------


class ModelServer:
    """A stream as the server holds it (amends replace the newest entry), and the
    live events it sends, fed to a LiveState into a change log as the tail does."""

    def __init__(self, log: ChangeLog) -> None:
        self.entries: list[Entry] = []
        self.states: list[dict[str, Any]] = []  # the state after each entry
        self.rev = 0
        self.live = LiveState()
        self.log = log

    def write(self, value: int, how: str) -> None:
        new = {"v": value, "k": {"x": value % 3}}
        self.rev += 1
        amend = how == "amend" and len(self.entries) > 1 and not self.entries[-1].is_snapshot
        if amend:
            base = self.states[-2]
            last = self.entries[-1]
            entry = Entry.from_micros(
                last.micros, EntryKind.MUTATION, build_mutation(base, new), self.rev
            )
            self.entries[-1], self.states[-1] = entry, new
        else:
            micros = T0 + len(self.entries) * 1000
            if how == "snapshot" or not self.entries:
                entry = Entry.from_micros(micros, EntryKind.SNAPSHOT, new, self.rev)
            else:
                data = build_mutation(self.states[-1], new)
                entry = Entry.from_micros(micros, EntryKind.MUTATION, data, self.rev)
            self.entries.append(entry)
            self.states.append(new)
        step = self.live.feed(*ev(entry, "amend" if amend else "entry"))
        assert step.change is not None
        self.log.append([step.change])

    def fetch(self, start: int) -> Iterator[Entry]:
        return iter([e for e in list(self.entries) if e.micros >= start])


def collapse(items: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """Replacements folded: of consecutive states at one time, the last."""
    out: list[tuple[int, dict[str, Any]]] = []
    for micros, state in items:
        if out and out[-1][0] == micros:
            out[-1] = (micros, state)
        else:
            out.append((micros, state))
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.sampled_from(["entry", "entry", "amend", "snapshot"])),
            st.tuples(st.just("read"), st.integers(0, 3)),
            st.tuples(st.just("notice"), st.just(0)),
        ),
        max_size=80,
    ),
    st.integers(1, 6),
)
def test_readers_of_every_policy_against_a_model_of_the_server(
    operations: list[tuple[str, Any]], capacity: int
) -> None:
    """Whatever the writes, amends and reads, with a tiny memory: a "block" reader
    gets every change of the server's log once, in order (amends as replacements);
    "latest" and "drop_oldest" readers end on the newest state; every reader gets
    every notice once, in order."""
    log = ChangeLog(capacity, name="model")
    server = ModelServer(log)
    log._fetch = server.fetch
    server.write(0, "snapshot")
    log.mark_loaded()
    queues = [queue_of(log), queue_of(log), queue_of(log, overflow="latest")]
    queues.append(queue_of(log, 2, "drop_oldest"))
    notices: list[list[BaseException]] = [[] for _ in queues]
    got: list[list[tuple[int, dict[str, Any]]]] = [[] for _ in queues]
    for q, seen in zip(queues, notices, strict=True):
        q.on_error = seen.append
    sent: list[BaseException] = []
    for i, (op, arg) in enumerate(operations, start=1):
        if op == "write":
            server.write(i, arg)
        elif op == "notice":
            notice = Disconnected(f"lost {i}")
            sent.append(notice)
            log.notice(notice)
        else:
            with contextlib.suppress(rstream.Empty):
                ts, state = queues[arg].get_nowait()
                got[arg].append((to_micros(ts), state))
    for q, items in zip(queues, got, strict=True):
        items += [(to_micros(ts), state) for ts, state in iter_now(q)]
    expected = list(zip([e.micros for e in server.entries], server.states, strict=True))
    for items in got[:2]:
        assert collapse(items) == expected
    for items in got[2:]:
        assert items[-1] == expected[-1]
        assert [m for m, _ in items] == sorted(m for m, _ in items)
    for q, seen in zip(queues, notices, strict=True):
        assert seen == sent, (q.overflow, seen, sent)


def iter_now(q: StateQueue) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """What ``q`` holds now, without waiting."""
    while True:
        try:
            yield q.get_nowait()
        except rstream.Empty:
            return


def test_an_outage_is_one_disconnected_one_reconnected_and_one_warning(
    mocked: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    add_sse(mocked, sse(ev(LOG[0])))  # open, then lost
    for _ in range(3):
        add_error(mocked, 503, "unavailable")  # the outage goes on: no more notices
    add_sse(mocked, sse(ev(LOG[1])))  # back
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    waits = Waits(5)
    tail, transport = make_tail(waits, wait=tenacity.wait_fixed(0), clock=clock)
    errors: list[BaseException] = []
    q = tail.states(on_error=errors.append)
    with caplog.at_level(logging.INFO, logger="rstream"):
        run_script(tail, transport, waits)
        assert [s for _, s in q] == [LOG[0].data, states_of(LOG[:2])[1][1]]
    kinds = [type(e) for e in errors]
    assert kinds == [Disconnected, Reconnected, Disconnected]  # the last: the script's end
    lost, back = errors[0], errors[1]
    assert isinstance(lost, Disconnected)
    assert isinstance(back, Reconnected)
    assert lost.url == back.url == LIVE
    assert back.downtime > 0
    warnings = [r for r in caplog.records if "lost its connection" in r.getMessage()]
    assert len(warnings) == 2  # one per outage, not one per failed attempt
