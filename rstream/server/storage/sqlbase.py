"""What the SQL backends share: :class:`SQLStorage` and :class:`SQLStreamLog`.

SQLite and PostgreSQL run the same statements (:mod:`rstream.server.storage.sql`)
with the same checks, so every read, every write's order checks and revision
bookkeeping, and the storage-level methods are written once here. What really
differs stays in each backend's module, behind a few primitives:

- ``_read(fn)``: run ``fn(conn)`` for a read (SQLite: a pooled connection;
  PostgreSQL: the thread's locked transaction inside ``write_lock``, else a
  pooled connection, retried once when it was dead);
- ``_write(fn)``: run ``fn(conn)`` in a write transaction, committed when it
  returns and rolled back when it raises (SQLite: ``BEGIN IMMEDIATE``;
  PostgreSQL: ``BEGIN``, with ``SELECT ... FOR UPDATE`` on the stream's row
  taken by :meth:`SQLStreamLog._lock_stream`);
- ``_iter_rows(lo, hi, limit)``: a range's rows, streamed as suits the driver
  (SQLite: one statement stepped on a held connection; PostgreSQL: pages by key);
- ``_insert_rows(conn, rows)`` and ``_changed(conn, rev, nbytes)``, a hook run
  in each write's transaction (PostgreSQL's ``pg_notify``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from datetime import timedelta
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import copy_json
from rstream.core.stream import RateConfig
from rstream.core.timestamps import TimeLike, to_micros
from rstream.errors import ClientClosed, StreamNotFound
from rstream.server.storage.base import (
    MAX_US,
    MIN_US,
    Row,
    StreamInfo,
    batch_items,
    check_amend,
    check_append,
    check_batch_order,
    check_entry_time,
    clamp_us,
    dump_json,
    load_json,
    try_hold,
)
from rstream.server.storage.sql import Statements

__all__ = ["Connection", "Cursor", "SQLStorage", "SQLStreamLog", "entry_key"]

logger = logging.getLogger("rstream.server.storage")

_KINDS = (EntryKind.SNAPSHOT, EntryKind.MUTATION)
_T = TypeVar("_T")


class Cursor(Protocol):
    """What the shared code uses of a DB-API cursor."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    @property
    def rowcount(self) -> int: ...


class Connection(Protocol):
    """What the shared code uses of a DB-API connection (sqlite3's and psycopg's)."""

    def execute(self, sql: str, params: Any = ..., /) -> Cursor: ...


_C = TypeVar("_C", bound=Connection)
_L = TypeVar("_L", bound="SQLStreamLog[Any]")


def _entry(row: Row) -> Entry:
    return Entry.from_micros(row[0], _KINDS[row[1]], load_json(row[2]), row[3])


def _entries(rows: Generator[Row, None, None]) -> Generator[Entry, None, None]:
    with closing(rows):  # closing this generator closes the rows' (and frees what they hold)
        for row in rows:
            yield _entry(row)


def entry_key(row: tuple[Any, ...] | None) -> tuple[int | None, EntryKind | None]:
    """``(micros, kind)`` of a ``last_entry_key`` row; ``(None, None)`` for no row."""
    return (None, None) if row is None else (int(row[0]), _KINDS[row[1]])


def _bounds(start_us: int | None, end_us: int | None) -> tuple[int, int]:
    lo = MIN_US if start_us is None else clamp_us(start_us)
    hi = MAX_US if end_us is None else clamp_us(end_us)
    return lo, hi


class SQLStreamLog(Generic[_C]):
    """One stream's :class:`~rstream.server.storage.base.StreamLog` in a SQL
    database, over the primitives a backend supplies (see the module docstring).

    Holds no state of its own: every read asks the database, so a log sees
    writes made through other objects, processes and replicas.
    """

    __slots__ = ("_local_lock", "stream_id")

    _sql: ClassVar[Statements]

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self._local_lock = threading.Lock()  # this process's write_lock holders queue here

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Keep every other ``write_lock`` holder of this process from writing
        to the stream until the block ends (not re-entrant).

        This is all SQLite needs for the server's writes: each write is one
        ``BEGIN IMMEDIATE`` transaction that checks order against the database,
        so processes sharing the file never corrupt revisions. PostgreSQL
        extends it to every replica (``PostgresLog.write_lock``).
        """
        with self._local_lock:
            yield

    # -- the backend's primitives -----------------------------------------------

    def _read(self, fn: Callable[[_C], _T]) -> _T:
        """Run ``fn`` on a connection for a read."""
        raise NotImplementedError

    def _write(self, fn: Callable[[_C], _T]) -> _T:
        """Run ``fn`` in a write transaction: commit if it returns, roll back if it raises."""
        raise NotImplementedError

    def _iter_rows(self, lo: int, hi: int, limit: int | None) -> Generator[Row, None, None]:
        """The rows with ``lo <= ts_us < hi`` in order, at most ``limit`` (None: all)."""
        raise NotImplementedError

    def _insert_rows(self, conn: _C, rows: Sequence[tuple[Any, ...]]) -> None:
        """Run ``insert_entry`` for every row (inside the write transaction)."""
        raise NotImplementedError

    def _changed(self, conn: _C, rev: int, nbytes: int) -> None:
        """Called inside each write's transaction once the stream is at ``rev``
        (``nbytes``: about the size of the written events)."""

    # -- reads ------------------------------------------------------------------

    def _one(self, sql: str, params: tuple[Any, ...]) -> Entry | None:
        row = self._read(lambda conn: conn.execute(sql, params).fetchone())
        return None if row is None else _entry(row)

    def _all(self, sql: str, params: tuple[Any, ...]) -> list[Entry]:
        rows = self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [_entry(row) for row in rows]

    # -- Log -----------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The revision of the newest change; 0 for an empty log."""
        row = self._read(
            lambda conn: conn.execute(self._sql.stream_revision, (self.stream_id,)).fetchone()
        )
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

        def append(conn: _C) -> Entry:
            rev = self._lock_stream(conn)
            check_append(self._last_key(conn)[0], entry)
            return self._insert(conn, rev, [(entry, text)])[0]

        return self._write(append)

    def amend(self, entry: Entry) -> Entry:
        """Replace the last entry, a mutation, by ``entry``, a mutation at the same
        timestamp; returns it with its new revision.

        Raises :class:`~rstream.OutOfOrder` (and changes nothing) otherwise.
        """
        text = dump_json(entry.data)

        def amend(conn: _C) -> Entry:
            rev = self._lock_stream(conn) + 1
            last_us, last_kind = self._last_key(conn)
            check_amend(last_us, last_kind, entry)
            conn.execute(self._sql.amend_entry, (text, rev, self.stream_id, entry.micros))
            conn.execute(self._sql.set_revision, (rev, self.stream_id))
            self._changed(conn, rev, len(text) + 64)
            return Entry.from_micros(entry.micros, EntryKind.MUTATION, copy_json(entry.data), rev)

        return self._write(amend)

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

        Streamed (see the backend for what an open iterator holds); close it or
        exhaust it.
        """
        return _entries(self.iter_range_raw(start_us, end_us, limit))

    def iter_range_raw(
        self, start_us: int | None, end_us: int | None, limit: int | None = None
    ) -> Generator[Row, None, None]:
        """:meth:`iter_range` as stored rows ``(micros, kind, data_json, rev)``,
        the data being the stored compact JSON text, never parsed."""
        lo, hi = _bounds(start_us, end_us)
        return self._iter_rows(lo, hi, None if limit is None else max(limit, 0))

    def count_range(self, start_us: int | None, end_us: int | None) -> int:
        """How many entries :meth:`iter_range` would yield without a limit."""
        lo, hi = _bounds(start_us, end_us)
        row = self._read(
            lambda conn: conn.execute(self._sql.count_range, (self.stream_id, lo, hi)).fetchone()
        )
        return int(row[0])

    def append_many(self, entries: Sequence[Entry]) -> list[Entry]:
        """Append ``entries`` in one transaction, each strictly after the previous one.

        All or nothing: on an entry out of order (or whose data is not JSON)
        nothing is written and the error names the entry's index.
        """
        items = batch_items(entries)
        if not items:
            return []
        rev = self._write(lambda conn: self._append_items(conn, items)) - len(items)
        return [
            Entry.from_micros(entry.micros, entry.kind, copy_json(entry.data), rev + i)
            for i, (entry, _) in enumerate(items, 1)
        ]

    def append_batch(self, entries: Sequence[Entry]) -> int:
        """:meth:`append_many` returning only the new revision."""
        items = batch_items(entries)
        if not items:
            return self.revision
        return self._write(lambda conn: self._append_items(conn, items))

    def _append_items(self, conn: _C, items: Sequence[tuple[Entry, str]]) -> int:
        rev = self._lock_stream(conn)
        check_batch_order(self._last_key(conn)[0], [entry for entry, _ in items])
        return self._insert_items(conn, rev, items)

    def compact(self, cutoff_us: int, batch: int = 1000) -> int:
        """Delete the windows that end at or before ``cutoff_us``, in transactions
        of about ``batch`` entries each ending on a window's edge; returns how
        many entries were deleted (see ``StreamLog.compact``)."""
        keep = self.snapshot_before_us(cutoff_us)
        if keep is None:
            return 0
        keep_us, deleted, bound = keep.micros, 0, MIN_US
        while bound < keep_us:
            n, bound = self._write(lambda conn: self._compact_step(conn, keep_us, batch))
            deleted += n
            if not n:  # compacted meanwhile (another process)
                break
        return deleted

    def _compact_step(self, conn: _C, keep_us: int, batch: int) -> tuple[int, int]:
        """Delete up to the first snapshot after the ``batch``-th entry (at most up
        to ``keep_us``); returns ``(deleted, bound)``."""
        sql = self._sql
        bound = keep_us
        row = conn.execute(sql.nth_entry_key, (self.stream_id, max(batch, 1))).fetchone()
        if row is not None and row[0] < keep_us:
            snap = conn.execute(
                sql.entry_after_kind, (self.stream_id, int(EntryKind.SNAPSHOT), row[0] - 1)
            ).fetchone()
            if snap is not None:
                bound = min(bound, int(snap[0]))
        last = conn.execute(sql.last_rev_before, (self.stream_id, bound)).fetchone()
        if last is None:
            return 0, bound
        n = conn.execute(sql.delete_before, (self.stream_id, bound)).rowcount
        conn.execute(sql.set_compacted, (bound, last[0], self.stream_id))
        return n, bound

    # -- inside a write transaction ----------------------------------------------

    def _lock_stream(self, conn: _C) -> int:
        """The stream's revision, read under the write lock (held until commit)."""
        row = conn.execute(self._sql.lock_stream, (self.stream_id,)).fetchone()
        if row is None:
            raise StreamNotFound(f"no stream {self.stream_id!r}", stream_id=self.stream_id)
        return int(row[0])

    def _last_key(self, conn: _C) -> tuple[int | None, EntryKind | None]:
        return entry_key(conn.execute(self._sql.last_entry_key, (self.stream_id,)).fetchone())

    def _insert(self, conn: _C, rev: int, items: Sequence[tuple[Entry, str]]) -> list[Entry]:
        self._insert_items(conn, rev, items)
        return [
            Entry.from_micros(entry.micros, entry.kind, copy_json(entry.data), rev + i)
            for i, (entry, _) in enumerate(items, 1)
        ]

    def _insert_items(self, conn: _C, rev: int, items: Sequence[tuple[Entry, str]]) -> int:
        """Insert the rows after revision ``rev`` and set the new revision, which it returns."""
        self._insert_rows(
            conn,
            [
                (self.stream_id, entry.micros, int(entry.kind), text, rev + i)
                for i, (entry, text) in enumerate(items, 1)
            ],
        )
        new_rev = rev + len(items)
        conn.execute(self._sql.set_revision, (new_rev, self.stream_id))
        self._changed(conn, new_rev, sum(len(text) + 64 for _, text in items))
        return new_rev


class SQLStorage(Generic[_C, _L]):
    """The storage-level methods of the SQL backends (a
    :class:`~rstream.server.storage.base.Storage` once a backend supplies
    ``_read``, ``_write`` and ``_new_log``).

    A backend sets ``_sql``, and in ``__init__`` ``_display`` (how messages
    name it), ``_lock``, ``_closed`` and ``_logs``.
    """

    _sql: ClassVar[Statements]
    _display: str
    _lock: threading.Lock  # guards _closed and _logs (and the backend's own state)
    _closed: bool
    _logs: dict[str, _L]
    _compacting: threading.Lock  # held by the one compaction of this process
    _store_id: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every resource; idempotent."""
        raise NotImplementedError

    @property
    def store_id(self) -> str:
        """The store's random id, kept in the database (see :func:`migrate`)."""
        if self._store_id is None:  # read once: it never changes
            row = self._read(lambda conn: conn.execute(self._sql.store_id).fetchone())
            self._store_id = str(row[0])
        return self._store_id

    def _read(self, fn: Callable[[_C], _T]) -> _T:
        """Run ``fn`` on a connection for a read."""
        raise NotImplementedError

    def _write(self, fn: Callable[[_C], _T]) -> _T:
        """Run ``fn`` in a write transaction: commit if it returns, roll back if it raises."""
        raise NotImplementedError

    def _new_log(self, stream_id: str) -> _L:
        raise NotImplementedError

    def _closed_error(self) -> ClientClosed:
        return ClientClosed(f"the storage {self._display} is closed")

    def compaction_lock(self) -> AbstractContextManager[bool]:
        """True for one holder of this process at a time (never waits)."""
        return try_hold(self._compacting)

    def reclaim_space(self) -> int:
        """Nothing to do here (a backend that can shrink its files overrides it)."""
        return 0

    def list_streams(self) -> list[StreamInfo]:
        """Every stream, ordered by id."""
        rows = self._read(lambda conn: conn.execute(self._sql.list_streams).fetchall())
        return [_info(row) for row in rows]

    def info(self, stream_id: str) -> StreamInfo | None:
        """The stream's metadata, or ``None`` when it does not exist."""
        row = self._read(lambda conn: conn.execute(self._sql.stream_info, (stream_id,)).fetchone())
        return None if row is None else _info(row)

    def create_stream(self, stream_id: str, rate: RateConfig | None = None) -> bool:
        """Create the stream (True), or set an existing one's rate when given (False)."""
        config = rate or RateConfig()
        values = (config.keyframe_micros, config.change_micros, config.retention_micros)
        sql = self._sql

        def create(conn: _C) -> bool:
            cur = conn.execute(sql.insert_stream, (stream_id, *values))
            created = cur.rowcount > 0
            if not created and rate is not None:
                conn.execute(sql.update_stream_rate, (*values, stream_id))
            return created

        created = self._write(create)
        if created:
            logger.debug("created stream %r in %s", stream_id, self._display)
        return created

    def log(self, stream_id: str) -> _L:
        """The stream's log; :class:`~rstream.StreamNotFound` when there is no such stream."""
        with self._lock:
            if self._closed:
                raise self._closed_error()
            found = self._logs.get(stream_id)
        if found is not None:
            return found
        row = self._read(
            lambda conn: conn.execute(self._sql.stream_revision, (stream_id,)).fetchone()
        )
        if row is None:
            raise StreamNotFound(f"no stream {stream_id!r}", stream_id=stream_id)
        with self._lock:
            return self._logs.setdefault(stream_id, self._new_log(stream_id))


def _info(row: tuple[Any, ...]) -> StreamInfo:
    stream_id, keyframe_us, change_us, revision, retention_us, compacted, compacted_rev = row[:7]
    first, last, snap = row[7:]
    return StreamInfo(
        id=stream_id,
        rate=RateConfig(
            keyframe_frequency=timedelta(microseconds=keyframe_us),
            change_frequency=timedelta(microseconds=change_us),
            retention=None if retention_us is None else timedelta(microseconds=retention_us),
        ),
        first=first,
        last=last,
        latest_snapshot=snap,
        revision=revision,
        compacted=compacted,
        compacted_rev=compacted_rev,
    )
