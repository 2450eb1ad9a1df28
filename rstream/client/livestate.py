"""The live tail's state machine: SSE events in, exact states out. No I/O.

:class:`LiveState` keeps the live window (its snapshot and every entry since)
and the current state. :meth:`LiveState.feed` takes one complete SSE event
(``entry``, ``amend`` or ``reset``, per ``docs/protocol.rst``) and returns a
:class:`Step`: the state change to deliver (if any), the window that a new
snapshot completed (for the window store), and a :class:`~rstream.Gap` when a
reset re-anchored the tail. :attr:`LiveState.resume_rev` is what the next
connection sends as ``Last-Event-ID``.

Rules (from the protocol):

* An entry whose ``rev`` is not above the last applied one, or whose
  timestamp is older than the newest entry, is a duplicate: skipped, never
  delivered twice.
* An entry whose timestamp equals the newest entry's replaces it (an amend).
* ``reset`` discards the live state; until the new window's snapshot arrives
  there is no resume point (``resume_rev`` is None).
* Anything malformed raises :class:`~rstream.ProtocolError` and changes
  nothing, so the caller can reconnect from the last applied revision.

States are shared, read-only values: :func:`~rstream.core.mutation.apply_mutation`
copies only the changed paths, so a state shares subtrees with the one before
it and with the window's snapshot. Consumers copy before changing them.

The window holds each entry after its snapshot as the text of its event, and
decodes it again when the window is read (:meth:`LiveState.window`, and the
``committed`` window of a :class:`Step`): a string is never visited by the
garbage collector, where thousands of decoded mutations of a large state
would be visited at every full collection, on the reader thread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeAlias

from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import apply_mutation
from rstream.core.timestamps import format_rfc3339, from_micros
from rstream.core.wire import decode_event
from rstream.errors import EntryFormatError, Gap, MutationError, ProtocolError

__all__ = ["Change", "Held", "LiveState", "Step", "decode_window"]

Held: TypeAlias = "Entry | str"
"""An entry of the live window as held: its event's text, or the entry itself."""


class Change(NamedTuple):
    """A state to deliver: the state at ``micros`` as of revision ``rev`` (read-only).

    ``base`` is the state before the entry (None for a snapshot): what an amend of
    this entry applies to, so a subscriber that catches up from the server can
    rebuild the entry's state if it was amended meanwhile.
    """

    micros: int
    state: dict[str, Any]
    rev: int
    base: dict[str, Any] | None = None

    @property
    def timestamp(self) -> datetime:
        return from_micros(self.micros)


class Step(NamedTuple):
    """What one event did.

    ``change``: the new state to deliver, or None (duplicate, reset, unknown
    event). ``committed``: the previous live window, complete (snapshot first),
    when this event started a new one. ``gap``: set when the tail re-anchored
    after a ``reset``.
    """

    change: Change | None = None
    committed: tuple[Entry, ...] | None = None
    gap: Gap | None = None
    applied: bool = False  # the event changed the live state (an entry, amend or reset)


_NOTHING = Step()
_WHERE = {"entry": "entry event", "amend": "amend event"}  # decode_event's where=

# Exceptions that garbage can raise below us; all become ProtocolError.
_BAD_INPUT = (ValueError, TypeError, KeyError, RecursionError, EntryFormatError, MutationError)


class LiveState:
    """The live window and current state of a followed stream, fed event by event."""

    __slots__ = (
        "_held",
        "_last",
        "_max_window",
        "_prev_state",
        "_reset_from",
        "_rev",
        "_state",
        "_whole",
    )

    def __init__(self, max_window: int | None = None) -> None:
        # The live window, snapshot first (see the module: held as text but for the
        # snapshot); past max_window entries only the newest is kept (_whole is
        # then False): memory stays bounded however long the window.
        self._held: list[Held] = []
        self._last: Entry | None = None  # the newest entry of the window, decoded
        self._max_window = max_window if max_window is not None else 2**62
        self._whole = True
        self._state: dict[str, Any] | None = None  # after the newest entry
        self._prev_state: dict[str, Any] | None = None  # before it, when it is a mutation
        self._rev: int | None = None  # rev of the last entry applied
        self._reset_from: int | None = None  # the rev we had when a reset came

    # -- reading -------------------------------------------------------------------

    @property
    def anchored(self) -> bool:
        """Whether the live window's snapshot has arrived (there is a current state)."""
        return self._state is not None

    @property
    def resume_rev(self) -> int | None:
        """The ``Last-Event-ID`` for the next connection; None: start afresh."""
        return self._rev if self._state is not None else None

    @property
    def current(self) -> Change | None:
        """The newest state, or None before the tail is anchored."""
        if self._state is None or self._rev is None or self._last is None:
            return None
        return Change(self._last.micros, self._state, self._rev, self._prev_state)

    def window(self) -> list[Entry] | None:
        """The live window's entries so far (snapshot first), or None when not anchored
        or when the window grew past ``max_window`` entries (they are not kept)."""
        held = self.held_window()
        return None if held is None else decode_window(held)

    def held_window(self) -> list[Held] | None:
        """:meth:`window` as held, its newest entry decoded (cheap: no decoding);
        :func:`decode_window` gives the entries."""
        if self._state is None or not self._whole or self._last is None:
            return None
        return [*self._held[:-1], self._last]

    def __repr__(self) -> str:
        return f"<LiveState entries={len(self._held)} rev={self._rev}>"

    # -- feeding -------------------------------------------------------------------

    def feed(self, event: str, data: str, event_id: str | None = None) -> Step:
        """Apply one complete SSE event; raises :class:`~rstream.ProtocolError` on garbage."""
        if event == "entry":
            return self._entry(*self._parse_entry(event, data, event_id), amend=False)
        if event == "amend":
            return self._entry(*self._parse_entry(event, data, event_id), amend=True)
        if event == "reset":
            return self._reset(data)
        return _NOTHING  # unknown events are for newer clients

    def feed_all(self, events: Sequence[tuple[str, str, str | None]]) -> list[Step]:
        """Feed several events (for tests and replays)."""
        return [self.feed(*event) for event in events]

    def _parse_entry(self, event: str, data: str, event_id: str | None) -> tuple[Entry, Held]:
        """The entry of an ``entry`` or ``amend`` event, with its revision, and how the
        window holds it: its text, or the entry when the revision is the event's id."""
        try:
            entry = decode_event(data, where=_WHERE[event])
        except _BAD_INPUT as exc:
            raise ProtocolError(f"malformed {event!r} event: {_short(exc)}") from None
        if entry.rev is None:
            rev = _parse_id(event_id)
            if rev is None:
                raise ProtocolError(f"{event!r} event without a revision (no 'rev' and no id)")
            entry = entry.replace(rev=rev)
            return entry, entry
        return entry, data

    def _entry(self, entry: Entry, held: Held, *, amend: bool) -> Step:
        rev = entry.rev
        assert rev is not None
        last = self._last
        if self._state is None or last is None:
            if amend or entry.kind is not EntryKind.SNAPSHOT:
                raise ProtocolError(
                    f"{'amend' if amend else 'mutation'} at {format_rfc3339(entry.micros)} "
                    f"(rev {rev}) arrived before the live window's snapshot"
                )
            return self._anchor(entry)
        assert self._rev is not None
        if rev <= self._rev or entry.micros < last.micros:
            return _NOTHING  # seen already (a resume overlapping what we have)
        if entry.micros == last.micros:
            return self._replace_last(entry, held, last)
        if amend:
            raise ProtocolError(
                f"amend at {format_rfc3339(entry.micros)} does not match the newest "
                f"entry ({format_rfc3339(last.micros)})"
            )
        if entry.kind is EntryKind.SNAPSHOT:
            committed = tuple(self.window() or ()) if self._whole else None
            self._whole = True
            self._held = [entry]
            self._last = entry
            self._prev_state = None
            self._state = entry.data
            self._rev = rev
            return Step(Change(entry.micros, entry.data, rev), committed, applied=True)
        base = self._state
        state = self._apply(base, entry)
        held_entries = self._held
        held_entries.append(held)
        self._last = entry
        if len(held_entries) > self._max_window:
            self._shed()
        self._prev_state = base
        self._state = state
        self._rev = rev
        return Step(Change(entry.micros, state, rev, base), applied=True)

    def _replace_last(self, entry: Entry, held: Held, last: Entry) -> Step:
        rev = entry.rev
        assert rev is not None
        if entry.kind is EntryKind.SNAPSHOT:
            if last.kind is not EntryKind.SNAPSHOT:
                raise ProtocolError(
                    f"snapshot at {format_rfc3339(entry.micros)} replaces a mutation"
                )
            state = entry.data
            held = entry  # a snapshot is held decoded: its data is the state
        else:
            if last.kind is EntryKind.SNAPSHOT:
                raise ProtocolError(
                    f"mutation at {format_rfc3339(entry.micros)} replaces a snapshot"
                )
            assert self._prev_state is not None
            state = self._apply(self._prev_state, entry)
        self._held[-1] = held
        self._last = entry
        self._state = state
        self._rev = rev
        return Step(Change(entry.micros, state, rev, self._prev_state), applied=True)

    def _anchor(self, snapshot: Entry) -> Step:
        rev = snapshot.rev
        assert rev is not None
        self._held = [snapshot]
        self._last = snapshot
        self._whole = True
        self._state = snapshot.data
        self._prev_state = None
        self._rev = rev
        gap = None
        if self._reset_from is not None:
            gap = Gap(
                f"the live tail could not resume after revision {self._reset_from} and "
                f"re-anchored on the live window at revision {rev}; changes in between "
                "were not seen live (fetch them with history() if you need them)",
                after_rev=self._reset_from,
                resumed_rev=rev,
            )
            self._reset_from = None
        return Step(Change(snapshot.micros, snapshot.data, rev), gap=gap, applied=True)

    def _reset(self, data: str) -> Step:
        try:
            body = json.loads(data) if data else {}
        except _BAD_INPUT as exc:
            raise ProtocolError(f"malformed 'reset' event: {_short(exc)}") from None
        if not isinstance(body, dict):
            raise ProtocolError("malformed 'reset' event: expected a JSON object")
        if self._rev is not None and self._reset_from is None:
            self._reset_from = self._rev
        self._held = []
        self._last = None
        self._state = None
        self._prev_state = None
        self._rev = None
        return Step(applied=True)

    def _shed(self) -> None:
        """The window outgrew ``max_window``: keep only its newest entry."""
        self._held = self._held[-1:]
        self._whole = False

    @staticmethod
    def _apply(state: dict[str, Any], entry: Entry) -> dict[str, Any]:
        try:
            return apply_mutation(state, entry.data)
        except _BAD_INPUT as exc:
            raise LiveState._not_applicable(entry, exc) from None

    @staticmethod
    def _not_applicable(entry: Entry, exc: BaseException) -> ProtocolError:
        return ProtocolError(
            f"mutation at {format_rfc3339(entry.micros)} (rev {entry.rev}) does not "
            f"apply to the live state: {_short(exc)}"
        )


def decode_window(held: list[Held]) -> list[Entry]:
    """The entries of a window as :meth:`LiveState.held_window` gives it."""
    return [
        decode_event(item, where="live window") if isinstance(item, str) else item for item in held
    ]


def _parse_id(event_id: str | None) -> int | None:
    if event_id is None or not event_id.isascii() or not event_id.isdigit():
        return None
    return int(event_id) if len(event_id) < 19 else None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
