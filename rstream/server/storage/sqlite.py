"""SQLite storage: one file, durable, safe for threads and for several processes.

Every connection runs in WAL mode with ``synchronous=FULL``: a write returns
only once its transaction is committed to the WAL, so killing the process
(even with SIGKILL) loses no write that was acknowledged, and a reopened
file continues its revisions where they were. Writes run in ``BEGIN IMMEDIATE``
transactions that read the stream's revision, check order, write the rows and
bump the revision; the database's write lock makes concurrent writers
(threads, or other processes on the same file) take turns, waiting up to
``busy_timeout`` seconds, so no two writes ever get the same revision.

Readers do not block writers (WAL): each read is one statement, which sees one
committed state. Connections come from a small pool (one connection is used by
one thread at a time) and :meth:`SQLiteStorage.close` closes them all.

The SQL lives in :mod:`rstream.server.storage.sql`. Errors of SQLite itself
(a full disk, a lock held longer than ``busy_timeout``) propagate as
:class:`sqlite3.Error`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import copy_json
from rstream.core.stream import RateConfig
from rstream.core.timestamps import TimeLike, to_micros
from rstream.errors import ClientClosed, RStreamError, StreamNotFound
from rstream.server.storage.base import (
    MAX_US,
    MIN_US,
    StreamInfo,
    check_amend,
    check_append,
    check_batch_order,
    check_entry_time,
    clamp_us,
    dump_json,
    load_json,
)
from rstream.server.storage.sql import SCHEMA_VERSION, SQLITE, Statements, statements

__all__ = ["SQLiteLog", "SQLiteStorage"]

log = logging.getLogger("rstream.server.storage")

_SQL = statements(SQLITE)
_KINDS = (EntryKind.SNAPSHOT, EntryKind.MUTATION)
_ONE_US = timedelta(microseconds=1)
_T = TypeVar("_T")
_Row = tuple[int, int, str, int]  # ts_us, kind, data, rev


def _entry(row: _Row) -> Entry:
    return Entry.from_micros(row[0], _KINDS[row[1]], load_json(row[2]), row[3])


class SQLiteStorage:
    """A :class:`~rstream.server.storage.base.Storage` in one SQLite file.

    ``SQLiteStorage(path, *, busy_timeout=10.0, pool_size=8)`` creates the file
    and its schema when missing, and migrates an older schema. ``busy_timeout``
    (seconds) is how long a write waits for another writer's lock;
    ``pool_size`` is how many idle connections are kept for reuse (more are
    opened while more threads need one at once, and closed when returned).

    Thread-safe; usable as a context manager. :meth:`close` closes every
    connection it opened, including ones in use (whose operation then fails);
    after it every method raises :class:`~rstream.ClientClosed`.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0, pool_size: int = 8
    ) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self._pool_size = pool_size
        self._lock = threading.Lock()  # guards the three below
        self._idle: list[sqlite3.Connection] = []
        self._busy: set[sqlite3.Connection] = set()
        self._closed = False
        self._logs: dict[str, SQLiteLog] = {}
        try:
            with self._connection() as conn:
                _migrate(conn, self.path)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<SQLiteStorage {self.path!r}{' closed' if self._closed else ''}>"

    def __enter__(self) -> SQLiteStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = None
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,  # autocommit: transactions are explicit
                check_same_thread=False,  # pooled: used by one thread at a time
            )
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:  # no such directory, not a database, ...
            if conn is not None:
                conn.close()
            raise RStreamError(f"cannot open SQLite storage {self.path!r}: {exc}") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return conn

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise ClientClosed(f"the storage {self.path!r} is closed")
            conn = self._idle.pop() if self._idle else None
            if conn is not None:
                self._busy.add(conn)
                return conn
        conn = self._connect()  # outside the lock: opening a file can take a while
        with self._lock:
            if not self._closed:
                self._busy.add(conn)
                return conn
        conn.close()
        raise ClientClosed(f"the storage {self.path!r} is closed")

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            self._busy.discard(conn)
            # A connection still in a transaction (an interrupted write) is not reused.
            reuse = not conn.in_transaction and len(self._idle) < self._pool_size
            if reuse and not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        conn = self._acquire()
        try:
            yield conn
        finally:
            self._release(conn)

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in a write transaction; commit if it returns, roll back if it raises."""
        with self._connection() as conn:
            conn.execute(_SQL.dialect.begin_write)
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

    def close(self) -> None:
        """Close every connection; idempotent."""
        with self._lock:
            self._closed = True
            conns = [*self._idle, *self._busy]
            self._idle.clear()
            self._busy.clear()
            self._logs.clear()
        for conn in conns:
            conn.close()

    # -- Storage -----------------------------------------------------------------

    def list_streams(self) -> list[StreamInfo]:
        """Every stream, ordered by id."""
        with self._connection() as conn:
            return [_info(row) for row in conn.execute(_SQL.list_streams)]

    def info(self, stream_id: str) -> StreamInfo | None:
        """The stream's metadata, or ``None`` when it does not exist."""
        with self._connection() as conn:
            row = conn.execute(_SQL.stream_info, (stream_id,)).fetchone()
        return None if row is None else _info(row)

    def create_stream(self, stream_id: str, rate: RateConfig | None = None) -> bool:
        """Create the stream (True), or set an existing one's rate when given (False)."""
        config = rate or RateConfig()
        keyframe_us = config.keyframe_frequency // _ONE_US
        change_us = config.change_frequency // _ONE_US

        def create(conn: sqlite3.Connection) -> bool:
            created = conn.execute(_SQL.insert_stream, (stream_id, keyframe_us, change_us)).rowcount
            if not created and rate is not None:
                conn.execute(_SQL.update_stream_rate, (keyframe_us, change_us, stream_id))
            return bool(created)

        created = self._write(create)
        if created:
            log.debug("created stream %r in %s", stream_id, self.path)
        return created

    def log(self, stream_id: str) -> SQLiteLog:
        """The stream's log; :class:`~rstream.StreamNotFound` when there is no such stream."""
        with self._lock:
            found = self._logs.get(stream_id)
        if found is not None:
            return found
        with self._connection() as conn:
            exists = conn.execute(_SQL.stream_revision, (stream_id,)).fetchone() is not None
        if not exists:
            raise StreamNotFound(f"no stream {stream_id!r}", stream_id=stream_id)
        with self._lock:
            return self._logs.setdefault(stream_id, SQLiteLog(self, stream_id))


def _info(row: tuple[Any, ...]) -> StreamInfo:
    stream_id, keyframe_us, change_us, revision, first, last, snap = row
    return StreamInfo(
        id=stream_id,
        rate=RateConfig(
            keyframe_frequency=timedelta(microseconds=keyframe_us),
            change_frequency=timedelta(microseconds=change_us),
        ),
        first=first,
        last=last,
        latest_snapshot=snap,
        revision=revision,
    )


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create the schema in a new file, or bring an older one up to date."""
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.DatabaseError as exc:  # "file is not a database", ...
        raise RStreamError(f"cannot open SQLite storage {path!r}: {exc}") from exc
    if str(mode).lower() != "wal":
        log.warning("SQLite storage %s: journal_mode is %s, not wal", path, mode)
    conn.execute(_SQL.dialect.begin_write)
    try:
        conn.execute(_SQL.create_schema_table)
        row = conn.execute(_SQL.schema_version).fetchone()
        version = None if row is None else int(row[0])
        if version is None:
            for sql in _SQL.schema:
                conn.execute(sql)
            conn.execute(_SQL.insert_schema_version, (SCHEMA_VERSION,))
        elif version > SCHEMA_VERSION:
            raise RStreamError(
                f"SQLite storage {path!r} has schema version {version}, newer than this "
                f"rstream understands ({SCHEMA_VERSION}); upgrade rstream"
            )
        elif version < SCHEMA_VERSION:
            log.info("migrating %s from schema %d to %d", path, version, SCHEMA_VERSION)
            for step in _SQL.migrations[version - 1 :]:
                for sql in step:
                    conn.execute(sql)
            conn.execute(_SQL.update_schema_version, (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SQLiteLog:
    """One stream's :class:`~rstream.server.storage.base.StreamLog` in a
    :class:`SQLiteStorage`. Get it from :meth:`SQLiteStorage.log`.

    Holds no state of its own: every read asks the database, so a log sees
    writes made through other objects and other processes.
    """

    __slots__ = ("_sql", "_storage", "stream_id")

    def __init__(self, storage: SQLiteStorage, stream_id: str) -> None:
        self._storage = storage
        self._sql: Statements = _SQL
        self.stream_id = stream_id

    def __repr__(self) -> str:
        return f"<SQLiteLog {self.stream_id!r} in {self._storage.path!r}>"

    def _one(self, sql: str, params: tuple[Any, ...]) -> Entry | None:
        with self._storage._connection() as conn:
            row = conn.execute(sql, params).fetchone()
        return None if row is None else _entry(row)

    def _all(self, sql: str, params: tuple[Any, ...]) -> list[Entry]:
        with self._storage._connection() as conn:
            return [_entry(row) for row in conn.execute(sql, params)]

    # -- Log -----------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The revision of the newest change; 0 for an empty log."""
        with self._storage._connection() as conn:
            row = conn.execute(self._sql.stream_revision, (self.stream_id,)).fetchone()
        if row is None:
            raise StreamNotFound(f"no stream {self.stream_id!r}", stream_id=self.stream_id)
        return int(row[0])

    def snapshot_before(self, ts: TimeLike) -> Entry | None:
        """The last snapshot at or before ``ts``."""
        return self.snapshot_before_us(to_micros(ts))

    def entry_after(self, ts: TimeLike, kind: EntryKind | None = None) -> Entry | None:
        """The first entry strictly after ``ts`` (of ``kind``, when given)."""
        return self.entry_after_us(to_micros(ts), kind)

    def range(self, start: TimeLike, end: TimeLike) -> list[Entry]:
        """The entries with ``start <= timestamp < end``, in order."""
        lo, hi = clamp_us(to_micros(start)), clamp_us(to_micros(end))
        return self._all(self._sql.range, (self.stream_id, lo, hi))

    def last(self) -> Entry | None:
        """The newest entry."""
        return self._one(self._sql.last_entry, (self.stream_id,))

    def changes_since(self, rev: int) -> list[Entry]:
        """Entries written or amended after revision ``rev``, in revision order."""
        return self._all(self._sql.changes_since, (self.stream_id, max(rev, -1)))

    def append(self, entry: Entry) -> Entry:
        """Add ``entry`` strictly after the last; returns it with its revision.

        Raises :class:`~rstream.OutOfOrder` (and changes nothing) otherwise.
        """
        check_entry_time(entry.micros)
        text = dump_json(entry.data)

        def append(conn: sqlite3.Connection) -> Entry:
            rev = self._lock_stream(conn)
            check_append(self._last_key(conn)[0], entry)
            return self._insert(conn, rev, [(entry, text)])[0]

        return self._storage._write(append)

    def amend(self, entry: Entry) -> Entry:
        """Replace the last entry, a mutation, by ``entry``, a mutation at the same
        timestamp; returns it with its new revision.

        Raises :class:`~rstream.OutOfOrder` (and changes nothing) otherwise.
        """
        text = dump_json(entry.data)

        def amend(conn: sqlite3.Connection) -> Entry:
            rev = self._lock_stream(conn) + 1
            last_us, last_kind = self._last_key(conn)
            check_amend(last_us, last_kind, entry)
            conn.execute(self._sql.amend_entry, (text, rev, self.stream_id, entry.micros))
            conn.execute(self._sql.set_revision, (rev, self.stream_id))
            return Entry.from_micros(entry.micros, EntryKind.MUTATION, copy_json(entry.data), rev)

        return self._storage._write(amend)

    # -- StreamLog -------------------------------------------------------------

    def first(self) -> Entry | None:
        """The oldest entry."""
        return self._one(self._sql.first_entry, (self.stream_id,))

    def latest_snapshot(self) -> Entry | None:
        """The newest snapshot: the start of the live window."""
        return self._one(self._sql.latest_snapshot, (self.stream_id,))

    def snapshot_before_us(self, us: int) -> Entry | None:
        """The last snapshot at or before ``us`` (epoch micros)."""
        return self._one(self._sql.snapshot_before, (self.stream_id, clamp_us(us)))

    def snapshot_after_us(self, us: int) -> Entry | None:
        """The first snapshot strictly after ``us`` (epoch micros)."""
        return self.entry_after_us(us, EntryKind.SNAPSHOT)

    def entry_after_us(self, us: int, kind: EntryKind | None = None) -> Entry | None:
        """The first entry strictly after ``us`` (epoch micros), of ``kind`` when given."""
        if kind is None:
            return self._one(self._sql.entry_after, (self.stream_id, clamp_us(us)))
        return self._one(self._sql.entry_after_kind, (self.stream_id, int(kind), clamp_us(us)))

    def iter_range(
        self, start_us: int | None, end_us: int | None, limit: int | None = None
    ) -> Generator[Entry, None, None]:
        """The entries with ``start_us <= micros < end_us`` in order, at most ``limit``.

        Streams rows from one statement (one consistent view of the log) and
        holds a pooled connection until exhausted or closed.
        """
        lo = MIN_US if start_us is None else clamp_us(start_us)
        hi = MAX_US if end_us is None else clamp_us(end_us)
        if limit is None:
            return self._iter(self._sql.range, (self.stream_id, lo, hi))
        return self._iter(self._sql.range_limit, (self.stream_id, lo, hi, max(limit, 0)))

    def _iter(self, sql: str, params: tuple[Any, ...]) -> Generator[Entry, None, None]:
        with self._storage._connection() as conn:
            cursor = conn.execute(sql, params)
            try:
                # sqlite3 steps the statement as rows are fetched: memory stays
                # at one batch however long the range.
                while rows := cursor.fetchmany(256):
                    for row in rows:
                        yield _entry(row)
            finally:
                cursor.close()

    def count_range(self, start_us: int | None, end_us: int | None) -> int:
        """How many entries :meth:`iter_range` would yield without a limit."""
        lo = MIN_US if start_us is None else clamp_us(start_us)
        hi = MAX_US if end_us is None else clamp_us(end_us)
        with self._storage._connection() as conn:
            row = conn.execute(self._sql.count_range, (self.stream_id, lo, hi)).fetchone()
        return int(row[0])

    def append_many(self, entries: Sequence[Entry]) -> list[Entry]:
        """Append ``entries`` in one transaction, each strictly after the previous one.

        All or nothing: on an entry out of order (or whose data is not JSON)
        nothing is written and the error names the entry's index.
        """
        items = []
        for i, entry in enumerate(entries):
            where = f"entry {i} of the batch"
            check_entry_time(entry.micros, where)
            items.append((entry, dump_json(entry.data, where)))
        if not items:
            return []

        def append_many(conn: sqlite3.Connection) -> list[Entry]:
            rev = self._lock_stream(conn)
            check_batch_order(self._last_key(conn)[0], entries)
            return self._insert(conn, rev, items)

        return self._storage._write(append_many)

    # -- inside a write transaction ----------------------------------------------

    def _lock_stream(self, conn: sqlite3.Connection) -> int:
        """The stream's revision, read under the write lock."""
        row = conn.execute(self._sql.lock_stream, (self.stream_id,)).fetchone()
        if row is None:
            raise StreamNotFound(f"no stream {self.stream_id!r}", stream_id=self.stream_id)
        return int(row[0])

    def _last_key(self, conn: sqlite3.Connection) -> tuple[int | None, EntryKind | None]:
        row = conn.execute(self._sql.last_entry_key, (self.stream_id,)).fetchone()
        return (None, None) if row is None else (int(row[0]), _KINDS[row[1]])

    def _insert(
        self, conn: sqlite3.Connection, rev: int, items: Sequence[tuple[Entry, str]]
    ) -> list[Entry]:
        conn.executemany(
            self._sql.insert_entry,
            [
                (self.stream_id, entry.micros, int(entry.kind), text, rev + i)
                for i, (entry, text) in enumerate(items, 1)
            ],
        )
        conn.execute(self._sql.set_revision, (rev + len(items), self.stream_id))
        return [
            Entry.from_micros(entry.micros, entry.kind, copy_json(entry.data), rev + i)
            for i, (entry, _) in enumerate(items, 1)
        ]
