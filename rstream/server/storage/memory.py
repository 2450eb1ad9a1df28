"""In-memory storage: for tests, demos and ``memory://``. Nothing survives the process."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from itertools import islice

from rstream.core.entry import Entry, EntryKind
from rstream.core.log import MemoryLog
from rstream.core.stream import RateConfig
from rstream.core.timestamps import TimeLike, from_micros
from rstream.errors import ClientClosed, StreamNotFound
from rstream.server.storage.base import (
    MAX_US,
    MIN_US,
    Row,
    StreamInfo,
    batch_items,
    check_batch_order,
    check_entry_time,
    clamp_us,
    dump_json,
    new_store_id,
    try_hold,
)

__all__ = ["MemoryStorage", "MemoryStreamLog"]


class MemoryStreamLog:
    """A :class:`~rstream.server.storage.base.StreamLog` over a core
    :class:`~rstream.core.log.MemoryLog`.

    Reads go straight to the :class:`MemoryLog` (its own lock makes each one
    consistent). Writes additionally take this log's write lock, so that
    :meth:`append_many` can check a whole batch against the newest entry and
    then append it with no other write in between; :meth:`write_lock` holds
    the same lock across a decision and its write. Readers may see a batch
    arrive entry by entry (each entry is its own change with its own rev);
    they never see a batch that later fails.

    Entry data is checked as :mod:`rstream.server.storage.sqlite` would store
    it (:func:`~rstream.server.storage.base.dump_json`), so both backends
    accept and refuse the same entries.
    """

    __slots__ = ("_compacted", "_compacted_rev", "_log", "_write_lock")

    def __init__(self) -> None:
        self._log = MemoryLog()
        self._write_lock = threading.RLock()  # re-entered by writes inside write_lock()
        self._compacted: int | None = None  # the edge of the last compaction
        self._compacted_rev: int | None = None  # the newest revision it deleted

    def __repr__(self) -> str:
        return f"<MemoryStreamLog entries={len(self._log)} revision={self._log.revision}>"

    # -- Log -----------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The revision of the newest change; 0 for an empty log."""
        return self._log.revision

    def snapshot_before(self, ts: TimeLike) -> Entry | None:
        return self._log.snapshot_before(ts)

    def entry_after(self, ts: TimeLike, kind: EntryKind | None = None) -> Entry | None:
        return self._log.entry_after(ts, kind)

    def range(self, start: TimeLike, end: TimeLike) -> list[Entry]:
        return self._log.range(start, end)

    def last(self) -> Entry | None:
        return self._log.last()

    def changes_since(self, rev: int) -> list[Entry]:
        return self._log.changes_since(rev)

    def append(self, entry: Entry) -> Entry:
        check_entry_time(entry.micros)
        dump_json(entry.data)
        with self._write_lock:
            return self._log.append(entry)

    def amend(self, entry: Entry) -> Entry:
        dump_json(entry.data)
        with self._write_lock:
            return self._log.amend(entry)

    # -- StreamLog -------------------------------------------------------------

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Keep every other writer of this log from writing until the block ends."""
        with self._write_lock:
            yield

    def first(self) -> Entry | None:
        return self._log.first()

    def latest_snapshot(self) -> Entry | None:
        return self._log.snapshot_before(from_micros(MAX_US))

    def snapshot_before_us(self, us: int) -> Entry | None:
        return self._log.snapshot_before(from_micros(clamp_us(us)))

    def snapshot_after_us(self, us: int) -> Entry | None:
        return self.entry_after_us(us, EntryKind.SNAPSHOT)

    def entry_after_us(self, us: int, kind: EntryKind | None = None) -> Entry | None:
        return self._log.entry_after(from_micros(clamp_us(us)), kind)

    def _range_us(self, start_us: int | None, end_us: int | None) -> list[Entry]:
        lo = MIN_US if start_us is None else clamp_us(start_us)
        hi = MAX_US if end_us is None else clamp_us(end_us)
        if lo >= hi:
            return []
        return self._log.range(from_micros(lo), from_micros(hi))

    def iter_range(
        self, start_us: int | None, end_us: int | None, limit: int | None = None
    ) -> Generator[Entry, None, None]:
        entries = self._range_us(start_us, end_us)  # a copy: later writes do not show
        yield from (entries if limit is None else islice(entries, max(limit, 0)))

    def iter_range_raw(
        self, start_us: int | None, end_us: int | None, limit: int | None = None
    ) -> Generator[Row, None, None]:
        # The text the SQL backends would have stored: made here, per entry.
        for entry in self.iter_range(start_us, end_us, limit):
            yield entry.micros, int(entry.kind), dump_json(entry.data), entry.rev or 0

    def count_range(self, start_us: int | None, end_us: int | None) -> int:
        return len(self._range_us(start_us, end_us))

    def compact(self, cutoff_us: int, batch: int = 1000) -> int:
        """Delete the windows that end at or before ``cutoff_us`` at once (memory
        has no writer to let in between); returns how many entries went."""
        with self._write_lock:
            keep = self.snapshot_before_us(cutoff_us)
            dropped = [] if keep is None else self._log.drop_before(keep.micros)
            if keep is not None and dropped:
                self._compacted = keep.micros
                self._compacted_rev = dropped[-1].rev
            return len(dropped)

    @property
    def compacted(self) -> tuple[int | None, int | None]:
        """``(edge, revision)``: entries before ``edge`` were deleted by
        :meth:`compact`, the newest of them at ``revision`` (None: none were)."""
        return self._compacted, self._compacted_rev

    def summary(self) -> tuple[int, Entry | None, Entry | None, Entry | None]:
        """``(revision, first, last, latest_snapshot)``, all of one moment."""
        with self._write_lock:  # no write in between, so the four agree
            return self._log.revision, self._log.first(), self._log.last(), self.latest_snapshot()

    def append_many(self, entries: Sequence[Entry]) -> list[Entry]:
        batch_items(entries)  # what cannot be stored raises before anything is written
        with self._write_lock:
            last = self._log.last()
            check_batch_order(None if last is None else last.micros, entries)
            # Checked under the write lock, so no append below can fail on order.
            return [self._log.append(entry) for entry in entries]

    def append_batch(self, entries: Sequence[Entry]) -> int:
        """:meth:`append_many` returning only the new revision."""
        stored = self.append_many(entries)
        return stored[-1].rev if stored and stored[-1].rev is not None else self.revision


class MemoryStorage:
    """A :class:`~rstream.server.storage.base.Storage` in memory (``memory://``).

    Thread-safe. Usable as a context manager; after :meth:`close` every method
    raises :class:`~rstream.ClientClosed`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, tuple[MemoryStreamLog, RateConfig]] = {}
        self._closed = False
        self._compacting = threading.Lock()
        self._store_id = new_store_id()  # a memory store lives as long as this object

    def __repr__(self) -> str:
        return f"<MemoryStorage streams={len(self._streams)}{' closed' if self._closed else ''}>"

    def __enter__(self) -> MemoryStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the storage is closed")

    @property
    def store_id(self) -> str:
        """This store's random id."""
        return self._store_id

    def list_streams(self) -> list[StreamInfo]:
        with self._lock:
            self._check_open()
            items = sorted(self._streams.items())
        return [_info(stream_id, log, rate) for stream_id, (log, rate) in items]

    def info(self, stream_id: str) -> StreamInfo | None:
        with self._lock:
            self._check_open()
            found = self._streams.get(stream_id)
        return None if found is None else _info(stream_id, *found)

    def create_stream(self, stream_id: str, rate: RateConfig | None = None) -> bool:
        with self._lock:
            self._check_open()
            found = self._streams.get(stream_id)
            if found is None:
                self._streams[stream_id] = (MemoryStreamLog(), rate or RateConfig())
                return True
            if rate is not None:
                self._streams[stream_id] = (found[0], rate)
            return False

    def log(self, stream_id: str) -> MemoryStreamLog:
        with self._lock:
            self._check_open()
            found = self._streams.get(stream_id)
        if found is None:
            raise StreamNotFound(f"no stream {stream_id!r}", stream_id=stream_id)
        return found[0]

    def compaction_lock(self) -> AbstractContextManager[bool]:
        """True for one holder of this process at a time (never waits)."""
        return try_hold(self._compacting)

    def reclaim_space(self) -> int:
        return 0  # deleted entries are garbage for Python to collect

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._streams.clear()


def _info(stream_id: str, log: MemoryStreamLog, rate: RateConfig) -> StreamInfo:
    revision, first, last, snap = log.summary()
    return StreamInfo(
        id=stream_id,
        rate=rate,
        first=None if first is None else first.micros,
        last=None if last is None else last.micros,
        latest_snapshot=None if snap is None else snap.micros,
        revision=revision,
        compacted=log.compacted[0],
        compacted_rev=log.compacted[1],
    )
