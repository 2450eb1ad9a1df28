"""PostgreSQL storage: one database shared by several server replicas.

``PostgresStorage("postgresql://user@host/db")`` keeps the schema of
:mod:`rstream.server.storage.sql` (the same statements as SQLite, rendered for
psycopg) in a schema of its own choosing (``?schema=name`` on the URL, or the
``schema=`` argument; default: the connection's ``search_path``). The server
creates and migrates it itself, under a transaction-scoped advisory lock, so
replicas that start together do not race.

Guarantees, and what they rest on:

- **Revisions.** Every write runs in one transaction that first locks the
  stream's row (``SELECT ... FOR UPDATE``), reads the revision and the newest
  entry, checks order, writes and bumps the revision. Writers on any replica
  serialise on that row lock, so revisions never repeat or go backwards, and
  a write whose timestamp is no longer after the newest entry once the lock is
  held fails with :class:`~rstream.OutOfOrder` (HTTP 409) and changes nothing.
- **Decisions made on fresh state.** The core writer
  (:class:`rstream.core.stream.Stream`) decides snapshot / mutation / amend from
  its cursor. Across replicas that cursor can be stale between its check and
  its write, so the server wraps each write in :meth:`PostgresLog.write_lock`:
  the row lock is taken *before* the writer looks at the log, the writer's
  reads on that thread go through the locked transaction, and the write
  commits and releases the lock. The decision, the server-assigned timestamp
  (``max(now, newest + 1 us)``) and the write therefore see one state.
- **Retention.** :meth:`PostgresLog.compact` deletes old windows in short
  transactions; :meth:`PostgresStorage.compaction_lock` is a session advisory
  lock (``pg_try_advisory_lock``), so one replica compacts at a time. Freed
  space is PostgreSQL's autovacuum's to reuse (``docs/storage.rst``).
- **Live fan-out.** Each write calls ``pg_notify`` in its transaction (delivered
  on commit); :meth:`PostgresStorage.listen` follows the channel on a thread
  of its own (:mod:`rstream.server.storage.pg_listen`).

Errors: an unreachable database (refused connection, a dropped connection, no
pooled connection free within ``pool_timeout``) raises
:class:`~rstream.StorageUnavailable`, the protocol's 503 ``unavailable``; a bad
URL or schema name is a :class:`~rstream.ConfigError`
(:mod:`rstream.server.storage.pg_url`). A pooled connection found dead before
anything was sent that could have been applied (a read; a write's ``BEGIN``;
``write_lock``'s row lock) is replaced once by a fresh one
(:mod:`rstream.server.storage.pg_conn`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import tenacity
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from rstream.errors import StorageUnavailable
from rstream.server.storage.pg_conn import (
    Conn,
    DeadConnection,
    connect_kwargs,
    failure,
    lock_key,
    migrate_schema,
    rollback_on_error,
    unavailable,
)
from rstream.server.storage.pg_listen import DEFAULT_CHANNEL, ChangeListener, channel_for
from rstream.server.storage.pg_log import PostgresLog
from rstream.server.storage.pg_url import PostgresURL, check_schema, parse_postgres_url, redact
from rstream.server.storage.sql import POSTGRES, statements
from rstream.server.storage.sqlbase import SQLStorage

__all__ = [
    "DEFAULT_CHANNEL",
    "ChangeListener",
    "PostgresLog",
    "PostgresStorage",
    "PostgresURL",
    "channel_for",
    "parse_postgres_url",
]

log = logging.getLogger("rstream.server.storage.postgres")

_SQL = statements(POSTGRES)
_T = TypeVar("_T")

_NOTIFY = "SELECT pg_notify(%s, %s)"  # PostgreSQL's own (the shared SQL: sql.py)
_TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
_UNLOCK = "SELECT pg_advisory_unlock(%s)"


class PostgresStorage(SQLStorage[Conn, "PostgresLog"]):
    """A :class:`~rstream.server.storage.base.Storage` in a PostgreSQL database.

    ``PostgresStorage(url, *, schema=None, min_size=1, max_size=10,
    pool_timeout=10.0, connect_timeout=5.0, sleep=time.sleep)``: ``url`` is a
    libpq URL or connection string; rstream's own URL parameters (``schema``,
    ``pool_max``, ``pool_timeout``, see :func:`parse_postgres_url`) override the
    arguments. Connections come from a :class:`psycopg_pool.ConnectionPool` of
    ``min_size`` to ``max_size`` autocommit connections; waiting longer than
    ``pool_timeout`` seconds for one is a 503. ``sleep`` is what the retry on a
    dead pooled connection calls before its second attempt (with 0: the retry
    is immediate; tests pass a recorder).

    Thread-safe; usable as a context manager. :meth:`close` closes the pool and
    every listener; afterwards every method raises :class:`~rstream.ClientClosed`.
    """

    _sql = _SQL

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        pool_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parsed = parse_postgres_url(url) if "://" in url else PostgresURL(url)
        conninfo = parsed.conninfo
        schema = parsed.schema if schema is None else schema
        max_size = parsed.pool_max or max_size
        pool_timeout = parsed.pool_timeout or pool_timeout
        if schema is not None:
            check_schema(schema)
        self.schema = schema
        self.channel = channel_for(schema)
        self.origin = uuid.uuid4().hex  # tags this storage's own notifications
        self._display = redact(conninfo) + (f" (schema {schema})" if schema else "")
        self._conninfo = conninfo
        self._connect_kwargs = connect_kwargs(conninfo, schema, connect_timeout)
        self._pool_timeout = pool_timeout
        # The one retry policy of reads, and of writes that failed at BEGIN:
        # once more, when the pooled connection was dead, after the pool
        # replaced every dead one.
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(2),
            retry=tenacity.retry_if_exception_type(DeadConnection),
            sleep=sleep,
            before_sleep=self._replace_dead,
            reraise=True,
        )
        self._lock = threading.Lock()  # guards the three below
        self._closed = False
        self._logs: dict[str, PostgresLog] = {}
        self._listeners: list[ChangeListener] = []
        self._compacting = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            kwargs=self._connect_kwargs,
            min_size=min_size,
            max_size=max(min_size, max_size),
            timeout=pool_timeout,
            name="rstream",
            open=False,
        )
        self._open(connect_timeout)

    def _open(self, connect_timeout: float) -> None:
        # One connection first: it fails fast with libpq's own reason (the pool
        # would retry quietly until its timeout), and it runs the migration.
        try:
            with psycopg.connect(self._conninfo, **self._connect_kwargs) as conn:
                migrate_schema(conn, self.schema, self._display)
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(
                f"cannot connect to PostgreSQL storage {self._display}: {exc}".strip()
            ) from None
        try:
            self._pool.open(wait=True, timeout=connect_timeout + 1)
        except PoolTimeout as exc:
            self._pool.close()
            raise StorageUnavailable(
                f"cannot connect to PostgreSQL storage {self._display} within "
                f"{connect_timeout + 1:g} s; is the server running and the URL right?"
            ) from exc

    def __repr__(self) -> str:
        return f"<PostgresStorage {self._display}{' closed' if self._closed else ''}>"

    # -- connections -------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Conn]:
        if self._closed:
            raise self._closed_error()
        try:
            with self._pool.connection(timeout=self._pool_timeout) as conn:
                yield conn
        except PoolClosed:
            raise self._closed_error() from None
        except PoolTimeout as exc:
            raise unavailable(exc, "no connection free") from exc

    def _replace_dead(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.info("%s: a pooled connection was dead (%s); retrying", self, exc)
        # After a database restart every idle connection is dead, not just the
        # one that failed: test them all now, so the retry gets a live one.
        self._pool.check()

    def _read(self, fn: Callable[[Conn], _T]) -> _T:
        """Run ``fn`` on a pooled connection, once more on a fresh one if it was dead."""
        result: _T = self._retrying(self._read_once, fn)
        return result

    def _read_once(self, fn: Callable[[Conn], _T]) -> _T:
        with self._connection() as conn:
            try:
                return fn(conn)
            except psycopg.OperationalError as exc:
                raise failure(conn, exc, "read failed") from exc

    def _write(self, fn: Callable[[Conn], _T]) -> _T:
        """Run ``fn`` in a write transaction and commit; roll back if it raises.

        Retried on a fresh connection only when the pooled one was dead at
        ``BEGIN``, before anything was sent that could have been applied.
        """
        result: _T = self._retrying(self._write_once, fn)
        return result

    def _write_once(self, fn: Callable[[Conn], _T]) -> _T:
        with self._connection() as conn:
            try:
                conn.execute(POSTGRES.begin_write)
            except psycopg.OperationalError as exc:
                raise failure(conn, exc, "cannot begin a write") from exc
            with rollback_on_error(conn, "write failed"):
                result = fn(conn)
                conn.execute("COMMIT")
            return result

    def _notify(self, conn: psycopg.Connection[Any], stream_id: str, rev: int, nbytes: int) -> None:
        payload = json.dumps(
            {"stream": stream_id, "rev": rev, "bytes": nbytes, "origin": self.origin},
            separators=(",", ":"),
        )
        conn.execute(_NOTIFY, (self.channel, payload))

    def close(self) -> None:
        """Stop every listener and close the pool; idempotent."""
        with self._lock:
            self._closed = True
            listeners, self._listeners = self._listeners, []
            self._logs.clear()
        for listener in listeners:
            listener.close()
        self._pool.close()

    def _new_log(self, stream_id: str) -> PostgresLog:
        return PostgresLog(self, stream_id)

    @contextmanager
    def compaction_lock(self) -> Iterator[bool]:
        """True for one holder across every replica of the database (a session
        advisory lock on a pooled connection kept for the block; never waits).
        Raises :class:`~rstream.StorageUnavailable` when the database cannot be reached."""
        with super().compaction_lock() as mine:
            if not mine:
                yield False
                return
            key = lock_key("compact", self.schema)
            with self._connection() as conn:
                try:
                    row = conn.execute(_TRY_LOCK, (key,)).fetchone()
                    got = row is not None and bool(row[0])
                except psycopg.OperationalError as exc:
                    raise failure(conn, exc, "cannot take the compaction lock") from exc
                try:
                    yield got
                finally:
                    if got:
                        try:
                            conn.execute(_UNLOCK, (key,))
                        except psycopg.OperationalError:
                            # The session died, and its lock with it; the pool drops it.
                            log.info("%s: compaction lock's connection was lost", self)

    # -- live fan-out --------------------------------------------------------------

    def listen(
        self,
        on_change: Callable[[str, int, int], object],
        streams: Callable[[], Iterable[str]] | None = None,
        *,
        retry: tenacity.Retrying | None = None,
        ping_interval: float = 30.0,
        include_own: bool = False,
    ) -> ChangeListener:
        """Start a :class:`ChangeListener` on this storage's channel; closed by :meth:`close`.

        ``on_change(stream_id, rev, nbytes)`` is called on the listener's thread
        for every write committed by another replica (another storage object),
        ``nbytes`` being about the size of its events. Writes made through this
        storage are skipped unless ``include_own``: the server notifies its hub
        of its own writes itself. ``streams()`` names the streams that have
        subscribers: after every (re)connect each gets
        ``on_change(stream_id, current_revision, 0)``.
        """
        listener = ChangeListener(
            self._conninfo,
            self.channel,
            on_change,
            streams or (lambda: ()),
            revision_of=self._revision_of,
            origin=None if include_own else self.origin,
            connect_kwargs=self._connect_kwargs,
            retry=retry,
            ping_interval=ping_interval,
        )
        with self._lock:
            if self._closed:
                raise self._closed_error()
            self._listeners.append(listener)
        listener.start()
        return listener

    def _revision_of(self, stream_id: str) -> int | None:
        row = self._read(lambda conn: conn.execute(_SQL.stream_revision, (stream_id,)).fetchone())
        return None if row is None else int(row[0])
