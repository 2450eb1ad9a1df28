"""What only the PostgreSQL backend promises: migration by concurrent replicas,
decisions on fresh state under the row lock, 503 when the database is out of
reach, and the LISTEN/NOTIFY change feed (the conformance suite in
``tests/test_storage.py`` covers the rest). Every test gets a schema of its own
(``tests/pgutil.py``)."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import requests
import tenacity

from rstream import (
    ConfigError,
    Entry,
    EntryKind,
    OutOfOrder,
    RStreamError,
    StorageUnavailable,
)
from rstream.core.stream import RateConfig, Stream, WriteAction
from rstream.core.timestamps import from_micros
from rstream.server.storage import open_storage
from rstream.server.storage.postgres import (
    DEFAULT_CHANNEL,
    PostgresStorage,
    PostgresURL,
    channel_for,
    parse_postgres_url,
)
from rstream.server.storage.sql import SCHEMA_VERSION
from tests.pgutil import PgSchema, fresh_schema, replay
from tests.serverutil import running_server
from tests.threadutil import run_threads, wait_for

T0 = 1_714_564_800_000_000
S = 1_000_000


@pytest.fixture
def schema() -> Iterator[PgSchema]:
    """A schema of this test's own, dropped afterwards."""
    with fresh_schema() as schema:
        yield schema


@pytest.fixture
def pair(schema: PgSchema) -> Iterator[tuple[PostgresStorage, PostgresStorage]]:
    """Two storages on one schema: what two server replicas see."""
    a = PostgresStorage(schema.storage_url)
    b = PostgresStorage(schema.storage_url)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def admin(schema: PgSchema) -> psycopg.Connection[Any]:
    return psycopg.connect(schema.url, autocommit=True)


# -- URLs ------------------------------------------------------------------------------


def test_parse_postgres_url_takes_rstream_options_and_keeps_libpq_ones() -> None:
    parsed = parse_postgres_url(
        "postgresql://u:pw@db.example:5433/rs?schema=tenant_1&sslmode=require"
        "&pool_max=20&pool_timeout=2.5"
    )
    assert parsed == PostgresURL(
        "postgresql://u:pw@db.example:5433/rs?sslmode=require", "tenant_1", 20, 2.5
    )
    assert parse_postgres_url("postgres://h/db") == PostgresURL("postgresql://h/db")
    assert parse_postgres_url("postgresql+psycopg://h/db").conninfo == "postgresql://h/db"
    for bad in ("Tenant", "a-b", "1abc", "x" * 64, ""):
        with pytest.raises(ConfigError, match="schema name"):
            parse_postgres_url(f"postgresql://h/db?schema={bad}")
    for bad in ("pool_max=0", "pool_max=x", "pool_timeout=-1", "pool_timeout=soon"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            parse_postgres_url(f"postgresql://h/db?{bad}")
    with pytest.raises(ConfigError, match="not a postgresql"):
        parse_postgres_url("mysql://h/db")


def test_channels_are_per_schema_and_valid_identifiers() -> None:
    assert channel_for(None) == DEFAULT_CHANNEL
    assert channel_for("a") != channel_for("b")
    assert len(channel_for("x" * 63)) <= 63


def test_unreachable_database_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(StorageUnavailable, match="cannot connect to PostgreSQL") as info:
        PostgresStorage("postgresql://u:hunter2@127.0.0.1:1/db", connect_timeout=1)
    assert "hunter2" not in str(info.value)


# -- schema and migration -------------------------------------------------------------


def test_replicas_starting_together_create_the_schema_once(schema: PgSchema) -> None:
    storages: list[PostgresStorage] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait(5)
        storages.append(PostgresStorage(schema.storage_url))

    errors = run_threads(*[start] * 4, timeout=30)
    try:
        assert errors == []
        assert len(storages) == 4
        with admin(schema) as conn:
            rows = conn.execute(f"SELECT version FROM {schema.name}.rstream_schema").fetchall()
        assert rows == [(SCHEMA_VERSION,)]
        storages[0].create_stream("s")
        assert [info.id for info in storages[3].list_streams()] == ["s"]
    finally:
        for storage in storages:
            storage.close()


def test_a_newer_schema_is_refused(schema: PgSchema) -> None:
    PostgresStorage(schema.storage_url).close()
    with admin(schema) as conn:
        conn.execute(f"UPDATE {schema.name}.rstream_schema SET version = 99")
    with pytest.raises(RStreamError, match="schema version 99, newer"):
        PostgresStorage(schema.storage_url)


def test_open_storage_opens_postgresql_urls(schema: PgSchema) -> None:
    with open_storage(schema.storage_url) as storage:
        assert isinstance(storage, PostgresStorage)
        assert storage.schema == schema.name
        assert storage.create_stream("s") is True
    with open_storage(schema.storage_url.replace("postgresql://", "postgres://")) as again:
        assert again.create_stream("s") is False  # the same schema


# -- writes across replicas -----------------------------------------------------------


def test_the_write_lock_makes_a_stale_writer_decide_on_fresh_state(
    pair: tuple[PostgresStorage, PostgresStorage],
    schema: PgSchema,
) -> None:
    """Replica B writes between replica A's look at the log and A's write: with
    the lock, B waits, and A's mutation is built on the state it replaces."""
    a, b = pair
    a.create_stream("s")
    rate = RateConfig(change_frequency=timedelta(0))
    times = itertools.count(T0, S)
    writer_b = Stream(b.log("s"), rate, clock=lambda: next(times))
    b_done = threading.Event()

    def b_writes() -> None:
        with b.log("s").write_lock():
            writer_b.write_state({"x": 1, "by": "b"})
        b_done.set()

    racer: list[threading.Thread] = []

    def clock_a() -> int:
        # Called inside A's write_state, after A's cursor looked at the log.
        if not racer:
            thread = threading.Thread(target=b_writes)
            racer.append(thread)
            thread.start()
            # B must be queued on the row lock, not done, while A decides.
            held = a.log("s")._held  # A's locked transaction
            assert held is not None
            a_pid = held.conn.info.backend_pid
            with admin(schema) as conn:
                wait_for(
                    lambda: (
                        conn.execute(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE %s = ANY(pg_blocking_pids(pid))",
                            (a_pid,),
                        ).fetchone()
                        == (1,)
                    )
                )
            assert not b_done.is_set()
        return next(times)

    Stream(a.log("s"), rate, clock=lambda: next(times)).write_state({"x": 0})
    writer_a = Stream(a.log("s"), rate, clock=clock_a)
    writer_a.state  # noqa: B018  # places A's cursor before B's write
    with a.log("s").write_lock():
        writer_a.write_state({"x": 2, "by": "a"})
    racer[0].join(10)
    assert b_done.is_set()
    entries = a.log("s").changes_since(0)
    assert [e.rev for e in entries] == [1, 2, 3]
    assert replay(entries) == [{"x": 0}, {"x": 2, "by": "a"}, {"x": 1, "by": "b"}]


def test_without_the_lock_a_stale_writer_would_corrupt_the_log(
    pair: tuple[PostgresStorage, PostgresStorage],
) -> None:
    """Why the server holds the lock: the same race without it builds A's
    mutation against a state that is no longer the newest."""
    a, b = pair
    a.create_stream("s")
    times = itertools.count(T0, S)
    Stream(a.log("s"), clock=lambda: next(times)).write_state({"x": 0, "keep": True})
    writer_b = Stream(b.log("s"), clock=lambda: next(times))
    fired: list[bool] = []

    def clock_a() -> int:
        if not fired:
            fired.append(True)
            writer_b.write_state({"x": 1})  # removes "keep"
        return next(times)

    writer_a = Stream(a.log("s"), clock=clock_a)
    writer_a.state  # noqa: B018
    writer_a.write_state({"x": 2, "keep": True})  # a mutation from the stale {"x": 0, ...}
    states = replay(a.log("s").changes_since(0))
    assert states[-1] != {"x": 2, "keep": True}  # the log no longer says what A wrote


def test_server_time_never_conflicts_across_skewed_replicas(
    pair: tuple[PostgresStorage, PostgresStorage],
) -> None:
    """Replica B's clock is 10 s behind A's: writes without a timestamp still all
    succeed, in order, since "newest" is read under the lock."""
    a, b = pair
    a.create_stream("s")
    now = itertools.count(T0, 1000)
    rate = RateConfig(change_frequency=timedelta(0))
    writers = [
        (a, Stream(a.log("s"), rate, clock=lambda: next(now))),
        (b, Stream(b.log("s"), rate, clock=lambda: next(now) - 10 * S)),
    ]
    for n in range(40):
        storage, writer = writers[n % 2]
        with storage.log("s").write_lock():
            writer.write_state({"n": n})
        assert writer.last_action in (WriteAction.SNAPSHOT, WriteAction.MUTATION)
    entries = a.log("s").changes_since(0)
    assert [e.rev for e in entries] == list(range(1, 41))
    assert [e.micros for e in entries] == sorted({e.micros for e in entries})
    assert replay(entries) == [{"n": n} for n in range(40)]


def test_a_given_timestamp_that_lost_the_race_is_out_of_order(
    pair: tuple[PostgresStorage, PostgresStorage],
) -> None:
    a, b = pair
    a.create_stream("s")
    writer_a, writer_b = Stream(a.log("s")), Stream(b.log("s"))
    writer_b.state  # noqa: B018  # B's cursor: an empty log
    with a.log("s").write_lock():
        writer_a.write_state({"n": 1}, from_micros(T0 + 10 * S))
    with pytest.raises(OutOfOrder), b.log("s").write_lock():
        writer_b.write_state({"n": 2}, from_micros(T0 + 5 * S))
    assert b.log("s").revision == 1
    assert [e.data for e in b.log("s").changes_since(0)] == [{"n": 1}]


def test_concurrent_writers_on_two_replicas_get_unique_increasing_revisions(
    pair: tuple[PostgresStorage, PostgresStorage],
) -> None:
    a, b = pair
    a.create_stream("s")
    results: queue.Queue[tuple[str, Any]] = queue.Queue()

    def writer(storage: PostgresStorage, name: str) -> None:
        stream = Stream(storage.log("s"), RateConfig(change_frequency=timedelta(0)))
        for n in range(25):
            try:
                with storage.log("s").write_lock():
                    entry = stream.write_state({"by": name, "n": n})
                results.put(("ok", entry))
            except BaseException as exc:
                results.put(("error", exc))

    writers = [
        functools.partial(writer, storage, f"{storage is a}-{i}")
        for i in range(2)
        for storage in (a, b)
    ]
    assert run_threads(*writers, timeout=30) == []  # writer() reports errors in results
    outcomes = [results.get_nowait() for _ in range(results.qsize())]
    assert [o for o in outcomes if o[0] == "error"] == []
    written = [o[1] for o in outcomes]
    assert len(written) == 100
    entries = a.log("s").changes_since(0)
    assert [e.rev for e in entries] == list(range(1, 101))
    assert sorted(e.rev for e in written) == list(range(1, 101))
    # Every mutation applies to the state before it, and every write is there.
    assert len({(s["by"], s["n"]) for s in replay(entries)}) == 100


def test_the_write_lock_rolls_back_unused_and_is_not_reentrant(
    pair: tuple[PostgresStorage, PostgresStorage],
) -> None:
    a, b = pair
    a.create_stream("s")
    log = a.log("s")
    with log.write_lock():
        with pytest.raises(RuntimeError, match="re-entrant"), log.write_lock():
            pass
        assert log.revision == 0
    # Released: the other replica writes at once.
    assert b.log("s").append(Entry(from_micros(T0), EntryKind.SNAPSHOT, {})).rev == 1
    with log.write_lock():
        assert log.revision == 1  # reads inside see the newest state
        log.append(Entry(from_micros(T0 + 1), EntryKind.MUTATION, {"a": 1}))
        # After the write the lock is gone; later reads still work.
        assert log.revision == 2
    assert b.log("s").revision == 2


class RoundTrips:
    """Counts a storage's waits for PostgreSQL: each ``Connection.execute``
    outside a pipeline is one, and so is each (outermost) pipeline block."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._depth: dict[int, int] = {}
        execute, pipeline = psycopg.Connection.execute, psycopg.Connection.pipeline

        def counting_execute(conn: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> Any:
            if not self._depth.get(id(conn)):
                self.count += 1
            return execute(conn, *args, **kwargs)

        @contextlib.contextmanager
        def counting_pipeline(conn: psycopg.Connection[Any]) -> Iterator[Any]:
            self._depth[id(conn)] = self._depth.get(id(conn), 0) + 1
            try:
                with pipeline(conn) as p:
                    yield p
            finally:
                self._depth[id(conn)] -= 1
                if not self._depth[id(conn)]:
                    self.count += 1

        monkeypatch.setattr(psycopg.Connection, "execute", counting_execute)
        monkeypatch.setattr(psycopg.Connection, "pipeline", counting_pipeline)


def test_a_write_under_the_lock_waits_for_the_database_twice(
    schema: PgSchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each wait for the database is a trip through a busy server's GIL and
    scheduler (bench fanout_pg: 12 per write made one replica 4x costlier per
    delivered event than SQLite), so a write takes two: BEGIN, the row lock and
    the newest entry; then the rows, the revision, the notification and COMMIT."""
    with PostgresStorage(schema.storage_url) as storage:
        storage.create_stream("s")
        log = storage.log("s")
        times = itertools.count(T0, S)
        writer = Stream(
            log, RateConfig(change_frequency=timedelta(seconds=10)), clock=lambda: next(times)
        )
        with log.write_lock():
            writer.write_state({"n": 0})  # the first write also places the writer's cursor
        trips = RoundTrips(monkeypatch)
        steps = [
            ({"n": 1}, WriteAction.MUTATION),
            ({"n": 2}, WriteAction.AMEND),
            ({"n": 2}, WriteAction.NONE),  # the lock, then ROLLBACK
        ]
        for state, action in steps:
            trips.count = 0
            with log.write_lock():
                writer.write_state(state)
            assert (writer.last_action, trips.count) == (action, 2)
        trips.count = 0
        batch = [Entry(from_micros(T0 + i * S), EntryKind.SNAPSHOT, {"n": i}) for i in (10, 11)]
        with log.write_lock():
            log.append_many(batch)
        assert trips.count == 2
        written = log.changes_since(0)
    assert [e.rev for e in written] == [1, 3, 4, 5]  # the amend replaced revision 2
    assert replay(written) == [{"n": 0}, {"n": 2}, {"n": 10}, {"n": 11}]


def test_a_write_failing_in_the_database_rolls_back_and_releases_the_lock(
    schema: PgSchema, caplog: pytest.LogCaptureFixture
) -> None:
    """The write's statements run pipelined, so the database's error arrives
    with the COMMIT: nothing is written, the lock is released, and the (only)
    pooled connection is returned clean for the next write."""
    a = PostgresStorage(schema.storage_url, min_size=1, max_size=1)
    b = PostgresStorage(schema.storage_url)
    a.create_stream("s")
    with admin(schema) as conn:
        conn.execute(f"SET search_path = {schema.name}")
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.data::jsonb ? 'refuse' THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON entries FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    log = a.log("s")
    with pytest.raises(psycopg.errors.RaiseException), log.write_lock():
        log.append(Entry(from_micros(T0), EntryKind.SNAPSHOT, {"refuse": 1}))
    assert log.revision == 0
    # The row lock is free: the other replica writes at once, then this one again.
    assert b.log("s").append(Entry(from_micros(T0), EntryKind.SNAPSHOT, {"n": 1})).rev == 1
    with log.write_lock():
        assert log.append(Entry(from_micros(T0 + S), EntryKind.SNAPSHOT, {"n": 2})).rev == 2
    assert [e.data for e in log.changes_since(0)] == [{"n": 1}, {"n": 2}]
    a.close()
    b.close()
    # psycopg_pool warns when it gets a connection back in a failed transaction.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- availability ---------------------------------------------------------------------


def test_no_free_connection_is_503_unavailable(schema: PgSchema) -> None:
    with (
        PostgresStorage(schema.storage_url + "&pool_max=1&pool_timeout=0.2") as s,
        running_server(s) as url,
    ):
        s.create_stream("s")
        with s.log("s").write_lock():  # holds the only connection
            with pytest.raises(StorageUnavailable, match="no connection free"):
                s.list_streams()
            response = requests.get(f"{url}/v1/streams", timeout=10)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        assert response.headers["Retry-After"]
        assert "psycopg" not in response.text  # the cause is logged, not shown
        assert s.list_streams()[0].id == "s"


def test_dead_pooled_connections_are_replaced(schema: PgSchema) -> None:
    with PostgresStorage(schema.storage_url, min_size=1, max_size=1) as storage:
        storage.create_stream("s")
        with storage._connection() as conn:
            pid = conn.info.backend_pid
        with admin(schema) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert [i.id for i in storage.list_streams()] == ["s"]  # a read retries
        with storage._connection() as conn:
            pid = conn.info.backend_pid
        with admin(schema) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        entry = storage.log("s").append(Entry(from_micros(T0), EntryKind.SNAPSHOT, {}))
        assert entry.rev == 1  # a write retries when BEGIN fails


# -- the change feed ------------------------------------------------------------------


def test_listeners_hear_other_replicas_writes_not_their_own(
    pair: tuple[PostgresStorage, PostgresStorage],
) -> None:
    a, b = pair
    a.create_stream("s")
    heard: queue.Queue[tuple[str, int, int]] = queue.Queue()
    listener = a.listen(lambda sid, rev, n: heard.put((sid, rev, n)))
    assert listener.wait_listening(10)
    a.log("s").append(Entry(from_micros(T0), EntryKind.SNAPSHOT, {"by": "a"}))
    b.log("s").append(Entry(from_micros(T0 + 1), EntryKind.MUTATION, {"by": "b"}))
    b.log("s").append_many(
        [
            Entry(from_micros(T0 + 2), EntryKind.MUTATION, {}),
            Entry(from_micros(T0 + 3), EntryKind.MUTATION, {}),
        ]
    )
    # Notifications arrive in commit order, so A's own would have come first.
    stream_id, rev, nbytes = heard.get(timeout=10)
    assert (stream_id, rev) == ("s", 2)
    assert nbytes > 0
    assert heard.get(timeout=10)[:2] == ("s", 4)  # one notification per batch
    listener.close()
    listener.close()  # idempotent
    assert not listener._thread.is_alive()


def test_a_listener_reconnects_and_reannounces_followed_streams(
    pair: tuple[PostgresStorage, PostgresStorage],
    schema: PgSchema,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = pair
    for name in ("s", "t"):
        a.create_stream(name)
    heard: queue.Queue[tuple[str, int, int]] = queue.Queue()
    fast = tenacity.Retrying(wait=tenacity.wait_fixed(0.05), reraise=True)
    listener = a.listen(
        lambda sid, rev, n: heard.put((sid, rev, n)), lambda: ["s", "t"], retry=fast
    )
    assert listener.wait_listening(10)
    assert {heard.get(timeout=5)[:2] for _ in range(2)} == {("s", 0), ("t", 0)}
    b.log("s").append(Entry(from_micros(T0), EntryKind.SNAPSHOT, {}))
    assert heard.get(timeout=10)[:2] == ("s", 1)
    with admin(schema) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%%' AND application_name = 'rstream'"
            " AND query LIKE %s",
            (f"%{a.channel}%",),
        )
    b.log("s").append(Entry(from_micros(T0 + 1), EntryKind.MUTATION, {}))
    # Whether the write came before or after the reconnect, s reaches revision 2,
    # and after reconnecting every followed stream is announced again.
    seen: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 10
    while not ({("s", 2), ("t", 0)} <= seen and listener.connects >= 2):
        seen.add(heard.get(timeout=max(0.01, deadline - time.monotonic()))[:2])
    assert "reconnect" in caplog.text or "lost its connection" in caplog.text
    listener.close()


def test_close_stops_listeners_promptly(schema: PgSchema) -> None:
    storage = PostgresStorage(schema.storage_url)
    listener = storage.listen(lambda *args: None, ping_interval=300)
    assert listener.wait_listening(10)
    started = time.monotonic()
    storage.close()
    assert time.monotonic() - started < 2
    assert not listener._thread.is_alive()
