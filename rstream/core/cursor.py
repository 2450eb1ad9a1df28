"""Cursors: the state of a stream at a time, computed from the nearest snapshot.

A :class:`Cursor` sits on one entry of a :class:`~rstream.core.log.Log` and
holds the state there. Moving it costs the nearest snapshot plus the mutations
between it and the target time, never a replay from the start of the log:

- ``READ_FORWARD`` moves forward inside the current *window* (the entries from
  one snapshot up to the next) by applying only the mutations in between, and
  re-anchors at ``snapshot_before(t)`` for anything else;
- ``READ_BIDIRECTIONAL`` also keeps the inverse of every mutation it moved over
  in the window, so moving backward applies inverses instead of re-anchoring;
- ``WRITE`` sits at the newest state (what a writer builds its next mutation
  against): :meth:`Cursor.advance` catches up with entries appended since, and
  :meth:`Cursor.state_at` only answers for times at or after the newest entry.

Which move a request makes is decided in one place, the :data:`TRANSITIONS`
table; the cursor does no I/O beyond calling its log.

States share structure: applying a mutation copies only the path it changes, so
a state the cursor returned is never modified afterwards (keep it as long as you
like), but it shares unchanged subtrees with other states and with the log's
entries. Treat states as read-only, or copy them with
:func:`~rstream.core.mutation.copy_json` before changing them.

A cursor is not thread-safe: use one per thread (the log may be shared).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from rstream.core.entry import Entry, EntryKind
from rstream.core.log import Log
from rstream.core.mutation import apply_mutation, apply_mutation_with_inverse
from rstream.core.timestamps import TimeLike, format_rfc3339, from_micros, to_micros
from rstream.errors import OutOfRange, StorageError

__all__ = ["TRANSITIONS", "Cursor", "CursorKind", "Move", "Where", "plan"]

State = dict[str, Any]


class CursorKind(enum.Enum):
    """How a cursor may move."""

    READ_FORWARD = "read_forward"
    READ_BIDIRECTIONAL = "read_bidirectional"
    WRITE = "write"


class Where(enum.Enum):
    """Where a requested time lies relative to the cursor."""

    AHEAD = "ahead"  # same window, at or after the cursor's entry
    BEHIND = "behind"  # same window, before the cursor's entry
    ELSEWHERE = "elsewhere"  # another window, or the cursor is not placed yet


class Move(enum.Enum):
    """What a cursor does to answer a request."""

    STAY = "stay"  # already there (a WRITE cursor that has caught up)
    FORWARD = "forward"  # apply the mutations after the cursor, up to the time
    BACKWARD = "backward"  # apply kept inverses back to the time
    REANCHOR = "reanchor"  # start again from snapshot_before(time)
    REFUSE = "refuse"  # this kind of cursor cannot go there


TRANSITIONS: dict[tuple[CursorKind, Where], Move] = {
    (CursorKind.READ_FORWARD, Where.AHEAD): Move.FORWARD,
    (CursorKind.READ_FORWARD, Where.BEHIND): Move.REANCHOR,
    (CursorKind.READ_FORWARD, Where.ELSEWHERE): Move.REANCHOR,
    (CursorKind.READ_BIDIRECTIONAL, Where.AHEAD): Move.FORWARD,
    (CursorKind.READ_BIDIRECTIONAL, Where.BEHIND): Move.BACKWARD,
    (CursorKind.READ_BIDIRECTIONAL, Where.ELSEWHERE): Move.REANCHOR,
    # A WRITE cursor catches up with the log before deciding, so AHEAD means
    # "at or after the newest entry"; it never looks back.
    (CursorKind.WRITE, Where.AHEAD): Move.STAY,
    (CursorKind.WRITE, Where.BEHIND): Move.REFUSE,
    (CursorKind.WRITE, Where.ELSEWHERE): Move.REFUSE,
}
"""The allowed moves: ``(kind, where the time lies) -> move``."""


def plan(kind: CursorKind, where: Where) -> Move:
    """The move a cursor of ``kind`` makes to reach a time that lies ``where``."""
    return TRANSITIONS[kind, where]


class Cursor:
    """A position in a log and the state there.

    ``Cursor(log, kind=CursorKind.READ_FORWARD)``. A read cursor is placed by
    its first :meth:`state_at`; a ``WRITE`` cursor places itself at the newest
    entry when made (if the log has one) and on every :meth:`advance`.

    Before it is placed, :attr:`state`, :attr:`timestamp` and :attr:`micros`
    are ``None``.
    """

    __slots__ = (
        "_anchor",
        "_base",
        "_fetch",
        "_find_snapshot",
        "_inverses",
        "_is_mutation",
        "_micros",
        "_rev",
        "_settled",
        "_state",
        "kind",
        "log",
    )

    def __init__(self, log: Log, kind: CursorKind = CursorKind.READ_FORWARD) -> None:
        if not isinstance(kind, CursorKind):
            raise TypeError(f"kind must be a CursorKind, not {kind!r}")
        self.log = log
        self.kind = kind
        # Logs that take epoch microseconds (MemoryLog) save two conversions a move.
        self._find_snapshot: Callable[[int], Entry | None] = getattr(
            log, "snapshot_before_micros", None
        ) or (lambda micros: log.snapshot_before(from_micros(micros)))
        self._fetch: Callable[[int, int], Sequence[Entry]] = getattr(log, "range_micros", None) or (
            lambda start, end: log.range(from_micros(start), from_micros(end))
        )
        self._unplace()
        if kind is CursorKind.WRITE:
            self.advance()

    def _unplace(self) -> None:
        self._state: State | None = None
        self._micros: int | None = None  # timestamp of the entry the state comes from
        self._rev = -1  # that entry's rev
        self._anchor = -1  # timestamp of the window's snapshot
        self._is_mutation = False  # whether that entry is a mutation
        self._settled = False  # whether that entry can no longer be amended
        self._base: State | None = None  # WRITE: the state before that mutation
        # READ_BIDIRECTIONAL: (timestamp, rev, is_mutation, inverse) per entry moved
        # over in the window: applying `inverse` returns to the entry before.
        self._inverses: list[tuple[int, int, bool, Any]] = []

    def __repr__(self) -> str:
        where = "unplaced" if self._micros is None else format_rfc3339(self._micros)
        return f"<Cursor {self.kind.name} at {where}>"

    # -- where the cursor is --------------------------------------------------------

    @property
    def state(self) -> State | None:
        """The state at the cursor (read-only, see the module notes); None before placed."""
        return self._state

    @property
    def micros(self) -> int | None:
        """The timestamp, in epoch microseconds, of the entry the state comes from."""
        return self._micros

    @property
    def timestamp(self) -> datetime | None:
        """The timestamp of the entry the state comes from, as an aware UTC datetime."""
        return None if self._micros is None else from_micros(self._micros)

    @property
    def rev(self) -> int | None:
        """The ``rev`` of the entry the state comes from."""
        return None if self._micros is None else self._rev

    @property
    def snapshot_micros(self) -> int | None:
        """The timestamp of the snapshot the cursor's window starts with."""
        return None if self._micros is None else self._anchor

    @property
    def at_mutation(self) -> bool:
        """Whether the cursor's entry is a mutation (False at a snapshot or unplaced)."""
        return self._micros is not None and self._is_mutation

    @property
    def base(self) -> State | None:
        """WRITE cursors at a mutation: the state that mutation applied to.

        This is what an amend of that mutation must be built against; None at
        a snapshot, unplaced, or for read cursors.
        """
        return self._base if self.at_mutation else None

    # -- moving ---------------------------------------------------------------------

    def state_at(self, t: TimeLike) -> State:
        """Move to the newest entry at or before ``t`` and return the state there.

        Raises :class:`~rstream.OutOfRange` when the log has no snapshot at or
        before ``t``, and, for a ``WRITE`` cursor, when ``t`` is before the
        newest entry (a WRITE cursor only knows the newest state).
        """
        micros = to_micros(t)
        if self.kind is CursorKind.WRITE:
            self.advance()
            anchor, revision = None, -1
            where = self._where_written(micros)
        else:
            revision = self.log.revision
            self._check_amended(revision)
            anchor = self._snapshot_for(micros)
            where = self._where_read(micros, anchor)
        placed_at = self._micros
        move = plan(self.kind, where)
        if move is Move.REFUSE:
            raise OutOfRange(
                f"a WRITE cursor only knows the newest state (at {self.timestamp}); "
                f"use a read cursor for {format_rfc3339(micros)}",
                when=from_micros(micros),
            )
        if move is Move.FORWARD:
            self._forward(micros)
        elif move is Move.BACKWARD:
            self._backward(micros)
        elif move is Move.REANCHOR:
            assert anchor is not None
            self._reanchor(anchor, micros)
        if self.kind is not CursorKind.WRITE:
            self._settle(placed_at, revision)
        assert self._state is not None
        return self._state

    def advance(self) -> State | None:
        """Move to the newest entry and return its state (None when the log is empty).

        A ``WRITE`` cursor catches up from :meth:`Log.changes_since` its own
        entry's revision; comparing revisions first makes this cheap when
        nothing changed. A read cursor moves with :meth:`state_at`.
        """
        log = self.log
        if self.kind is not CursorKind.WRITE:
            last = log.last()
            return None if last is None else self.state_at(from_micros(last.micros))
        if self._micros is None:
            self._recover()
        if (
            self._micros is not None
            and log.revision != self._rev
            and not self._catch_up(log.changes_since(self._rev))
        ):
            self._recover()
        return self._state

    def wrote(self, entry: Entry, state: State) -> None:
        """WRITE cursors: record an entry the owner just wrote, and the state it leads to.

        ``entry`` is what :meth:`Log.append` or :meth:`Log.amend` returned (with
        its rev) and ``state`` the state after it, which the owner computed. If
        the rev shows that someone else wrote in between, the cursor catches
        up from the log instead of trusting ``state``.
        """
        if self.kind is not CursorKind.WRITE:
            raise TypeError("wrote() is for WRITE cursors")
        rev = entry.rev
        if self._micros is None or rev != self._rev + 1:
            self.advance()
            return
        if entry.micros == self._micros and self._is_mutation and not entry.is_snapshot:
            pass  # an amend of our entry: same base
        elif entry.micros > self._micros:
            self._base = self._state if not entry.is_snapshot else None
            if entry.is_snapshot:
                self._anchor = entry.micros
        else:
            self.advance()
            return
        self._state = state
        self._micros = entry.micros
        self._rev = rev
        self._is_mutation = not entry.is_snapshot

    # -- the moves --------------------------------------------------------------------

    def _where_written(self, micros: int) -> Where:
        """Where ``micros`` lies for a WRITE cursor that has caught up with the log."""
        if self._micros is None:
            raise OutOfRange(
                f"no state at {format_rfc3339(micros)}: the log is empty",
                when=from_micros(micros),
            )
        return Where.AHEAD if micros >= self._micros else Where.BEHIND

    def _snapshot_for(self, micros: int) -> Entry:
        """The snapshot a read cursor starts from to reach ``micros``."""
        anchor = self._find_snapshot(micros)
        if anchor is None:
            raise OutOfRange(
                f"no snapshot at or before {format_rfc3339(micros)}: the stream has no state then",
                when=from_micros(micros),
            )
        return anchor

    def _where_read(self, micros: int, anchor: Entry) -> Where:
        """Where ``micros``, whose window starts at ``anchor``, lies for a read cursor."""
        if self._micros is None or anchor.micros != self._anchor:
            return Where.ELSEWHERE
        return Where.AHEAD if micros >= self._micros else Where.BEHIND

    def _settle(self, placed_at: int | None, revision: int) -> None:
        """After a read cursor moved from ``placed_at``: note whether its entry can
        still be amended, given the log's ``revision`` before the move."""
        if self._micros != placed_at or not self._settled:
            # Only the newest entry can be amended, and the newest entry's rev
            # is the log's revision: an older rev means an entry followed ours.
            self._settled = self._rev < revision

    def _check_amended(self, revision: int) -> None:
        """Unplace the cursor if its entry was amended since it was read."""
        micros = self._micros
        if micros is None or self._settled or revision == self._rev:
            return
        here = self._fetch(micros, micros + 1)
        if not here or here[0].rev != self._rev:
            self._unplace()  # amended (_settle marks an unchanged entry settled)

    def _reanchor(self, anchor: Entry, micros: int) -> None:
        self._unplace()
        self._state = anchor.data  # never modified: applying copies the changed paths
        self._micros = self._anchor = anchor.micros
        self._rev = _rev_of(anchor)
        self._forward(micros)

    def _forward(self, micros: int) -> None:
        """Apply the entries after the cursor up to ``micros`` (committed at the end)."""
        start = self._micros
        assert start is not None
        if micros == start:
            return
        entries = self._fetch(start + 1, micros + 1)
        if not entries:
            return
        state = self._state
        assert state is not None
        anchor, at, rev, is_mutation = self._anchor, start, self._rev, self._is_mutation
        keep = self.kind is CursorKind.READ_BIDIRECTIONAL
        added: list[tuple[int, int, bool, Any]] = []
        restarted = False
        for entry in entries:
            if entry.kind is EntryKind.SNAPSHOT:  # appended since snapshot_before()
                state, anchor, added, restarted = entry.data, entry.micros, [], True
            elif keep:
                state, inverse = apply_mutation_with_inverse(state, entry.data)
                added.append((at, rev, is_mutation, inverse))
            else:
                state = apply_mutation(state, entry.data)
            at, rev = entry.micros, _rev_of(entry)
            is_mutation = entry.kind is EntryKind.MUTATION
        if restarted:
            self._inverses = added
        else:
            self._inverses.extend(added)
        self._state, self._anchor, self._micros, self._rev = state, anchor, at, rev
        self._is_mutation = is_mutation

    def _backward(self, micros: int) -> None:
        """Apply kept inverses until the cursor's entry is at or before ``micros``."""
        state = self._state
        at = self._micros
        assert state is not None
        assert at is not None
        inverses = self._inverses
        rev, is_mutation = self._rev, self._is_mutation
        n = len(inverses)
        while at > micros and n:
            n -= 1
            at, rev, is_mutation, inverse = inverses[n]
            state = apply_mutation(state, inverse)
        del inverses[n:]
        self._state, self._micros, self._rev, self._is_mutation = state, at, rev, is_mutation

    # -- WRITE cursors ------------------------------------------------------------

    def _recover(self) -> None:
        """Place a WRITE cursor at the newest entry: its snapshot, then the mutations."""
        self._unplace()
        log = self.log
        last = log.last()
        if last is None:
            return
        anchor = self._find_snapshot(last.micros)
        if anchor is None:
            raise OutOfRange(
                f"the log has no snapshot at or before its newest entry "
                f"({format_rfc3339(last.micros)}): no state to write against",
                when=last.timestamp,
            )
        self._state = anchor.data
        self._micros = self._anchor = anchor.micros
        self._rev = _rev_of(anchor)
        # The entries after the snapshot, in time order, always fit.
        self._catch_up(self._fetch(anchor.micros + 1, last.micros + 1))

    def _catch_up(self, changes: list[Entry] | Any) -> bool:
        """Apply ``changes`` (in revision order) to a placed WRITE cursor.

        An amend of the cursor's own mutation is applied to its base. Returns
        False when the changes do not fit, which only happens when the log's past
        changed (an entry before the cursor's, or a snapshot in place of its
        mutation): the caller then recovers from the log.
        """
        state, base = self._state, self._base
        at, rev, anchor, is_mutation = self._micros, self._rev, self._anchor, self._is_mutation
        assert state is not None
        assert at is not None
        # Start from the newest snapshot among the changes, if any.
        start = 0
        for i in range(len(changes) - 1, -1, -1):
            if changes[i].kind is EntryKind.SNAPSHOT and changes[i].micros > at:
                start = i
                break
        for entry in changes[start:]:
            if entry.micros > at:
                if entry.is_snapshot:
                    state, base, anchor = entry.data, None, entry.micros
                else:
                    base, state = state, apply_mutation(state, entry.data)
            elif entry.micros == at and is_mutation and base is not None and not entry.is_snapshot:
                state = apply_mutation(base, entry.data)  # our mutation was amended
            else:
                return False  # the log changed its past (restored from another copy)
            at, rev, is_mutation = entry.micros, _rev_of(entry), not entry.is_snapshot
        self._state, self._base, self._micros, self._rev = state, base, at, rev
        self._anchor, self._is_mutation = anchor, is_mutation
        return True


def _rev_of(entry: Entry) -> int:
    """The ``rev`` of an entry the log returned; raises StorageError if it has none."""
    rev = entry.rev
    if rev is None:
        raise StorageError(
            f"the log returned the entry at {format_rfc3339(entry.micros)} without its rev; "
            "a Log must return entries with the revision it wrote them at"
        )
    return rev
