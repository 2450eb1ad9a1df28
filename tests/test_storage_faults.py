"""PostgreSQL faults the storage must survive (issue 17), against a real server.

Connections are killed with ``pg_terminate_backend`` while a write holds the
row lock (its statements then fail in the pipeline), while they sit idle in
the pool, and while they LISTEN; the listener is fed malformed notifications.
Every test ends with the replica tests' exactly-once checks: every
acknowledged write is in the log once, revisions have no holes, and a
subscriber woken by the listener reads every change once.

Each test's storages carry an ``application_name`` of their own
(``tests/pgutil.py``'s :class:`Backends`), so only their backends are
terminated (other tests share the server).
"""

from __future__ import annotations

import functools
import itertools
import logging
import queue
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import tenacity

from rstream import Entry, EntryKind, StorageUnavailable
from rstream.core.stream import RateConfig, Stream
from rstream.core.timestamps import from_micros
from rstream.server.storage.pg_listen import ChangeListener
from rstream.server.storage.postgres import PostgresLog, PostgresStorage
from tests.pgutil import Backends, PgSchema, assert_exactly_once, fresh_schema, held_pid, replay
from tests.tcpproxy import TCPProxy
from tests.threadutil import wait_for

T0 = 1_714_564_800_000_000
S = 1_000_000
NO_AMENDS = RateConfig(keyframe_frequency=timedelta(seconds=4), change_frequency=timedelta(0))


@pytest.fixture
def schema() -> Iterator[PgSchema]:
    with fresh_schema() as schema:
        yield schema


# -- writes -----------------------------------------------------------------------------


def test_a_connection_killed_under_the_write_lock_writes_nothing(schema: PgSchema) -> None:
    """The backend holding the row lock is terminated before the write's
    pipelined statements: the write raises StorageUnavailable, nothing of it
    lands, the row lock dies with the backend, and the writer (whose cursor
    did not move) goes on with correct mutations on fresh connections."""
    backends = Backends(schema)
    with PostgresStorage(backends.url, min_size=1, max_size=2) as storage:
        storage.create_stream("s")
        log = storage.log("s")
        times = itertools.count(T0, S)
        writer = Stream(log, NO_AMENDS, clock=lambda: next(times))
        acknowledged: list[dict[str, Any]] = []
        failures: list[str] = []
        for n in range(12):
            state = {"n": n, "even": n % 2 == 0, "tail": list(range(n % 4))}
            try:
                with log.write_lock():
                    if n % 3 == 1:
                        assert backends.terminate(pid=held_pid(log)) == 1
                    writer.write_state(state)
            except StorageUnavailable as exc:
                failures.append(str(exc))
                continue
            acknowledged.append(state)
        assert len(failures) == 4
        assert all("unavailable" in message for message in failures)
        assert_exactly_once(log, acknowledged)
        # The lock died with its backend: another storage writes at once.
        with PostgresStorage(schema.storage_url) as other:
            other_log = other.log("s")
            with other_log.write_lock():
                Stream(other_log, NO_AMENDS, clock=lambda: next(times)).write_state({"n": 99})
        assert_exactly_once(log, [*acknowledged, {"n": 99}])


def test_an_append_whose_pipeline_dies_is_not_applied(schema: PgSchema) -> None:
    """The kill lands between the row lock and the pipelined INSERT, UPDATE,
    NOTIFY and COMMIT: the error is StorageUnavailable naming the write, and
    the batch is absent as a whole."""
    backends = Backends(schema)
    with PostgresStorage(backends.url, min_size=1, max_size=1) as storage:
        storage.create_stream("s")
        log = storage.log("s")
        log.append(Entry(from_micros(T0), EntryKind.SNAPSHOT, {"n": 0}))
        batch = [Entry(from_micros(T0 + i), EntryKind.MUTATION, {"n": i}) for i in (1, 2)]
        with log.write_lock():
            assert backends.terminate(pid=held_pid(log)) == 1
            with pytest.raises(StorageUnavailable, match="write failed"):
                log.append_many(batch)
        assert log.revision == 1
        assert [e.rev for e in log.append_many(batch)] == [2, 3]
        assert_exactly_once(log, [{"n": 0}, {"n": 1}, {"n": 2}])


def test_the_first_write_of_a_writer_needs_one_connection(schema: PgSchema) -> None:
    """A new writer reads the log again after its first write, still inside
    the block: that read uses the block's connection, so a pool of one does
    not wait for itself (it timed out with 503 before)."""
    url = f"{schema.storage_url}&pool_max=1&pool_timeout=1"
    with PostgresStorage(url, min_size=1) as storage:
        storage.create_stream("s")
        log = storage.log("s")
        writer = Stream(log, NO_AMENDS, clock=itertools.count(T0, S).__next__)
        for n in range(3):
            with log.write_lock():
                writer.write_state({"n": n})
                assert log.last() == log.changes_since(n)[0]
        assert_exactly_once(log, [{"n": 0}, {"n": 1}, {"n": 2}])


def test_dead_pooled_connections_are_replaced_once_per_operation(schema: PgSchema) -> None:
    """After a restart-like kill of the idle pool, the read, the write, and the
    write lock each retry once on a fresh connection (the injected sleep
    records it) and succeed; the caller sees no error."""
    backends = Backends(schema)
    sleeps: list[float] = []
    with PostgresStorage(backends.url, min_size=1, max_size=1, sleep=sleeps.append) as storage:
        storage.create_stream("s")
        log = storage.log("s")
        writer = Stream(log, NO_AMENDS, clock=itertools.count(T0, S).__next__)
        acknowledged: list[dict[str, Any]] = []
        operations: list[Callable[[], object]] = [
            storage.list_streams,
            functools.partial(storage.create_stream, "t"),
            lambda: log.revision,
        ]
        for n, operation in enumerate(operations * 2):
            assert backends.terminate() == 1
            operation()
            assert len(sleeps) == 2 * n + 1
            assert backends.terminate() == 1
            with log.write_lock():
                writer.write_state({"n": n})
            acknowledged.append({"n": n})
            assert len(sleeps) == 2 * n + 2
        assert sleeps == [0.0] * 12
        assert_exactly_once(log, acknowledged)


def test_after_a_restart_one_retry_finds_a_live_connection(
    schema: PgSchema, caplog: pytest.LogCaptureFixture
) -> None:
    """Every idle connection dead, as after a database restart: the first
    dead one makes the pool test the others, so one retry is enough."""
    caplog.set_level(logging.INFO, logger="rstream")
    backends = Backends(schema)
    sleeps: list[float] = []
    with PostgresStorage(backends.url, min_size=3, max_size=3, sleep=sleeps.append) as storage:
        storage.create_stream("s")
        wait_for(lambda: storage._pool.get_stats().get("pool_available", 0) == 3)
        assert backends.terminate() == 3
        assert [info.id for info in storage.list_streams()] == ["s"]
        assert sleeps == [0.0]
        assert backends.terminate() == 3
        assert storage.create_stream("t")
        assert sleeps == [0.0, 0.0]
    assert "a pooled connection was dead" in caplog.text


# -- LISTEN -----------------------------------------------------------------------------


class Subscriber:
    """What the server's hub does with a wake-up: read the changes since the
    last one seen, straight from the table."""

    def __init__(self, log: PostgresLog) -> None:
        self.log = log
        self.wakeups: queue.Queue[tuple[str, int, int]] = queue.Queue()
        self.seen: list[Entry] = []

    def on_change(self, stream_id: str, rev: int, nbytes: int) -> None:
        self.wakeups.put((stream_id, rev, nbytes))

    def follow_until(self, revision: int) -> None:
        """Take wake-ups until the changes up to ``revision`` are read."""
        while not self.seen or self.seen[-1].rev != revision:
            stream_id, rev, _ = self.wakeups.get(timeout=10)
            assert stream_id == self.log.stream_id
            last = (self.seen[-1].rev or 0) if self.seen else 0
            if rev > last:
                self.seen.extend(self.log.changes_since(last))


def test_a_killed_listen_connection_reconnects_and_the_subscriber_misses_nothing(
    schema: PgSchema, caplog: pytest.LogCaptureFixture
) -> None:
    backends = Backends(schema)
    with (
        PostgresStorage(backends.url) as reader,
        PostgresStorage(schema.storage_url) as writer_storage,
    ):
        reader.create_stream("s")
        subscriber = Subscriber(reader.log("s"))
        fast = tenacity.Retrying(wait=tenacity.wait_fixed(0.05), reraise=True)
        listener = reader.listen(subscriber.on_change, lambda: ["s"], retry=fast)
        assert listener.wait_listening(10)
        log = writer_storage.log("s")
        writer = Stream(log, NO_AMENDS, clock=itertools.count(T0, S).__next__)
        acknowledged: list[dict[str, Any]] = []
        for n in range(30):
            if n in (10, 20):
                subscriber.follow_until(n)  # connected now, for sure
                assert backends.terminate(listening=True) == 1
            with log.write_lock():
                writer.write_state({"n": n})
            acknowledged.append({"n": n})
        subscriber.follow_until(30)
        assert listener.connects == 3
        assert [e.rev for e in subscriber.seen] == list(range(1, 31))
        assert replay(subscriber.seen) == acknowledged
        assert_exactly_once(reader.log("s"), acknowledged)
    assert "lost its connection" in caplog.text


def test_a_listener_whose_reconnects_fail_gives_up(
    schema: PgSchema, caplog: pytest.LogCaptureFixture
) -> None:
    """A retry policy with a limit: the LISTEN backend is terminated and every
    reconnect is cut by a proxy, so after three attempts the listener logs
    that it gave up and its thread ends."""
    backends = Backends(schema)
    parts = psycopg.conninfo.conninfo_to_dict(schema.url)
    heard: queue.Queue[tuple[str, int, int]] = queue.Queue()
    with TCPProxy(str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432)) as proxy:
        # sslmode=disable: libpq would otherwise try twice per attempt.
        conninfo = psycopg.conninfo.make_conninfo(
            schema.url, host="127.0.0.1", port=proxy.port, sslmode="disable"
        )
        listener = ChangeListener(
            conninfo,
            "rstream_fault_channel",
            lambda *change: heard.put(change),
            lambda: ["s"],
            revision_of=lambda stream_id: 7,
            connect_kwargs={"application_name": backends.name},
            retry=tenacity.Retrying(stop=tenacity.stop_after_attempt(3), reraise=True),
        )
        try:
            listener.start()
            assert listener.wait_listening(10)
            assert heard.get(timeout=5) == ("s", 7, 0)  # the resync after connecting
            proxy.fate = lambda: ("cut", 0)
            assert backends.terminate(listening=True) == 1
            listener._thread.join(10)
            assert not listener._thread.is_alive()
        finally:
            listener.close()
    assert not listener.listening.is_set()
    assert listener.connects == 1
    assert proxy.cuts == 3
    assert heard.empty()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "gave up connecting" in errors[0]


MALFORMED = [
    "not json",
    "[1, 2]",
    '"s"',
    "null",
    '{"rev": 1}',
    '{"stream": "s"}',
    '{"stream": 5, "rev": 1}',
    '{"stream": "s", "rev": "1"}',
    '{"stream": "s", "rev": true}',
    '{"stream": "s", "rev": 1.5}',
    '{"stream": "s", "rev": 1, "bytes": "many"}',
    '{"stream": "s", "rev": 1, "bytes": null}',
    '{"stream": "s", "rev": 1, "bytes": 1e999}',  # parses as infinity
    '{"stream": "s", "rev": 1, "bytes": [1]}',
    "[" * 3000 + "]" * 3000,  # deeper than json.loads can go
]


def test_malformed_notifications_are_skipped_and_the_listener_keeps_going(
    schema: PgSchema, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        PostgresStorage(schema.storage_url) as reader,
        PostgresStorage(schema.storage_url) as writer_storage,
        psycopg.connect(schema.url, autocommit=True) as admin,
    ):
        reader.create_stream("s")
        subscriber = Subscriber(reader.log("s"))
        listener = reader.listen(subscriber.on_change)
        assert listener.wait_listening(10)
        log = writer_storage.log("s")
        acknowledged: list[dict[str, Any]] = []
        for n, payload in enumerate(MALFORMED):
            admin.execute("SELECT pg_notify(%s, %s)", (reader.channel, payload))
            log.append(Entry(from_micros(T0 + n), EntryKind.SNAPSHOT, {"n": n}))
            acknowledged.append({"n": n})
            subscriber.follow_until(n + 1)
        assert listener.listening.is_set()
        assert listener._thread.is_alive()
        assert listener.received == 2 * len(MALFORMED)
        assert [e.rev for e in subscriber.seen] == list(range(1, len(MALFORMED) + 1))
        assert replay(subscriber.seen) == acknowledged
        # Each wake-up named a revision the subscriber then read: none was a
        # malformed notification passed on.
        assert subscriber.wakeups.empty()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("malformed notification" in w for w in warnings) == len(MALFORMED)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
