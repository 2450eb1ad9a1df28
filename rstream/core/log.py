"""The ordered log of a state stream: the storage interface every backend shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from rstream.core.entry import Entry, EntryKind
from rstream.core.timestamps import TimeLike

__all__ = ["Log"]


@runtime_checkable
class Log(Protocol):
    """A time-ordered log of entries with a revision counter.

    Times are public-API times (aware datetime or epoch seconds). Every change
    (append or amend) increments :attr:`revision` by one, and the entry written
    carries that revision in ``entry.rev``. Implementations: :class:`MemoryLog`
    here, SQLite and PostgreSQL in :mod:`rstream.server.storage`.
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
        """Replace the last entry, a mutation, by ``entry`` (same timestamp)."""
        ...

    def last(self) -> Entry | None:
        """The newest entry."""
        ...

    def changes_since(self, rev: int) -> Sequence[Entry]:
        """Entries written or amended after revision ``rev``, in revision order."""
        ...
