"""The storage interface of the server: :class:`Storage` (the streams) and
:class:`StreamLog` (one stream's entries), plus helpers every backend shares.

A backend is a :class:`Storage`: it lists and creates streams and hands out one
:class:`StreamLog` per stream. A :class:`StreamLog` is a core
:class:`~rstream.core.log.Log` (so the core writer, :class:`rstream.core.stream.Stream`,
runs on it unchanged) plus what the server needs on top:

- micros-based lookups, so the server never converts its parsed times back to
  datetimes: :meth:`~StreamLog.snapshot_before_us`,
  :meth:`~StreamLog.snapshot_after_us`, :meth:`~StreamLog.entry_after_us`,
  :meth:`~StreamLog.latest_snapshot`;
- :meth:`~StreamLog.iter_range` (streamed, with open bounds and a limit),
  :meth:`~StreamLog.iter_range_raw` (the same as stored rows, the data left as
  its JSON text, so the entries endpoint splices it into its page without
  parsing it) and :meth:`~StreamLog.count_range`;
- :meth:`~StreamLog.append_many`, an all-or-nothing batch append for imports
  (:meth:`~StreamLog.append_batch` when only the new revision is wanted);
- :meth:`~StreamLog.write_lock`, held while one write is decided and made;
- :meth:`~StreamLog.compact`, retention's delete of whole old windows.

Micros arguments may be any int: values outside the storable range (see
:data:`MIN_US`, :data:`MAX_US`) are clamped, since no entry can lie beyond it.

Every backend rejects the same bad input the same way: data that is not JSON
(NaN, Infinity, non-JSON types) raises :class:`~rstream.EntryFormatError`, a
timestamp outside the storable range :class:`~rstream.InvalidTimestamp`, and
nothing is written. The conformance suite, ``tests/test_storage.py``, holds
every backend to these rules.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from rstream.core.entry import Entry, EntryKind
from rstream.core.log import Log
from rstream.core.stream import RateConfig
from rstream.core.timestamps import format_rfc3339, from_micros, to_micros
from rstream.errors import EntryFormatError, InvalidTimestamp, OutOfOrder, RStreamError

__all__ = [
    "MAX_US",
    "MIN_US",
    "STREAM_ID_PATTERN",
    "Row",
    "Storage",
    "StreamInfo",
    "StreamLog",
    "batch_items",
    "check_amend",
    "check_append",
    "check_batch_order",
    "check_entry_time",
    "clamp_us",
    "dump_json",
    "is_valid_stream_id",
    "load_json",
    "new_store_id",
    "try_hold",
]

#: The first storable microsecond (0001-01-01T00:00:00Z), inclusive.
MIN_US = to_micros(datetime(1, 1, 1, tzinfo=UTC))
#: The end of the storable range (9999-12-31T23:59:59.999999Z), exclusive: every
#: stored timestamp is below it, so ``[x, MAX_US)`` holds every entry from ``x`` on.
MAX_US = to_micros(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))

#: A stored entry as :meth:`StreamLog.iter_range_raw` yields it:
#: ``(micros, kind, data_json, rev)``, ``kind`` being ``int(EntryKind)`` and
#: ``data_json`` the compact JSON text :func:`dump_json` makes of the data.
Row = tuple[int, int, str, int]

#: Stream ids, as the protocol defines them (the URL-unreserved set, 1 to 128
#: characters, not starting with ``.``).
STREAM_ID_PATTERN = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,127}\Z")


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the server tells about one stream (``GET /v1/streams/{id}``).

    Times are epoch microseconds, ``None`` while the stream has no entry (or,
    for ``latest_snapshot``, no snapshot). ``compacted``: entries before this
    time were deleted by :meth:`StreamLog.compact` (``None``: none ever were);
    it is the stream's ``first`` entry unless the stream is empty.
    ``compacted_rev``: the newest revision compaction deleted (a live client
    resuming from an older one has missed changes).
    """

    id: str
    rate: RateConfig
    first: int | None
    last: int | None
    latest_snapshot: int | None
    revision: int
    compacted: int | None = None
    compacted_rev: int | None = None


@runtime_checkable
class StreamLog(Log, Protocol):
    """One stream's log in a :class:`Storage`: a core :class:`~rstream.core.log.Log`
    plus the micros-based reads and the batch append the server uses.

    The :class:`~rstream.core.log.Log` methods keep their exact semantics
    (public-API times; revision +1 per change; ``OutOfOrder`` changes nothing).
    """

    def first(self) -> Entry | None:
        """The oldest entry."""
        ...

    def latest_snapshot(self) -> Entry | None:
        """The newest snapshot: the start of the live window."""
        ...

    def snapshot_before_us(self, us: int) -> Entry | None:
        """The last snapshot at or before ``us`` (epoch micros)."""
        ...

    def snapshot_after_us(self, us: int) -> Entry | None:
        """The first snapshot strictly after ``us`` (epoch micros)."""
        ...

    def entry_after_us(self, us: int, kind: EntryKind | None = None) -> Entry | None:
        """The first entry strictly after ``us`` (epoch micros), of ``kind`` when given."""
        ...

    def iter_range(
        self, start_us: int | None, end_us: int | None, limit: int | None = None
    ) -> Generator[Entry, None, None]:
        """The entries with ``start_us <= micros < end_us`` in order, at most ``limit``.

        ``None`` leaves a bound open. Backends stream the rows instead of
        loading the range; close the generator (or exhaust it) to free what it
        holds, e.g. with :func:`contextlib.closing`.
        """
        ...

    def iter_range_raw(
        self, start_us: int | None, end_us: int | None, limit: int | None = None
    ) -> Generator[Row, None, None]:
        """:meth:`iter_range` as :data:`Row` tuples, the data as stored JSON text.

        The text is exactly what :func:`dump_json` makes of the entry's data
        (compact, UTF-8 unless a lone surrogate forced the escaped form), so
        it can be copied into a response without parsing it. Close it like
        :meth:`iter_range`.
        """
        ...

    def count_range(self, start_us: int | None, end_us: int | None) -> int:
        """How many entries :meth:`iter_range` would yield without a limit."""
        ...

    def append_many(self, entries: Sequence[Entry]) -> list[Entry]:
        """Append ``entries`` atomically, each strictly after the previous one.

        All or nothing: when one entry is out of order (or its data is not
        JSON), nothing is written, the revision is unchanged and the error
        names the entry's index. Returns the stored entries with their revs
        (consecutive revisions).
        """
        ...

    def append_batch(self, entries: Sequence[Entry]) -> int:
        """:meth:`append_many`, returning only the new revision (the revision
        unchanged for no entries): an import's caller has the entries already,
        and making the stored copies is most of a batch's cost after parsing."""
        ...

    def write_lock(self) -> AbstractContextManager[None]:
        """Hold the stream's write lock while one write is decided and made.

        While the block runs, no other holder of the lock (another thread,
        and for PostgreSQL another replica) writes to the stream, and this
        thread's reads of the log see the newest committed state, so a
        decision taken on them (snapshot, mutation or amend; the next
        timestamp) still holds when the write lands. Wrap each decision and
        its write in it, *before* taking any lock of your own that a write
        needs::

            with log.write_lock():
                stream.write_state(state)

        Not re-entrant. Raises what a write of the backend raises when the
        lock cannot be taken (PostgreSQL: :class:`~rstream.StorageUnavailable`).
        """
        ...

    def compact(self, cutoff_us: int, batch: int = 1000) -> int:
        """Delete the windows that end at or before ``cutoff_us``; how many entries went.

        Deletes every entry before the last snapshot at or before
        ``cutoff_us``, so the oldest entry kept is always a snapshot, and the
        newest snapshot (the live window) is never deleted. Runs in
        transactions of about ``batch`` entries, each ending on a window's
        edge, so a reader never sees part of a window and writers wait at most
        one batch. Leaves the revision as it is (no live event is sent) and
        records the new edge (:attr:`StreamInfo.compacted`).
        """
        ...


@runtime_checkable
class Storage(Protocol):
    """Where a server keeps its streams. Backends: :class:`~.memory.MemoryStorage`,
    :class:`~.sqlite.SQLiteStorage`; open one from a URL with :func:`~.open_storage`.

    Methods may be called from any thread. A storage is a context manager
    that closes it.
    """

    def __enter__(self) -> Storage: ...

    def __exit__(self, *exc: object) -> None: ...

    def list_streams(self) -> list[StreamInfo]:
        """Every stream, ordered by id."""
        ...

    def info(self, stream_id: str) -> StreamInfo | None:
        """The stream's metadata, or ``None`` when it does not exist."""
        ...

    def create_stream(self, stream_id: str, rate: RateConfig | None = None) -> bool:
        """Create the stream; True if it was created by this call.

        When it already exists and ``rate`` is given, its rate config is set to
        ``rate``; without ``rate`` an existing stream is left as it is. A new
        stream without ``rate`` gets ``RateConfig()``'s defaults.
        """
        ...

    def log(self, stream_id: str) -> StreamLog:
        """The stream's log; raises :class:`~rstream.StreamNotFound` for an unknown stream."""
        ...

    def close(self) -> None:
        """Release every resource; idempotent. Later use raises ``ClientClosed``."""
        ...

    @property
    def store_id(self) -> str:
        """The store's id: random, created with the store and kept in it, the same
        for every server on it (clients use it to tell stores apart)."""
        ...

    def compaction_lock(self) -> AbstractContextManager[bool]:
        """Whether this process may compact now: ``with storage.compaction_lock() as mine:``.

        True at most for one holder at a time: in this process, and on
        PostgreSQL across every replica of the database (an advisory lock,
        released when the block ends). Never waits.
        """
        ...

    def reclaim_space(self) -> int:
        """Give the space compaction freed back to the file system, in short steps
        that let writers in between; returns the bytes given back (SQLite;
        0 where the database does it itself: PostgreSQL's autovacuum, memory)."""
        ...


# -- helpers -------------------------------------------------------------------


def new_store_id() -> str:
    """A fresh random store id (32 hex digits)."""
    return uuid.uuid4().hex


def is_valid_stream_id(stream_id: object) -> bool:
    """Whether ``stream_id`` is a stream id the protocol allows."""
    return isinstance(stream_id, str) and STREAM_ID_PATTERN.match(stream_id) is not None


@contextmanager
def try_hold(lock: threading.Lock) -> Iterator[bool]:
    """Hold ``lock`` for the block if it is free now: yields whether it was."""
    mine = lock.acquire(blocking=False)
    try:
        yield mine
    finally:
        if mine:
            lock.release()


def clamp_us(us: int) -> int:
    """``us`` limited to ``[MIN_US, MAX_US]``: the same answer for every lookup
    (no entry lies outside), and always representable (datetime, int64)."""
    return MIN_US if us < MIN_US else MAX_US if us > MAX_US else us


def check_entry_time(micros: int, where: str = "entry") -> None:
    """Raise :class:`~rstream.InvalidTimestamp` unless an entry at ``micros`` can be stored."""
    if not MIN_US <= micros < MAX_US:
        raise InvalidTimestamp(
            f"{where}: timestamp {micros} us is outside the storable range (years 1 to 9999)"
        )


def check_batch_order(last_us: int | None, entries: Sequence[Entry]) -> None:
    """Raise :class:`~rstream.OutOfOrder` unless every entry of a batch is strictly
    after the previous one (the first after ``last_us``, the newest stored entry's
    time); the message names the entry's index in the batch."""
    prev = last_us
    for i, entry in enumerate(entries):
        if prev is not None and entry.micros <= prev:
            before = "the entry before it" if i else "the last entry"
            raise OutOfOrder(
                f"entry {i} of the batch, at {format_rfc3339(entry.micros)}, is not after "
                f"{before} ({format_rfc3339(prev)}); nothing was written",
                last=from_micros(prev),
                given=entry.timestamp,
            )
        prev = entry.micros


def check_append(last_us: int | None, entry: Entry) -> None:
    """Raise :class:`~rstream.OutOfOrder` unless ``entry`` is strictly after ``last_us``."""
    if last_us is not None and entry.micros <= last_us:
        raise OutOfOrder(
            f"entry at {format_rfc3339(entry.micros)} is not after the last entry "
            f"({format_rfc3339(last_us)})",
            last=from_micros(last_us),
            given=entry.timestamp,
        )


def check_amend(last_us: int | None, last_kind: EntryKind | None, entry: Entry) -> None:
    """Raise :class:`~rstream.OutOfOrder` unless ``entry`` may amend the newest entry
    (at ``last_us``, of ``last_kind``): both mutations, at the same time."""
    problem = None
    if last_us is None:
        problem = "cannot amend an empty log"
    elif last_kind is not EntryKind.MUTATION:
        problem = "cannot amend the last entry: it is a snapshot (only a mutation can be amended)"
    elif entry.kind is not EntryKind.MUTATION:
        problem = "cannot amend with a snapshot: an amend replaces a mutation by a mutation"
    elif entry.micros != last_us:
        problem = (
            f"cannot amend the last entry ({format_rfc3339(last_us)}) with an entry "
            f"at another time ({format_rfc3339(entry.micros)})"
        )
    if problem is not None:
        raise OutOfOrder(
            problem,
            last=None if last_us is None else from_micros(last_us),
            given=entry.timestamp,
        )


def dump_json(data: Any, where: str = "entry") -> str:
    """Entry data as compact JSON text, as every backend stores it.

    Raises :class:`~rstream.EntryFormatError` when ``data`` is not JSON: NaN or
    Infinity (which JSON cannot carry, and PostgreSQL's ``jsonb`` refuses), a
    type JSON has no form for, or nesting too deep to serialise.
    """
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        raise EntryFormatError(f"malformed entry ({where}): data is not JSON: {exc}") from None
    if not text.isascii():  # isascii() is O(1) in CPython; the encode check is not
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (``"\ud800"`` parsed from JSON) cannot be stored as
            # UTF-8; the escaped ASCII form round-trips it exactly.
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text


def batch_items(entries: Sequence[Entry]) -> list[tuple[Entry, str]]:
    """Each entry of a batch with its data's JSON text (:func:`dump_json`).

    Raises what :func:`check_entry_time` and :func:`dump_json` raise for the
    first entry that cannot be stored, naming its index in the batch."""
    items = []
    for i, entry in enumerate(entries):
        try:
            check_entry_time(entry.micros)
            text = dump_json(entry.data)
        except RStreamError:
            where = f"entry {i} of the batch"  # spelled out only for the error
            check_entry_time(entry.micros, where)
            dump_json(entry.data, where)
            raise
        items.append((entry, text))
    return items


def load_json(text: str) -> dict[str, Any]:
    """Entry data back from the text :func:`dump_json` wrote."""
    data: dict[str, Any] = json.loads(text)
    return data
