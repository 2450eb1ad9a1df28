"""The disk cache's file format: one SQLite file of committed windows.

``windows.sqlite3`` in a directory of its own (created mode 0700; the file
0600, before SQLite opens it, so its ``-wal`` and ``-shm`` files copy the
mode), in WAL mode so that several processes read and write it at once. Its
``application_id`` tells it from another SQLite database, its
``user_version`` is the :data:`FORMAT` of the tables and blobs below. A cache
of an older format is emptied and made anew (it is only a cache); a file with
other values (another program's, or a newer rstream's) is *foreign* and left
as it is.

A window is a row of ``windows``: the store id, the stream id and the
window's start (the key), its stop, the number of entries, the blob's size
and the time it was last used (the LRU clock); its blob is the row of
``blobs`` with the same key (deleted with it, by a trigger). The blobs live
apart so that
moving the LRU clock rewrites a few small pages, not the data; the pages are
64 KiB so that blobs of a few KiB pack without leaving half of each page
empty. A blob is zlib (whose checksum catches a damaged blob) of the
:mod:`marshal` of ``(times, states)``: the entries' epoch microseconds and
the state after each. ``marshal`` keeps what the states share (consecutive
states share their unchanged parts), and decodes a whole window in one call.
Only this library writes the file, in the user's own private directory, and
only states the client computed are marshalled.

Everything here raises :mod:`sqlite3` errors, :class:`OSError` or
:class:`ValueError` (a damaged blob); :class:`~rstream.client.diskcache.DiskCache`
decides what they mean.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sqlite3
import urllib.parse
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rstream.client.window import Pair, datetimes

__all__ = [
    "APPLICATION_ID",
    "BUSY_TIMEOUT",
    "FILE_NAME",
    "FORMAT",
    "ROWS",
    "DiskWindow",
    "decode_window",
    "encode_window",
    "file_bytes",
    "is_busy",
    "open_file",
    "transaction",
    "without_credentials",
]

FILE_NAME = "windows.sqlite3"
APPLICATION_ID = 0x72737463  # "rstc": tells this file from another SQLite database
FORMAT = 2  # PRAGMA user_version: the layout of the tables and blobs
BUSY_TIMEOUT = 5.0  # seconds another process may hold the write lock
_SQLITE_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_MARSHAL_VERSION = 4  # keeps shared objects shared
_LEVEL = 1  # zlib: half the time of level 6 for 5% more bytes; decoding costs the same

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
        PRIMARY KEY (store, stream, start)
    )""",
    "CREATE INDEX IF NOT EXISTS windows_used ON windows (used)",
    """CREATE TABLE IF NOT EXISTS blobs (
        store TEXT NOT NULL,
        stream TEXT NOT NULL,
        start INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (store, stream, start)
    )""",
    """CREATE TRIGGER IF NOT EXISTS windows_blob AFTER DELETE ON windows BEGIN
        DELETE FROM blobs WHERE store = old.store AND stream = old.stream AND start = old.start;
    END""",
)
_PAGE_SIZE = 65536

ROWS = (
    "SELECT w.start, w.stop, w.end_known, b.data FROM windows w JOIN blobs b "
    "ON b.store = w.store AND b.stream = w.stream AND b.start = w.start"
)
"""The rows :func:`decode_window` reads (add ``WHERE``, ``ORDER BY`` on ``w``)."""


@dataclass(frozen=True, slots=True)
class DiskWindow:
    """A committed window read from disk: ``end`` is None while not known."""

    start: int
    end: int | None
    micros: list[int]
    pairs: list[Pair]


def open_file(directory: Path) -> sqlite3.Connection:
    """The cache file in ``directory`` (both created if missing), checked and ready.

    Raises :class:`sqlite3.DatabaseError` for a foreign file (nothing is
    written to it), or what SQLite and the file system raise.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / FILE_NAME
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    try:
        # Read before anything is written: a foreign file is left as it is.
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        fresh = app == 0 and version == 0 and tables == 0
        older = app == APPLICATION_ID and version < FORMAT
        if not (fresh or older or (app == APPLICATION_ID and version == FORMAT)):
            raise sqlite3.DatabaseError(
                f"not an rstream cache of format {FORMAT} or older "
                f"(application_id {app:#x}, user_version {version})"
            )
        if fresh:  # before WAL, which fixes the page size
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # a cache: losing the last write is fine
        if fresh or older:
            _create(conn)
        conn.execute("SELECT 1 FROM windows LIMIT 1").fetchall()  # readable?
    except BaseException:
        conn.close()
        raise
    return conn


def encode_window(micros: Sequence[int], states: Sequence[Any]) -> bytes | None:
    """A window's blob; None when the states are not JSON types (it is not kept)."""
    try:
        return zlib.compress(marshal.dumps((list(micros), list(states)), _MARSHAL_VERSION), _LEVEL)
    except ValueError:
        return None


def decode_window(row: tuple[Any, ...]) -> DiskWindow:
    """A window from its row (:data:`ROWS`); ValueError or zlib.error when it is damaged."""
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
        list(zip(datetimes(micros), states, strict=True)),
    )


def _create(conn: sqlite3.Connection) -> None:
    """Create the tables, or replace those of an older format (its windows are dropped).

    Another process may be doing the same at once: the second to take the
    write lock finds the work done.
    """
    with transaction(conn):
        if conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT:
            return
        old = conn.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'trigger')"
            " AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        for kind, name in old:
            conn.execute(f'DROP {kind.upper()} IF EXISTS "{name}"')
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {FORMAT}")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` only says another connection holds the file (try again later)."""
    return getattr(exc, "sqlite_errorcode", None) in _SQLITE_BUSY


def file_bytes(path: Path) -> int:
    """The size of the cache file with its ``-wal`` and ``-shm`` files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def without_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part: no secret is written to the cache."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
