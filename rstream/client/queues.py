"""StateQueue: the states of a followed stream, as a bounded queue with an overflow policy.

``stream.states(maxsize=1000, overflow="block")`` hands one out. The live tail
puts every state change into each queue; the consumer takes them with
:meth:`StateQueue.get` or by iterating. What happens when the consumer falls
``maxsize`` behind is the overflow policy:

``"block"``
    The live tail waits for room: back-pressure up to the socket. Nothing is
    lost; a consumer that stays slow makes the server drop the connection,
    and the tail resumes by revision.
``"drop_oldest"``
    The oldest queued state is dropped (counted in :attr:`StateQueue.dropped`).
``"latest"``
    Only the newest state is kept: for consumers that only care about now.

States are shared read-only inside rstream and copied when a consumer takes
one, so each consumer owns the dict it gets (and a dropped state is never
copied at all).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Literal, TypeAlias

from rstream.core.mutation import copy_json
from rstream.errors import ClientClosed, ConfigError, Timeout

__all__ = ["OVERFLOW_POLICIES", "Overflow", "StateQueue"]

log = logging.getLogger("rstream.live")

Overflow: TypeAlias = Literal["block", "drop_oldest", "latest"]
OVERFLOW_POLICIES: tuple[str, ...] = ("block", "drop_oldest", "latest")

StateItem: TypeAlias = "tuple[datetime, dict[str, Any]]"
ErrorHandler: TypeAlias = "Callable[[BaseException], object]"


class StateQueue:
    """A bounded queue of ``(timestamp, state)`` from a live tail.

    ``get(timeout=None)`` blocks for the next state; ``get_nowait()`` raises
    :class:`queue.Empty`-like :class:`~rstream.Timeout` (a ``TimeoutError``) when there is none;
    ``for ts, state in q:`` runs until the queue or the tail is closed. A
    ``get`` that is blocked (or called) once the queue is closed and empty
    raises :class:`~rstream.ClientClosed`; when the tail stopped on a fatal
    error (:class:`~rstream.AuthError`, :class:`~rstream.StreamNotFound`) it
    raises that error instead, from ``get`` and from iteration.

    Errors that do not stop the tail (a :class:`~rstream.Gap`) are queued in
    order with the states and handed to ``on_error`` from inside ``get``, on
    the consumer's thread; without ``on_error`` they are logged.
    """

    def __init__(
        self,
        maxsize: int = 1000,
        overflow: Overflow | str = "block",
        *,
        on_error: ErrorHandler | None = None,
        copy: Callable[[Any], Any] = copy_json,
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ConfigError(
                f"overflow must be one of {', '.join(map(repr, OVERFLOW_POLICIES))}, "
                f"not {overflow!r}"
            )
        if type(maxsize) is not int or maxsize < 1:
            raise ConfigError(f"maxsize must be a positive int, not {maxsize!r}")
        self.maxsize = maxsize
        self.overflow = overflow
        self.on_error = on_error
        self._copy = copy
        self._items: collections.deque[StateItem | BaseException] = collections.deque()
        self._states = 0  # state items in _items (errors do not count against maxsize)
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._closed = False  # no more puts
        self._discard = False  # closed by the consumer: nothing left to read
        self._end: BaseException | None = None  # raised once drained; None: ClientClosed
        self._dropped = 0
        self._on_close: Callable[[StateQueue], None] | None = None

    # -- consumer side -------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """How many states the overflow policy dropped."""
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        """The number of states waiting."""
        return self._states

    def get(self, timeout: float | None = None) -> StateItem:
        """The next ``(timestamp, state)``; the state is the caller's own copy.

        Raises :class:`~rstream.Timeout` (a ``TimeoutError``) after ``timeout`` seconds without one,
        :class:`~rstream.ClientClosed` once closed and drained (or the fatal
        error that stopped the tail).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            item = self._take(deadline)
            if isinstance(item, BaseException):
                self._report(item)
                continue
            ts, state = item
            return ts, self._copy(state)

    def get_nowait(self) -> StateItem:
        """The next ``(timestamp, state)`` if one is waiting, else :class:`~rstream.Timeout`."""
        return self.get(timeout=0)

    def __iter__(self) -> Iterator[StateItem]:
        """Every state until the queue is closed (a fatal tail error is raised)."""
        while True:
            try:
                yield self.get()
            except ClientClosed:
                return

    def close(self) -> None:
        """Stop receiving states: waiting ones are discarded, blocked calls wake. Idempotent."""
        with self._lock:
            already = self._discard
            self._closed = True
            self._discard = True
            self._items.clear()
            self._states = 0
            self._not_empty.notify_all()
            self._not_full.notify_all()
            on_close, self._on_close = self._on_close, None
        if not already and on_close is not None:
            on_close(self)

    def __enter__(self) -> StateQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<StateQueue {state} qsize={self._states} maxsize={self.maxsize} "
            f"overflow={self.overflow!r} dropped={self._dropped}>"
        )

    def _take(self, deadline: float | None) -> StateItem | BaseException:
        with self._lock:
            while not self._items:
                if self._closed:
                    raise self._end or ClientClosed(
                        "the state queue is closed; take a new one with stream.states()"
                    )
                if deadline is None:
                    self._not_empty.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise Timeout(
                            "no state arrived in time; the stream may be quiet (see stream.health)"
                        )
                    self._not_empty.wait(remaining)
            item = self._items.popleft()
            if not isinstance(item, BaseException):
                self._states -= 1
                self._not_full.notify()
            return item

    def _take_many(self, limit: int) -> list[StateItem | BaseException]:
        """Wait for the next item, then take up to ``limit`` waiting items (states not
        copied) under one lock acquisition: for a dispatcher thread, so that a batch
        of states costs one lock round and one wake-up of the producer, not one each.
        Raises like :meth:`get` once closed and drained."""
        with self._lock:
            items = self._items
            while not items:
                if self._closed:
                    raise self._end or ClientClosed(
                        "the state queue is closed; take a new one with stream.states()"
                    )
                self._not_empty.wait()
            if len(items) <= limit:
                taken = list(items)
                items.clear()
            else:
                taken = [items.popleft() for _ in range(limit)]
            states = sum(1 for item in taken if not isinstance(item, BaseException))
            if states:
                self._states -= states
                self._not_full.notify()  # one producer: the live tail's reader
            return taken

    @property
    def _discarding(self) -> bool:
        """Closed by the consumer: states already taken out are not delivered either."""
        return self._discard

    def _report(self, error: BaseException) -> None:
        if self.on_error is None:
            log.warning("live tail: %s", error)
            return
        try:
            self.on_error(error)
        except Exception:
            log.exception("on_error callback raised")

    # -- producer side (the live tail) ------------------------------------------

    def put(self, item: StateItem) -> bool:
        """Add a state (shared, read-only) under the overflow policy.

        With ``"block"`` waits for room. Returns False when the queue is
        closed (the state is not delivered).
        """
        return self.put_many([item])

    def put_many(self, items: list[StateItem]) -> bool:
        """:meth:`put` each of ``items`` in order, under one lock acquisition (one
        wake-up of the consumer per batch, not per state)."""
        if not items:
            return True
        with self._lock:
            if self._closed:
                return False
            if self.overflow == "latest":
                if self._states:
                    self._drop_states(self._states)
                self._dropped += len(items) - 1
                self._items.append(items[-1])
                self._states += 1
                self._not_empty.notify()
                return True
            if self._states + len(items) <= self.maxsize:  # room for all: the common case
                self._items.extend(items)
                self._states += len(items)
                self._not_empty.notify()
                return True
            for appended, item in enumerate(items):
                if self._states >= self.maxsize:
                    if self.overflow == "drop_oldest":
                        self._drop_states(1)
                    else:
                        if appended:
                            self._not_empty.notify()  # let the consumer make room
                        while self._states >= self.maxsize and not self._closed:
                            self._not_full.wait()
                        if self._closed:
                            return False
                self._items.append(item)
                self._states += 1
            self._not_empty.notify()
            return True

    def _drop_states(self, count: int) -> None:
        # Errors stay: they are rare and each one matters.
        kept: collections.deque[StateItem | BaseException] = collections.deque()
        items = self._items
        while items and count:
            item = items.popleft()
            if isinstance(item, BaseException):
                kept.append(item)
            else:
                count -= 1
                self._states -= 1
                self._dropped += 1
        kept.extend(items)
        self._items = kept

    def put_error(self, error: BaseException) -> None:
        """Queue a non-fatal error in order with the states (never blocks, never dropped)."""
        with self._lock:
            if self._closed:
                return
            self._items.append(error)
            self._not_empty.notify()

    def finish(self, error: BaseException | None = None) -> None:
        """The tail stopped: no more states; once drained, ``get`` raises ``error``
        (a fatal error) or :class:`~rstream.ClientClosed`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._end = error
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def set_on_close(self, callback: Callable[[StateQueue], None] | None) -> None:
        """Called once (outside the lock) when the consumer closes the queue."""
        with self._lock:
            self._on_close = callback
