"""SQLite storage: one file, durable, safe for threads and for several processes.

Every connection runs in WAL mode with ``synchronous=FULL``: a write returns
only once its transaction is committed to the WAL, so killing the process
(even with SIGKILL) loses no write that was acknowledged, and a reopened
file continues its revisions where they were. Writes run in ``BEGIN IMMEDIATE``
transactions that read the stream's revision, check order, write the rows and
bump the revision; the database's write lock makes concurrent writers
(other processes on the same file) take turns, waiting up to
``busy_timeout`` seconds, so no two writes ever get the same revision. The
writes of this process's threads that arrive together share one transaction
and one fsync, each in a savepoint of its own
(:mod:`~rstream.server.storage.groupcommit`).

Readers do not block writers (WAL): each read is one statement, which sees one
committed state. Connections come from a small pool (one connection is used by
one thread at a time) and :meth:`SQLiteStorage.close` closes them all.

A new file is created with ``auto_vacuum = INCREMENTAL``, so the pages that
retention's compaction frees can be given back to the file system
(:meth:`SQLiteStorage.reclaim_space`, a few hundred pages per transaction).
A file created before (``auto_vacuum = NONE``) reuses freed pages for new
entries but never shrinks until a one-time ``VACUUM`` switches its mode (see
``docs/storage.rst``); the server logs that once when it opens such a file.

The SQL lives in :mod:`rstream.server.storage.sql`, the reads and the write
checks SQLite shares with PostgreSQL in :mod:`rstream.server.storage.sqlbase`;
this module holds what is SQLite's own (the pool, ``BEGIN IMMEDIATE``, WAL,
stepping one statement through a range). Errors of SQLite itself
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
from typing import Any, TypeVar

from rstream.errors import RStreamError
from rstream.server.storage.base import Row
from rstream.server.storage.groupcommit import GroupCommit
from rstream.server.storage.migration import migrate
from rstream.server.storage.sql import SQLITE, statements
from rstream.server.storage.sqlbase import SQLStorage, SQLStreamLog

__all__ = ["SQLiteLog", "SQLiteStorage"]

log = logging.getLogger("rstream.server.storage")

_SQL = statements(SQLITE)
_T = TypeVar("_T")
_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL


class SQLiteStorage(SQLStorage[sqlite3.Connection, "SQLiteLog"]):
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

    _sql = _SQL

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0, pool_size: int = 8
    ) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self._display = repr(self.path)
        self._pool_size = pool_size
        self._lock = threading.Lock()  # guards the four below
        self._idle: list[sqlite3.Connection] = []
        self._busy: set[sqlite3.Connection] = set()
        self._closed = False
        self._logs: dict[str, SQLiteLog] = {}
        self._compacting = threading.Lock()
        self._group = GroupCommit(self._connection, _SQL.dialect.begin_write)
        try:
            with self._connection() as conn:
                _migrate(conn, self.path)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<SQLiteStorage {self.path!r}{' closed' if self._closed else ''}>"

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
                raise self._closed_error()
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
        raise self._closed_error()

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

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` on a pooled connection (each read is one statement: one
        committed state)."""
        with self._connection() as conn:
            return fn(conn)

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in a write transaction, shared with the writes of other
        threads that arrive together (:mod:`~rstream.server.storage.groupcommit`);
        return once it is committed, or raise what ``fn`` raised, undone."""
        return self._group.run(fn)

    def _new_log(self, stream_id: str) -> SQLiteLog:
        return SQLiteLog(self, stream_id)

    def reclaim_space(self, step_pages: int = 256, max_steps: int = 64) -> int:
        """Give free pages back to the file system, ``step_pages`` per transaction
        (each a short hold of the write lock), at most ``max_steps`` of them;
        then checkpoints the WAL (without waiting for readers). Returns the
        bytes given back: 0 for a file without incremental auto-vacuum (its
        free pages are reused for new entries instead)."""
        with self._connection() as conn:
            if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
                return 0
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            freed = 0
            for _ in range(max_steps):
                free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
                if not free:
                    break
                # executescript steps the pragma to completion; execute() would
                # free a single page.
                conn.executescript(f"PRAGMA incremental_vacuum({int(step_pages)})")
                freed += free - int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            # The file changes size when the WAL is checkpointed: now, so that
            # its size follows what is kept. PASSIVE waits for no one.
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return freed * page_size

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


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create the schema in a new file, or bring an older one up to date."""
    try:
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            # Only a file without tables can take the mode without a VACUUM.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        elif conn.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
            log.info(
                "SQLite storage %s: auto_vacuum is not INCREMENTAL, so space freed by "
                "retention is reused but the file does not shrink; to change that, stop "
                "the server and run once: sqlite3 FILE 'PRAGMA auto_vacuum = INCREMENTAL; "
                "VACUUM;'",
                path,
            )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.DatabaseError as exc:  # "file is not a database", ...
        raise RStreamError(f"cannot open SQLite storage {path!r}: {exc}") from exc
    if str(mode).lower() != "wal":
        log.warning("SQLite storage %s: journal_mode is %s, not wal", path, mode)
    conn.execute(_SQL.dialect.begin_write)
    try:
        migrate(conn, _SQL, f"SQLite storage {path!r}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SQLiteLog(SQLStreamLog[sqlite3.Connection]):
    """One stream's :class:`~rstream.server.storage.base.StreamLog` in a
    :class:`SQLiteStorage`. Get it from :meth:`SQLiteStorage.log`.

    Holds no state of its own: every read asks the database, so a log sees
    writes made through other objects and other processes.
    """

    __slots__ = ("_storage",)

    _sql = _SQL

    def __init__(self, storage: SQLiteStorage, stream_id: str) -> None:
        super().__init__(stream_id)
        self._storage = storage

    def __repr__(self) -> str:
        return f"<SQLiteLog {self.stream_id!r} in {self._storage.path!r}>"

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return self._storage._read(fn)

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return self._storage._write(fn)

    def _insert_rows(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        conn.executemany(self._sql.insert_entry, rows)

    def _iter_rows(self, lo: int, hi: int, limit: int | None) -> Generator[Row, None, None]:
        """Streams rows from one statement (one consistent view of the log),
        holding a pooled connection until exhausted or closed."""
        sql = self._sql.range if limit is None else self._sql.range_limit
        params: tuple[Any, ...] = (self.stream_id, lo, hi)
        if limit is not None:
            params += (limit,)
        with self._storage._connection() as conn:
            cursor = conn.execute(sql, params)
            try:
                # sqlite3 steps the statement as rows are fetched: memory stays
                # at one batch however long the range.
                while rows := cursor.fetchmany(256):
                    yield from rows
            finally:
                cursor.close()
