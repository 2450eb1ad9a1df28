"""The change log: the client's copy of a followed stream, read by every subscriber at its own pace.

The live tail appends each state change it applies (and each notice: a
:class:`~rstream.Gap`, :class:`~rstream.Disconnected`,
:class:`~rstream.Reconnected`) to one :class:`ChangeLog` per followed stream,
and never waits for anyone. Every subscriber, a queue or a callback, is a
:class:`Reader`: its own position in that log (the sequence number of the last
item it was given), the way Kafka consumers or client-go informers read a
shared log. A forgotten queue holds back nobody.

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
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, TypeAlias, cast

from rstream.client.catchup import changes_after
from rstream.client.health import SubscriberLag
from rstream.client.livestate import Change
from rstream.core.entry import Entry
from rstream.errors import ClientClosed, ConfigError, Empty, Gap

__all__ = [
    "DEFAULT_LAG_WARNING",
    "DEFAULT_LATEST_TIMEOUT",
    "OVERFLOW_POLICIES",
    "ChangeLog",
    "Item",
    "Lag",
    "Overflow",
    "Reader",
]

log = logging.getLogger("rstream.live")

Overflow: TypeAlias = Literal["block", "drop_oldest", "latest"]
OVERFLOW_POLICIES: tuple[str, ...] = ("block", "drop_oldest", "latest")
Item: TypeAlias = "Change | BaseException"
"""What the log holds: a change, or a notice for ``on_error``."""
Fetch: TypeAlias = "Callable[[int], Iterator[Entry]]"
"""``fetch(start)``: the server's entries from ``start`` (epoch microseconds) on."""

DEFAULT_LAG_WARNING = 10.0
"""Seconds behind after which a subscriber's lag is logged (once a minute at most)."""
DEFAULT_LATEST_TIMEOUT = 10.0
"""Seconds ``latest()`` waits by default for a live tail to receive the current state."""
_WARN_EVERY = 60.0
_MARKERS_KEPT = 1000  # notices remembered for readers that skip or catch up past them


class Lag(tuple[int, float]):
    """``(entries, seconds)``: how far a subscriber is behind the stream.

    ``entries``: changes received and not yet given to it; ``seconds``: how
    long ago the client received the oldest of them (0 when up to date).
    """

    __slots__ = ()

    def __new__(cls, entries: int, seconds: float) -> Lag:
        return super().__new__(cls, (entries, seconds))

    @property
    def entries(self) -> int:
        return self[0]

    @property
    def seconds(self) -> float:
        return self[1]

    def __repr__(self) -> str:
        return f"Lag(entries={self[0]}, seconds={self[1]:.3f})"


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


class Reader:
    """One subscriber's position in a :class:`ChangeLog` (see the module).

    :meth:`take` is called by one consumer thread at a time: the queue's
    ``get`` caller, or the subscription's dispatcher.
    """

    def __init__(
        self,
        changelog: ChangeLog,
        overflow: Overflow | str,
        maxsize: int,
        *,
        name: str,
        lag_warning: float | None,
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ConfigError(
                f"overflow must be one of {', '.join(map(repr, OVERFLOW_POLICIES))}, "
                f"not {overflow!r}"
            )
        if type(maxsize) is not int or maxsize < 1:
            raise ConfigError(f"maxsize must be a positive int, not {maxsize!r}")
        if lag_warning is not None and not lag_warning > 0:
            raise ConfigError(f"lag_warning must be positive seconds or None, not {lag_warning!r}")
        self.log = changelog
        self.overflow = overflow
        self.maxsize = maxsize
        self.name = name
        self.lag_warning = lag_warning
        self.dropped = 0
        self._pos = 0  # the seq of the last item given
        self._pending = True  # not placed yet: the stream is still loading
        self._first_item: Change | None = None  # the current state, given first
        self._last: Change | None = None  # the last change given
        self._catching: Iterator[Change] | None = None  # reading from the server
        self._closed = False
        self._busy = False  # a take is reading from the server (outside the lock)
        self._ready: list[Item] = []  # taken out of the log, not handed out yet
        self._fetched_any = False  # the current fetch has given a change
        self._warned_at: float | None = None
        self._placed_at = 0.0  # when it was given its position (the log's clock)

    @property
    def closed(self) -> bool:
        """Closed by its consumer, or the log ended and nothing is left to read."""
        if self._closed:
            return True
        changelog = self.log
        with changelog._lock:
            return changelog._ended and not self._waiting()

    @property
    def discarding(self) -> bool:
        """Closed by its consumer: what it took out is not delivered either."""
        return self._closed

    def close(self) -> None:
        """Stop reading; a blocked :meth:`take` wakes with :class:`~rstream.ClientClosed`."""
        changelog = self.log
        with changelog._lock:
            if self._closed:
                return
            self._closed = True
            # A take that is catching up closes its fetch itself when it returns.
            catching = None if self._busy else self._catching
            self._catching = None
            self._ready = []
            changelog._forget(self)
            changelog._changed.notify_all()
        if catching is not None:
            _close_iterator(catching)

    def lag(self) -> Lag:
        """``(entries, seconds)`` behind the newest change received (see :class:`Lag`)."""
        changelog = self.log
        now = changelog._clock()
        with changelog._lock:
            return Lag(*self._lag(now))

    def count(self) -> int:
        """The changes waiting for this reader (under its overflow policy)."""
        changelog = self.log
        with changelog._lock:
            return self._count()

    def take(self, limit: int, timeout: float | None) -> list[Item]:
        """The next items (at least one, at most ``limit``), waiting up to ``timeout``
        seconds (None: no limit) for one.

        Raises :class:`~rstream.Empty` on timeout, :class:`~rstream.ClientClosed`
        once closed (or the log ended and this reader has read all it can), or
        the fatal error the log ended with.
        """
        changelog = self.log
        clock = time.monotonic  # real time, whatever clock the log measures lag with
        deadline = None if timeout is None else clock() + timeout
        while True:
            with changelog._lock:
                items = self._ready or self._take(limit)
                if items is None:
                    pass  # catch up from the server, outside the lock
                elif items:
                    return self._handed(items, limit)
                else:
                    if self._closed:
                        raise ClientClosed(
                            "this subscriber is closed; subscribe again with stream.states() "
                            "or stream.subscribe()"
                        )
                    if changelog._ended:
                        raise changelog._end or ClientClosed(
                            f"the live tail of {changelog.name!r} is closed; "
                            "follow the stream again from a new client"
                        )
                    remaining = None if deadline is None else deadline - clock()
                    if remaining is not None and remaining <= 0:
                        raise Empty(
                            f"no state of {changelog.name!r} arrived within {timeout} s; "
                            "the stream may be quiet (see stream.health)"
                        )
                    changelog._changed.wait(remaining)
                    continue
            caught = self._catch_up(limit)
            if caught:
                with changelog._lock:
                    return self._handed(caught, limit)

    def _handed(self, items: list[Item], limit: int) -> list[Item]:
        """The first ``limit`` of ``items``; the rest is given by the next take."""
        self._ready = items[limit:]
        return items[:limit] if len(items) > limit else items

    # -- internals (the log's lock is held unless said otherwise) --------------------

    def _waiting(self) -> bool:
        return bool(
            self._ready
            or self._first_item is not None
            or self._catching is not None
            or (not self._pending and self._pos < self.log._next - 1)
        )

    def _take(self, limit: int) -> list[Item] | None:
        """Items to give now ([] if none), or None: catch up from the server first."""
        if self._closed or self._pending:
            return []
        changelog = self.log
        newest = changelog._next - 1
        if self._first_item is not None:
            first = self._take_first(newest)
            if first is not None:
                return [first]
        if self._catching is not None:
            return None
        if self._pos >= newest:
            return []
        if self.overflow == "latest":
            return self._take_latest(newest)
        out: list[Item] = []
        floor = changelog._first - 1  # the reader must be at or after it to read on
        if self.overflow == "drop_oldest":
            floor = max(floor, self._keeping(newest))
        if self._pos < floor:
            notices = self._skip_to(floor)
            if notices is None:
                return None if self._catching is not None else []
            out += notices
        start = changelog._at(self._pos + 1)
        taken = cast("list[Item]", changelog._items[start : start + max(limit - len(out), 1)])
        self._pos += len(taken)
        for item in reversed(taken):
            if not isinstance(item, BaseException):
                self._last = item
                break
        out += taken
        return out

    def _take_first(self, newest: int) -> Item | None:
        """The subscriber's first item, unless its overflow policy skips it too."""
        first, self._first_item = self._first_item, None
        self._last = first
        behind = newest - self._pos - len(self.log._markers_in(self._pos, newest))
        if (self.overflow == "latest" and behind > 0) or (
            self.overflow == "drop_oldest" and behind >= self.maxsize
        ):
            self.dropped += 1  # newer states wait: the policy skips the first one too
            return None
        return first

    def _take_latest(self, newest: int) -> list[Item]:
        """What an ``overflow="latest"`` reader gets: the notices, then the newest state."""
        changelog = self.log
        out: list[Item] = [*changelog._markers_in(self._pos, newest)]
        skipped = newest - self._pos - len(out)
        if changelog._current_seq > self._pos and changelog._current is not None:
            out.append(changelog._current)
            self._last = changelog._current
            skipped -= 1
        self.dropped += max(skipped, 0)
        self._pos = newest
        return out

    def _skip_to(self, floor: int) -> list[Item] | None:
        """Move a reader that fell below ``floor`` up to it; the notices it passes.

        None when nothing is to be given now: a ``"block"`` reader starts
        catching up from the server (:attr:`_catching` set), or cannot any more.
        """
        changelog = self.log
        notices: list[Item] = [*changelog._markers_in(self._pos, floor)]
        if self.overflow == "block":
            if changelog._ended:
                return None  # nothing can be fetched any more
            if (
                self._last is not None
                and changelog._fetch is not None
                and not any(isinstance(notice, Gap) for notice in notices)
            ):
                self._catching = changes_after(
                    self._last, _fetched(changelog._fetch, self._last.micros)
                )
                self._fetched_any = False
                return None
            if not any(isinstance(notice, Gap) for notice in notices):
                notices.append(
                    Gap(
                        f"this subscriber fell more than {changelog.capacity} changes "
                        f"behind the stream {changelog.name!r} and they could not be "
                        "fetched; it goes on from the oldest change held",
                        after_rev=None if self._last is None else self._last.rev,
                        resumed_rev=None,
                    )
                )
        else:
            self.dropped += floor - self._pos - len(notices)
        self._pos = floor
        return notices

    def _catch_up(self, limit: int) -> list[Item]:
        """Changes read from the server (lock NOT held), up to ``limit``.

        Once the log holds what follows the last of them, the reader rejoins the
        log, after the notices of the part re-fetched. A fetch that ends before
        that is followed by a new one from the last change given (the next take);
        a fetch that brings nothing new means the server cannot fill the hole: a
        :class:`~rstream.Gap`, and the reader goes on from the oldest change held.
        A fetch that fails is reported (in the items); the next take tries again.
        """
        changelog = self.log
        catching = self._catching
        if catching is None:
            return []
        started_at = self._pos
        out: list[Item] = []
        done = rejoined = False
        with changelog._lock:
            self._busy = True
        try:
            for change in catching:
                out.append(change)
                self._last = change
                self._fetched_any = True
                with changelog._lock:
                    if self._closed:
                        done = True
                        return []
                    if changelog._rejoin(self, change.rev):
                        done = rejoined = True
                        break
                if len(out) >= limit:
                    break
            else:
                done = True  # this fetch is over
                if not self._fetched_any:
                    with changelog._lock:
                        rejoined = True
                        last = self._last
                        if not changelog._rejoin(self, -1 if last is None else last.rev):
                            self._pos = changelog._first - 1
                            out.append(
                                Gap(
                                    f"catching up on {changelog.name!r}, the server had "
                                    "nothing after the last change given; going on from "
                                    "the oldest change held",
                                    after_rev=None if last is None else last.rev,
                                    resumed_rev=None,
                                )
                            )
        except Exception as exc:
            done = True
            out.append(exc)
        finally:
            with changelog._lock:
                self._busy = False
                if done or self._closed:
                    self._catching = None
                if rejoined:
                    out += changelog._markers_in(started_at, self._pos)
            if done or self._closed:
                _close_iterator(catching)
        return out

    def _keeping(self, newest: int) -> int:
        """The seq after which ``maxsize`` changes (notices not counted) end at ``newest``."""
        changelog = self.log
        floor = newest - self.maxsize
        while True:
            wider = newest - self.maxsize - len(changelog._markers_in(floor, newest))
            if wider == floor:
                return floor
            floor = wider

    def _needs_from(self, newest: int) -> int:
        """The oldest seq this reader may still read from the log."""
        if self._closed or self._pending:
            return newest + 1
        if self.overflow == "latest":
            return newest + 1
        if self.overflow == "drop_oldest":
            return max(self._pos + 1, self._keeping(newest) + 1)
        return self._pos + 1

    def _count(self) -> int:
        changelog = self.log
        if self._pending or self._closed:
            return 0
        first = 1 if self._first_item is not None else 0
        first += sum(not isinstance(item, BaseException) for item in self._ready)
        newest = changelog._next - 1
        if self._catching is not None or self._pos < changelog._first - 1:
            current = changelog._current
            last = self._last or self._first_item
            if current is None or last is None:
                return first
            return first + max(current.rev - last.rev, 0)
        behind = newest - self._pos - len(changelog._markers_in(self._pos, newest))
        if self.overflow == "latest":
            behind = min(behind, 1)
        elif self.overflow == "drop_oldest":
            behind = min(behind, self.maxsize)
        return first + max(behind, 0)

    def _lag(self, now: float) -> tuple[int, float]:
        entries = self._count()
        if entries == 0:
            return 0, 0.0
        return entries, max(now - self._behind_since(now), 0.0)

    def _behind_since(self, now: float) -> float:
        """When the oldest item not given to this reader arrived (``now`` if none)."""
        changelog = self.log
        if self._first_item is not None:
            return self._placed_at  # the current state, waiting since it subscribed
        if changelog._head == len(changelog._items) or self._pos >= changelog._next - 1:
            return now
        seq = max(self._pos + 1, changelog._first)
        return changelog._times[changelog._at(seq)]

    def _lag_warning(self, now: float) -> str | None:
        if self.lag_warning is None or self._pending or self._closed:
            return None
        if self._warned_at is not None and now - self._warned_at < _WARN_EVERY:
            return None
        seconds = now - self._behind_since(now)
        if seconds <= self.lag_warning:
            return None
        entries, seconds = self._lag(now)
        if seconds <= self.lag_warning:
            return None
        self._warned_at = now
        what = f"subscriber {self.name!r}" if self.name else "a subscriber"
        return (
            f"{what} of stream {self.log.name!r} is {seconds:.1f} s ({entries} changes) "
            f"behind (overflow={self.overflow!r}); read it faster, or use "
            "overflow='latest' if only the newest state matters"
        )


def _fetched(fetch: Fetch, start: int) -> Iterator[Entry]:
    """``fetch(start)``, called on the first ``next`` (on the consumer's thread)."""
    yield from fetch(start)


def _close_iterator(iterator: Iterator[object]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
