"""StateQueue: a followed stream's states, polled like :class:`queue.Queue`.

``stream.states(maxsize=1000, overflow="block")`` hands one out. A queue is a
reader of the stream's change log (:mod:`rstream.client.changelog`): it holds
its own position and never slows the live tail or another subscriber. It
gives the current state first, then every change, under its overflow policy:

``"block"`` (default)
    every change, once, in order, however far behind the consumer is: what
    no longer fits in the client's memory (``max_cached_entries``) is read
    again from the server when the consumer gets to it.
``"drop_oldest"``
    at most ``maxsize`` states wait; older ones are skipped (counted in
    :attr:`StateQueue.dropped`).
``"latest"``
    only the newest state: for consumers that only care about now.

Each state is copied when the consumer takes it, so each consumer owns the
dict it gets (and a skipped state is never copied at all).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeAlias

from rstream.client.changelog import OVERFLOW_POLICIES, Overflow, Reader
from rstream.client.notices import NoticeReporter
from rstream.client.reader import ReaderView
from rstream.core.jsontype import copy_json
from rstream.core.timestamps import from_micros
from rstream.errors import ClientClosed

__all__ = ["OVERFLOW_POLICIES", "Overflow", "StateQueue"]

StateItem: TypeAlias = "tuple[datetime, dict[str, Any]]"
ErrorHandler: TypeAlias = "Callable[[BaseException], object]"


class StateQueue(ReaderView):
    """The states of a followed stream: ``get``, ``get_nowait``, iteration, as a
    :class:`queue.Queue` is used.

    ``get(block=True, timeout=None)`` waits for the next ``(timestamp, state)``
    (the state is the caller's own copy); with nothing in time, or with
    ``block=False`` and nothing waiting, it raises :class:`rstream.Empty` (a
    :class:`queue.Empty`, not an ``OSError``). Once the queue or the tail is
    closed and drained, ``get`` raises :class:`~rstream.ClientClosed` and
    iteration ends; when the tail stopped on a fatal error
    (:class:`~rstream.AuthError`, :class:`~rstream.StreamNotFound`) both raise it.

    Notices that do not stop anything (:class:`~rstream.Gap`,
    :class:`~rstream.Disconnected`, :class:`~rstream.Reconnected`) go to
    ``on_error`` from inside ``get``, on the consumer's thread, in order with
    the states; without ``on_error`` a ``Gap`` is logged, and connection
    notices are left to the tail's one warning per outage.
    """

    def __init__(
        self,
        reader: Reader,
        *,
        on_error: ErrorHandler | None = None,
        copy: Callable[[Any], Any] = copy_json,
    ) -> None:
        self._reader = reader
        self._copy = copy
        self._report = NoticeReporter(on_error, reader.log.name)

    @property
    def on_error(self) -> ErrorHandler | None:
        """Called with each notice, from inside ``get`` (may be set at any time)."""
        return self._report.on_error

    @on_error.setter
    def on_error(self, on_error: ErrorHandler | None) -> None:
        self._report.on_error = on_error

    @property
    def maxsize(self) -> int:
        """Under ``"drop_oldest"``, the most states that wait; under ``"block"``, the
        backlog past which :meth:`full` is true (nothing is ever dropped)."""
        return self._reader.maxsize

    @property
    def closed(self) -> bool:
        """Closed, or the tail ended and nothing is left to get."""
        return self._reader.closed

    def qsize(self) -> int:
        """The number of states waiting (an estimate while re-reading from the server)."""
        return self._reader.count()

    def __len__(self) -> int:
        return self.qsize()

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return self.qsize() >= self.maxsize

    def get(self, block: bool = True, timeout: float | None = None) -> StateItem:
        """The next ``(timestamp, state)``, as :meth:`queue.Queue.get`.

        Raises :class:`rstream.Empty` when none arrives within ``timeout``
        seconds (``None``: wait as long as it takes), or at once with
        ``block=False``; :class:`~rstream.ClientClosed` once closed and drained,
        or the fatal error that stopped the tail. A state that has to be read
        again from the server (``"block"``, far behind) may take a page fetch
        longer than ``timeout``.
        """
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        deadline = None
        if not block:
            timeout = 0.0
        elif timeout is not None:
            deadline = time.monotonic() + timeout
        while True:
            item = self._reader.take(1, timeout)[0]
            if isinstance(item, BaseException):
                self._report(item)
                if deadline is not None:
                    timeout = max(deadline - time.monotonic(), 0.0)
                continue
            return from_micros(item.micros), self._copy(item.state)

    def get_nowait(self) -> StateItem:
        """``get(block=False)``: the next state if one is waiting, else :class:`rstream.Empty`."""
        return self.get(block=False)

    def __iter__(self) -> Iterator[StateItem]:
        """Every state until the queue is closed (a fatal tail error is raised)."""
        while True:
            try:
                yield self.get()
            except ClientClosed:
                return

    def close(self) -> None:
        """Stop receiving states; a blocked ``get`` wakes with ClientClosed. Idempotent."""
        self._reader.close()

    def __enter__(self) -> StateQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._reader.discarding else "open"
        return (
            f"<StateQueue {state} qsize={self.qsize()} maxsize={self.maxsize} "
            f"overflow={self.overflow!r} dropped={self.dropped}>"
        )
