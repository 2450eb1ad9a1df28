"""Subscription: a callback subscriber of a live tail, with its own dispatcher thread.

Callbacks never run on the thread that reads the socket. Each subscription has
a bounded inbox (a :class:`~rstream.client.queues.StateQueue`) and one thread
that calls ``on_state(timestamp, state)`` for each state in order, so a slow
or raising callback delays only itself: neither the stream nor the other
subscribers wait for it (until its inbox is full; then its overflow policy
decides, ``"block"`` by default, which is back-pressure on the tail).

An exception from ``on_state`` goes to that subscriber's ``on_error`` and is
logged on the ``rstream.live`` logger; the subscription keeps going.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rstream.client.queues import Overflow, StateQueue
from rstream.core.mutation import copy_json
from rstream.errors import ClientClosed

__all__ = ["ErrorCallback", "StateCallback", "Subscription"]

log = logging.getLogger("rstream.live")

StateCallback = Callable[[datetime, dict[str, Any]], object]
ErrorCallback = Callable[[BaseException], object]

_ids = itertools.count(1)
# States a dispatcher takes from its inbox at once: small next to the inbox, so that
# at most this many states are held beyond maxsize.
_BATCH = 256


class Subscription:
    """A callback subscriber. ``close()`` stops this subscriber only (idempotent).

    ``on_state(ts, state)`` runs on the subscription's dispatcher thread and
    owns ``state`` (a private copy). ``on_error(exc)`` receives the exceptions
    of ``on_state``, a :class:`~rstream.Gap` when the tail had to re-anchor,
    and the fatal error that stopped the tail (:class:`~rstream.AuthError`,
    :class:`~rstream.StreamNotFound`), after which the subscription ends.
    """

    def __init__(
        self,
        on_state: StateCallback,
        on_error: ErrorCallback | None = None,
        *,
        maxsize: int = 10_000,
        overflow: Overflow | str = "block",
        name: str = "",
    ) -> None:
        if not callable(on_state):
            raise TypeError(f"on_state must be callable, not {type(on_state).__name__}")
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable, not {type(on_error).__name__}")
        self.on_state = on_state
        self.on_error = on_error
        self.queue = StateQueue(maxsize, overflow, on_error=self._report)
        self.delivered = 0
        label = (
            f"rstream-dispatch-{name}-{next(_ids)}" if name else f"rstream-dispatch-{next(_ids)}"
        )
        self._thread = threading.Thread(target=self._run, name=label, daemon=True)
        self._started = False
        self._start_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self.queue.closed

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        """Start the dispatcher thread (idempotent)."""
        with self._start_lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        """Stop this subscriber: pending states are discarded, the dispatcher
        thread is joined (unless called from a callback, on that thread)."""
        self.queue.close()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the dispatcher thread to end (not from the dispatcher itself)."""
        if self._started and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(
                    "subscription callback %r still running after close(); "
                    "its thread will end when the callback returns",
                    self.on_state,
                )

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Subscription {state} {self.on_state!r} delivered={self.delivered}>"

    def _run(self) -> None:
        queue = self.queue
        on_state = self.on_state
        # Batches, not queue.get(): one lock round per batch instead of one per state.
        # Only under "block": the other policies drop from the inbox, which a state
        # taken out into a batch would escape.
        batch = _BATCH if queue.overflow == "block" else 1
        while True:
            try:
                items = queue._take_many(batch)
            except ClientClosed:
                return
            except Exception as exc:  # the fatal error that stopped the tail
                self._report(exc)
                return
            for item in items:
                if queue._discarding:  # closed: what was taken out is dropped too
                    return
                if isinstance(item, BaseException):  # a Gap, in order with the states
                    self._report(item)
                    continue
                ts, state = item
                try:
                    on_state(ts, copy_json(state))
                except Exception as exc:
                    log.exception("subscriber callback %r raised", on_state)
                    self._report(exc)
                self.delivered += 1

    def _report(self, error: BaseException) -> None:
        if self.on_error is None:
            log.warning("live tail: %s", error)
            return
        try:
            self.on_error(error)
        except Exception:
            log.exception("on_error callback %r raised", self.on_error)
