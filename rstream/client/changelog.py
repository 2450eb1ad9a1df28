"""The change log: the client's copy of a followed stream, read by every subscriber at its own pace.

The live tail appends each state change it applies (and each notice: a
:class:`~rstream.Gap`, :class:`~rstream.Disconnected`,
:class:`~rstream.Reconnected`) to one :class:`ChangeLog` per followed stream,
and never waits for anyone. Every subscriber, a queue or a callback, is a
:class:`~rstream.client.reader.Reader`: its own position in that log (the
sequence number of the last item it was given), the way Kafka consumers or
client-go informers read a shared log. A forgotten queue holds back nobody.

What a reader is given, by its overflow policy:

``"block"``
    every change, once, in order. When it falls so far behind that its
    position leaves memory (the log holds at most ``capacity`` items, the
    client's ``max_cached_entries``), it reads what it missed from the server
    (``fetch(start)``, the entries range API; see
    :mod:`rstream.client.catchup`), exactly once and in order, then rejoins
    the log. Memory stays bounded by ``capacity``, however far behind it is.
``"drop_oldest"``
    at most ``maxsize`` changes waiting: older ones are skipped (counted).
``"latest"``
    only the newest change.

Notices are never skipped. A reader that subscribes gets the current state
first (or, while the stream is still loading, the state once loaded: see
:meth:`ChangeLog.mark_loaded`), then every later change.

The log keeps only what its readers still need (and the current state), so
with every reader up to date it holds almost nothing. Items are shared,
read-only states: consumers copy them (on their own thread) before handing
them out.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence

from rstream.client.health import SubscriberLag
from rstream.client.livestate import Change
from rstream.client.reader import (
    DEFAULT_LAG_WARNING,
    OVERFLOW_POLICIES,
    Fetch,
    Item,
    Lag,
    Overflow,
    Reader,
)
from rstream.errors import ClientClosed

__all__ = [
    "DEFAULT_LAG_WARNING",
    "DEFAULT_LATEST_TIMEOUT",
    "OVERFLOW_POLICIES",
    "ChangeLog",
    "Fetch",
    "Item",
    "Lag",
    "Overflow",
    "Reader",
]

log = logging.getLogger("rstream.live")

DEFAULT_LATEST_TIMEOUT = 10.0
"""Seconds ``latest()`` waits by default for a live tail to receive the current state."""
_MARKERS_KEPT = 1000  # notices remembered for readers that skip or catch up past them


class ChangeLog:
    """The changes of one followed stream, as the live tail applied them.

    ``capacity`` bounds the items held in memory; ``fetch`` lets a
    ``"block"`` reader that fell out of memory catch up from the server
    (without it, such a reader is given a :class:`~rstream.Gap` and moves on).
    ``clock`` is monotonic seconds. Thread-safe: one producer (the live tail's
    reader thread) appends, any number of readers read.
    """

    def __init__(
        self,
        capacity: int,
        *,
        fetch: Fetch | None = None,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = max(1, capacity)
        self.name = name
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # The items held, oldest first, from _items[_head] (seq _first) on; the
        # list is compacted now and then instead of popping from its front, and
        # the slots before _head are None, so what is dropped is freed at once.
        self._items: list[Item | None] = []
        self._times: list[float] = []  # when each item arrived (clock)
        self._head = 0
        self._first = 1  # the seq of _items[_head]; seq 0 is "before everything"
        # The notices, oldest first, and their seqs (for bisecting): kept past the
        # items, for readers that skip or catch up over them.
        self._markers: list[BaseException] = []
        self._marker_seqs: list[int] = []
        self._current: Change | None = None  # the newest change
        self._current_seq = 0
        self._readers: list[Reader] = []
        self._loaded = False
        self._ended = False
        self._end: BaseException | None = None

    # -- the producer ---------------------------------------------------------------

    def append(self, changes: Sequence[Change]) -> None:
        """Add changes, in order (the live tail's reader thread). Never waits."""
        if not changes:
            return
        now = self._clock()
        with self._lock:
            if self._ended:
                return
            self._items += changes
            self._times += itertools.repeat(now, len(changes))
            self._current, self._current_seq = changes[-1], self._next - 1
            warnings = self._appended(now)
        for warning in warnings:
            log.warning("%s", warning)

    def notice(self, notice: BaseException) -> None:
        """Add a notice for every reader, in order with the changes (never skipped)."""
        now = self._clock()
        with self._lock:
            if self._ended:
                return
            self._marker_seqs.append(self._next)
            self._markers.append(notice)
            self._items.append(notice)
            self._times.append(now)
            if len(self._markers) > _MARKERS_KEPT:
                del self._markers[:-_MARKERS_KEPT]
                del self._marker_seqs[:-_MARKERS_KEPT]
            warnings = self._appended(now)
        for warning in warnings:
            log.warning("%s", warning)

    def mark_loaded(self) -> None:
        """The stream is loaded (the live tail applied the backlog it connected to):
        readers that subscribed before are given the current state, then what follows."""
        with self._lock:
            if self._loaded or self._current is None:
                return
            self._loaded = True
            for reader in self._readers:
                if reader._pending:
                    self._place(reader)
            self._changed.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        """No more items: readers drain what they can, then get ``error`` (a fatal
        error) or :class:`~rstream.ClientClosed`. Idempotent."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self._end = error
            self._changed.notify_all()

    # -- reading --------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def held(self) -> int:
        """The number of items held in memory (at most ``capacity``)."""
        return len(self._items) - self._head

    def current(self, timeout: float | None) -> Change | None:
        """The newest change once loaded, waiting up to ``timeout`` seconds (None:
        no limit); None on timeout or when the log ended first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not (self._loaded and self._current is not None):
                if self._ended:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._changed.wait(remaining)
            return self._current

    def reader(
        self,
        overflow: Overflow | str = "block",
        maxsize: int = 1000,
        *,
        name: str = "",
        lag_warning: float | None = DEFAULT_LAG_WARNING,
    ) -> Reader:
        """A new reader, positioned to get the current state first (see the module)."""
        reader = Reader(self, overflow, maxsize, name=name, lag_warning=lag_warning)
        with self._lock:
            if self._ended:
                raise self._end or ClientClosed(
                    f"the live tail of {self.name!r} is closed; follow the stream again"
                )
            if self._loaded:
                self._place(reader)
            self._readers.append(reader)
        return reader

    def lags(self) -> tuple[SubscriberLag, ...]:
        """Each reader's lag, for :attr:`rstream.Health.subscribers`."""
        now = self._clock()
        with self._lock:
            return tuple(
                SubscriberLag(
                    reader.name,
                    reader.overflow,
                    *reader._lag(now),
                    catching_up=reader._catching is not None,
                    dropped=reader.dropped,
                )
                for reader in self._readers
            )

    # -- internals (the lock is held) -----------------------------------------------

    @property
    def _next(self) -> int:
        """The seq the next item will get."""
        return self._first + len(self._items) - self._head

    def _place(self, reader: Reader) -> None:
        reader._first_item = self._current
        reader._placed_at = self._clock()
        reader._pos = self._next - 1
        reader._pending = False

    def _at(self, seq: int) -> int:
        """The list index of the item ``seq`` (which must be held)."""
        return self._head + seq - self._first

    def _markers_in(self, after: int, upto: int) -> list[BaseException]:
        """The notices with ``after < seq <= upto``, in order."""
        seqs = self._marker_seqs
        if not seqs or seqs[-1] <= after:
            return []
        lo = bisect.bisect_right(seqs, after)
        return self._markers[lo : bisect.bisect_right(seqs, upto, lo)]

    def _appended(self, now: float) -> list[str]:
        """After an append: trim, wake the readers; the lag warnings to log."""
        self._trim()
        self._changed.notify_all()
        return [
            warning for reader in self._readers if (warning := reader._lag_warning(now)) is not None
        ]

    def _trim(self) -> None:
        """Drop what no reader needs, and anything past ``capacity``."""
        keep_from = self._next  # nothing, unless a reader needs it
        for reader in self._readers:
            keep_from = min(keep_from, reader._needs_from(self._next - 1))
        # Past capacity, the oldest go, but never the current change (notices after
        # it must not push the newest state out of memory).
        keep_from = max(keep_from, min(self._next - self.capacity, self._current_seq), self._first)
        drop = keep_from - self._first
        if drop <= 0:
            return
        self._items[self._head : self._head + drop] = itertools.repeat(None, drop)
        self._head += drop
        self._first = keep_from
        if self._head > 1024 and self._head * 2 > len(self._items):
            del self._items[: self._head]
            del self._times[: self._head]
            self._head = 0

    def _forget(self, reader: Reader) -> None:
        if reader in self._readers:
            self._readers.remove(reader)
            self._trim()

    def _rejoin(self, reader: Reader, rev: int) -> bool:
        """Whether the held items continue a catch-up that reached revision ``rev``:
        then the reader's position is set to just before the first change after it."""
        changes = (
            (self._first + i, item)
            for i, item in enumerate(itertools.islice(self._items, self._head, None))
            if isinstance(item, Change)
        )
        oldest = next(changes, None)
        if oldest is None:  # nothing held: the current state is the end of the log
            current = self._current
            if current is None or current.rev > rev:
                return False
            reader._pos = self._next - 1
            return True
        if oldest[1].rev > rev:
            return False  # changes after rev may be missing from memory: read on
        reader._pos = self._next - 1
        for seq, change in itertools.chain([oldest], changes):
            if change.rev > rev:
                reader._pos = seq - 1
                break
        return True
