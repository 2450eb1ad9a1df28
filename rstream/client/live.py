"""The live tail: one reader thread that follows a stream's ``/live`` event stream.

:class:`LiveTail` reads ``GET /v1/streams/{id}/live`` (Server-Sent Events,
``docs/protocol.rst``) over a streamed response from the transport's shared
session, feeds each complete event to the pure
:class:`~rstream.client.livestate.LiveState`, and appends every state change to
the stream's :class:`~rstream.client.changelog.ChangeLog`. It never waits for a
subscriber: callback :class:`~rstream.client.subscription.Subscription`\\ s
(each on its own dispatcher thread) and :class:`~rstream.client.queues.StateQueue`\\ s
each read the log from their own position.

Reconnecting (see ``docs/live.rst``):

* A clean close, a network error, a read timeout (no byte for
  ``heartbeat_timeout``: a dead or half-open connection), a 5xx, a 429, a
  malformed event: reconnect, resuming with ``Last-Event-ID`` = the revision of
  the last entry applied, on the next server URL when the connection failed.
* 204 ends the tail; 401 (after asking a callable token once more), 403, 404
  and other 4xx stop it with the error, reported to every subscriber.
* The waits come from tenacity: the transport's retry template is copied with
  ``stop_never`` and full-jitter exponential backoff (0.5 s doubling, capped
  at 30 s), never below the server's ``retry:`` or ``Retry-After``. The
  backoff grows while connections fail or end without delivering anything,
  and starts over after a healthy connection (one that applied an event or
  stayed open ``healthy_after`` seconds).

When an open connection is lost, every subscriber is given a
:class:`~rstream.Disconnected` notice (and one warning is logged for the
outage); when a connection is open again, a :class:`~rstream.Reconnected`
notice with the downtime. Neither stops anything.

``close()`` interrupts the blocked read (``HTTPResponse.shutdown()``), so it
returns at once from any thread, and joins the threads it started.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any, NoReturn, Protocol

import requests
import tenacity
import urllib3.exceptions

from rstream.client.changelog import (
    DEFAULT_LAG_WARNING,
    DEFAULT_LATEST_TIMEOUT,
    ChangeLog,
    Fetch,
    Overflow,
)
from rstream.client.health import ConnectionState, Health, HealthTracker
from rstream.client.interrupt import observe_sockets
from rstream.client.livestate import Change, LiveState
from rstream.client.queues import StateQueue
from rstream.client.retry import (
    RETRYABLE_STATUSES,
    parse_retry_after,
    reconnect_policy,
    reconnect_wait,
    retry_floor,
)
from rstream.client.sse import DEFAULT_MAX_EVENT_BYTES, EventStream, SSEEvent, iter_chunks
from rstream.client.subscription import (
    ErrorCallback,
    StateCallback,
    Subscription,
    check_callback,
    state_copier,
)
from rstream.client.transport import quote_stream_id, raise_for_response
from rstream.core.entry import Entry
from rstream.core.mutation import copy_json
from rstream.core.timestamps import from_micros
from rstream.errors import (
    ClientClosed,
    ConfigError,
    Disconnected,
    ProtocolError,
    Reconnected,
    RStreamError,
    ServerError,
    Timeout,
    TransportError,
)

__all__ = [
    "DEFAULT_HEALTHY_AFTER",
    "DEFAULT_LATEST_TIMEOUT",
    "HEARTBEAT_FACTOR",
    "LiveTail",
    "LiveTransport",
]

log = logging.getLogger("rstream.live")

HEARTBEAT_FACTOR = 2.5
"""The read timeout is this many heartbeat intervals (``RStream-Heartbeat``)."""
DEFAULT_HEALTHY_AFTER = 10.0
"""A connection open this long (seconds) counts as healthy even if the stream was quiet."""
DEFAULT_CAPACITY = 1_000_000
"""Changes the change log holds for slow subscribers (the client's ``max_cached_entries``)."""


class LiveTransport(Protocol):
    """What the live tail needs from :class:`rstream.client.transport.Transport`."""

    session: requests.Session
    timeout: tuple[float, float]
    retry: tenacity.Retrying

    @property
    def urls(self) -> tuple[str, ...]: ...

    @property
    def closed(self) -> bool: ...

    def auth_headers(self, *, refresh: bool = False) -> dict[str, str]: ...

    def url_for(self, index: int, path: str) -> str: ...


class _ReconnectError(Exception):
    """A connection ended without making progress; tenacity waits and tries again."""

    def __init__(self, cause: BaseException, retry_after: float | None = None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.retry_after = retry_after


class _StopError(Exception):
    """close() was called (or the transport closed): leave quietly."""


class _ServerEndedError(Exception):
    """The server answered 204: it wants this client to stop following."""


# The errors of a dying or broken connection: all mean "reconnect".
_CONNECTION_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.HTTPError,
    OSError,
)


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
        self._path = f"/v1/streams/{quote_stream_id(stream_id)}/live"
        self._heartbeat_timeout = heartbeat_timeout
        self._max_event_bytes = max_event_bytes
        self._on_commit = on_commit
        self._current_revision = current_revision
        # time.sleep cannot be interrupted by close(): use the stop event instead.
        self._user_sleep = None if sleep is time.sleep else sleep
        self._wait = wait if wait is not None else reconnect_wait()
        self._healthy_after = healthy_after
        self._clock = clock

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
        self._stop = threading.Event()
        self._health = HealthTracker(wall_clock)
        self._thread: threading.Thread | None = None
        self._response: requests.Response | None = None
        self._waiting: socket.socket | None = None  # a request's, before its response
        self._response_lock = threading.Lock()

        # Owned by the reader thread.
        self._url_index = getattr(transport, "current_index", 0)
        self._server_retry = 0.0  # the server's retry:, seconds
        self._server_heartbeat: float | None = None  # RStream-Heartbeat, seconds
        self._pending: list[Change] = []  # applied, not yet in the log (see _flush)
        self._loaded_at: int | None = None  # the revision that ends the backlog, if known
        self._was_open = False  # a connection has been open: losing it is an outage
        self._down_since: float | None = None  # when the current outage began (clock)

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
            return self._state.window()

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
            self._stop.set()
            self._interrupt()
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

    def _flush(self) -> None:
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

    def _notice(self, notice: BaseException) -> None:
        """A notice for every subscriber, after the changes applied before it."""
        self._flush()
        self._log.notice(notice)

    def _connection_lost(self, cause: BaseException, url: str) -> None:
        """An open connection ended: the first loss of an outage is a notice."""
        if not self._was_open or self._down_since is not None:
            return
        self._down_since = self._clock()
        log.warning(
            "live tail of %r lost its connection (%s); reconnecting, subscribers are told",
            self.stream_id,
            cause,
        )
        self._notice(
            Disconnected(
                f"the live tail of stream {self.stream_id!r} lost its connection to {url} "
                f"({cause}); it is reconnecting and will resume without a gap",
                url=url,
                cause=cause,
            )
        )

    def _connection_open(self, url: str) -> None:
        self._was_open = True
        if self._down_since is None:
            return
        downtime = max(self._clock() - self._down_since, 0.0)
        self._down_since = None
        log.info("live tail of %r reconnected after %.1f s", self.stream_id, downtime)
        self._notice(
            Reconnected(
                f"the live tail of stream {self.stream_id!r} is connected again to {url} "
                f"after {downtime:.1f} s",
                url=url,
                downtime=downtime,
            )
        )

    # -- the reader thread --------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._check_stop()
                retrying = self._retrying()
                retrying(self._connect_once)
                # A healthy connection ended: the backoff starts over, but never
                # sooner than the server asked.
                self._backoff(max(self._floor(None), float(self._wait(self._fresh(retrying)))))
        except _StopError:
            pass
        except _ServerEndedError:
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
        finally:
            self._set_response(None)

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
            self._notice(error)
            self._log.finish()

    def _retrying(self) -> tenacity.Retrying:
        return reconnect_policy(
            self.transport.retry,
            retry_on=_ReconnectError,
            wait=self._wait_with_floor,
            sleep=self._backoff,
        )

    @staticmethod
    def _fresh(retrying: tenacity.Retrying) -> tenacity.RetryCallState:
        return tenacity.RetryCallState(retrying, fn=None, args=(), kwargs={})

    def _wait_with_floor(self, retry_state: tenacity.RetryCallState) -> float:
        retry_after = None
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            exc = outcome.exception()
            if isinstance(exc, _ReconnectError):
                retry_after = exc.retry_after
        return max(float(self._wait(retry_state)), self._floor(retry_after))

    def _floor(self, retry_after: float | None) -> float:
        return retry_floor(self._server_retry, retry_after)

    def _backoff(self, seconds: float) -> None:
        self._health.try_move(ConnectionState.BACKOFF)
        log.debug("live tail of %r: reconnecting in %.3f s", self.stream_id, seconds)
        if self._user_sleep is not None:
            self._check_stop()
            self._user_sleep(seconds)
        else:
            self._stop.wait(seconds)
        self._check_stop()

    def _check_stop(self) -> None:
        if self._stop.is_set() or self.transport.closed:
            raise _StopError

    def _connect_once(self) -> None:
        """One connection: returns when it was healthy and ended, raises _ReconnectError
        when it made no progress, a public error when the tail must stop."""
        self._check_stop()
        url = self.transport.url_for(self._url_index, self._path)
        self._health.connecting(url)
        with self._lock:
            resume = self._state.resume_rev
        if resume is None and not self._log.loaded and self._current_revision is not None:
            self._learn_revision()
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if resume is not None:
            headers["Last-Event-ID"] = str(resume)
        try:
            response = self._open(url, headers)
        except _CONNECTION_ERRORS as exc:
            self._check_stop()
            if isinstance(exc, requests.exceptions.SSLError):
                raise TransportError(
                    f"GET {url} failed: {exc}; check the TLS settings (verify=, cert=)"
                ) from exc
            self._failed_over(TransportError(f"GET {url} failed: {exc}"))
        try:
            return self._read(response, url)
        finally:
            self._set_response(None)
            response.close()

    def _learn_revision(self) -> None:
        """Ask the stream's revision: the backlog of a fresh connection ends there."""
        assert self._current_revision is not None
        try:
            self._loaded_at = self._current_revision()
        except (TransportError, ServerError, ProtocolError) as exc:  # as the live GET's
            self._check_stop()
            self._failed_over(exc)

    def _open(self, url: str, headers: dict[str, str]) -> requests.Response:
        response = self._get(url, {**headers, **self.transport.auth_headers()})
        if response.status_code == 401:
            # The token may have expired: ask (a callable token) once more.
            self._set_response(None)
            response.close()
            response = self._get(url, {**headers, **self.transport.auth_headers(refresh=True)})
        return response

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        connect, read = self.transport.timeout
        if self._heartbeat_timeout is not None:
            read = self._heartbeat_timeout
        elif self._server_heartbeat is not None:
            read = self._server_heartbeat * HEARTBEAT_FACTOR
        try:
            with observe_sockets(self._set_waiting):
                response = self.transport.session.get(
                    url, headers=headers, stream=True, timeout=(connect, read)
                )
        finally:
            with self._response_lock:
                self._waiting = None
        self._set_response(response)
        return response

    def _set_waiting(self, sock: socket.socket) -> None:
        """The socket of the request on its way, waiting for the response's headers."""
        with self._response_lock:
            self._waiting = sock
        if self._stop.is_set():
            self._interrupt()  # close() ran while we were connecting

    def _set_response(self, response: requests.Response | None) -> None:
        with self._response_lock:
            self._response = response
        if response is not None and self._stop.is_set():
            self._interrupt()  # close() ran while we were connecting

    def _interrupt(self) -> None:
        """Wake the reader blocked in a socket read (called from any thread)."""
        with self._response_lock:
            response, waiting = self._response, self._waiting
        if response is None:
            if waiting is not None:
                # No response yet: the request waits for its headers on this socket.
                with contextlib.suppress(OSError):  # closed meanwhile
                    waiting.shutdown(socket.SHUT_RDWR)
            return
        try:
            response.raw.shutdown()  # urllib3 >= 2.3: the blocked recv() returns at once
        except (AttributeError, ValueError, RuntimeError, OSError):
            try:
                response.close()  # older urllib3: closing is the next best thing
            except Exception:  # whatever the dying connection raises
                log.debug("closing the live response raised", exc_info=True)

    def _failed_over(self, cause: BaseException, retry_after: float | None = None) -> NoReturn:
        """Give up on this connection; the next one goes to the next server URL."""
        self._health.error(cause)
        log.info("live tail of %r: %s", self.stream_id, cause)
        self._url_index += 1
        raise _ReconnectError(cause, retry_after)

    def _read(self, response: requests.Response, url: str) -> None:
        self._check_answer(response, url)
        self._learn_heartbeat(response)
        self._health.move(ConnectionState.OPEN)
        self._connection_open(url)
        opened = self._clock()
        progressed = False
        events = EventStream(
            self._observe(iter_chunks(response)),
            max_event_bytes=self._max_event_bytes,
        )
        cause: BaseException
        try:
            for event in events:
                if self._apply(event):
                    progressed = True
            cause = TransportError(f"the server closed the live stream ({url})")
        except ProtocolError as exc:
            cause = exc
        except _CONNECTION_ERRORS as exc:
            self._check_stop()  # the dying read after close() is not news
            cause = TransportError(f"the live stream from {url} broke: {exc}")
        finally:
            self._flush()  # what was applied is delivered, whatever ended the connection
            if events.retry_ms is not None:
                self._server_retry = events.retry_ms / 1000
        self._check_stop()
        self._connection_lost(cause, url)
        if progressed or self._clock() - opened >= self._healthy_after:
            self._health.error(cause)
            log.info("live tail of %r: %s; resuming", self.stream_id, cause)
            return
        self._failed_over(cause)

    def _check_answer(self, response: requests.Response, url: str) -> None:
        """Return if ``response`` opens an event stream; else raise to retry or stop."""
        status = response.status_code
        if status == 204:
            raise _ServerEndedError
        if status in RETRYABLE_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            try:
                raise_for_response(response, stream_id=self.stream_id)
            except RStreamError as exc:
                self._failed_over(exc, retry_after)
            self._failed_over(ServerError(f"GET {url} answered {status}", status=status))
        if status >= 400:
            if status == 401:
                response.content  # noqa: B018 (read the error body for the message)
            raise_for_response(response, stream_id=self.stream_id)  # fatal: 401/403/404/4xx
        content_type = response.headers.get("Content-Type", "")
        if status != 200 or not content_type.startswith("text/event-stream"):
            self._failed_over(
                ProtocolError(
                    f"GET {url} answered {status} {content_type or 'without a Content-Type'}, "
                    "not an event stream; is this an rstream v1 server?"
                )
            )

    def _learn_heartbeat(self, response: requests.Response) -> None:
        value = response.headers.get("RStream-Heartbeat")
        try:
            heartbeat = float(value) if value is not None else None
        except ValueError:
            heartbeat = None
        if heartbeat is None or not 0 < heartbeat < 86_400:
            return
        self._server_heartbeat = heartbeat
        if self._heartbeat_timeout is not None:
            return
        # The first request did not know the heartbeat: tighten this socket's timeout now.
        sock = getattr(getattr(response.raw, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(heartbeat * HEARTBEAT_FACTOR)

    def _observe(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The chunks, with the changes of the last chunk appended to the log before
        the next read."""
        data = self._health.data
        chunks = iter(chunks)
        while True:
            self._flush()  # deliver what the last chunk gave before blocking on the socket
            chunk = next(chunks, None)
            if chunk is None:
                return
            data()
            yield chunk

    def _apply(self, event: SSEEvent) -> bool:
        """Apply one event; its state is delivered at the next flush. True when it
        changed the live state."""
        with self._lock:
            change, committed, gap, applied = self._state.feed(event.event, event.data, event.id)
        if gap is not None:
            log.warning("stream %r: %s", self.stream_id, gap)
            self._notice(gap)
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


def _callback_name(callback: object) -> str:
    """A short name for a subscriber's callback (for health and log records)."""
    name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    return f"subscribe({name})"
