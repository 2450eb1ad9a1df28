"""One stream's log in PostgreSQL: :class:`PostgresLog`, and its write lock.

The reads and writes are those every SQL backend shares
(:mod:`rstream.server.storage.sqlbase`); what is PostgreSQL's own is the write
lock that spans replicas (:meth:`PostgresLog.write_lock`: ``SELECT ... FOR
UPDATE`` on the stream's row, taken before the writer decides, released by the
commit of its write) and reading ranges in pages by key. See
:mod:`rstream.server.storage.postgres` for the guarantees.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from rstream.core.entry import EntryKind
from rstream.errors import StreamNotFound
from rstream.server.storage.base import Row
from rstream.server.storage.pg_conn import Conn, failure, pipelined, rollback, unavailable
from rstream.server.storage.sql import POSTGRES, statements
from rstream.server.storage.sqlbase import SQLStreamLog, entry_key

if TYPE_CHECKING:
    from rstream.server.storage.postgres import PostgresStorage

__all__ = ["PostgresLog"]

_SQL = statements(POSTGRES)
_T = TypeVar("_T")

_RANGE_PAGE = 1_000  # rows per query while iterating a range


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
