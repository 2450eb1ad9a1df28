"""Subscription: a callback subscriber of a live tail, with its own dispatcher thread.

Callbacks never run on the thread that reads the socket. Each subscription is
a reader of the stream's change log (:mod:`rstream.client.changelog`), with
its own position, and one thread that calls ``on_state(timestamp, state)``
for each state in order. A slow or raising callback delays only itself:
neither the stream nor the other subscribers ever wait for it.

An exception from ``on_state`` goes to that subscriber's ``on_error``; without
one it is logged (see :mod:`rstream.client.notices`). The subscription goes on.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rstream.client.changelog import Reader
from rstream.client.notices import NoticeReporter
from rstream.client.reader import ReaderView
from rstream.core.jsontype import copy_json
from rstream.core.timestamps import from_micros
from rstream.errors import ClientClosed

__all__ = ["ErrorCallback", "StateCallback", "Subscription", "check_callback", "state_copier"]

log = logging.getLogger("rstream.live")

StateCallback = Callable[[datetime, dict[str, Any]], object]
ErrorCallback = Callable[[BaseException], object]

_ids = itertools.count(1)
# States a dispatcher takes from the log at once: one lock round per batch.
_BATCH = 256


def check_callback(callback: object, name: str, arguments: int) -> None:
    """Raise :class:`TypeError` unless ``callback`` can be called with ``arguments``
    positional arguments (a callable whose signature cannot be read is accepted)."""
    if not callable(callback):
        raise TypeError(f"{name} must be callable, not {type(callback).__name__}")
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):
        return  # some builtins: nothing to check
    try:
        signature.bind(*([None] * arguments))
    except TypeError as exc:
        expected = "(ts, state)" if arguments == 2 else "(error)"
        raise TypeError(
            f"{name} {callback!r} cannot be called as {name}{expected}: {exc}"
        ) from None


def state_copier(copy: bool) -> Callable[[Any], Any]:
    """What a subscriber hands out for a state of the log: a private copy
    (``copy=True``, :func:`~rstream.core.jsontype.copy_json`) or the shared,
    read-only state itself (``copy=False``)."""
    return copy_json if copy else _shared


def _shared(state: Any) -> Any:
    return state


class Subscription(ReaderView):
    """A callback subscriber. ``close()`` stops this subscriber only (idempotent).

    ``on_state(ts, state)`` runs on the subscription's dispatcher thread and
    owns ``state`` (a private copy made by ``copy``; with
    ``copy=state_copier(False)`` the shared, read-only state): the current
    state first, then every change. ``on_error(exc)`` receives the exceptions of ``on_state``, the
    notices (:class:`~rstream.Gap`, :class:`~rstream.Disconnected`,
    :class:`~rstream.Reconnected`), and the fatal error that stopped the tail
    (:class:`~rstream.AuthError`, :class:`~rstream.StreamNotFound`), after
    which the subscription ends. :attr:`lag` says how far behind it is.
    """

    def __init__(
        self,
        reader: Reader,
        on_state: StateCallback,
        on_error: ErrorCallback | None = None,
        *,
        copy: Callable[[Any], Any] = copy_json,
    ) -> None:
        check_callback(on_state, "on_state", 2)
        if on_error is not None:
            check_callback(on_error, "on_error", 1)
        self.on_state = on_state
        self.on_error = on_error
        self._reader = reader
        self._copy = copy
        self._report = NoticeReporter(on_error, reader.log.name)
        self.delivered = 0
        name = reader.log.name
        label = (
            f"rstream-dispatch-{name}-{next(_ids)}" if name else f"rstream-dispatch-{next(_ids)}"
        )
        self._thread = threading.Thread(target=self._run, name=label, daemon=True)
        self._started = False
        self._start_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._reader.closed

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
        self._reader.close()
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
        state = "closed" if self._reader.discarding else "open"
        return f"<Subscription {state} {self.on_state!r} delivered={self.delivered}>"

    def _run(self) -> None:
        reader = self._reader
        on_state = self.on_state
        copy = self._copy
        report = self._report
        # Batches only under "block": the other policies skip what waits in the log,
        # which a state taken out into a batch would escape.
        batch = _BATCH if reader.overflow == "block" else 1
        while True:
            try:
                items = reader.take(batch, None)
            except ClientClosed:
                return
            except Exception as exc:  # the fatal error that stopped the tail
                report(exc)
                return
            for item in items:
                if reader.discarding:  # closed: what was taken out is dropped too
                    return
                if isinstance(item, BaseException):  # a notice, in order with the states
                    report(item)
                    continue
                try:
                    on_state(from_micros(item.micros), copy(item.state))
                except Exception as exc:
                    report.callback_failed(exc, on_state)
                self.delivered += 1
