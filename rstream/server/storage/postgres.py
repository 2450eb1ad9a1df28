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
- **Live fan-out.** Each write calls ``pg_notify`` in its transaction (delivered
  on commit) on the storage's channel with the stream id and revision. A
  :class:`ChangeListener` (see :meth:`PostgresStorage.listen`) blocks on its
  ``LISTEN`` connection's socket and hands every notification to a callback
  (the server's fan-out hub); after any reconnect it re-announces the current
  revision of every stream that has subscribers, so nothing published while it
  was disconnected is missed. Subscribers always read the changes themselves
  from the table (``changes_since``): a notification is only a wake-up.

Errors: an unreachable database (refused connection, a dropped connection, no
pooled connection free within ``pool_timeout``) raises
:class:`~rstream.StorageUnavailable`, which the server answers as the protocol's
503 ``unavailable``; a bad URL or schema name is a :class:`~rstream.ConfigError`.
Reads are retried once on a fresh connection when a pooled one turns out to be
dead (after a database restart); writes only when the connection fails on
``BEGIN``, before anything was sent that could have been applied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import select
import socket
import threading
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import tenacity
from psycopg import sql as pgsql
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from rstream.core.entry import EntryKind
from rstream.errors import (
    ClientClosed,
    ConfigError,
    RStreamError,
    StorageError,
    StorageUnavailable,
    StreamNotFound,
)
from rstream.server.storage.base import Row
from rstream.server.storage.sql import POSTGRES, SCHEMA_VERSION, statements
from rstream.server.storage.sqlbase import SQLStorage, SQLStreamLog, entry_key, migrate

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
_Conn = psycopg.Connection[Any]

#: The notification channel of a storage in the default schema; a storage in
#: schema ``s`` uses ``rstream_changes_s`` (channels are per database, and
#: schemas of one database must not wake each other's subscribers).
DEFAULT_CHANNEL = "rstream_changes"

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_RANGE_PAGE = 1_000  # rows per query while iterating a range

# PostgreSQL-only statements (the shared ones live in rstream.server.storage.sql).
_NOTIFY = "SELECT pg_notify(%s, %s)"
_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {}"

# Liveness of long-lived connections: the kernel notices a dead peer within
# about 20 s even when no packet arrives (a partition, a powered-off host).
_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 2,
}


@dataclass(frozen=True)
class PostgresURL:
    """An rstream PostgreSQL URL, split by :func:`parse_postgres_url`."""

    conninfo: str  # the libpq URL, without rstream's own parameters
    schema: str | None = None
    pool_max: int | None = None
    pool_timeout: float | None = None


def parse_postgres_url(url: str) -> PostgresURL:
    """Split an rstream PostgreSQL URL into the libpq URL and rstream's options.

    rstream reads and removes ``schema`` (where its tables live), ``pool_max``
    (connections per server process, default 10) and ``pool_timeout`` (seconds
    to wait for a free one before answering 503, default 10); every other query
    parameter is libpq's (``sslmode``, ``connect_timeout``, ...). So
    ``postgresql://u@db/rs?schema=rs&pool_max=20&sslmode=require`` connects to
    ``postgresql://u@db/rs?sslmode=require``. ``postgres://`` and
    ``postgresql+psycopg://`` are accepted as well.
    """
    parts = urlsplit(url)
    # "postgresql+psycopg://" (SQLAlchemy style) names the same database.
    if parts.scheme.lower().partition("+")[0] not in ("postgresql", "postgres"):
        raise ConfigError(f"{_redact(url)!r} is not a postgresql:// URL")
    schema: str | None = None
    pool_max: int | None = None
    pool_timeout: float | None = None
    query: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            _check_schema(value)
            schema = value
        elif key == "pool_max":
            if not value.isdigit() or not 1 <= int(value) <= 1000:
                raise ConfigError(f"pool_max must be an integer from 1 to 1000, not {value!r}")
            pool_max = int(value)
        elif key == "pool_timeout":
            try:
                pool_timeout = float(value)
            except ValueError:
                pool_timeout = -1.0
            if not 0 < pool_timeout <= 3600:
                raise ConfigError(f"pool_timeout must be seconds in (0, 3600], not {value!r}")
        else:
            query.append((key, value))
    libpq = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))
    return PostgresURL(libpq, schema, pool_max, pool_timeout)


def _check_schema(schema: str) -> None:
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(
            f"PostgreSQL schema name {schema!r} is not allowed: use 1 to 63 characters "
            "from a-z, 0-9 and _, not starting with a digit"
        )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def channel_for(schema: str | None) -> str:
    """The notification channel of a storage in ``schema`` (None: the default)."""
    if schema is None:
        return DEFAULT_CHANNEL
    name = f"{DEFAULT_CHANNEL}_{schema}"
    if len(name) > 63:  # NAMEDATALEN - 1: longer channel names are refused
        name = f"{DEFAULT_CHANNEL}_{hashlib.sha256(schema.encode()).hexdigest()[:32]}"
    return name


def _unavailable(exc: BaseException, what: str) -> StorageUnavailable:
    return StorageUnavailable(f"PostgreSQL storage unavailable ({what}): {exc}; retry later")


@dataclass
class _Bound:
    """A write transaction bound to one thread by :meth:`PostgresLog.write_lock`.

    ``rev`` and ``last_key`` were read once the row lock was held; nothing can
    change them until the transaction's write commits (which closes it).
    """

    log: PostgresLog
    conn: psycopg.Connection[Any]
    rev: int
    last_key: tuple[int | None, EntryKind | None]
    open: bool = True  # False once the write committed (or the block ended)


class PostgresStorage(SQLStorage[_Conn, "PostgresLog"]):
    """A :class:`~rstream.server.storage.base.Storage` in a PostgreSQL database.

    ``PostgresStorage(url, *, schema=None, min_size=1, max_size=10,
    pool_timeout=10.0, connect_timeout=5.0)``: ``url`` is a libpq URL or
    connection string; rstream's own URL parameters (``schema``, ``pool_max``,
    ``pool_timeout``, see :func:`parse_postgres_url`) override the arguments.
    Connections come from a :class:`psycopg_pool.ConnectionPool` of ``min_size``
    to ``max_size`` autocommit connections; waiting longer than
    ``pool_timeout`` seconds for one is a 503.

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
    ) -> None:
        parsed = parse_postgres_url(url) if "://" in url else PostgresURL(url)
        conninfo = parsed.conninfo
        schema = parsed.schema if schema is None else schema
        max_size = parsed.pool_max or max_size
        pool_timeout = parsed.pool_timeout or pool_timeout
        if schema is not None:
            _check_schema(schema)
        self.schema = schema
        self.channel = channel_for(schema)
        self.origin = uuid.uuid4().hex  # tags this storage's own notifications
        self._display = _redact(conninfo) + (f" (schema {schema})" if schema else "")
        self._conninfo = conninfo
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,  # reads are single statements; writes BEGIN themselves
            "connect_timeout": max(1, round(connect_timeout)),
            "application_name": "rstream",
            **_KEEPALIVE,
        }
        if schema is not None:
            self._connect_kwargs["options"] = f"-c search_path={schema}"
        self._pool_timeout = pool_timeout
        self._lock = threading.Lock()  # guards the three below
        self._closed = False
        self._logs: dict[str, PostgresLog] = {}
        self._listeners: list[ChangeListener] = []
        self._local = threading.local()  # .bound: the thread's _Bound, if any
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            kwargs=self._connect_kwargs,
            min_size=min_size,
            max_size=max(min_size, max_size),
            timeout=pool_timeout,
            name="rstream",
            open=False,
        )
        # One connection first: it fails fast with libpq's own reason (the pool
        # would retry quietly until its timeout), and it runs the migration.
        try:
            with psycopg.connect(conninfo, **self._connect_kwargs) as conn:
                _migrate(conn, schema, self._display)
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
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise self._closed_error()
        try:
            with self._pool.connection(timeout=self._pool_timeout) as conn:
                yield conn
        except PoolClosed:
            raise self._closed_error() from None
        except PoolTimeout as exc:
            raise _unavailable(exc, "no connection free") from exc

    def _read(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``fn`` on a pooled connection, once more on a fresh one if it was dead."""
        for attempt in (1, 2):
            with self._connection() as conn:
                try:
                    return fn(conn)
                except psycopg.OperationalError as exc:
                    if attempt == 2 or not conn.closed:
                        raise _unavailable(exc, "read failed") from exc
                    log.info("%s: a pooled connection was dead (%s); retrying", self, exc)
        raise AssertionError("unreachable")

    def _write(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``fn`` in a write transaction and commit; roll back if it raises."""
        return self._transaction(None, fn)

    def _transaction(
        self, log_: PostgresLog | None, fn: Callable[[psycopg.Connection[Any]], _T]
    ) -> _T:
        """Run ``fn`` in a write transaction and commit; roll back if it raises.

        Inside :meth:`PostgresLog.write_lock` of the same log the thread's bound
        transaction is used (and committed, releasing the row lock).
        """
        bound: _Bound | None = getattr(self._local, "bound", None)
        if (
            bound is not None
            and log_ is not None
            and bound.log.stream_id == log_.stream_id
            and bound.open
        ):
            conn = bound.conn

            def write_and_commit(conn: _Conn) -> _T:
                result = fn(conn)
                bound.open = False  # committed or not, the lock is gone after this
                conn.execute("COMMIT")
                return result

            try:
                # The write's statements and the COMMIT in one round trip: the
                # lock, revision and newest entry were read by write_lock, so
                # fn only sends (see PostgresLog._lock_stream and _last_key).
                result = _pipelined(conn, write_and_commit)
            except psycopg.OperationalError as exc:
                bound.open = False
                _rollback(conn)
                raise _unavailable(exc, "write failed") from exc
            except BaseException:
                if not bound.open:  # a statement failed: the transaction is aborted
                    _rollback(conn)
                raise
            return result
        for attempt in (1, 2):
            with self._connection() as conn:
                try:
                    conn.execute(POSTGRES.begin_write)
                except psycopg.OperationalError as exc:
                    if attempt == 2 or not conn.closed:
                        raise _unavailable(exc, "cannot begin a write") from exc
                    log.info("%s: a pooled connection was dead (%s); retrying", self, exc)
                    continue
                with _rollback_on_error(conn, "write failed"):
                    result = fn(conn)
                    conn.execute("COMMIT")
                return result
        raise AssertionError("unreachable")

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
            streams or _no_streams,
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


def _no_streams() -> Iterable[str]:
    return ()


@contextmanager
def _rollback_on_error(conn: _Conn, what: str) -> Iterator[None]:
    """Roll the transaction back when the block raises; a failed connection
    becomes :class:`~rstream.StorageUnavailable` ("``what``")."""
    try:
        yield
    except psycopg.OperationalError as exc:
        _rollback(conn)
        raise _unavailable(exc, what) from exc
    except BaseException:
        _rollback(conn)
        raise


def _pipelined(conn: _Conn, fn: Callable[[_Conn], _T]) -> _T:
    """``fn(conn)`` in pipeline mode: its statements are sent together and the
    results awaited once, when the block ends (``fn`` must not fetch).

    A database error may surface at any statement of the block or at its end;
    either way it is raised once, as itself (psycopg would also log the
    pipeline's own "aborted" error as a warning when the block raises).
    """
    failure: psycopg.Error | None = None
    try:
        with conn.pipeline():
            try:
                return fn(conn)
            except psycopg.Error as exc:
                failure = exc
    except psycopg.errors.PipelineAborted:
        if failure is None:
            raise
    assert failure is not None
    raise failure


def _rollback(conn: psycopg.Connection[Any]) -> None:
    if conn.closed:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        conn.close()  # the pool discards a closed connection


def _lock_key(schema: str | None) -> int:
    """The advisory lock key of a schema's migration (a signed 64-bit int)."""
    digest = hashlib.sha256(f"rstream.migrate:{schema or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _migrate(conn: psycopg.Connection[Any], schema: str | None, display: str) -> None:
    """Create the schema, or bring an older one up to date; one replica at a time."""
    with conn.transaction():
        # Replicas starting together take turns here; the lock ends with the
        # transaction, so a crashed migration never leaves it held.
        conn.execute(_MIGRATION_LOCK, (_lock_key(schema),))
        if schema is not None:
            conn.execute(pgsql.SQL(_CREATE_SCHEMA).format(pgsql.Identifier(schema)))
        if migrate(conn, _SQL, f"PostgreSQL storage {display}", StorageError) is None:
            log.info("created the rstream schema (version %d) in %s", SCHEMA_VERSION, display)


class PostgresLog(SQLStreamLog[_Conn]):
    """One stream's :class:`~rstream.server.storage.base.StreamLog` in a
    :class:`PostgresStorage`. Get it from :meth:`PostgresStorage.log`.

    Holds no state of its own: every read asks the database, so it sees the
    writes of every replica. Reads and writes of a thread inside
    :meth:`write_lock` go through its locked transaction.
    """

    __slots__ = ("_local_lock", "_storage")

    _sql = _SQL

    def __init__(self, storage: PostgresStorage, stream_id: str) -> None:
        super().__init__(stream_id)
        self._storage = storage
        self._local_lock = threading.Lock()  # this process's writers queue here first

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
        nothing rolls back. Wrap each ``Stream.write_state`` in it::

            with log.write_lock():
                stream.write_state(state)

        Take it *before* any lock of your own that a write needs (the
        Stream's), never inside one. Not re-entrant.
        """
        storage = self._storage
        if getattr(storage._local, "bound", None) is not None:
            raise RuntimeError("write_lock() is not re-entrant (this thread holds one)")
        with self._local_lock, storage._connection() as conn:
            with _rollback_on_error(conn, "cannot lock the stream"):
                # One round trip: BEGIN, the row lock (and revision), the newest entry.
                locked, last = _pipelined(conn, self._begin_locked)
                row = locked.fetchone()
                if row is None:
                    raise StreamNotFound(f"no stream {self.stream_id!r}", stream_id=self.stream_id)
            bound = _Bound(self, conn, int(row[0]), entry_key(last.fetchone()))
            storage._local.bound = bound
            try:
                yield
            finally:
                storage._local.bound = None
                if bound.open:
                    bound.open = False
                    _rollback(conn)

    def _begin_locked(self, conn: _Conn) -> tuple[psycopg.Cursor[Any], psycopg.Cursor[Any]]:
        conn.execute(POSTGRES.begin_write)
        locked = conn.execute(self._sql.lock_stream, (self.stream_id,))
        return locked, conn.execute(self._sql.last_entry_key, (self.stream_id,))

    def _bound(self) -> _Bound | None:
        """The thread's open write transaction on this stream, if it holds one."""
        bound: _Bound | None = getattr(self._storage._local, "bound", None)
        if bound is not None and bound.log.stream_id == self.stream_id and bound.open:
            return bound
        return None

    @property
    def revision(self) -> int:
        """The revision of the newest change; 0 for an empty log."""
        bound = self._bound()
        return bound.rev if bound is not None else super().revision

    def _lock_stream(self, conn: _Conn) -> int:
        bound = self._bound()
        if bound is not None and conn is bound.conn:
            return bound.rev  # locked and read by write_lock; unchanged until its write
        return super()._lock_stream(conn)

    def _last_key(self, conn: _Conn) -> tuple[int | None, EntryKind | None]:
        bound = self._bound()
        if bound is not None and conn is bound.conn:
            return bound.last_key
        return super()._last_key(conn)

    def _read(self, fn: Callable[[_Conn], _T]) -> _T:
        """A read: on the thread's locked transaction when it holds one, else pooled."""
        bound = self._bound()
        if bound is not None:
            try:
                return fn(bound.conn)
            except psycopg.OperationalError as exc:
                raise _unavailable(exc, "read failed") from exc
        return self._storage._read(fn)

    def _write(self, fn: Callable[[_Conn], _T]) -> _T:
        return self._storage._transaction(self, fn)

    def _changed(self, conn: _Conn, rev: int, nbytes: int) -> None:
        self._storage._notify(conn, self.stream_id, rev, nbytes)

    def _insert_rows(self, conn: _Conn, rows: Sequence[tuple[Any, ...]]) -> None:
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


# -- LISTEN / NOTIFY -----------------------------------------------------------------


def _default_retry() -> tenacity.Retrying:
    return tenacity.Retrying(
        wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.1),
        retry=tenacity.retry_if_exception_type(psycopg.OperationalError),
        reraise=True,
    )


class ChangeListener:
    """Follows a storage's notification channel on a thread of its own.

    The thread holds one dedicated connection that ``LISTEN``\\s on the channel
    and blocks in :func:`select.select` on its socket and on a wake-up socket
    (no polling: it wakes for a notification, for :meth:`close`, or every
    ``ping_interval`` seconds to check the connection is alive). Every
    notification becomes ``on_change(stream_id, rev, nbytes)``. When the
    connection fails it reconnects with ``retry`` (a :class:`tenacity.Retrying`
    used as a template; default exponential backoff with jitter, 0.1 s to 5 s,
    for as long as it takes), and after every (re)connect calls
    ``on_change(stream_id, revision, 0)`` for each of ``streams()`` with the
    revision read from the database, since notifications sent while it was
    away are lost. Notifications tagged with ``origin`` (writes of the storage
    that started the listener) are skipped.

    Callbacks run on the listener's thread and should be quick (the server's
    hub only schedules work on its event loop). An exception in one is logged
    and does not stop the listener.
    """

    def __init__(
        self,
        conninfo: str,
        channel: str,
        on_change: Callable[[str, int, int], object],
        streams: Callable[[], Iterable[str]],
        *,
        revision_of: Callable[[str], int | None],
        origin: str | None = None,
        connect_kwargs: dict[str, Any] | None = None,
        retry: tenacity.Retrying | None = None,
        ping_interval: float = 30.0,
    ) -> None:
        self.channel = channel
        self._conninfo = conninfo
        self._on_change = on_change
        self._streams = streams
        self._revision_of = revision_of
        self._origin = origin
        self._connect_kwargs = {**(connect_kwargs or {}), "autocommit": True}
        self._retry = retry or _default_retry()
        self._ping_interval = ping_interval
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"rstream-listen-{channel}", daemon=True
        )
        self._started = False
        self._closed = False
        self._state_lock = threading.Lock()
        #: Set while the listener is connected and listening.
        self.listening = threading.Event()
        #: Connections made so far (1 after the first; more after reconnects).
        self.connects = 0
        #: Notifications received.
        self.received = 0

    def __repr__(self) -> str:
        state = "listening" if self.listening.is_set() else "not listening"
        return f"<ChangeListener {self.channel!r} {state} connects={self.connects}>"

    def start(self) -> None:
        """Start the listener thread (idempotent)."""
        with self._state_lock:
            if self._started or self._closed:
                return
            self._started = True
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the connection; idempotent."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        self._stop.set()
        with suppress(OSError):  # the thread may be gone already
            self._wake_w.send(b"x")
        if started:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%r did not stop within %g s", self, timeout)
        self._wake_r.close()
        self._wake_w.close()

    def wait_listening(self, timeout: float | None = None) -> bool:
        """Wait until the listener is connected and listening; False on timeout."""
        return self.listening.wait(timeout)

    # -- the thread ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except (psycopg.Error, tenacity.RetryError) as exc:
                # Only when stopping, or when a retry policy with a limit gave up.
                if not self._stop.is_set():
                    log.error("listener on %r gave up connecting: %s", self.channel, exc)
                return
            if conn is None:
                return
            try:
                self._listen(conn)
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    log.warning(
                        "listener on %r lost its connection (%s); reconnecting", self.channel, exc
                    )
            finally:
                self.listening.clear()
                self._conn = None
                conn.close()

    def _connect(self) -> psycopg.Connection[Any] | None:
        base_stop = self._retry.stop

        def stop(state: tenacity.RetryCallState) -> bool:
            return self._stop.is_set() or bool(base_stop(state))

        retrying = self._retry.copy(
            sleep=self._sleep,
            stop=stop,
            before_sleep=self._log_retry,
        )
        conn: psycopg.Connection[Any] | None = None
        for attempt in retrying:
            with attempt:
                if self._stop.is_set():
                    return None
                conn = psycopg.connect(self._conninfo, **self._connect_kwargs)
                try:
                    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self.channel)))
                except BaseException:
                    conn.close()
                    raise
        if conn is None or self._stop.is_set():
            if conn is not None:
                conn.close()
            return None
        return conn

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "listener on %r cannot connect (attempt %d): %s",
            self.channel,
            state.attempt_number,
            exc,
        )

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        conn.add_notify_handler(self._handle)  # notifications that arrive during a ping
        self.connects += 1
        if self.connects > 1:
            log.info("listener on %r reconnected (connection %d)", self.channel, self.connects)
        self.listening.set()
        self._resync()
        pgconn = conn.pgconn
        fileno = conn.fileno()
        wake = self._wake_r.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([fileno, wake], [], [], self._ping_interval)
            if self._stop.is_set():
                return
            if not ready:
                conn.execute("SELECT 1")  # a dead connection fails here, not silently
                continue
            if fileno in ready:
                pgconn.consume_input()
                if pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the connection to the server was lost")
                while (notify := pgconn.notifies()) is not None:
                    self._handle(
                        psycopg.Notify(
                            notify.relname.decode(), notify.extra.decode(), notify.be_pid
                        )
                    )

    def _resync(self) -> None:
        """Announce the current revision of every followed stream (after a (re)connect)."""
        try:
            names = list(self._streams())
        except Exception:
            log.exception("listener on %r: streams() failed", self.channel)
            return
        for stream_id in names:
            try:
                rev = self._revision_of(stream_id)
            except ClientClosed:
                return  # the storage is closing
            except RStreamError as exc:  # unreachable again: reconnect and resync later
                raise psycopg.OperationalError(f"cannot read revisions: {exc}") from exc
            if rev is not None:
                self._call(stream_id, rev, 0)

    def _handle(self, notify: psycopg.Notify) -> None:
        self.received += 1
        try:
            message = json.loads(notify.payload)
            stream_id = message["stream"]
            rev = message["rev"]
            nbytes = int(message.get("bytes", 0))
            origin = message.get("origin")
        except (ValueError, KeyError, TypeError):
            log.warning("listener on %r: ignoring a malformed notification", self.channel)
            return
        if self._origin is not None and origin == self._origin:
            return  # a write of our own storage: the server has notified it already
        if isinstance(stream_id, str) and type(rev) is int:
            self._call(stream_id, rev, nbytes)

    def _call(self, stream_id: str, rev: int, nbytes: int) -> None:
        try:
            self._on_change(stream_id, rev, nbytes)
        except Exception:
            log.exception("listener on %r: on_change(%r, %d) failed", self.channel, stream_id, rev)
