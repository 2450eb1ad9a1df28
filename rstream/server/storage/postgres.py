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
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import tenacity
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from rstream.core.entry import EntryKind
from rstream.errors import StorageUnavailable, StreamNotFound
from rstream.server.storage.base import Row
from rstream.server.storage.pg_conn import (
    Conn,
    DeadConnection,
    connect_kwargs,
    failure,
    lock_key,
    migrate_schema,
    pipelined,
    rollback,
    rollback_on_error,
    unavailable,
)
from rstream.server.storage.pg_listen import DEFAULT_CHANNEL, ChangeListener, channel_for
from rstream.server.storage.pg_url import PostgresURL, check_schema, parse_postgres_url, redact
from rstream.server.storage.sql import POSTGRES, statements
from rstream.server.storage.sqlbase import SQLStorage, SQLStreamLog, entry_key

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

_RANGE_PAGE = 1_000  # rows per query while iterating a range

_NOTIFY = "SELECT pg_notify(%s, %s)"  # PostgreSQL's own (the shared SQL: sql.py)
_TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
_UNLOCK = "SELECT pg_advisory_unlock(%s)"


@dataclass
class _Bound:
    """A write transaction held by :meth:`PostgresLog.write_lock` for one thread.

    ``rev`` and ``last_key`` were read once the row lock was held; nothing can
    change them until the transaction's write commits (which closes it).
    """

    conn: Conn
    owner: int  # threading.get_ident() of the thread inside write_lock
    rev: int
    last_key: tuple[int | None, EntryKind | None]
    open: bool = True  # False once the write committed (or the block ended)


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


class PostgresLog(SQLStreamLog[Conn]):
    """One stream's :class:`~rstream.server.storage.base.StreamLog` in a
    :class:`PostgresStorage`. Get it from :meth:`PostgresStorage.log`.

    Holds no entries of its own: every read asks the database, so it sees the
    writes of every replica. Reads and writes of the thread inside
    :meth:`write_lock` go through its locked transaction.
    """

    __slots__ = ("_held", "_storage")

    _sql = _SQL

    def __init__(self, storage: PostgresStorage, stream_id: str) -> None:
        super().__init__(stream_id)
        self._storage = storage
        # The transaction of the thread inside write_lock; set and cleared by
        # that thread while it holds _local_lock, so no other can replace it.
        self._held: _Bound | None = None

    def __repr__(self) -> str:
        return f"<PostgresLog {self.stream_id!r} in {self._storage._display}>"

    # -- the write lock ------------------------------------------------------------

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the stream's row lock while deciding and making one write.

        Inside the block, this thread's reads of this log go through a
        transaction that holds ``SELECT ... FOR UPDATE`` on the stream's row, so
        they see the newest committed state and no replica can write in
        between; the first write (``append``, ``amend`` or ``append_many``)
        commits that transaction and releases the lock. A block that writes
        nothing rolls back. Other threads of this process wait for the block
        to end. Raises :class:`~rstream.StorageUnavailable` when the lock
        cannot be taken (a dead pooled connection is replaced once first),
        :class:`~rstream.StreamNotFound` for a deleted stream, and
        ``RuntimeError`` when this thread holds it already (not re-entrant).
        """
        held = self._held
        if held is not None and held.owner == threading.get_ident():
            raise RuntimeError("write_lock() is not re-entrant (this thread holds one)")
        with self._local_lock:
            connection, bound = self._storage._retrying(self._begin)
            self._held = bound
            with connection:
                try:
                    yield
                finally:
                    self._held = None
                    if bound.open:  # nothing was written (or the block raised first)
                        bound.open = False
                        rollback(bound.conn)

    def _begin(self) -> tuple[ExitStack, _Bound]:
        """BEGIN and the row lock on a pooled connection, which the returned
        stack gives back to the pool."""
        stack = ExitStack()
        conn = stack.enter_context(self._storage._connection())
        try:
            # One round trip: BEGIN, the row lock (and revision), the newest entry.
            locked, last = pipelined(conn, self._begin_locked)
            row, last_row = locked.fetchone(), last.fetchone()
            if row is None:
                raise StreamNotFound(f"no stream {self.stream_id!r}", stream_id=self.stream_id)
        except BaseException as exc:
            rollback(conn)
            stack.close()
            if isinstance(exc, psycopg.OperationalError):
                raise failure(conn, exc, "cannot lock the stream") from exc
            raise
        return stack, _Bound(conn, threading.get_ident(), int(row[0]), entry_key(last_row))

    def _begin_locked(self, conn: Conn) -> tuple[psycopg.Cursor[Any], psycopg.Cursor[Any]]:
        conn.execute(POSTGRES.begin_write)
        locked = conn.execute(self._sql.lock_stream, (self.stream_id,))
        return locked, conn.execute(self._sql.last_entry_key, (self.stream_id,))

    def _mine(self) -> _Bound | None:
        """The block of ``write_lock`` the calling thread is in, if any."""
        held = self._held
        return held if held is not None and held.owner == threading.get_ident() else None

    def _bound(self) -> _Bound | None:
        """The calling thread's open write transaction on this stream, if any."""
        held = self._mine()
        return held if held is not None and held.open else None

    @property
    def revision(self) -> int:
        """The revision of the newest change; 0 for an empty log."""
        bound = self._bound()
        return bound.rev if bound is not None else super().revision

    def _lock_stream(self, conn: Conn) -> int:
        bound = self._bound()
        if bound is not None and conn is bound.conn:
            return bound.rev  # locked and read by write_lock; unchanged until its write
        return super()._lock_stream(conn)

    def _last_key(self, conn: Conn) -> tuple[int | None, EntryKind | None]:
        bound = self._bound()
        if bound is not None and conn is bound.conn:
            return bound.last_key
        return super()._last_key(conn)

    def _read(self, fn: Callable[[Conn], _T]) -> _T:
        """A read: on the connection of the thread's ``write_lock`` block when it
        is in one (the locked transaction; after the write, the newest committed
        state), so a block never waits for a second pooled connection."""
        held = self._mine()
        if held is not None and not held.conn.closed:
            try:
                return fn(held.conn)
            except psycopg.OperationalError as exc:
                raise unavailable(exc, "read failed") from exc
        return self._storage._read(fn)

    def _write(self, fn: Callable[[Conn], _T]) -> _T:
        """A write: committing the thread's locked transaction when it holds
        one (which releases the lock), else a transaction of its own."""
        bound = self._bound()
        if bound is None:
            return self._storage._write(fn)

        def write_and_commit(conn: Conn) -> _T:
            result = fn(conn)
            bound.open = False  # committed or not, the lock is gone after this
            conn.execute("COMMIT")
            return result

        try:
            # The write's statements and the COMMIT in one round trip: the
            # lock, revision and newest entry were read by write_lock, so fn
            # only sends (see _lock_stream and _last_key).
            return pipelined(bound.conn, write_and_commit)
        except psycopg.OperationalError as exc:
            bound.open = False
            rollback(bound.conn)
            raise unavailable(exc, "write failed") from exc
        except BaseException:
            if not bound.open:  # a statement failed: the transaction is aborted
                rollback(bound.conn)
            raise

    def _changed(self, conn: Conn, rev: int, nbytes: int) -> None:
        self._storage._notify(conn, self.stream_id, rev, nbytes)

    def _insert_rows(self, conn: Conn, rows: Sequence[tuple[Any, ...]]) -> None:
        if len(rows) == 1:  # the common case; executemany would set up a pipeline
            conn.execute(self._sql.insert_entry, rows[0])
        else:
            with conn.cursor() as cur:
                cur.executemany(self._sql.insert_entry, rows)

    def _iter_rows(self, lo: int, hi: int, limit: int | None) -> Generator[Row, None, None]:
        """Reads pages of rows by key (``ts_us``), each page one short query on a
        pooled connection, so an iterator holds no connection between pages
        and an abandoned one holds nothing at all. Entries below ``hi``
        written while iterating may be included; entries already passed are
        never repeated."""
        remaining = limit
        while remaining is None or remaining > 0:
            size = _RANGE_PAGE if remaining is None else min(_RANGE_PAGE, remaining)
            page = self._page(lo, hi, size)
            yield from page
            if len(page) < size:
                return
            lo = page[-1][0] + 1
            if remaining is not None:
                remaining -= len(page)

    def _page(self, lo: int, hi: int, size: int) -> list[Row]:
        params = (self.stream_id, lo, hi, size)
        rows: list[Row] = self._read(
            lambda conn: conn.execute(self._sql.range_limit, params).fetchall()
        )
        return rows
