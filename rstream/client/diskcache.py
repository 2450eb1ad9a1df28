"""The disk cache: committed windows kept in a SQLite file, across processes.

A committed window never changes (the server marks it immutable), so a copy
on disk stays right forever, provided it comes from the same *store*: windows
are keyed by the store id the server reports (``RStream-Store-Id``), the
stream id and the window's start. The live window is never written. The file
and its format are :mod:`rstream.client.cachefile`; a client's view of it (one
store, one stream) is :mod:`rstream.client.storecache`.

Writes are deferred: :meth:`DiskCache.put` queues the window and a writer
thread (started when there is something to write, gone when there is not)
compresses and writes the queue, many windows per transaction, so the thread
that reads history does not wait for the disk. :meth:`DiskCache.flush` and
:meth:`DiskCache.close` wait for what was queued.

Bounded by ``max_bytes`` (the sum of the compressed windows): past it, the
least recently used windows are deleted. Damage never breaks a read: any
error but a busy lock (a truncated, corrupt or foreign file, a read-only
directory, a full disk) logs one warning and turns the cache off for this
process, which then works from memory as without a disk cache. A busy lock
(another process holds the file longer than the timeout) only skips that
read or write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rstream.client.cachefile import (
    FILE_NAME,
    ROWS,
    DiskWindow,
    decode_window,
    encode_window,
    file_bytes,
    is_busy,
    open_file,
    transaction,
    without_credentials,
)

__all__ = ["DEFAULT_MAX_BYTES", "FILE_NAME", "DiskCache", "DiskWindow", "default_cache_dir"]

logger = logging.getLogger("rstream.client.cache")

DEFAULT_MAX_BYTES = 2**30
"""The default bound of a disk cache: 1 GiB of compressed windows."""

MAX_QUEUED = 1024  # windows waiting for the writer; past it put() waits (memory stays bounded)
BATCH = 64  # windows per write transaction: readers wait at most for one batch


def default_cache_dir() -> Path:
    """Where ``cache=True`` keeps the cache: ``platformdirs.user_cache_dir("rstream")``."""
    import platformdirs  # here: only a client with a disk cache needs it

    return Path(platformdirs.user_cache_dir("rstream"))


# A queued write: ("put", store, stream, micros, states, end),
# ("end", store, stream, start, end) or ("used", store, stream, first, last, now).
_Write = tuple[Any, ...]


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
        self._lock = threading.Lock()  # the connection
        self._conn: sqlite3.Connection | None = None
        self._opened = False
        self._total: int | None = None  # the windows' bytes, as this process last counted
        self._puts = 0
        self.broken: str | None = None  # why the cache is off, once it is
        self._queue: deque[_Write] = deque()
        self._queued = threading.Condition()  # guards _queue and _writer
        self._writer: threading.Thread | None = None  # alive while the queue has work

    def __repr__(self) -> str:
        state = f" off: {self.broken}" if self.broken else ""
        return f"<DiskCache {str(self.path)!r}{state}>"

    # -- the file --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection | None:
        # The lock is held.
        if not self._opened:
            self._opened = True
            try:
                self._conn = open_file(self.directory)
            except sqlite3.Error as exc:
                if is_busy(exc):  # another process is creating the file: try again later
                    self._opened = False
                    logger.debug("disk cache %s busy while opening: %s", self.path, exc)
                else:
                    self._off(exc)
            except OSError as exc:
                self._off(exc)
        return self._conn

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
                    with transaction(conn):
                        yield conn
                else:
                    yield conn
            except sqlite3.Error as exc:
                if is_busy(exc):
                    logger.debug("disk cache %s busy: %s", self.path, exc)
                else:
                    self._off(exc)
            except (OSError, zlib.error, ValueError, EOFError, TypeError) as exc:
                self._off(exc)

    def flush(self) -> None:
        """Wait until every window queued so far is written (or skipped)."""
        with self._queued:
            writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join()

    def close(self) -> None:
        """Write what is queued, then close the file. Idempotent; a later call opens
        it again."""
        self.flush()
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
        self.flush()  # a window of the old store still queued must not outlive the purge
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

    # -- reading windows ---------------------------------------------------------------

    def find(self, store: str, stream: str, at: int) -> DiskWindow | None:
        """The cached window of ``stream`` covering ``at``, or None."""
        window = None
        with self._use() as conn:
            if conn is None:
                return None
            row = conn.execute(
                f"{ROWS} WHERE w.store = ? AND w.stream = ? AND w.start <= ? "
                "ORDER BY w.start DESC LIMIT 1",
                (store, stream, at),
            ).fetchone()
            if row is None or row[1] <= at:
                return None
            window = decode_window(row)
        if window is not None:
            self._used(store, stream, window.start, window.start)
        return window

    def run(
        self, store: str, stream: str, at: int, stop: int | None, max_entries: int
    ) -> list[DiskWindow]:
        """The cached window covering ``at``, then those following it without a gap
        (starting before ``stop``), up to about ``max_entries`` entries."""
        out: list[DiskWindow] = []
        with self._use() as conn:
            if conn is None:
                return []
            rows = conn.execute(
                f"{ROWS} WHERE w.store = ? AND w.stream = ? AND w.start >= "
                "(SELECT start FROM windows WHERE store = ? AND stream = ? AND start <= ? "
                "AND stop > ? ORDER BY start DESC LIMIT 1) ORDER BY w.start",
                (store, stream, store, stream, at, at),
            )
            entries = 0
            for row in rows:
                if out and (row[0] != out[-1].end or entries >= max_entries):
                    break
                if stop is not None and row[0] >= stop:
                    break
                window = decode_window(row)
                out.append(window)
                entries += len(window.micros)
                if window.end is None:
                    break
            rows.close()
        if out:
            self._used(store, stream, out[0].start, out[-1].start)
        return out

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

    # -- writing windows (queued) --------------------------------------------------------

    def put(
        self, store: str, stream: str, micros: Sequence[int], states: Iterable[Any], end: int | None
    ) -> None:
        """Queue a committed window (its entries' times and states; ``end`` None: not
        known yet). A window kept already is left as it is, unless it gains its end.
        The lists must not change afterwards (committed windows never do)."""
        self._submit(("put", store, stream, micros, states, end))

    def confirm_end(self, store: str, stream: str, start: int, end: int) -> None:
        """Record the end of a window kept before its end was known (queued, after
        the windows queued before it)."""
        self._submit(("end", store, stream, start, end))

    def _used(self, store: str, stream: str, first: int, last: int) -> None:
        """Move the LRU clock of the windows read (those starting in ``[first, last]``):
        queued, so that a read writes nothing."""
        self._submit(("used", store, stream, first, last, time.time_ns()))

    def _submit(self, write: _Write) -> None:
        if self.broken is not None:
            return
        with self._queued:
            while len(self._queue) >= MAX_QUEUED:
                self._queued.wait()
            self._queue.append(write)
            if self._writer is not None:
                return
            self._writer = threading.Thread(target=self._write_queue, name="rstream-cache-writer")
            try:
                self._writer.start()
                return
            except RuntimeError:  # no new thread (the interpreter is exiting): write here
                self._writer = None
        self._write_queue()

    def _write_queue(self) -> None:
        """The writer thread: write the queue a batch at a time, then end."""
        while True:
            with self._queued:
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                if not batch:
                    self._writer = None
                    return
                self._queued.notify_all()
            try:
                self._write(batch)
            except Exception as exc:  # a bug must not stop the writer with work queued
                with self._lock:
                    self._off(exc)

    def _write(self, batch: list[_Write]) -> None:
        blobs = [encode_window(w[3], w[4]) if w[0] == "put" else None for w in batch]
        puts = [
            (write, blob)
            for write, blob in zip(batch, blobs, strict=True)
            # A blob bigger than the bound would evict everything else and still not fit.
            if blob is not None and len(blob) <= self.max_bytes
        ]
        with self._use(write=True) as conn:
            if conn is None:
                return
            self._insert(conn, puts, time.time_ns())
            for write in batch:
                if write[0] == "end":
                    conn.execute(
                        "UPDATE windows SET stop = ?, end_known = 1 "
                        "WHERE store = ? AND stream = ? AND start = ? AND end_known = 0",
                        (write[4], *write[1:4]),
                    )
                elif write[0] == "used":
                    conn.execute(
                        "UPDATE windows SET used = ? WHERE store = ? AND stream = ? "
                        "AND start BETWEEN ? AND ?",
                        (write[5], *write[1:5]),
                    )
            self._evict(conn, sum(len(blob) for _, blob in puts))

    @staticmethod
    def _insert(conn: sqlite3.Connection, puts: list[tuple[_Write, bytes]], now: int) -> None:
        """Write windows not kept yet; one kept already may gain its end."""
        # A window another process (or an earlier pass) wrote first is the same
        # window: its blob is left, and its row gains the end if it lacked it.
        conn.executemany(
            "INSERT INTO blobs (store, stream, start, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(w[1], w[2], w[3][0], blob) for w, blob in puts],
        )
        conn.executemany(
            "INSERT INTO windows (store, stream, start, stop, end_known, count, size, used) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (store, stream, start) "
            "DO UPDATE SET stop = excluded.stop, end_known = 1 "
            "WHERE windows.end_known = 0 AND excluded.end_known = 1",
            [
                (w[1], w[2], w[3][0], w[3][-1] + 1 if w[5] is None else w[5],
                 int(w[5] is not None), len(w[3]), len(blob), now)
                for w, blob in puts
            ],
        )  # fmt: skip

    # -- the CLI's view --------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What the cache holds: ``path``, ``file_bytes``, ``max_bytes``, ``windows``,
        ``entries``, ``bytes`` (compressed windows) and ``urls`` (url -> store id)."""
        self.flush()
        out: dict[str, Any] = {
            "path": str(self.path),
            "file_bytes": file_bytes(self.path),
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
        last (credentials in ``url`` ignored); returns how many were deleted."""
        self.flush()
        with self._use(write=True) as conn:
            if conn is None:
                return 0
            if url is None:
                deleted = conn.execute("DELETE FROM windows").rowcount
                conn.execute("DELETE FROM urls")
                return int(deleted)
            url = without_credentials(url)  # as kept
            row = conn.execute("SELECT store FROM urls WHERE url = ?", (url,)).fetchone()
            conn.execute("DELETE FROM urls WHERE url = ?", (url,))
            if row is None:
                return 0
            return int(conn.execute("DELETE FROM windows WHERE store = ?", (row[0],)).rowcount)
        return 0

    # -- internals (the lock is held) --------------------------------------------------

    def _evict(self, conn: sqlite3.Connection, added: int) -> None:
        # Counted again (a scan) only when this process's running count says the
        # bound may be passed, or once in a while for what other processes added.
        self._puts += 1
        if self._total is not None and self._puts % 16:
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
