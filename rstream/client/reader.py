"""A reader of the change log: one subscriber's own position in it, and its policy.

See :mod:`rstream.client.changelog` for what a reader is given by its overflow
policy. A reader is made by :meth:`ChangeLog.reader
<rstream.client.changelog.ChangeLog.reader>` and reads the log's items under
the log's lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal, TypeAlias, cast

from rstream.client.catchup import changes_after
from rstream.client.livestate import Change
from rstream.core.entry import Entry
from rstream.errors import ClientClosed, ConfigError, Empty, Gap

if TYPE_CHECKING:
    from rstream.client.changelog import ChangeLog

__all__ = [
    "DEFAULT_LAG_WARNING",
    "OVERFLOW_POLICIES",
    "Fetch",
    "Item",
    "Lag",
    "Overflow",
    "Reader",
    "ReaderView",
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
_WARN_EVERY = 60.0


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


class ReaderView:
    """What a subscriber shows of its :class:`Reader` (``_reader``): its policy,
    its bound, what it skipped and how far behind it is. Any thread may read them."""

    _reader: Reader

    @property
    def overflow(self) -> Overflow:
        return self._reader.overflow  # type: ignore[return-value]

    @property
    def maxsize(self) -> int:
        return self._reader.maxsize

    @property
    def dropped(self) -> int:
        """How many states the overflow policy skipped."""
        return self._reader.dropped

    @property
    def lag(self) -> Lag:
        """``(entries, seconds)`` this subscriber is behind the newest change received."""
        return self._reader.lag()
