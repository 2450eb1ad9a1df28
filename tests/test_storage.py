"""Server storage: one conformance suite run against every backend, then what
only SQLite promises (persistence, several processes, crash safety, indexes).

A backend joins the suite by adding a factory to ``BACKENDS`` (the PostgreSQL
one skips itself without ``RSTREAM_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rstream import (
    ClientClosed,
    Entry,
    EntryFormatError,
    EntryKind,
    InvalidJSON,
    InvalidTimestamp,
    OutOfOrder,
    RStreamError,
    StreamNotFound,
)
from rstream.core.stream import RateConfig, Stream, WriteAction
from rstream.core.timestamps import from_micros
from rstream.server.storage import (
    MemoryStorage,
    Storage,
    StreamInfo,
    StreamLog,
    is_valid_stream_id,
    open_storage,
    sqlite_path,
)
from rstream.server.storage.base import MAX_US, MIN_US, dump_json, load_json
from rstream.server.storage.sql import SCHEMA_VERSION, SQLITE, statements
from rstream.server.storage.sqlite import SQLiteStorage
from tests.pgutil import replay
from tests.threadutil import run_threads

REPO = Path(__file__).resolve().parent.parent
T0 = 1_714_564_800_000_000  # 2024-05-01T12:00:00Z in epoch micros
S = 1_000_000  # one second in micros


def snap(us: int, data: dict[str, Any]) -> Entry:
    return Entry(from_micros(us), EntryKind.SNAPSHOT, data)


def mut(us: int, data: dict[str, Any]) -> Entry:
    return Entry(from_micros(us), EntryKind.MUTATION, data)


def _memory(tmp_path: Path) -> Storage:
    return MemoryStorage()


def _sqlite(tmp_path: Path) -> Storage:
    return SQLiteStorage(tmp_path / "rstream.db")


def _postgres(tmp_path: Path) -> Storage:
    # A schema of its own (tests/pgutil.py), dropped when the storage is closed;
    # skipped without RSTREAM_TEST_POSTGRES_URL (a failure in CI).
    from tests.pgutil import fresh_storage

    return fresh_storage()


BACKENDS: dict[str, Callable[[Path], Storage]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    store = BACKENDS[request.param](tmp_path)
    yield store
    store.close()


@pytest.fixture
def log(storage: Storage) -> StreamLog:
    storage.create_stream("robot-1")
    return storage.log("robot-1")


def fill(log: StreamLog) -> list[Entry]:
    """snap T0, mut T0+1s, mut T0+2s, snap T0+3s, mut T0+4s."""
    return [
        log.append(snap(T0, {"x": 0})),
        log.append(mut(T0 + S, {"x": 1})),
        log.append(mut(T0 + 2 * S, {"x": 2})),
        log.append(snap(T0 + 3 * S, {"x": 3})),
        log.append(mut(T0 + 4 * S, {"x": 4})),
    ]


def micros(entries: Any) -> list[int]:
    return [entry.micros for entry in entries]


# -- conformance: the Log protocol ------------------------------------------------


def test_implements_the_protocols(storage: Storage, log: StreamLog) -> None:
    assert isinstance(storage, Storage)
    assert isinstance(log, StreamLog)


def test_empty_log(log: StreamLog) -> None:
    assert log.revision == 0
    assert log.last() is None
    assert log.first() is None
    assert log.latest_snapshot() is None
    assert log.snapshot_before(T0 / S) is None
    assert log.entry_after(0) is None
    assert log.range(0, T0 / S) == []
    assert list(log.iter_range(None, None)) == []
    assert log.count_range(None, None) == 0
    assert log.changes_since(0) == []


def test_snapshot_before_at_before_and_after_snapshots(log: StreamLog) -> None:
    fill(log)
    assert log.snapshot_before(from_micros(T0 - 1)) is None
    assert log.snapshot_before(from_micros(T0)) == snap(T0, {"x": 0})
    assert log.snapshot_before(from_micros(T0 + 2 * S)) == snap(T0, {"x": 0})
    assert log.snapshot_before(from_micros(T0 + 3 * S - 1)) == snap(T0, {"x": 0})
    assert log.snapshot_before(from_micros(T0 + 3 * S)) == snap(T0 + 3 * S, {"x": 3})
    assert log.snapshot_before(from_micros(T0 + 100 * S)) == snap(T0 + 3 * S, {"x": 3})
    # epoch seconds are public-API times too
    assert log.snapshot_before((T0 + 3 * S) // S) == snap(T0 + 3 * S, {"x": 3})
    # the micros variants agree, and clamp what no entry can reach
    assert log.snapshot_before_us(T0 + 3 * S - 1) == snap(T0, {"x": 0})
    assert log.snapshot_before_us(T0 - 1) is None
    assert log.snapshot_before_us(10**30) == snap(T0 + 3 * S, {"x": 3})
    assert log.snapshot_before_us(-(10**30)) is None
    assert log.latest_snapshot() == snap(T0 + 3 * S, {"x": 3})


def test_entry_after_with_and_without_kind(log: StreamLog) -> None:
    fill(log)
    assert log.entry_after(from_micros(T0 - 1)) == snap(T0, {"x": 0})
    assert log.entry_after(from_micros(T0)) == mut(T0 + S, {"x": 1})
    assert log.entry_after(from_micros(T0), EntryKind.SNAPSHOT) == snap(T0 + 3 * S, {"x": 3})
    assert log.entry_after(from_micros(T0 + 3 * S), EntryKind.SNAPSHOT) is None
    assert log.entry_after(from_micros(T0 + 2 * S), EntryKind.MUTATION) == mut(T0 + 4 * S, {"x": 4})
    assert log.entry_after(from_micros(T0 + 4 * S)) is None
    assert log.entry_after_us(T0 + S - 1) == mut(T0 + S, {"x": 1})
    assert log.entry_after_us(T0, EntryKind.MUTATION) == mut(T0 + S, {"x": 1})
    assert log.entry_after_us(T0 + S, EntryKind.MUTATION) == mut(T0 + 2 * S, {"x": 2})
    assert log.snapshot_after_us(T0) == snap(T0 + 3 * S, {"x": 3})
    assert log.snapshot_after_us(T0 + 3 * S) is None
    assert log.snapshot_after_us(-(10**30)) == snap(T0, {"x": 0})


def test_range_start_inclusive_end_exclusive(log: StreamLog) -> None:
    entries = fill(log)
    assert log.range(from_micros(T0), from_micros(T0 + 3 * S)) == entries[:3]
    assert log.range(from_micros(T0 + 1), from_micros(T0 + 3 * S + 1)) == entries[1:4]
    assert log.range(from_micros(T0 + S), from_micros(T0 + S)) == []
    assert log.range(from_micros(T0 + 3 * S), from_micros(T0)) == []
    assert micros(log.range(0, 10**10)) == micros(entries)


def test_iter_range_bounds_limit_and_count(log: StreamLog) -> None:
    entries = fill(log)
    assert list(log.iter_range(None, None)) == entries
    assert list(log.iter_range(T0 + S, None)) == entries[1:]
    assert list(log.iter_range(None, T0 + 3 * S)) == entries[:3]
    assert list(log.iter_range(T0 + S, T0 + 4 * S)) == entries[1:4]
    assert list(log.iter_range(T0 + S, T0 + 4 * S, limit=2)) == entries[1:3]
    assert list(log.iter_range(None, None, limit=0)) == []
    assert list(log.iter_range(None, None, limit=99)) == entries
    assert list(log.iter_range(-(10**30), 10**30)) == entries
    assert list(log.iter_range(T0 + 4 * S, T0 + S)) == []
    assert log.count_range(None, None) == 5
    assert log.count_range(T0 + S, T0 + 4 * S) == 3
    assert log.count_range(T0 + 4 * S + 1, None) == 0
    assert [e.rev for e in log.iter_range(None, None)] == [1, 2, 3, 4, 5]


#: Data whose JSON text is easy to get wrong: what iter_range_raw must hand out
#: exactly as dump_json wrote it.
TRICKY: list[dict[str, Any]] = [
    {},
    {"": {}, "empty": [], "nested": {"": ""}},
    {"text": "héllo wörld ☃ 日本語 🤖", "ключ": "значение"},
    {"escapes": 'quote " backslash \\ slash / \n\r\t\b\f \u0000 \u001f \u007f \u2028\u2029'},
    {"lone_surrogate": "\ud800x", "low": "\udfff", "pair": "\U0001f916"},
    {"numbers": [0, -0.0, 0.1 + 0.2, 1e308, 5e-324, -(2**63), 2**100, True, False, None]},
    {"order": {"z": 1, "a": 2, "m": {"y": [], "b": {}}}},
]


def test_iter_range_raw_yields_the_stored_json_text(log: StreamLog) -> None:
    stored = log.append_many([snap(T0 + i * S, data) for i, data in enumerate(TRICKY)])
    rows = list(log.iter_range_raw(None, None))
    assert rows == [(e.micros, int(e.kind), dump_json(e.data), e.rev) for e in stored]
    assert [load_json(data) for _, _, data, _ in rows] == TRICKY
    assert list(log.iter_range_raw(T0 + S, T0 + 4 * S, 2)) == rows[1:3]
    assert list(log.iter_range_raw(T0 + S, T0 + 4 * S, 0)) == []
    assert list(log.iter_range_raw(T0 + 3 * S, None)) == rows[3:]
    assert list(log.iter_range_raw(None, T0)) == []
    for _ in range(20):  # closed early, more times than a pool holds
        with closing(log.iter_range_raw(None, None)) as raw:
            assert next(raw) == rows[0]
    assert log.count_range(None, None) == len(TRICKY)


def test_iter_range_closed_early_releases_what_it_holds(storage: Storage, log: StreamLog) -> None:
    fill(log)
    for _ in range(20):  # more than the pool holds
        with closing(log.iter_range(None, None)) as entries:
            assert next(entries) == snap(T0, {"x": 0})
    assert log.count_range(None, None) == 5
    if isinstance(storage, SQLiteStorage):
        assert storage._busy == set()  # every connection went back to the pool


def test_append_out_of_order_changes_nothing(log: StreamLog) -> None:
    entries = fill(log)
    for bad in (snap(T0 + 4 * S, {"x": 9}), mut(T0 + 4 * S, {}), mut(T0, {}), snap(T0 - S, {})):
        with pytest.raises(OutOfOrder) as info:
            log.append(bad)
        assert info.value.given == bad.timestamp
        assert info.value.last == from_micros(T0 + 4 * S)
    assert log.revision == 5
    assert log.range(0, 10**10) == entries
    assert log.last() == mut(T0 + 4 * S, {"x": 4})


def test_revisions_count_every_change_and_entries_carry_them(log: StreamLog) -> None:
    first = log.append(snap(T0, {"a": 1}))
    assert (first.rev, log.revision) == (1, 1)
    second = log.append(mut(T0 + 1, {"a": 2}))
    assert (second.rev, log.revision) == (2, 2)
    amended = log.amend(mut(T0 + 1, {"a": 3}))
    assert (amended.rev, log.revision) == (3, 3)
    assert log.last() == mut(T0 + 1, {"a": 3})
    assert log.last().rev == 3  # type: ignore[union-attr]
    assert [e.rev for e in log.range(0, 10**10)] == [1, 3]


def test_amend_rules(log: StreamLog) -> None:
    with pytest.raises(OutOfOrder, match="empty"):
        log.amend(mut(T0, {}))
    log.append(snap(T0, {"a": 1}))
    with pytest.raises(OutOfOrder, match="snapshot"):
        log.amend(mut(T0, {"a": 2}))
    log.append(mut(T0 + S, {"a": 2}))
    with pytest.raises(OutOfOrder, match="snapshot"):
        log.amend(snap(T0 + S, {"a": 3}))
    with pytest.raises(OutOfOrder, match="another time"):
        log.amend(mut(T0 + 2 * S, {"a": 3}))
    with pytest.raises(OutOfOrder, match="another time"):
        log.amend(mut(T0, {"a": 3}))
    assert log.revision == 2
    assert log.last() == mut(T0 + S, {"a": 2})
    stored = log.amend(mut(T0 + S, {"a": 3}))
    assert stored == mut(T0 + S, {"a": 3})
    assert stored.rev == 3
    assert log.range(0, 10**10) == [snap(T0, {"a": 1}), mut(T0 + S, {"a": 3})]


def test_changes_since_in_revision_order_including_amends(log: StreamLog) -> None:
    fill(log)
    assert [e.rev for e in log.changes_since(0)] == [1, 2, 3, 4, 5]
    assert [e.rev for e in log.changes_since(3)] == [4, 5]
    assert log.changes_since(5) == []
    assert log.changes_since(99) == []
    log.amend(mut(T0 + 4 * S, {"x": 40}))
    changes = log.changes_since(4)
    assert changes == [mut(T0 + 4 * S, {"x": 40})]
    assert [e.rev for e in changes] == [6]
    assert [e.rev for e in log.changes_since(0)] == [1, 2, 3, 4, 6]


def test_append_many_assigns_consecutive_revisions(log: StreamLog) -> None:
    log.append(snap(T0, {"a": 1}))
    stored = log.append_many([mut(T0 + 1, {"a": 2}), snap(T0 + 2, {"a": 3}), mut(T0 + 3, {})])
    assert [e.rev for e in stored] == [2, 3, 4]
    assert micros(stored) == [T0 + 1, T0 + 2, T0 + 3]
    assert log.revision == 4
    assert log.append_many([]) == []
    assert log.revision == 4


@pytest.mark.parametrize(
    ("batch", "error", "fragment"),
    [
        ([mut(T0 + 5, {}), mut(T0 + 5, {}), mut(T0 + 6, {})], OutOfOrder, "entry 1 of the batch"),
        ([mut(T0 + 5, {}), mut(T0 + 7, {}), mut(T0 + 6, {})], OutOfOrder, "entry 2 of the batch"),
        ([mut(T0, {}), mut(T0 + 7, {})], OutOfOrder, "entry 0 of the batch"),
        (
            [mut(T0 + 5, {}), mut(T0 + 6, {"bad": float("nan")}), mut(T0 + 7, {})],
            EntryFormatError,
            "entry 1 of the batch",
        ),
        (
            [mut(T0 + 5, {}), Entry.from_micros(MAX_US, EntryKind.MUTATION, {})],
            InvalidTimestamp,
            "entry 1 of the batch",
        ),
    ],
)
@pytest.mark.parametrize("method", ["append_many", "append_batch"])
def test_append_many_is_all_or_nothing(
    log: StreamLog, batch: list[Entry], error: type[Exception], fragment: str, method: str
) -> None:
    log.append(snap(T0, {"a": 1}))
    with pytest.raises(error, match=fragment):
        getattr(log, method)(batch)
    assert log.revision == 1
    assert log.range(0, 10**10) == [snap(T0, {"a": 1})]
    assert log.changes_since(0) == [snap(T0, {"a": 1})]
    # the log still takes the next write at revision 2
    assert log.append(mut(T0 + 5, {})).rev == 2


def test_append_batch_returns_the_new_revision(log: StreamLog) -> None:
    assert log.append_batch([]) == 0
    assert log.append_batch([snap(T0, {"a": 1}), mut(T0 + S, {"a": 2})]) == 2
    assert log.append_batch([mut(T0 + 2 * S, {"a": 3})]) == 3
    assert [(e.rev, e.micros, e.data) for e in log.changes_since(0)] == [
        (1, T0, {"a": 1}),
        (2, T0 + S, {"a": 2}),
        (3, T0 + 2 * S, {"a": 3}),
    ]
    assert log.append_batch([]) == 3


def test_data_that_is_not_json_is_refused(log: StreamLog) -> None:
    for data in ({"x": float("nan")}, {"x": float("inf")}, {"x": {1, 2}}, {"x": object()}):
        with pytest.raises(EntryFormatError):
            log.append(snap(T0, data))
    log.append(mut(T0, {}))
    with pytest.raises(EntryFormatError):
        log.amend(mut(T0, {"x": -float("inf")}))
    assert log.revision == 1
    assert log.last() == mut(T0, {})


def test_timestamps_outside_the_storable_range_are_refused(log: StreamLog) -> None:
    for us in (MAX_US, 10**20, MIN_US - 1):
        with pytest.raises(InvalidTimestamp):
            log.append(Entry.from_micros(us, EntryKind.SNAPSHOT, {}))
    assert log.revision == 0
    assert log.append(Entry.from_micros(MIN_US, EntryKind.SNAPSHOT, {})).rev == 1
    assert log.append(Entry.from_micros(MAX_US - 1, EntryKind.SNAPSHOT, {})).rev == 2
    assert micros(log.iter_range(None, None)) == [MIN_US, MAX_US - 1]


def test_stored_entries_do_not_share_the_callers_data(log: StreamLog) -> None:
    data: dict[str, Any] = {"list": [1, 2], "nested": {"k": "v"}}
    stored = log.append(snap(T0, data))
    data["list"].append(3)
    data["nested"]["k"] = "changed"
    assert stored.data == {"list": [1, 2], "nested": {"k": "v"}}
    assert log.last() == snap(T0, {"list": [1, 2], "nested": {"k": "v"}})


def test_unicode_and_big_json_round_trip(log: StreamLog) -> None:
    weird: dict[str, Any] = {
        "text": 'héllo wörld ☃ 🤖 \u0000 \n \t " \\ \u2028',
        "lone_surrogate": "\ud800x",
        "ключ": ["日本語", -0.0, 1e308, -(2**63), 2**63 - 1, 2**100, True, False, None],
        "": {"": ""},
        "float": 0.1 + 0.2,
    }
    big = {
        f"key-{i}": {"values": list(range(i % 50)), "name": "x" * (i % 300)} for i in range(3000)
    }
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(200):
        node["child"] = {}
        node = node["child"]
    log.append(snap(T0, weird))
    log.append(snap(T0 + 1, big))
    log.append(snap(T0 + 2, deep))
    assert [e.data for e in log.range(0, 10**10)] == [weird, big, deep]
    assert log.snapshot_before_us(T0).data["lone_surrogate"] == "\ud800x"  # type: ignore[union-attr]


def test_concurrent_appends_get_distinct_consecutive_revisions(log: StreamLog) -> None:
    log.append(snap(T0, {}))
    stamps = itertools.count(T0 + 1)
    revs: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        done = 0
        while done < 25:
            try:
                stored = log.append(mut(next(stamps), {"n": done}))
            except OutOfOrder:  # another thread's later stamp got in first
                continue
            with lock:
                revs.append(stored.rev)  # type: ignore[arg-type]
            done += 1

    assert run_threads(*[writer] * 4, timeout=30) == []
    assert sorted(revs) == list(range(2, 102))
    assert log.revision == 101
    entries = log.changes_since(0)
    assert [e.rev for e in entries] == list(range(1, 102))
    assert micros(entries) == sorted(micros(entries))


def test_the_writer_skips_its_json_check_only_when_told(log: StreamLog) -> None:
    # The server checks a state as it parses the body and tells the writer so.
    writer = Stream(log)
    with pytest.raises(InvalidJSON, match="lone surrogate"):
        writer.write_state({"s": "\ud800"}, from_micros(T0))
    assert log.revision == 0
    stored = writer.write_state({"s": "\ud800"}, from_micros(T0), checked=True)
    assert stored is not None
    assert (stored.rev, stored.data) == (1, {"s": "\ud800"})


def test_the_core_writer_runs_on_the_log(log: StreamLog) -> None:
    now = [T0]
    stream = Stream(
        log, RateConfig(timedelta(seconds=10), timedelta(seconds=1)), clock=lambda: now[0]
    )
    actions = []
    for step, pos in ((0, 0), (2 * S, 1), (S // 2, 2), (20 * S, 3)):
        now[0] += step
        stream.write_state({"pos": pos})
        actions.append(stream.last_action)
    assert actions == [
        WriteAction.SNAPSHOT,
        WriteAction.MUTATION,
        WriteAction.AMEND,
        WriteAction.SNAPSHOT,
    ]
    assert log.revision == 4
    assert [e.kind for e in log.range(0, 10**10)] == [
        EntryKind.SNAPSHOT,
        EntryKind.MUTATION,
        EntryKind.SNAPSHOT,
    ]
    # a second writer over the same log picks up where the first left off
    assert Stream(log).state == {"pos": 3}


def test_write_lock_lets_stale_writers_decide_on_fresh_state(log: StreamLog) -> None:
    """Four writers, each with its own cursor on one log: every decision and
    its write run under ``write_lock``, so each mutation is built on the state
    it replaces and every written state is in the log exactly once."""
    stamps = itertools.count(T0, S)  # read under the lock: increasing in write order
    rate = RateConfig(keyframe_frequency=timedelta(seconds=3), change_frequency=timedelta(0))

    def writer(who: int) -> None:
        stream = Stream(log, rate, clock=lambda: next(stamps))
        for n in range(10):
            with log.write_lock():
                stream.write_state({"by": who, "n": n, "pad": [who] * (n % 3)})

    assert run_threads(*[functools.partial(writer, who) for who in range(4)], timeout=60) == []
    entries = log.changes_since(0)
    assert [e.rev for e in entries] == list(range(1, 41))
    states = replay(entries)
    written = sorted((s["by"], s["n"]) for s in states)
    assert written == [(who, n) for who in range(4) for n in range(10)]
    assert all(s["pad"] == [s["by"]] * (s["n"] % 3) for s in states)


# -- conformance: streams -----------------------------------------------------------


def test_create_stream_list_and_info(storage: Storage) -> None:
    assert storage.list_streams() == []
    assert storage.info("b") is None
    assert storage.create_stream("b") is True
    assert storage.create_stream("b") is False
    rate = RateConfig(timedelta(seconds=5), timedelta(milliseconds=250))
    assert storage.create_stream("a", rate) is True
    assert [info.id for info in storage.list_streams()] == ["a", "b"]
    assert storage.info("a") == StreamInfo(
        id="a", rate=rate, first=None, last=None, latest_snapshot=None, revision=0
    )
    assert storage.info("b") == StreamInfo(
        id="b", rate=RateConfig(), first=None, last=None, latest_snapshot=None, revision=0
    )


def test_create_existing_stream_sets_rate_only_when_given(storage: Storage) -> None:
    rate = RateConfig(timedelta(seconds=5), timedelta(0))
    storage.create_stream("s")
    storage.log("s").append(snap(T0, {}))
    assert storage.create_stream("s", rate) is False
    info = storage.info("s")
    assert info is not None
    assert info.rate == rate
    assert info.revision == 1  # setting the rate is no change of the log
    odd = RateConfig(timedelta(microseconds=1_500_250), timedelta(microseconds=7))
    storage.create_stream("s", odd)
    assert storage.create_stream("s") is False
    assert storage.info("s").rate == odd  # type: ignore[union-attr]


def test_info_follows_the_log(storage: Storage) -> None:
    storage.create_stream("s")
    log = storage.log("s")
    fill(log)
    expected = StreamInfo(
        id="s",
        rate=RateConfig(),
        first=T0,
        last=T0 + 4 * S,
        latest_snapshot=T0 + 3 * S,
        revision=5,
    )
    assert storage.info("s") == expected
    assert storage.list_streams() == [expected]
    storage.create_stream("t")
    storage.log("t").append(mut(T0, {}))
    assert storage.info("t") == StreamInfo(
        id="t", rate=RateConfig(), first=T0, last=T0, latest_snapshot=None, revision=1
    )


def test_streams_are_independent(storage: Storage) -> None:
    storage.create_stream("a")
    storage.create_stream("b")
    a, b = storage.log("a"), storage.log("b")
    a.append(snap(T0 + S, {"a": 1}))
    b.append(snap(T0, {"b": 1}))  # earlier than a's newest: another stream, no order
    b.append(mut(T0 + 2 * S, {"b": 2}))
    assert (a.revision, b.revision) == (1, 2)
    assert a.range(0, 10**10) == [snap(T0 + S, {"a": 1})]
    assert b.changes_since(0) == [snap(T0, {"b": 1}), mut(T0 + 2 * S, {"b": 2})]


def test_unknown_stream_is_not_found(storage: Storage) -> None:
    with pytest.raises(StreamNotFound) as info:
        storage.log("nope")
    assert info.value.stream_id == "nope"


def test_close_is_idempotent_and_later_use_fails(storage: Storage) -> None:
    storage.create_stream("s")
    log = storage.log("s")
    storage.close()
    storage.close()
    with pytest.raises(ClientClosed):
        storage.list_streams()
    with pytest.raises(ClientClosed):
        storage.create_stream("t")
    with pytest.raises(ClientClosed):
        storage.log("s")
    if isinstance(storage, SQLiteStorage):
        with pytest.raises(ClientClosed):
            log.append(snap(T0, {}))


# -- open_storage and helpers ---------------------------------------------------------


def test_open_storage_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with closing(open_storage("memory://")) as memory:
        assert isinstance(memory, MemoryStorage)
    absolute = tmp_path / "abs" / "x.db"
    absolute.parent.mkdir()
    with closing(open_storage(f"sqlite:///{absolute}")) as store:
        assert isinstance(store, SQLiteStorage)
        assert store.path == str(absolute)
    assert absolute.exists()
    monkeypatch.chdir(tmp_path)
    with closing(open_storage("sqlite:///rel.db")) as store:
        assert isinstance(store, SQLiteStorage)
        store.create_stream("s")
    assert (tmp_path / "rel.db").exists()


def test_sqlite_path_follows_sqlalchemy() -> None:
    assert sqlite_path("sqlite:///data/r.db") == "data/r.db"
    assert sqlite_path("sqlite:////var/lib/r.db") == "/var/lib/r.db"
    assert sqlite_path("sqlite:///with%20space.db") == "with space.db"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("postgresql://user:secret@127.0.0.1:1/rstream", "cannot connect to PostgreSQL"),
        ("postgres://127.0.0.1:1/rstream?schema=Bad-Name", "schema name"),
        ("redis://localhost", "unknown scheme"),
        ("/tmp/x.db", "no scheme"),
        ("sqlite://", "expected sqlite:///"),
        ("sqlite:///", "expected sqlite:///"),
        ("sqlite:///x.db?mode=ro", "no query"),
        ("memory://somewhere", "takes no path"),
    ],
)
def test_open_storage_refuses_what_it_cannot_open(url: str, fragment: str) -> None:
    with pytest.raises(RStreamError, match=fragment) as info:
        open_storage(url)
    assert "secret" not in str(info.value)


def test_stream_id_rule() -> None:
    for good in ("a", "robot-1", "A.b_c~d-e", "x" * 128, "_x", "-"):
        assert is_valid_stream_id(good), good
    for bad in ("", ".hidden", "x" * 129, "a/b", "a b", "é", "a?", 5, None, "a\n"):
        assert not is_valid_stream_id(bad), bad


def test_dump_json_is_compact_utf8_and_exact() -> None:
    assert dump_json({"a": [1, 2], "é": "☃"}) == '{"a":[1,2],"é":"☃"}'
    text = dump_json({"s": "\udfff"})
    assert text.isascii()
    assert load_json(text) == {"s": "\udfff"}
    with pytest.raises(EntryFormatError, match="not JSON"):
        dump_json({"x": float("nan")})


# -- SQLite only ---------------------------------------------------------------------------


def test_sqlite_data_survives_reopen_and_revisions_continue(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    rate = RateConfig(timedelta(seconds=3), timedelta(milliseconds=10))
    with SQLiteStorage(path) as store:
        store.create_stream("s", rate)
        entries = fill(store.log("s"))
        store.log("s").amend(mut(T0 + 4 * S, {"x": 44}))
    with SQLiteStorage(path) as store:
        log = store.log("s")
        assert log.revision == 6
        assert store.info("s").rate == rate  # type: ignore[union-attr]
        assert log.range(0, 10**10) == [*entries[:4], mut(T0 + 4 * S, {"x": 44})]
        assert log.append(snap(T0 + 5 * S, {})).rev == 7
        assert [e.rev for e in log.changes_since(4)] == [6, 7]
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM rstream_schema").fetchall() == [(SCHEMA_VERSION,)]


def test_sqlite_two_storages_on_one_file_never_duplicate_revisions(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    stores = [SQLiteStorage(path), SQLiteStorage(path)]
    try:
        stores[0].create_stream("s")
        stores[1].create_stream("s")
        logs = [store.log("s") for store in stores]
        stamps = itertools.count(T0)
        acknowledged: list[tuple[int, int]] = []
        lock = threading.Lock()

        def writer(log: StreamLog, batch: bool) -> None:
            done = 0
            while done < 30:
                try:
                    if batch:
                        stored = log.append_many([snap(next(stamps), {}), mut(next(stamps), {})])
                    else:
                        stored = [log.append(snap(next(stamps), {"d": done}))]
                except OutOfOrder:
                    continue
                with lock:
                    acknowledged.extend((e.rev, e.micros) for e in stored)  # type: ignore[misc]
                done += 1

        writers = [functools.partial(writer, logs[i % 2], i >= 2) for i in range(4)]
        assert run_threads(*writers, timeout=60) == []
        revs = sorted(rev for rev, _ in acknowledged)
        assert revs == list(range(1, len(acknowledged) + 1))
        assert len(acknowledged) == 2 * 30 + 2 * 60
        stored = logs[1].changes_since(0)
        assert sorted((e.rev, e.micros) for e in stored) == sorted(acknowledged)
        assert micros(stored) == sorted(micros(stored))  # revisions grow along the log
        assert logs[0].revision == logs[1].revision == len(acknowledged)
    finally:
        for store in stores:
            store.close()


_KILL_SCRIPT = """
import sys
from rstream import Entry, EntryKind
from rstream.server.storage.sqlite import SQLiteStorage
store = SQLiteStorage(sys.argv[1])
store.create_stream("k")
log = store.log("k")
i = 0
while True:
    i += 1
    stored = log.append(Entry.from_micros(i, EntryKind.SNAPSHOT, {"i": i, "pad": "x" * 200}))
    print(stored.rev, flush=True)
"""


def test_sqlite_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    acked: list[int] = []
    with subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                acked.append(int(line))
                if len(acked) >= 150:
                    break
        finally:
            proc.send_signal(signal.SIGKILL)  # mid-write: the child never stops on its own
            proc.wait(timeout=10)
        acked.extend(int(line) for line in proc.stdout.read().split())
    assert proc.returncode == -signal.SIGKILL
    assert acked == list(range(1, len(acked) + 1))
    with SQLiteStorage(path) as store:
        log = store.log("k")
        # every acknowledged write is there; at most one more was committed unacknowledged
        assert len(acked) <= log.revision <= len(acked) + 1
        entries = log.changes_since(0)
        assert [e.rev for e in entries] == list(range(1, log.revision + 1))
        assert [e.data["i"] for e in entries] == [e.micros for e in entries]
        assert log.append(snap(10**9, {})).rev == log.revision


def _plan(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> str:
    return "\n".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_sqlite_lookups_use_the_indexes(tmp_path: Path) -> None:
    path = tmp_path / "plan.db"
    SQLiteStorage(path).close()
    sql = statements(SQLITE)
    queries = {
        "snapshot_before": (sql.snapshot_before, ("s", 1), "entries_kind"),
        "latest_snapshot": (sql.latest_snapshot, ("s",), "entries_kind"),
        "entry_after_kind": (sql.entry_after_kind, ("s", 0, 1), "entries_kind"),
        "entry_after": (sql.entry_after, ("s", 1), "autoindex_entries"),
        "first_entry": (sql.first_entry, ("s",), "autoindex_entries"),
        "last_entry": (sql.last_entry, ("s",), "autoindex_entries"),
        "range": (sql.range, ("s", 1, 2), "autoindex_entries"),
        "range_limit": (sql.range_limit, ("s", 1, 2, 3), "autoindex_entries"),
        "count_range": (sql.count_range, ("s", 1, 2), "autoindex_entries"),
        "changes_since": (sql.changes_since, ("s", 1), "entries_rev"),
        "stream_info": (sql.stream_info, ("s",), "autoindex_entries"),
        "list_streams": (sql.list_streams, (), "autoindex_entries"),
    }
    with closing(sqlite3.connect(path)) as conn:
        for name, (query, params, index) in queries.items():
            plan = _plan(conn, query, params)
            assert index in plan, (name, plan)
            assert "SCAN e" not in plan, (name, plan)
            assert "SCAN entries" not in plan, (name, plan)
            assert "TEMP B-TREE" not in plan, (name, plan)


def test_sqlite_refuses_a_newer_schema_and_a_non_database(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SQLiteStorage(path).close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE rstream_schema SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(RStreamError, match="newer than this rstream"):
        SQLiteStorage(path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, " * 100)
    with pytest.raises(RStreamError, match="cannot open SQLite storage"):
        SQLiteStorage(junk)
    with pytest.raises(RStreamError, match="cannot open SQLite storage"):
        SQLiteStorage(tmp_path / "missing-dir" / "x.db")


def test_sqlite_iter_range_streams_a_consistent_view(tmp_path: Path) -> None:
    with SQLiteStorage(tmp_path / "iter.db") as store:
        store.create_stream("s")
        log = store.log("s")
        log.append_many([snap(T0 + i, {"i": i}) for i in range(1000)])
        with closing(log.iter_range(None, None)) as entries:
            head = list(itertools.islice(entries, 10))
            log.append(snap(T0 + 5000, {}))  # a write while the read is open
            rest = list(entries)
        assert micros(head + rest) == [T0 + i for i in range(1000)]
        assert log.count_range(None, None) == 1001


def test_sqlite_close_closes_connections_in_use(tmp_path: Path) -> None:
    store = SQLiteStorage(tmp_path / "busy.db")
    store.create_stream("s")
    log = store.log("s")
    log.append_many([snap(T0 + i, {}) for i in range(600)])
    entries = log.iter_range(None, None)
    next(entries)  # holds a pooled connection mid-read
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        list(entries)
    assert os.path.exists(tmp_path / "busy.db")
