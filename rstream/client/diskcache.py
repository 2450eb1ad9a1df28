"""The disk cache: committed windows kept in a SQLite file, across processes.

A committed window never changes (the server marks it immutable), so a copy
on disk stays right forever, provided it comes from the same *store*: windows
are keyed by the store id the server reports (``RStream-Store-Id``), the
stream id and the window's start. The live window is never written.

One file, ``windows.sqlite3``, in a directory of its own (mode 0700; the file
0600): standard-library :mod:`sqlite3` in WAL mode, so several processes read
and write it at once. A window is stored as its entries' times and states,
:mod:`marshal`-ed (which keeps the structure the states share) and
zlib-compressed (whose checksum catches a damaged blob). Only this library
writes the file, in the user's own private directory; nothing from the
network is unmarshalled without first being a state the client computed.

Bounded by ``max_bytes`` (the sum of the compressed windows): past it, the
least recently used windows are deleted. Damage never breaks a read: any
error but a busy lock (a truncated, corrupt or foreign file, a read-only
directory, a full disk) logs one warning and turns the cache off for this
process, which then works from memory as without a disk cache. A busy lock
(another process holds the file longer than the timeout) only skips that
read or write.

:class:`DiskCache` is the file; :class:`StoreCache` binds it to one client's
store (checking the store id once per connection), and :class:`StreamCache`
to one stream, the object a :class:`~rstream.client.windows.WindowStore`
reads through and writes through.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import sqlite3
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rstream.core.timestamps import from_micros

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DiskCache",
    "DiskWindow",
    "StoreCache",
    "StreamCache",
    "default_cache_dir",
]

logger = logging.getLogger("rstream.client.cache")

DEFAULT_MAX_BYTES = 2**30
"""The default bound of a disk cache: 1 GiB of compressed windows."""

FILE_NAME = "windows.sqlite3"
APPLICATION_ID = 0x72737463  # "rstc": tells this file from another SQLite database
FORMAT = 1  # PRAGMA user_version: the layout of the tables and blobs
BUSY_TIMEOUT = 5.0  # seconds another process may hold the write lock
_SQLITE_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_MARSHAL_VERSION = 4  # keeps shared objects shared

_SCHEMA = (
    # The store id each URL answered with last: a new id purges the old store's windows.
    "CREATE TABLE IF NOT EXISTS urls (url TEXT PRIMARY KEY, store TEXT NOT NULL)",
    # stop: the window's end, or just after its last entry while the end is not
    # known (end_known = 0: committed by the live tail before the next snapshot's
    # time was confirmed).
    """CREATE TABLE IF NOT EXISTS windows (
        store TEXT NOT NULL,
        stream TEXT NOT NULL,
        start INTEGER NOT NULL,
        stop INTEGER NOT NULL,
        end_known INTEGER NOT NULL,
        count INTEGER NOT NULL,
        size INTEGER NOT NULL,
        used INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (store, stream, start)
    )""",
    "CREATE INDEX IF NOT EXISTS windows_used ON windows (used)",
)


def default_cache_dir() -> Path:
    """Where ``cache=True`` keeps the cache: ``platformdirs.user_cache_dir("rstream")``."""
    import platformdirs  # here: only a client with a disk cache needs it

    return Path(platformdirs.user_cache_dir("rstream"))


@dataclass(frozen=True, slots=True)
class DiskWindow:
    """A committed window read from disk: ``end`` is None while not known."""

    start: int
    end: int | None
    micros: list[int]
    pairs: list[tuple[Any, Any]]


class DiskCache:
    """One cache file, shared by every client of this process that names it.

    Thread-safe (one connection, used under a lock). Every method returns
    quietly when the cache is off; none raises an I/O error.
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 0:
            raise ValueError("cache_max_bytes must be >= 0")
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._opened = False
        self._total: int | None = None  # the windows' bytes, as this process last counted
        self._puts = 0
        self.broken: str | None = None  # why the cache is off, once it is

    def __repr__(self) -> str:
        state = f" off: {self.broken}" if self.broken else ""
        return f"<DiskCache {str(self.path)!r}{state}>"

    # -- the file --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection | None:
        # The lock is held.
        if self._opened:
            return self._conn
        self._opened = True
        conn = None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created 0600 before SQLite opens it (its -wal and -shm files copy the mode).
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            # Read before anything is written: a foreign file is left as it is.
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            fresh = app == 0 and version == 0 and tables == 0
            if not fresh and (app != APPLICATION_ID or version != FORMAT):
                raise sqlite3.DatabaseError(
                    f"not an rstream cache of format {FORMAT} "
                    f"(application_id {app:#x}, user_version {version})"
                )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # a cache: losing the last write is fine
            if fresh:
                with _transaction(conn):
                    for statement in _SCHEMA:  # IF NOT EXISTS: another process may be first
                        conn.execute(statement)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {FORMAT}")
            conn.execute("SELECT count(*) FROM windows").fetchone()  # readable?
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            self._off(exc)
            return None
        self._conn = conn
        return conn

    def _off(self, exc: BaseException) -> None:
        # The lock is held. Once per cache: every later call is a no-op.
        if self.broken is None:
            self.broken = str(exc) or type(exc).__name__
            logger.warning(
                "the disk cache %s is unusable (%s); working from memory only. "
                "Remove the file (rstream cache clear) if it is damaged.",
                self.path,
                self.broken,
            )
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def _use(self, write: bool = False) -> Iterator[sqlite3.Connection | None]:
        """The connection (None when the cache is off or busy), with errors handled:
        a busy lock skips the operation, anything else turns the cache off."""
        with self._lock:
            conn = self._connection() if self.broken is None else None
            if conn is None:
                yield None
                return
            try:
                if write:
                    with _transaction(conn):
                        yield conn
                else:
                    yield conn
            except sqlite3.Error as exc:
                if getattr(exc, "sqlite_errorcode", None) in _SQLITE_BUSY:
                    logger.debug("disk cache %s busy: %s", self.path, exc)
                else:
                    self._off(exc)
            except (OSError, zlib.error, ValueError, EOFError, TypeError) as exc:
                self._off(exc)

    def close(self) -> None:
        """Close the file. Idempotent; a later call opens it again."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            self._conn = None
            self._opened = False

    # -- stores ----------------------------------------------------------------------

    def bind(self, urls: Sequence[str], store: str) -> None:
        """Record that ``urls`` serve ``store``; purge what a URL's previous store left.

        A URL that served another store (a fresh database, a reused port)
        makes that store's windows unusable: they are deleted, unless another
        URL still serves it, and one warning says so.
        """
        with self._use(write=True) as conn:
            if conn is None:
                return
            purged: set[str] = set()
            for url in urls:
                row = conn.execute("SELECT store FROM urls WHERE url = ?", (url,)).fetchone()
                if row is not None and row[0] != store:
                    purged.add(row[0])
                conn.execute(
                    "INSERT INTO urls (url, store) VALUES (?, ?) "
                    "ON CONFLICT (url) DO UPDATE SET store = excluded.store",
                    (url, store),
                )
            for old in purged:
                still = conn.execute("SELECT 1 FROM urls WHERE store = ?", (old,)).fetchone()
                if still is None:
                    conn.execute("DELETE FROM windows WHERE store = ?", (old,))
            if purged:
                logger.warning(
                    "%s now serves another store (id %s, was %s): the disk cache of the "
                    "old store is not used and was removed",
                    ", ".join(urls),
                    store,
                    ", ".join(sorted(purged)),
                )

    # -- windows ---------------------------------------------------------------------

    def find(self, store: str, stream: str, at: int) -> DiskWindow | None:
        """The cached window of ``stream`` covering ``at``, or None."""
        with self._use() as conn:
            if conn is None:
                return None
            row = conn.execute(
                f"SELECT {_ROW} FROM windows WHERE store = ? AND stream = ? AND start <= ? "
                "ORDER BY start DESC LIMIT 1",
                (store, stream, at),
            ).fetchone()
            if row is None or row[1] <= at:
                return None
            window = _decode(row)
            self._used(conn, store, stream, [window.start])
            return window
        return None

    def run(
        self, store: str, stream: str, at: int, stop: int | None, max_entries: int
    ) -> list[DiskWindow]:
        """The cached window covering ``at``, then those following it without a gap
        (starting before ``stop``), up to about ``max_entries`` entries."""
        with self._use() as conn:
            if conn is None:
                return []
            first = conn.execute(
                "SELECT start FROM windows WHERE store = ? AND stream = ? AND start <= ? "
                "AND stop > ? ORDER BY start DESC LIMIT 1",
                (store, stream, at, at),
            ).fetchone()
            if first is None:
                return []
            rows = conn.execute(
                f"SELECT {_ROW} FROM windows WHERE store = ? AND stream = ? AND start >= ? "
                "ORDER BY start",
                (store, stream, first[0]),
            )
            out: list[DiskWindow] = []
            entries = 0
            for row in rows:
                if out and (row[0] != out[-1].end or entries >= max_entries):
                    break
                if stop is not None and row[0] >= stop:
                    break
                window = _decode(row)
                out.append(window)
                entries += len(window.micros)
                if window.end is None:
                    break
            rows.close()
            self._used(conn, store, stream, [w.start for w in out])
            return out
        return []

    def next_start_after(self, store: str, stream: str, at: int) -> int | None:
        """The start of the first cached window of ``stream`` starting after ``at``."""
        with self._use() as conn:
            if conn is None:
                return None
            row = conn.execute(
                "SELECT min(start) FROM windows WHERE store = ? AND stream = ? AND start > ?",
                (store, stream, at),
            ).fetchone()
            return None if row[0] is None else int(row[0])
        return None

    def put(
        self,
        store: str,
        stream: str,
        micros: Sequence[int],
        states: Sequence[Any],
        end: int | None,
    ) -> None:
        """Keep a committed window (its entries' times and states; ``end`` None: not
        known yet). A window kept already is left as it is, unless it gains its end."""
        try:
            blob = zlib.compress(marshal.dumps((list(micros), list(states)), _MARSHAL_VERSION), 6)
        except ValueError:  # not JSON types (states are): the window is simply not kept
            return
        if len(blob) > self.max_bytes:
            return  # it would evict everything else and still not fit
        start = micros[0]
        stop = end if end is not None else micros[-1] + 1
        with self._use(write=True) as conn:
            if conn is None:
                return
            conn.execute(
                "INSERT INTO windows (store, stream, start, stop, end_known, count, size, used, "
                "data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (store, stream, start) "
                "DO UPDATE SET stop = excluded.stop, end_known = excluded.end_known "
                "WHERE windows.end_known = 0 AND excluded.end_known = 1",
                (store, stream, start, stop, int(end is not None), len(micros), len(blob),
                 time.time_ns(), blob),
            )  # fmt: skip
            self._evict(conn, len(blob))

    def confirm_end(self, store: str, stream: str, start: int, end: int) -> None:
        """Record the end of a window kept before its end was known."""
        with self._use(write=True) as conn:
            if conn is not None:
                conn.execute(
                    "UPDATE windows SET stop = ?, end_known = 1 "
                    "WHERE store = ? AND stream = ? AND start = ? AND end_known = 0",
                    (end, store, stream, start),
                )

    # -- the CLI's view --------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What the cache holds: ``path``, ``file_bytes``, ``max_bytes``, ``windows``,
        ``entries``, ``bytes`` (compressed windows) and ``urls`` (url -> store id)."""
        out: dict[str, Any] = {
            "path": str(self.path),
            "file_bytes": _file_bytes(self.path),
            "max_bytes": self.max_bytes,
            "windows": 0,
            "entries": 0,
            "bytes": 0,
            "urls": {},
        }
        with self._use() as conn:
            if conn is not None:
                windows, entries, size = conn.execute(
                    "SELECT count(*), total(count), total(size) FROM windows"
                ).fetchone()
                out.update(windows=windows, entries=int(entries), bytes=int(size))
                out["urls"] = dict(conn.execute("SELECT url, store FROM urls ORDER BY url"))
        if self.broken is not None:
            out["error"] = self.broken
        return out

    def clear(self, url: str | None = None) -> int:
        """Delete every window (``url`` None) or those of the store ``url`` served
        last; returns how many were deleted."""
        with self._use(write=True) as conn:
            if conn is None:
                return 0
            if url is None:
                deleted = conn.execute("DELETE FROM windows").rowcount
                conn.execute("DELETE FROM urls")
                return int(deleted)
            row = conn.execute("SELECT store FROM urls WHERE url = ?", (url,)).fetchone()
            conn.execute("DELETE FROM urls WHERE url = ?", (url,))
            if row is None:
                return 0
            return int(conn.execute("DELETE FROM windows WHERE store = ?", (row[0],)).rowcount)
        return 0

    # -- internals (the lock is held) --------------------------------------------------

    def _used(self, conn: sqlite3.Connection, store: str, stream: str, starts: list[int]) -> None:
        # The LRU clock of what was read. Best effort: a busy file skips it.
        if not starts:
            return
        now = time.time_ns()
        try:
            with _transaction(conn):
                conn.executemany(
                    "UPDATE windows SET used = ? WHERE store = ? AND stream = ? AND start = ?",
                    [(now, store, stream, start) for start in starts],
                )
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _SQLITE_BUSY:
                raise

    def _evict(self, conn: sqlite3.Connection, added: int) -> None:
        # Counted again (a scan) only when this process's running count says the
        # bound may be passed, or once in a while for what other processes added.
        self._puts += 1
        if self._total is not None and self._puts % 256:
            self._total += added
            if self._total <= self.max_bytes:
                return
        self._total = int(conn.execute("SELECT total(size) FROM windows").fetchone()[0])
        excess = self._total - self.max_bytes
        if excess <= 0:
            return
        doomed: list[int] = []
        for rowid, size in conn.execute("SELECT rowid, size FROM windows ORDER BY used"):
            doomed.append(rowid)
            excess -= size
            self._total -= size
            if excess <= 0:
                break
        conn.executemany("DELETE FROM windows WHERE rowid = ?", [(r,) for r in doomed])


_ROW = "start, stop, end_known, data"


def _decode(row: tuple[Any, ...]) -> DiskWindow:
    """A window from its row; ValueError (the cache turns off) when the blob is bad."""
    start, stop, end_known, data = row
    micros, states = marshal.loads(zlib.decompress(data))
    if (
        not isinstance(micros, list)
        or not isinstance(states, list)
        or not micros
        or len(micros) != len(states)
        or micros[0] != start
        or micros[-1] >= stop
        or not isinstance(states[0], dict)
    ):
        raise ValueError(f"a damaged window in the disk cache (start {start})")
    return DiskWindow(
        start,
        stop if end_known else None,
        micros,
        list(zip(map(from_micros, micros), states, strict=True)),
    )


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _file_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def _without_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part: no secret is written to the cache."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class StoreCache:
    """A :class:`DiskCache` as one client sees it: only the windows of the store its
    URLs serve, once that store's id is known.

    ``ask_store_id(stream_id)`` asks the server for the store id (one request,
    the first time a stream reads from the cache): None when it could not be
    asked (asked again next time), ``""`` when the server has none (an older
    server: the cache stays unused); :meth:`observe` takes every id
    the transport sees after that (``RStream-Store-Id``). A new id rebinds the
    URLs (purging the old store's windows, one warning). Thread-safe.
    """

    def __init__(
        self, disk: DiskCache, urls: Sequence[str], ask_store_id: Callable[[str], str | None]
    ) -> None:
        self.disk = disk
        self.urls = tuple(map(_without_credentials, urls))  # the cache file keeps them
        self._ask = ask_store_id
        self._lock = threading.Lock()
        self._store: str | None = None
        self._no_id = False  # the server sends no store id: nothing is cached

    def store(self, stream_id: str) -> str | None:
        """The verified store id (asking the server the first time), or None: the
        server gave none, or the cache is off."""
        if self.disk.broken is not None or self._no_id:
            return None
        store = self._store
        if store is None:
            asked = self._ask(stream_id)
            if not asked:
                self._no_id = asked == ""
                return None
            self.observe(asked)
            store = self._store
        return store

    def observe(self, store: str) -> None:
        """The server said it serves ``store``: bind the URLs to it if it is new."""
        with self._lock:
            if store == self._store:
                return
            self._store = store
        self.disk.bind(self.urls, store)

    def stream(self, stream_id: str) -> StreamCache:
        """The cache of one stream."""
        return StreamCache(self, stream_id)


class StreamCache:
    """The disk cache of one stream: what a :class:`~rstream.client.windows.WindowStore`
    reads through on a miss and writes through on a commit. Errors never escape."""

    def __init__(self, store: StoreCache, stream_id: str) -> None:
        self._store = store
        self._disk = store.disk
        self.stream_id = stream_id

    def find(self, at: int) -> DiskWindow | None:
        store = self._store.store(self.stream_id)
        return None if store is None else self._disk.find(store, self.stream_id, at)

    def run(self, at: int, stop: int | None, max_entries: int) -> list[DiskWindow]:
        store = self._store.store(self.stream_id)
        if store is None:
            return []
        return self._disk.run(store, self.stream_id, at, stop, max_entries)

    def next_start_after(self, at: int) -> int | None:
        store = self._store.store(self.stream_id)
        return None if store is None else self._disk.next_start_after(store, self.stream_id, at)

    def put(self, micros: Sequence[int], pairs: Sequence[tuple[Any, Any]], end: int | None) -> None:
        store = self._store.store(self.stream_id)
        if store is not None:
            self._disk.put(store, self.stream_id, micros, [p[1] for p in pairs], end)

    def confirm_end(self, start: int, end: int) -> None:
        store = self._store.store(self.stream_id)
        if store is not None:
            self._disk.confirm_end(store, self.stream_id, start, end)
