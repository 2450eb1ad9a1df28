"""Group commit on SQLite: writes that arrive together share one transaction.

Each test holds a group open with a write that waits inside the transaction,
queues other threads' writes behind it (seen through ``GroupCommit.queued``),
then lets it go: the queued writes form the next group, deterministically.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rstream import Entry, EntryKind, OutOfOrder
from rstream.core.timestamps import from_micros
from rstream.server.storage import StreamLog
from rstream.server.storage.groupcommit import GroupCommit
from rstream.server.storage.sqlite import SQLiteStorage
from tests.threadutil import wait_for

T0 = 1_714_564_800_000_000


def snap(us: int, data: dict[str, Any]) -> Entry:
    return Entry(from_micros(us), EntryKind.SNAPSHOT, data)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStorage]:
    with SQLiteStorage(tmp_path / "group.db") as storage:
        for name in ("a", "b", "c", "d"):
            storage.create_stream(name)
        yield storage


def stored(log: StreamLog) -> list[tuple[int, dict[str, Any], int | None]]:
    return [(e.micros, e.data, e.rev) for e in log.changes_since(0)]


class HeldGroup:
    """A write that holds its group's transaction open until released."""

    def __init__(self, store: SQLiteStorage) -> None:
        self.group: GroupCommit = store._group
        self.inside = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=store._write, args=(self._wait,))

    def _wait(self, conn: sqlite3.Connection) -> None:
        self.inside.set()
        assert self.release.wait(10)

    def __enter__(self) -> HeldGroup:
        self.thread.start()
        assert self.inside.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def run_queued(held: HeldGroup, calls: list[Callable[[], object]]) -> list[object]:
    """Start ``calls`` on threads of their own, wait until all are queued behind
    ``held``, release it and join them; each call's result or exception."""
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # the test checks it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    wait_for(lambda: held.group.queued == len(calls))
    held.release.set()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_writes_that_arrive_together_share_one_commit(store: SQLiteStorage) -> None:
    logs = [store.log(name) for name in ("a", "b", "c", "d")]
    before = store._group.groups
    with HeldGroup(store) as held:
        results = run_queued(
            held,
            [lambda log=log, i=i: log.append(snap(T0 + i, {"i": i})) for i, log in enumerate(logs)],  # type: ignore[misc]
        )
    assert store._group.groups - before == 2  # the held write's group, then all four
    assert [r.rev for r in results] == [1, 1, 1, 1]  # type: ignore[attr-defined]
    assert [log.last() for log in logs] == results


def test_writes_of_one_stream_in_one_group_keep_their_order(store: SQLiteStorage) -> None:
    log = store.log("a")
    # Queued one at a time, so their order in the group is known.
    entries = [snap(T0 + i, {"i": i}) for i in range(3)]
    results: list[Entry] = []
    threads: list[threading.Thread] = []
    with HeldGroup(store) as held:
        for n, entry in enumerate(entries, 1):
            thread = threading.Thread(target=lambda e=entry: results.append(log.append(e)))
            thread.start()
            threads.append(thread)
            wait_for(lambda n=n: held.group.queued == n)  # type: ignore[misc]
    for thread in threads:
        thread.join(10)
    assert sorted(e.rev for e in results if e.rev is not None) == [1, 2, 3]
    assert [(e.micros, e.rev) for e in log.changes_since(0)] == [
        (T0, 1),
        (T0 + 1, 2),
        (T0 + 2, 3),
    ]


def test_a_refused_write_in_a_group_fails_alone(store: SQLiteStorage) -> None:
    a, b, c = store.log("a"), store.log("b"), store.log("c")
    b.append(snap(T0 + 100, {"b": 0}))
    with HeldGroup(store) as held:
        results = run_queued(
            held,
            [
                lambda: a.append(snap(T0, {"a": 1})),
                lambda: b.append(snap(T0, {"b": 1})),  # before b's newest entry: refused
                lambda: c.append(snap(T0, {"c": 1})),
            ],
        )
    refused = results[1]
    assert isinstance(refused, OutOfOrder)
    assert [type(r) for r in (results[0], results[2])] == [Entry, Entry]
    assert stored(a) == [(T0, {"a": 1}, 1)]
    assert stored(b) == [(T0 + 100, {"b": 0}, 1)]
    assert b.revision == 1
    assert stored(c) == [(T0, {"c": 1}, 1)]
    assert b.append(snap(T0 + 200, {"b": 2})).rev == 2


def test_a_group_that_cannot_commit_fails_every_write_in_it(tmp_path: Path) -> None:
    # A deferred foreign key is checked at COMMIT: a group holding one bad row
    # cannot commit, and the good row queued with it must not be written either.
    conn = sqlite3.connect(tmp_path / "fk.db", isolation_level=None, check_same_thread=False)
    conn.executescript(
        """
        PRAGMA foreign_keys = ON;
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER
            REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
        """
    )

    @contextlib.contextmanager
    def connection() -> Iterator[sqlite3.Connection]:
        yield conn

    group = GroupCommit(connection, "BEGIN IMMEDIATE")
    inside, release = threading.Event(), threading.Event()

    def held(c: sqlite3.Connection) -> None:
        inside.set()
        assert release.wait(10)

    def insert(sql: str) -> Callable[[], object]:
        return lambda: group.run(lambda c: c.execute(sql).rowcount)

    holder = threading.Thread(target=group.run, args=(held,))
    holder.start()
    assert inside.wait(10)
    results: list[object] = [None, None]

    def run(i: int, call: Callable[[], object]) -> None:
        try:
            results[i] = call()
        except Exception as exc:  # the test checks it
            results[i] = exc

    calls = [insert("INSERT INTO parent VALUES (1)"), insert("INSERT INTO child VALUES (1, 99)")]
    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    wait_for(lambda: group.queued == 2)
    release.set()
    for thread in [holder, *threads]:
        thread.join(10)
        assert not thread.is_alive()
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    assert results[0] is not results[1]  # each thread raises its own copy
    assert group.groups == 2
    assert conn.execute("SELECT COUNT(*) FROM parent").fetchone() == (0,)
    assert conn.execute("SELECT COUNT(*) FROM child").fetchone() == (0,)
    assert not conn.in_transaction
    assert group.run(lambda c: c.execute("INSERT INTO parent VALUES (2)").rowcount) == 1
    conn.close()
