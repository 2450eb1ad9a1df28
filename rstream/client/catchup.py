"""Catching up from the server: the changes after a subscriber's last one, from entries.

A subscriber under ``overflow="block"`` that falls further behind than the
client keeps in memory (see :mod:`rstream.client.changelog`) reads what it
missed from the server's entries range API instead. :func:`changes_after`
turns those entries back into the changes the live tail would have delivered:
pure, no I/O (the caller passes the entries, fetched from ``last.micros`` on).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from rstream.client.livestate import Change
from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import apply_mutation
from rstream.core.timestamps import format_rfc3339
from rstream.errors import MutationError, ProtocolError

__all__ = ["changes_after"]


def changes_after(last: Change, entries: Iterable[Entry]) -> Iterator[Change]:
    """The changes after ``last`` (the last change a subscriber was given), in order.

    ``entries`` are the server's entries from ``last.micros`` on (its first, at
    ``last.micros``, is the entry ``last`` came from). That entry is skipped
    unless it was amended since (a higher ``rev``): then its new state is
    given, a replacement with the same timestamp, as live. Every later entry
    gives one change, with the revision the server holds for it. Raises
    :class:`~rstream.ProtocolError` for entries without a revision, out of
    order, or a mutation that does not apply.
    """
    state = last.state
    previous = last.micros
    for entry in entries:
        rev = entry.rev
        if rev is None:
            raise ProtocolError(f"entry at {format_rfc3339(entry.micros)} has no revision")
        if entry.micros < previous or (entry.micros == previous and entry.micros != last.micros):
            raise ProtocolError(
                f"entry at {format_rfc3339(entry.micros)} is out of order while catching up"
            )
        if entry.micros == last.micros:
            if rev <= last.rev:
                continue  # the entry last came from, unchanged: given already
            base = last.base
        else:
            base = state
        if entry.kind is EntryKind.SNAPSHOT:
            base, state = None, entry.data
        else:
            if base is None:
                raise ProtocolError(
                    f"mutation at {format_rfc3339(entry.micros)} replaces a snapshot"
                )
            try:
                state = apply_mutation(base, entry.data)
            except (MutationError, ValueError, TypeError, KeyError) as exc:
                raise ProtocolError(
                    f"mutation at {format_rfc3339(entry.micros)} (rev {rev}) does not apply "
                    f"while catching up: {exc}"
                ) from None
        previous = entry.micros
        yield Change(entry.micros, state, rev, base)
