"""The ordered log of a state stream: the storage interface every backend shares."""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import copy_json
from rstream.core.timestamps import TimeLike, format_rfc3339, to_micros
from rstream.errors import OutOfOrder

__all__ = ["Log", "MemoryLog"]


@runtime_checkable
class Log(Protocol):
    """A time-ordered log of entries with a revision counter.

    Times are public-API times (aware datetime or epoch seconds). Every change
    (append or amend) increments :attr:`revision` by one, and the entry written
    carries that revision in ``entry.rev``. Implementations: :class:`MemoryLog`
    here, SQLite and PostgreSQL in :mod:`rstream.server.storage`.

    Since every change writes the newest entry (an amend only ever replaces the
    last one), ``rev`` increases along the log and :attr:`revision` is the
    ``rev`` of :meth:`last`. Entries a log returns are to be treated as
    read-only: backends may share their data with the log's own.
    """

    @property
    def revision(self) -> int:
        """The revision of the newest change; 0 for an empty log."""
        ...

    def snapshot_before(self, ts: TimeLike) -> Entry | None:
        """The last snapshot at or before ``ts``."""
        ...

    def entry_after(self, ts: TimeLike, kind: EntryKind | None = None) -> Entry | None:
        """The first entry strictly after ``ts`` (of ``kind``, when given)."""
        ...

    def range(self, start: TimeLike, end: TimeLike) -> Sequence[Entry]:
        """The entries with ``start <= timestamp < end``, in order."""
        ...

    def append(self, entry: Entry) -> Entry:
        """Add an entry strictly after the last; returns it with its revision.

        Raises :class:`~rstream.OutOfOrder` (and changes nothing) otherwise.
        """
        ...

    def amend(self, entry: Entry) -> Entry:
        """Replace the last entry, a mutation, by ``entry`` (same timestamp).

        ``entry`` must be a mutation at the last entry's timestamp. Raises
        :class:`~rstream.OutOfOrder` (and changes nothing) when the log is
        empty, the last entry is a snapshot, ``entry`` is a snapshot, or the
        timestamps differ.
        """
        ...

    def last(self) -> Entry | None:
        """The newest entry."""
        ...

    def changes_since(self, rev: int) -> Sequence[Entry]:
        """Entries written or amended after revision ``rev``, in revision order."""
        ...


class MemoryLog:
    """A :class:`Log` in memory: time-ordered, thread-safe, O(log n) lookups.

    ``MemoryLog(entries=())`` appends ``entries`` in order. Every public method
    takes the one internal lock, so a log can be shared by threads; iteration
    walks a copy of the entry list taken under the lock.

    Ownership: :meth:`append` and :meth:`amend` store a deep copy of
    ``entry.data`` (:func:`~rstream.core.mutation.copy_json`), so a caller can
    keep changing its dict without touching the log. Entries handed *out* (by
    :meth:`last`, :meth:`range`, ...) share the log's data and must be treated
    as read-only; copy ``entry.data`` with ``copy_json`` before changing it.

    ``snapshot_before_micros`` and ``range_micros`` take epoch microseconds and
    save cursors two conversions per move; the public-time methods call them.

    Errors: :meth:`append` of an entry not strictly after the last raises
    :class:`~rstream.OutOfOrder`; so does :meth:`amend` of an empty log, of a
    last entry that is a snapshot, by a snapshot, or at another timestamp. Both
    change nothing when they raise.
    """

    __slots__ = (
        "_entries",
        "_lock",
        "_micros",
        "_mut_micros",
        "_revision",
        "_revs",
        "_snap_micros",
        "_snaps",
    )

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._micros: list[int] = []  # entry i's timestamp
        self._revs: list[int] = []  # entry i's rev; increasing, as only the last is amended
        self._snaps: list[int] = []  # positions of the snapshots
        self._snap_micros: list[int] = []  # their timestamps
        self._mut_micros: list[int] = []  # timestamps of the mutations
        self._revision = 0
        for entry in entries:
            self.append(entry)

    # -- reading ----------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The revision of the newest change (the newest entry's ``rev``); 0 when empty."""
        return self._revision

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        with self._lock:
            entries = list(self._entries)
        return iter(entries)

    def __repr__(self) -> str:
        return f"<MemoryLog entries={len(self._entries)} revision={self._revision}>"

    def first(self) -> Entry | None:
        """The oldest entry."""
        with self._lock:
            return self._entries[0] if self._entries else None

    def last(self) -> Entry | None:
        """The newest entry."""
        with self._lock:
            return self._entries[-1] if self._entries else None

    def snapshot_before(self, ts: TimeLike) -> Entry | None:
        """The last snapshot at or before ``ts``."""
        return self.snapshot_before_micros(to_micros(ts))

    def snapshot_before_micros(self, micros: int) -> Entry | None:
        """:meth:`snapshot_before` with the time in epoch microseconds (for cursors)."""
        with self._lock:
            i = bisect_right(self._snap_micros, micros)
            return self._entries[self._snaps[i - 1]] if i else None

    def snapshot_after(self, ts: TimeLike) -> Entry | None:
        """The first snapshot strictly after ``ts``."""
        return self.entry_after(ts, EntryKind.SNAPSHOT)

    def entry_after(self, ts: TimeLike, kind: EntryKind | None = None) -> Entry | None:
        """The first entry strictly after ``ts`` (of ``kind``, when given)."""
        micros = to_micros(ts)
        with self._lock:
            if kind is None:
                i = bisect_right(self._micros, micros)
                return self._entries[i] if i < len(self._entries) else None
            if kind is EntryKind.SNAPSHOT:
                i = bisect_right(self._snap_micros, micros)
                return self._entries[self._snaps[i]] if i < len(self._snaps) else None
            i = bisect_right(self._mut_micros, micros)
            if i == len(self._mut_micros):
                return None
            return self._entries[bisect_left(self._micros, self._mut_micros[i])]

    def range(self, start: TimeLike, end: TimeLike) -> list[Entry]:
        """The entries with ``start <= timestamp < end``, in order."""
        return self.range_micros(to_micros(start), to_micros(end))

    def range_micros(self, start: int, end: int) -> list[Entry]:
        """:meth:`range` with the times in epoch microseconds (for cursors)."""
        with self._lock:
            micros = self._micros
            return self._entries[bisect_left(micros, start) : bisect_left(micros, end)]

    def changes_since(self, rev: int) -> list[Entry]:
        """Entries written or amended after revision ``rev``, in revision order."""
        with self._lock:
            return self._entries[bisect_right(self._revs, rev) :]

    # -- writing ----------------------------------------------------------------

    def append(self, entry: Entry) -> Entry:
        """Add a copy of ``entry`` strictly after the last; returns it with its revision.

        Raises :class:`~rstream.OutOfOrder` (and changes nothing) otherwise.
        """
        data = copy_json(entry.data)
        micros = entry.micros
        with self._lock:
            if self._micros and micros <= self._micros[-1]:
                last = self._entries[-1]
                raise OutOfOrder(
                    f"entry at {format_rfc3339(micros)} is not after the last entry "
                    f"({format_rfc3339(last.micros)})",
                    last=last.timestamp,
                    given=entry.timestamp,
                )
            rev = self._revision + 1
            stored = Entry.from_micros(micros, entry.kind, data, rev)
            if stored.kind is EntryKind.SNAPSHOT:
                self._snaps.append(len(self._entries))
                self._snap_micros.append(micros)
            else:
                self._mut_micros.append(micros)
            self._entries.append(stored)
            self._micros.append(micros)
            self._revs.append(rev)
            self._revision = rev
            return stored

    def drop_before(self, micros: int) -> list[Entry]:
        """Forget every entry before ``micros`` (epoch micros); returns them.

        For retention: the revision does not change, and neither do the
        entries kept or their revs.
        """
        with self._lock:
            n = bisect_left(self._micros, micros)
            dropped = self._entries[:n]
            if not n:
                return dropped
            kept = bisect_left(self._snaps, n)
            self._snaps = [i - n for i in self._snaps[kept:]]
            del self._snap_micros[:kept]
            del self._mut_micros[: bisect_left(self._mut_micros, micros)]
            del self._entries[:n]
            del self._micros[:n]
            del self._revs[:n]
            return dropped

    def amend(self, entry: Entry) -> Entry:
        """Replace the last entry, a mutation, by a copy of ``entry``, a mutation at
        the same timestamp; returns it with its new revision.

        Raises :class:`~rstream.OutOfOrder` (and changes nothing) otherwise.
        """
        data = copy_json(entry.data)
        with self._lock:
            problem = _amend_problem(self._entries[-1] if self._entries else None, entry)
            if problem is not None:
                last = self._entries[-1] if self._entries else None
                raise OutOfOrder(
                    problem,
                    last=None if last is None else last.timestamp,
                    given=entry.timestamp,
                )
            rev = self._revision + 1
            stored = Entry.from_micros(entry.micros, EntryKind.MUTATION, data, rev)
            self._entries[-1] = stored
            self._revs[-1] = rev
            self._revision = rev
            return stored


def _amend_problem(last: Entry | None, entry: Entry) -> str | None:
    """Why ``entry`` cannot amend ``last``, or None when it can."""
    if last is None:
        return "cannot amend an empty log"
    if last.kind is not EntryKind.MUTATION:
        return "cannot amend the last entry: it is a snapshot (only a mutation can be amended)"
    if entry.kind is not EntryKind.MUTATION:
        return "cannot amend with a snapshot: an amend replaces a mutation by a mutation"
    if entry.micros != last.micros:
        return (
            f"cannot amend the last entry ({format_rfc3339(last.micros)}) with an entry "
            f"at another time ({format_rfc3339(entry.micros)})"
        )
    return None
