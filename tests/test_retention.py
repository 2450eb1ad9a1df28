"""Retention: compaction of whole old windows, on every backend and through a
real server (``rstream/server/compaction.py``, ``StreamLog.compact``).

The compactors here run when the test says (``interval=None``) on a clock the
test sets, except in the end-to-end test, whose writes take the server's wall
clock and whose compactor reads the same clock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

import rstream
from rstream import ConfigError, Entry, EntryKind, OutOfRange
from rstream.core.mutation import apply_mutation
from rstream.core.stream import RateConfig
from rstream.core.timestamps import from_micros, to_micros
from rstream.server.compaction import CompactionRun, Compactor
from rstream.server.storage import MemoryStorage, Storage, StreamLog
from rstream.server.storage.sql import SCHEMA_VERSION
from rstream.server.storage.sqlite import SQLiteStorage
from tests.serverutil import running_server
from tests.threadutil import Collector, run_threads

T0 = 1_714_564_800_000_000  # 2024-05-01T12:00:00Z in epoch micros
S = 1_000_000
MS = 1_000


def _postgres(tmp_path: Path) -> Storage:
    from tests.pgutil import fresh_storage

    return fresh_storage()


BACKENDS: dict[str, Callable[[Path], Storage]] = {
    "memory": lambda tmp_path: MemoryStorage(),
    "sqlite": lambda tmp_path: SQLiteStorage(tmp_path / "rstream.db"),
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    store = BACKENDS[request.param](tmp_path)
    yield store
    store.close()


def entry(us: int, kind: EntryKind, data: dict[str, Any]) -> Entry:
    return Entry(from_micros(us), kind, data)


def windows(log: StreamLog, n: int, per_window: int, *, step: int = S) -> list[Entry]:
    """``n`` windows of a snapshot and ``per_window - 1`` mutations, ``step`` apart."""
    written = []
    for i in range(n * per_window):
        kind = EntryKind.MUTATION if i % per_window else EntryKind.SNAPSHOT
        written.append(log.append(entry(T0 + i * step, kind, {"i": i})))
    return written


# -- the storage: StreamLog.compact --------------------------------------------------


def test_compact_deletes_whole_windows_before_the_cutoff(store: Storage) -> None:
    storage = store
    storage.create_stream("s")
    log = storage.log("s")
    written = windows(log, 4, 3)  # snapshots at T0, 3 s, 6 s, 9 s; last entry at 11 s
    revision = log.revision
    # The window [3 s, 6 s) holds the cutoff 5 s: it stays, with all of its entries.
    assert log.compact(T0 + 5 * S) == 3
    assert [e.micros for e in log.iter_range(None, None)] == [e.micros for e in written[3:]]
    assert log.revision == revision  # no change to announce: live subscribers see nothing
    assert log.changes_since(revision) == []
    info = storage.info("s")
    assert info is not None
    assert (info.first, info.compacted) == (T0 + 3 * S, T0 + 3 * S)
    # A cutoff on a window's end deletes it; past the newest entry only the live window stays.
    assert log.compact(T0 + 6 * S) == 3
    assert log.compact(T0 + 100 * S) == 3
    assert [e.micros for e in log.iter_range(None, None)] == [e.micros for e in written[9:]]
    assert log.latest_snapshot() == written[9]
    assert log.compact(T0 + 100 * S) == 0  # the live window is never deleted
    # A shorter cutoff than the edge deletes nothing and keeps the edge.
    assert log.compact(T0) == 0
    info = storage.info("s")
    assert info is not None
    assert (info.first, info.compacted, info.revision) == (T0 + 9 * S, T0 + 9 * S, revision)
    # Writes go on after the edge, with the revisions going on too.
    after = log.append(entry(T0 + 12 * S, EntryKind.MUTATION, {"i": 12}))
    assert after.rev == revision + 1


def test_compact_in_small_batches_ends_each_on_a_window_edge(store: Storage) -> None:
    storage = store
    storage.create_stream("s")
    log = storage.log("s")
    written = windows(log, 5, 4)
    assert log.compact(T0 + 17 * S, batch=2) == 16
    assert [e.micros for e in log.iter_range(None, None)] == [e.micros for e in written[16:]]
    first = log.first()
    assert first is not None
    assert first.kind is EntryKind.SNAPSHOT


def test_compact_an_empty_or_young_stream_deletes_nothing(store: Storage) -> None:
    storage = store
    storage.create_stream("s")
    log = storage.log("s")
    assert log.compact(T0) == 0
    windows(log, 2, 2)
    assert log.compact(T0 - S) == 0
    info = storage.info("s")
    assert info is not None
    assert (info.first, info.compacted) == (T0, None)


def test_retention_is_kept_with_the_rate_config(store: Storage) -> None:
    storage = store
    rate = RateConfig(keyframe_frequency=timedelta(seconds=5), retention=timedelta(days=30))
    assert storage.create_stream("s", rate)
    info = storage.info("s")
    assert info is not None
    assert info.rate == rate
    storage.create_stream("s", RateConfig())
    info = storage.info("s")
    assert info is not None
    assert info.rate.retention is None


def test_one_compaction_at_a_time(store: Storage) -> None:
    storage = store
    with storage.compaction_lock() as first, storage.compaction_lock() as second:
        assert (first, second) == (True, False)
    with storage.compaction_lock() as again:
        assert again


# -- the compactor -------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_compactor_applies_each_streams_retention_or_the_default() -> None:
    with MemoryStorage() as storage:
        storage.create_stream("own", RateConfig(retention=timedelta(seconds=4)))
        storage.create_stream("default")
        for stream_id in ("own", "default"):
            windows(storage.log(stream_id), 4, 3)  # snapshots at 0, 3, 6, 9 s
        clock = FakeClock(T0 + 12 * S)
        compactor = Compactor(
            storage, default_retention=timedelta(seconds=8), interval=None, clock=clock
        )
        # own: cutoff 8 s keeps the window from 6 s; default: cutoff 4 s keeps from 3 s.
        assert compactor.run() == CompactionRun(True, 2, 2, 6 + 3, 0)
        assert [storage.info(s).first for s in ("own", "default")] == [  # type: ignore[union-attr]
            T0 + 6 * S,
            T0 + 3 * S,
        ]
        clock.now += 100 * S
        assert compactor.run().entries_deleted == 3 + 6
        assert compactor.run() == CompactionRun(True, 2, 0, 0, 0)
        assert (compactor.runs, compactor.entries_deleted, compactor.skipped_runs) == (3, 18, 0)
        assert compactor.last_run == CompactionRun(True, 2, 0, 0, 0)


def test_compactor_without_retention_keeps_everything() -> None:
    with MemoryStorage() as storage:
        storage.create_stream("s")
        windows(storage.log("s"), 3, 2)
        compactor = Compactor(storage, interval=None, clock=FakeClock(T0 + 1000 * S))
        assert compactor.run() == CompactionRun(True, 0, 0, 0, 0)
        assert storage.log("s").count_range(None, None) == 6


def test_compactor_skips_its_turn_while_another_compacts() -> None:
    with MemoryStorage() as storage:
        compactor = Compactor(storage, interval=None)
        with storage.compaction_lock():
            assert compactor.run() == CompactionRun(ran=False)
        assert (compactor.runs, compactor.skipped_runs) == (0, 1)


def test_compactor_counts_a_failed_run_and_its_thread_goes_on() -> None:
    class Failing(MemoryStorage):
        calls = 0
        done = threading.Event()

        def list_streams(self) -> list[Any]:
            Failing.calls += 1
            if Failing.calls == 1:
                raise rstream.StorageUnavailable("down for the test")
            Failing.done.set()
            return []

    with Failing() as storage:
        with Compactor(storage, interval=0.01) as compactor:
            assert Failing.done.wait(10)
        assert compactor.failed_runs == 1
        assert compactor.runs >= 1
        compactor.close()  # twice is fine


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default_retention": timedelta(seconds=-1)},
        {"interval": 0},
        {"batch": 0},
    ],
)
def test_compactor_refuses_bad_settings(kwargs: dict[str, Any]) -> None:
    with MemoryStorage() as storage, pytest.raises(ConfigError):
        Compactor(storage, **kwargs)


def test_only_one_postgres_replica_compacts_at_a_time() -> None:
    from rstream.server.storage.postgres import PostgresStorage
    from tests.pgutil import fresh_schema

    with (
        fresh_schema() as schema,
        PostgresStorage(schema.storage_url) as a,
        PostgresStorage(schema.storage_url) as b,
    ):
        with a.compaction_lock() as mine:
            assert mine
            assert Compactor(b, interval=None).run() == CompactionRun(ran=False)
        with b.compaction_lock() as mine:
            assert mine


# -- SQLite: space comes back, old files migrate --------------------------------------


def test_sqlite_gives_freed_space_back(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with SQLiteStorage(path) as storage:
        storage.create_stream("s")
        log = storage.log("s")
        pad = "x" * 4000
        log.append_many(
            [
                entry(T0 + i * S, EntryKind.SNAPSHOT, {"i": i, "pad": pad + str(i)})
                for i in range(500)
            ]
        )
        storage.reclaim_space()  # a checkpoint, so the file holds every page
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        full = path.stat().st_size
        assert log.compact(T0 + 490 * S) == 490
        given_back = storage.reclaim_space(step_pages=64, max_steps=1000)
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert given_back > 0.8 * full
        assert path.stat().st_size < 0.2 * full
        assert log.count_range(None, None) == 10


_SCHEMA_1 = (
    "CREATE TABLE rstream_schema (version BIGINT NOT NULL)",
    "INSERT INTO rstream_schema VALUES (1)",
    "CREATE TABLE streams (id TEXT PRIMARY KEY, keyframe_us BIGINT NOT NULL, "
    "change_us BIGINT NOT NULL, revision BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE entries (stream_id TEXT NOT NULL REFERENCES streams (id) ON DELETE CASCADE, "
    "ts_us BIGINT NOT NULL, kind SMALLINT NOT NULL CHECK (kind IN (0, 1)), data TEXT NOT NULL, "
    "rev BIGINT NOT NULL, PRIMARY KEY (stream_id, ts_us))",
    "INSERT INTO streams VALUES ('s', 60000000, 1000000, 1)",
    "INSERT INTO entries VALUES ('s', 1714564800000000, 0, '{\"a\":1}', 1)",
)


def _check_migrated(storage: Storage) -> None:
    info = storage.info("s")
    assert info is not None
    assert (info.rate.retention, info.compacted, info.revision, info.first) == (None, None, 1, T0)
    storage.create_stream("s", RateConfig(retention=timedelta(hours=1)))
    assert storage.info("s").rate.retention == timedelta(hours=1)  # type: ignore[union-attr]


def test_sqlite_schema_1_gains_the_retention_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for statement in _SCHEMA_1:
            conn.execute(statement)
    conn.close()
    with SQLiteStorage(path) as storage:
        _check_migrated(storage)
        assert storage.reclaim_space() == 0  # auto_vacuum is NONE until a VACUUM
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM rstream_schema").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()


def test_postgres_schema_1_gains_the_retention_columns() -> None:
    import psycopg
    from psycopg import sql

    from rstream.server.storage.postgres import PostgresStorage
    from tests.pgutil import fresh_schema

    with fresh_schema() as schema:
        with psycopg.connect(schema.url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema.name)))
            for statement in _SCHEMA_1:
                conn.execute(statement.encode())
        with PostgresStorage(schema.storage_url) as storage:
            _check_migrated(storage)


# -- the protocol: PUT, GET, the edge ---------------------------------------------------


def test_put_sets_retention_and_keeps_what_it_leaves_out(url: str) -> None:
    base = f"{url}/v1/streams/s"
    r = requests.put(base, json={"retention": 86_400_000}, timeout=10)
    assert (r.status_code, r.json()["retention"]) == (201, 86_400_000)
    assert r.json()["record_rate"] == {"keyframe_frequency": 60000, "change_frequency": 1000}
    rate = {"keyframe_frequency": 100, "change_frequency": 0}
    r = requests.put(base, json={"record_rate": rate}, timeout=10)
    assert (r.json()["record_rate"], r.json()["retention"]) == (rate, 86_400_000)
    r = requests.put(base, json={"retention": 1.5}, timeout=10)
    assert (r.json()["record_rate"], r.json()["retention"]) == (rate, 1.5)
    r = requests.put(base, json={"retention": None}, timeout=10)
    assert r.json()["retention"] is None
    assert requests.get(base, timeout=10).json()["retention"] is None


@pytest.mark.parametrize("value", [-1, "30d", True, 1e300, {}, [1]])
def test_put_refuses_a_bad_retention(url: str, value: object) -> None:
    r = requests.put(f"{url}/v1/streams/s", json={"retention": value}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_request"
    assert "retention" in r.json()["error"]["message"]
    assert requests.get(f"{url}/v1/streams/s", timeout=10).status_code == 404


def test_client_configure_sets_retention(url: str) -> None:
    with rstream.Client(url) as client:
        stream = client.stream("s")
        meta = stream.configure(retention=timedelta(days=30))
        assert meta.retention == timedelta(days=30)
        meta = stream.configure(keyframe_frequency=timedelta(seconds=5))
        assert (meta.keyframe_frequency, meta.retention) == (
            timedelta(seconds=5),
            timedelta(days=30),
        )
        assert stream.configure(retention=None).retention is None
        assert stream.info().retention is None
        with pytest.raises(TypeError):
            stream.configure(retention=30)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            stream.configure(retention=timedelta(seconds=-1))
        with pytest.raises(ConfigError):
            stream.configure()


def test_reads_before_the_edge_are_out_of_range(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "r.db")
    compactor = Compactor(storage, interval=None, clock=FakeClock(T0 + 20 * S))
    with storage, running_server(storage, compactor=compactor) as url:
        storage.create_stream("s", RateConfig(retention=timedelta(seconds=5)))
        windows(storage.log("s"), 4, 3)  # snapshots at 0, 3, 6, 9 s
        with rstream.Client(url) as client:
            stream = client.stream("s")
            assert stream.state_at(from_micros(T0 + S)) == {"i": 1}  # cached from here on
            assert compactor.run().entries_deleted == 9
            assert stream.state_at(from_micros(T0 + S)) == {"i": 1}  # windows are immutable
        with rstream.Client(url) as client:
            stream = client.stream("s")
            assert to_micros(stream.info().first) == T0 + 9 * S  # type: ignore[arg-type]
            with pytest.raises(OutOfRange):
                stream.state_at(from_micros(T0 + 9 * S - 1))
            with pytest.raises(OutOfRange):
                list(stream.entries(from_micros(T0 + 8 * S)))
            with pytest.raises(OutOfRange):
                list(stream.history(from_micros(T0 + 8 * S)))
            assert list(stream.history()) == [
                (from_micros(T0 + i * S), {"i": i}) for i in (9, 10, 11)
            ]
            assert stream.state_at(from_micros(T0 + 9 * S)) == {"i": 9}
            assert [e.micros for e in stream.entries()] == [T0 + i * S for i in (9, 10, 11)]
        at = from_micros(T0 + 5 * S).isoformat().replace("+00:00", "Z")
        r = requests.get(f"{url}/v1/streams/s/window", params={"at": at}, timeout=10)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "out_of_range")
        assert "retention" in r.json()["error"]["message"]


# -- end to end: a stream written, followed and read while it is compacted -------------


@pytest.fixture(params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Storage]]:
    if request.param == "sqlite":
        store: Storage = SQLiteStorage(tmp_path / "live.db")
    else:
        store = _postgres(tmp_path)
    try:
        yield request.param, store
    finally:
        store.close()


class _Load:
    """A steady writer and a history reader of stream "robot" on ``url``, the
    writer compacting every 25 writes; what each did, for the checks."""

    def __init__(self, url: str, compactor: Compactor, db: Path | None) -> None:
        self.url, self.compactor, self.db = url, compactor, db  # db: the SQLite file
        self.duration, self.retention = 6.0, 1 * S
        self.written: list[tuple[int, dict[str, Any]]] = []  # (micros, state), acknowledged
        self.read: list[tuple[int, dict[str, Any]]] = []  # what the history reader saw
        self.sizes: list[tuple[int, int]] = []  # (writes so far, file size) after compactions
        self.cutoffs: list[int] = []
        self.stop = threading.Event()
        self.pace = threading.Event()  # never set: its wait() paces the writer

    def compact(self) -> None:
        self.cutoffs.append(time.time_ns() // 1000 - self.retention)
        self.compactor.run()

    def write(self) -> None:
        # A steady load: at most 80 writes a second, never a burst to catch up.
        started = next_at = time.monotonic()
        i = 0
        with rstream.Client(self.url) as writer:
            robot = writer.stream("robot")
            while time.monotonic() - started < self.duration:
                next_at = max(next_at + 1 / 80, time.monotonic())
                self.pace.wait(next_at - time.monotonic())
                state = {"i": i, "pad": f"{i:08d}" * 250}  # 2 kB that changes each time
                stored = robot.write_state(state)
                assert stored is not None
                self.written.append((stored.micros, state))
                i += 1
                if i % 25 == 0:
                    self.compact()
                    if self.db is not None:
                        self.sizes.append((i, self.db.stat().st_size))
        self.stop.set()

    def read_history(self) -> None:
        with rstream.Client(self.url) as reader:
            robot = reader.stream("robot")
            while not self.stop.is_set():
                start = from_micros(time.time_ns() // 1000 - 200 * MS)
                self.read.extend((to_micros(ts), state) for ts, state in robot.history(start))

    def check_what_is_kept(self) -> None:
        """Old windows are gone: the edge is the last snapshot at or before the
        cutoff. Nothing newer is lost."""
        with rstream.Client(self.url) as fresh:
            robot = fresh.stream("robot")
            first_time = robot.info().first
            assert first_time is not None
            first = to_micros(first_time)
            assert self.cutoffs[-1] - 100 * MS - 50 * MS < first <= self.cutoffs[-1]
            kept = list(robot.entries())
            assert (kept[0].micros, kept[0].kind) == (first, EntryKind.SNAPSHOT)
            # Replaying what is kept gives every state written since.
            state: dict[str, Any] = {}
            replayed = []
            for e in kept:
                state = e.data if e.kind is EntryKind.SNAPSHOT else apply_mutation(state, e.data)
                replayed.append((e.micros, state))
            assert replayed == [(us, s) for us, s in self.written if us >= first]
            with pytest.raises(OutOfRange):
                robot.state_at(from_micros(first - 1))
            assert robot.state_at(from_micros(first)) == dict(self.written)[first]

    def check_the_file_stops_growing(self) -> None:
        """The file holds about the last second, however long the load runs.
        (Without retention it would grow linearly: 1.7 times from the first of
        these stretches to the second.) By sample, not by time: a busy machine
        writes fewer than 80 a second. From the first third of the run on, the
        file grows by much less than what is written (without retention, by
        more than all of it)."""
        sizes, db = self.sizes, self.db
        assert db is not None
        assert len(sizes) >= 3, sizes
        (writes_then, size_then), (writes_end, size_end) = sizes[len(sizes) // 3], sizes[-1]
        written_since = (writes_end - writes_then) * 2000
        written_bytes = sum(len(s["pad"]) for _, s in self.written)
        final = db.stat().st_size
        print(
            f"sqlite file: {size_then} B after {writes_then} writes, {size_end} B after "
            f"{writes_end} ({written_since} B of states written in between); {final} B at "
            f"the end; {written_bytes} B of states written in {self.duration} s"
        )
        assert size_end - size_then < written_since * 0.5
        assert final < written_bytes * 0.75  # without retention: more than written_bytes


def test_retention_under_a_steady_write_load(served: tuple[str, Storage], tmp_path: Path) -> None:
    backend, storage = served
    compactor = Compactor(storage, interval=None)
    collector = Collector()
    db = tmp_path / "live.db"
    with running_server(storage, compactor=compactor) as url, rstream.Client(url) as client:
        load = _Load(url, compactor, db if backend == "sqlite" else None)
        stream = client.stream("robot")
        stream.configure(
            keyframe_frequency=timedelta(milliseconds=100),
            change_frequency=timedelta(0),
            retention=timedelta(microseconds=load.retention),
        )
        stream.write_state({"i": -1, "pad": ""})
        subscription = stream.subscribe(collector.on_state, collector.on_error)
        collector.wait_for_count(1, timeout=10)

        failures = run_threads(load.write, load.read_history, timeout=60)
        assert failures == []
        last = load.written[-1][1]
        collector.wait_for(lambda c: bool(c.items) and c.items[-1][1] == last, timeout=20)
        subscription.close()
        load.compact()
        load.check_what_is_kept()

    # The subscriber saw every change, in order, from the state it started at.
    assert collector.errors == []
    seen = [(us, s) for us, s in collector.items if s["i"] >= 0]
    assert seen == load.written
    # The history reader only ever saw states that were written, at their times.
    by_time = dict(load.written)
    assert load.read, "the reader read nothing"
    assert all(by_time.get(us, s) == s for us, s in load.read)
    assert compactor.entries_deleted > 0
    assert compactor.failed_runs == 0
    if backend == "sqlite":
        load.check_the_file_stops_growing()


def test_the_app_runs_a_compactor_for_its_lifetime() -> None:
    from tests.serverutil import running_app

    with running_app() as server:
        compactor = server.app.state.compactor
        assert isinstance(compactor, Compactor)
        assert (compactor.interval, compactor.default_retention) == (60.0, None)
        thread = compactor._thread
        assert thread is not None
        assert thread.is_alive()
    assert not thread.is_alive()  # closed and joined with the app


def test_pages_without_a_start_are_not_immutable_under_retention(tmp_path: Path) -> None:
    with MemoryStorage() as storage, running_server(storage) as url:
        storage.create_stream("kept", RateConfig(retention=timedelta(days=1)))
        storage.create_stream("all")
        for stream_id in ("kept", "all"):
            windows(storage.log(stream_id), 3, 2)
        end = from_micros(T0 + 2 * S).isoformat()
        start = from_micros(T0).isoformat()

        def cache(stream_id: str, **params: str) -> str:
            r = requests.get(f"{url}/v1/streams/{stream_id}/entries", params=params, timeout=10)
            assert r.status_code == 200
            return r.headers["Cache-Control"]

        assert cache("kept", end=end) == "no-store"  # compaction may still shorten it
        assert "immutable" in cache("kept", start=start, end=end)
        assert "immutable" in cache("all", end=end)


def test_a_live_client_resuming_from_a_compacted_point_is_reset(tmp_path: Path) -> None:
    from tests.serverutil import SSEReader

    storage = SQLiteStorage(tmp_path / "r.db")
    compactor = Compactor(storage, interval=None, clock=FakeClock(T0 + 20 * S))
    with storage, running_server(storage, compactor=compactor) as url:
        storage.create_stream("s", RateConfig(retention=timedelta(seconds=5)))
        windows(storage.log("s"), 4, 3)  # revisions 1..12; 1..9 are deleted below
        assert compactor.run().entries_deleted == 9
        live = f"{url}/v1/streams/s/live"
        with SSEReader(live, headers={"Last-Event-ID": "8"}) as reader:
            events = [e for e in reader.take(4) if e.event != "retry"]
            assert [(e.event, e.id) for e in events] == [
                ("reset", ""),  # an empty id: a browser resumes on the snapshot
                ("entry", "10"),
                ("entry", "11"),
                ("entry", "12"),
            ]
            assert "retention" in events[0].data
        with SSEReader(live, headers={"Last-Event-ID": "9"}) as reader:
            events = [e for e in reader.take(3) if e.event != "retry"]
            assert [(e.event, e.id) for e in events] == [
                ("entry", "10"),
                ("entry", "11"),
                ("entry", "12"),
            ]


def test_rate_config_checks_retention() -> None:
    assert RateConfig(retention=timedelta(days=30)).retention_json() == 30 * 86_400_000
    assert RateConfig().retention_json() is None
    assert RateConfig.retention_from_json(1.5) == timedelta(microseconds=1500)
    assert RateConfig.retention_from_json(None) is None
    for bad in (-1, True, "1d", 1e300):
        with pytest.raises(ConfigError, match="retention"):
            RateConfig.retention_from_json(bad)
    with pytest.raises(ConfigError, match="retention"):
        RateConfig(retention=timedelta(seconds=-1))
    with pytest.raises(TypeError, match="retention"):
        RateConfig(retention=5)  # type: ignore[arg-type]


def test_serve_takes_a_default_retention(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rstream.cli.serve import serve
    from tests.serverutil import ServerProcess

    result = CliRunner().invoke(serve, ["--default-retention", "0s"])
    assert result.exit_code == 2
    assert "more than zero" in result.output
    server = ServerProcess(f"sqlite:///{tmp_path / 'r.db'}", args=("--default-retention", "30d"))
    with server.start():
        assert requests.get(f"{server.url}/v1/health", timeout=10).status_code == 200
        assert "retention: 30 days, 0:00:00 for streams that set none" in server.log_text()
