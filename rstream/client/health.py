"""The health of a live tail: its connection state machine and a snapshot of it.

A script that follows a stream needs to tell a dead listener from a quiet
stream. :class:`Health` answers that: the connection state, when data last
arrived (heartbeats included), the revision reached, how often the tail
reconnected and the last error.

The connection states and every allowed transition are in one table,
:data:`TRANSITIONS`; :class:`HealthTracker` refuses any other move, so a bug in
the reader loop shows up as an error instead of a confusing health report::

    IDLE ──► CONNECTING ──► OPEN ──► BACKOFF ──► CONNECTING ...
                 │            │         │
                 └──► BACKOFF └──► FAILED (fatal: refused credentials, unknown stream)
    any state ──► CLOSED (close(), or the server ended the tail with 204)
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "NOT_FOLLOWING",
    "TRANSITIONS",
    "ConnectionState",
    "Health",
    "HealthTracker",
    "SubscriberLag",
]


class ConnectionState(enum.Enum):
    """Where a live tail's connection is."""

    IDLE = "idle"  # created, not started
    CONNECTING = "connecting"  # a request is on its way
    OPEN = "open"  # the event stream is being read
    BACKOFF = "backoff"  # waiting before the next connection
    FAILED = "failed"  # stopped by a fatal error (see Health.last_error)
    CLOSED = "closed"  # stopped by close() or by the server (204)


_S = ConnectionState

#: Every allowed move of the connection state machine, and nothing else.
TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    _S.IDLE: frozenset({_S.CONNECTING, _S.CLOSED}),
    _S.CONNECTING: frozenset({_S.OPEN, _S.BACKOFF, _S.FAILED, _S.CLOSED}),
    _S.OPEN: frozenset({_S.BACKOFF, _S.FAILED, _S.CLOSED}),
    _S.BACKOFF: frozenset({_S.CONNECTING, _S.CLOSED}),
    _S.FAILED: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class SubscriberLag:
    """One subscriber in :attr:`Health.subscribers`: how far behind it is.

    ``entries``: changes received and not yet given to it; ``seconds``: how
    long ago the client received the oldest of them. ``catching_up``: it is
    reading what it missed from the server (``overflow="block"``, further
    behind than the client keeps in memory); ``dropped``: states its overflow
    policy skipped.
    """

    name: str
    overflow: str
    entries: int
    seconds: float
    catching_up: bool = False
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Health:
    """A snapshot of a live tail's health.

    ``last_data_at`` is when bytes last arrived on the connection (events and
    heartbeats alike): on an OPEN tail it is never much older than the
    heartbeat interval, however quiet the stream. ``revision`` is the revision
    of the last change applied (None before the tail is anchored);
    ``reconnects`` counts connections made after the first; ``last_error`` is
    the error that ended the last connection (kept after a successful
    reconnect, for diagnosis). ``url`` is the server of the current or last
    connection. ``subscribers`` is each subscriber's lag (see :class:`SubscriberLag`).
    """

    state: ConnectionState
    last_data_at: datetime | None = None
    revision: int | None = None
    reconnects: int = 0
    last_error: BaseException | None = None
    url: str | None = None
    since: datetime | None = None  # when ``state`` was entered
    subscribers: tuple[SubscriberLag, ...] = ()

    @property
    def following(self) -> bool:
        """Whether the tail is still trying to follow the stream (not FAILED/CLOSED/IDLE)."""
        return self.state in (_S.CONNECTING, _S.OPEN, _S.BACKOFF)

    def quiet_for(self, now: datetime | None = None) -> float | None:
        """Seconds since data last arrived, or None when none ever did."""
        if self.last_data_at is None:
            return None
        now = now or datetime.now(UTC)
        return (now - self.last_data_at).total_seconds()


#: The health of a stream that is not being followed.
NOT_FOLLOWING = Health(ConnectionState.IDLE)


class HealthTracker:
    """The mutable, thread-safe record behind :class:`Health` snapshots.

    ``clock`` is wall-clock epoch seconds (injectable for tests). Moves outside
    :data:`TRANSITIONS` raise :class:`RuntimeError`; a move to the current
    state is a no-op.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state = ConnectionState.IDLE
        self._since = self._now()
        self._last_data_at: float | None = None  # epoch seconds: data() is per chunk, keep it cheap
        self._revision: int | None = None
        self._reconnects = 0
        self._connections = 0
        self._last_error: BaseException | None = None
        self._url: str | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @property
    def state(self) -> ConnectionState:
        return self._state

    def move(self, state: ConnectionState, *, error: BaseException | None = None) -> bool:
        """Enter ``state``; returns False (and changes nothing) when already there."""
        with self._lock:
            if state is self._state:
                return False
            if state not in TRANSITIONS[self._state]:
                raise RuntimeError(f"live tail cannot go from {self._state.name} to {state.name}")
            self._state = state
            self._since = self._now()
            if error is not None:
                self._last_error = error
            return True

    def try_move(self, state: ConnectionState, *, error: BaseException | None = None) -> bool:
        """Enter ``state`` if the table allows it from the current state."""
        with self._lock:
            if state is self._state or state not in TRANSITIONS[self._state]:
                return False
            self._state = state
            self._since = self._now()
            if error is not None:
                self._last_error = error
            return True

    def connecting(self, url: str) -> None:
        """A new connection attempt to ``url`` starts (counted as a reconnect after the first)."""
        self.move(ConnectionState.CONNECTING)
        with self._lock:
            self._url = url
            if self._connections:
                self._reconnects += 1
            self._connections += 1

    def data(self) -> None:
        """Bytes arrived (an event or a heartbeat)."""
        self._last_data_at = self._clock()  # one atomic store; no lock needed

    def revision(self, rev: int | None) -> None:
        with self._lock:
            self._revision = rev

    def error(self, error: BaseException) -> None:
        with self._lock:
            self._last_error = error

    def snapshot(self) -> Health:
        """The current health as an immutable value."""
        with self._lock:
            return Health(
                state=self._state,
                last_data_at=(
                    None
                    if self._last_data_at is None
                    else datetime.fromtimestamp(self._last_data_at, UTC)
                ),
                revision=self._revision,
                reconnects=self._reconnects,
                last_error=self._last_error,
                url=self._url,
                since=self._since,
            )
