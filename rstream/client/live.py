"""The live tail: one reader thread that follows a stream's ``/live`` event stream.

:class:`LiveTail` runs a :class:`~rstream.client.connection.LiveConnection` on
its reader thread (which connects, reads and reconnects: see that module and
``docs/live.rst``), feeds each complete event to the pure
:class:`~rstream.client.livestate.LiveState`, and appends every state change to
the stream's :class:`~rstream.client.changelog.ChangeLog`. It never waits for a
subscriber: callback :class:`~rstream.client.subscription.Subscription`\\ s
(each on its own dispatcher thread) and :class:`~rstream.client.queues.StateQueue`\\ s
each read the log from their own position.

When an open connection is lost, every subscriber is given a
:class:`~rstream.Disconnected` notice; when a connection is open again, a
:class:`~rstream.Reconnected` notice with the downtime. Neither stops anything.

``close()`` interrupts the blocked read (``HTTPResponse.shutdown()``), so it
returns at once from any thread, and joins the threads it started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import tenacity

from rstream.client.changelog import (
    DEFAULT_LAG_WARNING,
    DEFAULT_LATEST_TIMEOUT,
    ChangeLog,
    Fetch,
    Overflow,
)
from rstream.client.connection import (
    DEFAULT_HEALTHY_AFTER,
    HEARTBEAT_FACTOR,
    LiveConnection,
    LiveTransport,
    ServerEndedError,
)
from rstream.client.health import ConnectionState, Health, HealthTracker
from rstream.client.livestate import Change, LiveState, decode_window
from rstream.client.queues import StateQueue
from rstream.client.sse import DEFAULT_MAX_EVENT_BYTES, SSEEvent
from rstream.client.subscription import (
    ErrorCallback,
    StateCallback,
    Subscription,
    check_callback,
    state_copier,
)
from rstream.client.transport import quote_stream_id
from rstream.core.entry import Entry
from rstream.core.jsontype import copy_json
from rstream.core.timestamps import from_micros
from rstream.errors import ClientClosed, ConfigError, RStreamError, Timeout

__all__ = [
    "DEFAULT_HEALTHY_AFTER",
    "DEFAULT_LATEST_TIMEOUT",
    "HEARTBEAT_FACTOR",
    "LiveTail",
    "LiveTransport",
]

log = logging.getLogger("rstream.live")

DEFAULT_CAPACITY = 1_000_000
"""Changes the change log holds for slow subscribers (the client's ``max_cached_entries``)."""


class LiveTail:
    """Follow one stream live: exact states, in order, once, across reconnects.

    ``heartbeat_timeout`` is the read timeout that detects a dead connection
    (default: 2.5x the server's ``RStream-Heartbeat``, or the transport's read
    timeout until the server has told it). ``on_commit(entries)`` is called on
    the reader thread, outside any lock, when a new snapshot arrives live, with
    the previous live window (complete, snapshot first; read-only entries).

    ``capacity`` bounds, in all, the changes held in memory for slow
    subscribers and the live window's entries kept, half each (past its half,
    ``live_window()`` is None);
    ``fetch(start)`` returns the server's entries from ``start`` (epoch
    microseconds) on, so that a ``"block"`` subscriber that fell further
    behind reads them from the server (without it, such a subscriber is given
    a :class:`~rstream.Gap`). ``current_revision()`` returns the stream's
    revision: asked before each connection that starts afresh, it tells when
    the backlog the server sends first is applied, i.e. when the stream is
    loaded and early subscribers get its current state (without it, the first
    batch of changes received counts as the backlog).

    ``sleep`` replaces the interruptible backoff wait (tests record waits with
    it); ``wait`` replaces the backoff strategy; ``clock`` (monotonic) and
    ``wall_clock`` (epoch, for :attr:`health`) are injectable.
    """

    def __init__(
        self,
        transport: LiveTransport,
        stream_id: str,
        *,
        heartbeat_timeout: float | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        on_commit: Callable[[list[Entry]], None] | None = None,
        capacity: int = DEFAULT_CAPACITY,
        fetch: Fetch | None = None,
        current_revision: Callable[[], int] | None = None,
        sleep: Callable[[float], None] | None = None,
        wait: tenacity.wait.WaitBaseT | None = None,
        healthy_after: float = DEFAULT_HEALTHY_AFTER,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if heartbeat_timeout is not None and heartbeat_timeout <= 0:
            raise ConfigError(f"heartbeat_timeout must be positive, not {heartbeat_timeout}")
        self.transport = transport
        self.stream_id = stream_id
        self._on_commit = on_commit
        self._current_revision = current_revision

        self._lock = threading.Lock()  # guards _state, _subscriptions, _closed
        # The live window's entries and the change log's states share one budget,
        # so that what the tail holds stays within ``capacity`` changes in all.
        window_capacity = max(1, capacity // 2)
        self._state = LiveState(max_window=window_capacity)
        self._log = ChangeLog(
            max(1, capacity - window_capacity), fetch=fetch, name=stream_id, clock=clock
        )
        self._subscriptions: list[Subscription] = []
        self._closed = False
        self._fatal: BaseException | None = None
        self._health = HealthTracker(wall_clock)
        self._thread: threading.Thread | None = None
        self._connection = LiveConnection(
            transport,
            f"/v1/streams/{quote_stream_id(stream_id)}/live",
            self,
            self._health,
            name=stream_id,
            heartbeat_timeout=heartbeat_timeout,
            max_event_bytes=max_event_bytes,
            sleep=sleep,
            wait=wait,
            healthy_after=healthy_after,
            clock=clock,
        )

        # Owned by the reader thread.
        self._pending: list[Change] = []  # applied, not yet in the log (see flush)
        self._loaded_at: int | None = None  # the revision that ends the backlog, if known

    # -- public API ---------------------------------------------------------------

    def start(self) -> None:
        """Start the reader thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._check_usable()
            self._thread = threading.Thread(
                target=self._run, name=f"rstream-live-{self.stream_id}", daemon=True
            )
            self._thread.start()

    def subscribe(
        self,
        on_state: StateCallback,
        on_error: ErrorCallback | None = None,
        *,
        maxsize: int = 10_000,
        overflow: Overflow = "block",
        lag_warning: float | None = DEFAULT_LAG_WARNING,
        copy: bool = True,
    ) -> Subscription:
        """Call ``on_state(ts, state)`` with the current state, then with every change.

        The callback runs on the subscription's own thread; see
        :class:`~rstream.client.subscription.Subscription`. Raises
        :class:`TypeError` at once when ``on_state`` cannot take ``(ts, state)``.
        ``copy=False``: the states are the tail's own, shared and read-only.
        """
        check_callback(on_state, "on_state", 2)
        if on_error is not None:
            check_callback(on_error, "on_error", 1)
        with self._lock:
            self._check_usable()
            reader = self._log.reader(
                overflow, maxsize, name=_callback_name(on_state), lag_warning=lag_warning
            )
            subscription = Subscription(reader, on_state, on_error, copy=state_copier(copy))
            self._subscriptions.append(subscription)
        subscription.start()
        self.start()
        return subscription

    def states(
        self,
        maxsize: int = 1000,
        overflow: Overflow = "block",
        *,
        on_error: ErrorCallback | None = None,
        lag_warning: float | None = DEFAULT_LAG_WARNING,
        copy: bool = True,
    ) -> StateQueue:
        """A queue of ``(ts, state)``: the current state, then every change.

        ``copy=False``: the states are the tail's own, shared and read-only.
        """
        if on_error is not None:
            check_callback(on_error, "on_error", 1)
        with self._lock:
            self._check_usable()
            reader = self._log.reader(overflow, maxsize, name="states()", lag_warning=lag_warning)
        queue = StateQueue(reader, on_error=on_error, copy=state_copier(copy))
        self.start()
        return queue

    def latest(
        self, timeout: float | None = DEFAULT_LATEST_TIMEOUT
    ) -> tuple[datetime, dict[str, Any]]:
        """The newest state (a private copy), once the stream is loaded.

        Waits up to ``timeout`` seconds (None: no limit) for the tail to receive
        the stream's current state, then raises :class:`~rstream.Timeout` saying
        what it waited for and the connection's state; raises the fatal error
        that stopped the tail, or :class:`~rstream.ClientClosed`.
        """
        self.start()
        self._check_usable()
        current = self._log.current(timeout)
        self._check_usable()
        if current is None:
            health = self._health.snapshot()
            raise Timeout(
                f"waited {timeout} s for the live tail of stream {self.stream_id!r} to receive "
                f"its current state (connection {health.state.name}, last error: "
                f"{health.last_error}); is the server up? pass a longer timeout= to wait more"
            )
        return from_micros(current.micros), copy_json(current.state)

    def live_window(self) -> list[Entry] | None:
        """The live window received so far (snapshot first; read-only entries), or None."""
        with self._lock:
            held = self._state.held_window()
        return None if held is None else decode_window(held)  # outside the lock: it takes time

    @property
    def revision(self) -> int | None:
        """The revision of the last change applied (None before anchoring)."""
        with self._lock:
            return self._state.resume_rev

    @property
    def health(self) -> Health:
        """Connection state, last data time, revision, reconnects, last error, and
        each subscriber's lag."""
        return replace(self._health.snapshot(), subscribers=self._log.lags())

    @property
    def changelog(self) -> ChangeLog:
        """The change log the subscribers read (see :mod:`rstream.client.changelog`)."""
        return self._log

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ended(self) -> bool:
        """The tail stopped by itself (the server's 204, or a fatal error such as
        :class:`~rstream.AuthError`): it delivers nothing more, and following the
        stream again needs a new tail."""
        return self._fatal is not None and not self._closed

    def close(self) -> None:
        """Stop following: interrupt the read, end every subscriber, join threads.

        Idempotent; every call from another thread than the tail's own waits
        (at most about 1 s) for its threads to end. Queues keep the states
        not yet taken (then ``get`` raises :class:`~rstream.ClientClosed`);
        callback subscriptions drop theirs.
        """
        with self._lock:
            first = not self._closed
            self._closed = True
            subscriptions = list(self._subscriptions)
            thread = self._thread
        if first:
            self._connection.stop()
            for subscription in subscriptions:
                subscription._reader.close()
            self._log.finish()  # wakes every waiting get() and latest()
        deadline = time.monotonic() + 1.0
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                log.warning("live tail reader for %r did not stop within 1 s", self.stream_id)
        for subscription in subscriptions:
            subscription.join(max(deadline - time.monotonic(), 0.0))
        self._health.try_move(ConnectionState.CLOSED)

    def __enter__(self) -> LiveTail:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        health = self._health.snapshot()
        return (
            f"<LiveTail {self.stream_id!r} {health.state.name} rev={health.revision} "
            f"reconnects={health.reconnects}>"
        )

    # -- subscribers --------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ClientClosed(
                f"the live tail of stream {self.stream_id!r} is closed; "
                "follow the stream again from a new client"
            )
        if self._fatal is not None:
            raise self._fatal

    # -- the event sink of the connection (the reader thread only) -----------------

    def prepare(self) -> int | None:
        """Before a connection: the revision to resume after; when starting afresh
        before the stream is loaded, asks where the backlog ends (``current_revision``)."""
        with self._lock:
            resume = self._state.resume_rev
        if resume is None and not self._log.loaded and self._current_revision is not None:
            self._loaded_at = self._current_revision()
        return resume

    def flush(self) -> None:
        """Append the changes applied since the last flush to the log, on the reader
        thread: called before each blocking read, so a chunk of events costs one
        wake-up per subscriber, not one per event."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._log.append(pending)
        with self._lock:
            revision = self._state.resume_rev
        self._health.revision(revision)
        if (
            not self._log.loaded
            and revision is not None
            and (self._loaded_at is None or revision >= self._loaded_at)
        ):
            self._log.mark_loaded()

    def notice(self, notice: BaseException) -> None:
        """A notice for every subscriber, after the changes applied before it."""
        self.flush()
        self._log.notice(notice)

    def apply(self, event: SSEEvent) -> bool:
        """Apply one event; its state is delivered at the next flush. True when it
        changed the live state."""
        with self._lock:
            change, committed, gap, applied = self._state.feed(event.event, event.data, event.id)
        if gap is not None:
            log.warning("stream %r: %s", self.stream_id, gap)
            self.notice(gap)
        if change is not None:
            self._pending.append(change)
        if committed is not None and self._on_commit is not None:
            # Now, not at the flush: the window store may look at live_window(),
            # which must still be the window this snapshot started.
            try:
                self._on_commit(list(committed))
            except Exception:
                log.exception("on_commit callback for stream %r raised", self.stream_id)
        return applied

    def _run(self) -> None:
        try:
            self._connection.run()
        except ServerEndedError:
            log.info("the server ended the live tail of %r (204)", self.stream_id)
            self._finish(
                ClientClosed(
                    f"the server ended the live tail of stream {self.stream_id!r} "
                    "(204 No Content); subscribe again later"
                ),
                fatal=False,
            )
        except RStreamError as exc:
            self._finish(exc, fatal=True)
        except Exception as exc:  # a bug: fail visibly rather than hang the subscribers
            log.exception("live tail of %r crashed", self.stream_id)
            self._finish(exc, fatal=True)

    def _finish(self, error: BaseException, *, fatal: bool) -> None:
        """The tail stops by itself: tell every subscriber, end the log."""
        with self._lock:
            if self._closed:
                return
            # Nothing will feed a later subscriber, nor load a latest() waiter:
            # they get the error too, fatal or not (a 204).
            self._fatal = error
        if fatal:
            log.error("live tail of %r stopped: %s", self.stream_id, error)
            self._health.try_move(ConnectionState.FAILED, error=error)
            self._log.finish(error)
        else:
            self._health.try_move(ConnectionState.CLOSED)
            self.notice(error)
            self._log.finish()


def _callback_name(callback: object) -> str:
    """A short name for a subscriber's callback (for health and log records)."""
    name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    return f"subscribe({name})"
