"""One window of a stream: its life (a table of allowed moves), and its contents.

A *window* runs from one snapshot up to (not including) the next. This module
holds what one window is; :mod:`rstream.client.windows` keeps the windows of a
stream. A window moves through the states of :class:`WindowState`; the allowed
moves are the :data:`TRANSITIONS` table::

    PENDING --bounds--> PULLING --entries--> COMMITTED
       |                   |
       +--(end is null)--> LIVE --(next snapshot seen)--> COMMITTED
       +--------+----------+--> ERROR (dropped; the next request retries)

A window is born PENDING (asked for by time), LIVE (the live window, seen by
the live tail or a history pass) or COMMITTED (read whole by a history pass or
the live tail before the store knew it). No I/O.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import operator
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import apply_mutation
from rstream.core.timestamps import EPOCH, format_rfc3339, from_micros
from rstream.errors import OutOfRange, ProtocolError

__all__ = [
    "INITIAL_STATES",
    "STATE_FIELDS_PER_ENTRY",
    "TRANSITIONS",
    "Bounds",
    "Pair",
    "Window",
    "WindowState",
    "check_bounds",
    "check_window_entries",
    "check_window_states",
    "check_window_times",
    "datetimes",
    "fail",
    "move",
    "replay",
    "resolve",
    "state_in",
    "states_weight",
]

State = dict[str, Any]
Pair: TypeAlias = "tuple[datetime, State]"
"""An entry's timestamp and the state after it, as ``history`` yields them."""


class WindowState(enum.Enum):
    """Where a window is in its life."""

    PENDING = "pending"  # asking the server for the bounds around a time
    PULLING = "pulling"  # fetching the entries
    LIVE = "live"  # the open window: it still grows, so it is never cached
    COMMITTED = "committed"  # complete and immutable; kept until evicted
    ERROR = "error"  # a fetch failed; the window is dropped


TRANSITIONS: dict[WindowState, frozenset[WindowState]] = {
    WindowState.PENDING: frozenset({WindowState.PULLING, WindowState.LIVE, WindowState.ERROR}),
    WindowState.PULLING: frozenset({WindowState.COMMITTED, WindowState.ERROR}),
    WindowState.LIVE: frozenset({WindowState.COMMITTED, WindowState.ERROR}),
    WindowState.COMMITTED: frozenset(),
    WindowState.ERROR: frozenset(),
}
"""The allowed moves: ``state -> states it may become``. COMMITTED and ERROR are final."""

INITIAL_STATES = frozenset({WindowState.PENDING, WindowState.LIVE, WindowState.COMMITTED})
"""A window is born PENDING (asked for a time), LIVE (seen open) or COMMITTED (read whole)."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """The server's answer to ``GET /window``: ``end`` is None for the live window."""

    start: int
    end: int | None
    revision: int


_SETTLED: Future[Any] = Future()
_SETTLED.set_result(None)


class Window:
    """One window: its bounds, state and (once COMMITTED) entries.

    ``start``/``end`` are epoch microseconds (``end`` None while unknown or
    live). Once COMMITTED, ``micros`` holds the entries' timestamps (for
    bisecting) and either ``entries`` is set or, once the states are computed,
    ``pairs`` is (and ``entries`` is dropped): the ``(datetime, state)`` of
    each entry, shared with every reader and never to be modified. Read
    ``pairs`` before ``entries``: ``pairs`` is set
    before ``entries`` is dropped, and never unset. ``end_known`` is False for a window
    committed by the live tail before the next snapshot's time was known: its
    end is then provisional (just after its last entry) until the server
    confirms it.
    """

    __slots__ = (
        "_bounds_future",
        "_done_future",
        "asked_at",
        "end",
        "end_known",
        "entries",
        "error",
        "live_micros",
        "live_pairs",
        "micros",
        "pairs",
        "revision",
        "start",
        "state",
        "states_weight",
    )

    def __init__(self, state: WindowState, *, asked_at: int | None = None) -> None:
        if state not in INITIAL_STATES:
            raise ValueError(f"a window cannot start {state.name}")
        self.state = state
        self.asked_at = asked_at
        self.start: int | None = None
        self.end: int | None = None
        self.end_known = True
        self.revision: int | None = None
        self.entries: list[Entry] | None = None
        self.micros: list[int] | None = None
        self.pairs: list[Pair] | None = None
        self.states_weight = 0
        # LIVE only: what a history pass read of it, snapshot first (see WindowStore.hold_live).
        self.live_micros: list[int] | None = None
        self.live_pairs: list[Pair] | None = None
        self.error: BaseException | None = None
        # Only a PENDING window is waited for: others share settled futures
        # (two Futures per window cost more than the rest of a disk read).
        self._bounds_future: Future[Window] = (
            _SETTLED if state is not WindowState.PENDING else Future()
        )
        # Resolved (to None: the window holds the entries, and may drop them
        # for its states) when the entries are in, or failed with the error.
        self._done_future: Future[None] = _SETTLED if state is not WindowState.PENDING else Future()

    def hold(
        self, micros: list[int], entries: list[Entry] | None, pairs: list[Pair] | None
    ) -> None:
        """Keep the contents of this COMMITTED window: its entries' times and either
        the entries or their states (which, when known, replace the entries)."""
        assert self.start is not None
        assert self.state is WindowState.COMMITTED
        self.live_micros = self.live_pairs = None  # now held as a committed window
        self.micros = micros
        if pairs is None:
            self.entries = entries
        else:
            self.pairs = pairs
            self.states_weight = states_weight(map(operator.itemgetter(1), pairs))

    def covers(self, at: int) -> bool:
        """Whether ``at`` falls in the window (a live window covers all times after its start)."""
        if self.start is None or at < self.start:
            return False
        return self.end is None or at < self.end

    @property
    def size(self) -> int:
        """The number of entries (0 until COMMITTED)."""
        return len(self.micros) if self.micros is not None else 0

    @property
    def weight(self) -> int:
        """What the window costs in the store's budget: its entries, or its states."""
        return self.states_weight if self.pairs is not None else self.size

    def __repr__(self) -> str:
        start = "?" if self.start is None else format_rfc3339(self.start)
        end = "open" if self.end is None else format_rfc3339(self.end)
        return f"<Window {self.state.name} [{start}, {end}) {self.size} entries>"


def move(window: Window, new: WindowState) -> None:
    """The one place a window changes state: RuntimeError for a move
    :data:`TRANSITIONS` does not allow (a bug, not a condition callers handle)."""
    if new not in TRANSITIONS[window.state]:
        raise RuntimeError(
            f"illegal transition: window {window!r} cannot go "
            f"from {window.state.name} to {new.name}"
        )
    window.state = new


def resolve(future: Future[Any], value: Any) -> None:
    """Settle a window's future with ``value``, unless it is settled already."""
    if not future.done():
        future.set_result(value)


def fail(future: Future[Any], exc: BaseException) -> None:
    """Settle a window's future with ``exc``, unless it is settled already."""
    if not future.done():
        future.set_exception(exc)


def check_bounds(bounds: Bounds, at: int) -> None:
    if bounds.start > at or (bounds.end is not None and bounds.end <= at):
        end = "open" if bounds.end is None else format_rfc3339(bounds.end)
        raise ProtocolError(
            f"the server answered a window [{format_rfc3339(bounds.start)}, {end}) "
            f"that does not contain the time asked for ({format_rfc3339(at)})"
        )


def check_window_entries(entries: Sequence[Entry], start: int, end: int | None) -> None:
    """A window's entries: a snapshot at ``start``, then mutations, all before ``end``."""
    if not entries:
        raise ProtocolError(
            f"the window starting {format_rfc3339(start)} came back empty; its snapshot is missing"
        )
    first = entries[0]
    if first.micros != start or first.kind is not EntryKind.SNAPSHOT:
        raise ProtocolError(
            f"the window starting {format_rfc3339(start)} does not begin with its snapshot "
            f"(got {first!r})"
        )
    previous = start
    for entry in entries[1:]:
        if entry.micros <= previous or entry.kind is not EntryKind.MUTATION:
            raise ProtocolError(
                f"the window starting {format_rfc3339(start)} has an entry out of order "
                f"or a second snapshot: {entry!r}"
            )
        previous = entry.micros
    if end is not None and previous >= end:
        raise ProtocolError(
            f"the window [{format_rfc3339(start)}, {format_rfc3339(end)}) holds an entry "
            "at or after its end"
        )


def check_window_times(micros: Sequence[int], end: int | None) -> None:
    """A window's times (its snapshot's first): not empty, ascending, all before ``end``."""
    if not micros:
        raise ProtocolError("a window came back empty; its snapshot is missing")
    start = micros[0]
    if not all(map(operator.lt, micros, itertools.islice(micros, 1, None))):
        raise ProtocolError(f"the window starting {format_rfc3339(start)} has entries out of order")
    if end is not None and micros[-1] >= end:
        raise ProtocolError(
            f"the window [{format_rfc3339(start)}, {format_rfc3339(end)}) holds an entry "
            "at or after its end"
        )


def check_window_states(micros: Sequence[int], pairs: Sequence[Pair], end: int | None) -> None:
    """A window's times (see :func:`check_window_times`) and their ``(datetime, state)``:
    as many, and at the same times (ValueError: a caller's bug)."""
    check_window_times(micros, end)
    if len(pairs) != len(micros):
        raise ValueError(f"{len(pairs)} states for {len(micros)} entries")
    if pairs[0][0] != from_micros(micros[0]) or pairs[-1][0] != from_micros(micros[-1]):
        raise ValueError("the states' times are not the entries' times")


# -- pure helpers over a window's entries -------------------------------------------


def state_in(entries: Sequence[Entry], micros: Sequence[int], at: int) -> tuple[int, State]:
    """``(index, state)`` at time ``at`` in a window's entries (snapshot first).

    ``micros`` are the entries' timestamps. The state is shared with the entries
    (read-only): copy it before giving it away.
    """
    index = bisect.bisect_right(micros, at) - 1
    if index < 0:
        raise OutOfRange(f"no state at {format_rfc3339(at)}: it is before the window")
    state = entries[0].data
    for i in range(1, index + 1):
        state = apply_mutation(state, entries[i].data)
    return index, state


def datetimes(micros: Iterable[int]) -> list[datetime]:
    """The aware UTC datetimes of epoch microseconds (as ``map(from_micros, micros)``)."""
    # No Python code per item: about twice as fast as map(from_micros, micros).
    return list(map(EPOCH.__add__, map(timedelta, _ZEROS, _ZEROS, micros)))


_ZEROS = itertools.repeat(0)


def replay(entries: Sequence[Entry]) -> list[Pair]:
    """The ``(datetime, state)`` of every entry of a window (snapshot first).

    The states share structure with each other and with the entries
    (``apply_mutation`` copies only what changed): treat them as read-only.
    """
    state = entries[0].data
    pairs: list[Pair] = [(EPOCH + timedelta(0, 0, entries[0].micros), state)]
    for entry in entries[1:]:
        state = apply_mutation(state, entry.data)
        pairs.append((EPOCH + timedelta(0, 0, entry.micros), state))
    return pairs


STATE_FIELDS_PER_ENTRY = 16
"""How many top-level fields of a state cost about as much memory as one entry."""


def states_weight(states: Iterable[State]) -> int:
    """What a window's computed states weigh in the budget (they replace its entries).

    Each state is a new top-level object (the path copy of ``apply_mutation``)
    and a datetime; its other parts are shared with the state before it or with
    the entry's mutation: about as much memory as an entry, so a state weighs
    one entry, plus one per :data:`STATE_FIELDS_PER_ENTRY`
    top-level fields: a state of 300 fields copies a dict of 300 slots, however
    small the mutation that made it.
    """
    sizes = list(map(len, states))  # no Python code per state
    return len(sizes) + sum(sizes) // STATE_FIELDS_PER_ENTRY
