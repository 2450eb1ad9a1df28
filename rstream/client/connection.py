"""The live tail's connection to ``/live``: open it, read its events, reconnect.

:class:`LiveConnection` is the loop the live tail's reader thread runs. It reads
``GET /v1/streams/{id}/live`` (Server-Sent Events, ``docs/protocol.rst``) over a
streamed response from the transport's shared session, and hands each complete
event to its :class:`EventSink` (the :class:`~rstream.client.live.LiveTail`),
which applies it; it owns nothing of the stream's state.

Reconnecting (see ``docs/live.rst``):

* A clean close, a network error, a read timeout (no byte for
  ``heartbeat_timeout``: a dead or half-open connection), a 5xx, a 429, a
  malformed event: reconnect, resuming with ``Last-Event-ID`` = the revision of
  the last entry applied, on the next server URL when the connection failed.
* 204 ends the tail (:class:`ServerEndedError`); 401 (after asking a callable
  token once more), 403, 404 and other 4xx stop it with the error.
* The waits come from tenacity: the transport's retry template is copied with
  ``stop_never`` and full-jitter exponential backoff (0.5 s doubling, capped
  at 30 s), never below the server's ``retry:`` or ``Retry-After``. The
  backoff grows while connections fail or end without delivering anything,
  and starts over after a healthy connection (one that applied an event or
  stayed open ``healthy_after`` seconds).

When an open connection is lost, the sink is given a
:class:`~rstream.Disconnected` notice (and one warning is logged for the
outage); when a connection is open again, a :class:`~rstream.Reconnected`
notice with the downtime.

:meth:`LiveConnection.stop` interrupts the blocked read
(``HTTPResponse.shutdown()``), from any thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NoReturn, Protocol

import requests
import tenacity
import urllib3.exceptions

from rstream.client.health import ConnectionState, HealthTracker
from rstream.client.interrupt import observe_sockets
from rstream.client.retry import (
    RETRYABLE_STATUSES,
    parse_retry_after,
    reconnect_policy,
    reconnect_wait,
    retry_floor,
)
from rstream.client.sse import DEFAULT_MAX_EVENT_BYTES, EventStream, SSEEvent, iter_chunks
from rstream.client.transport import raise_for_response
from rstream.errors import (
    Disconnected,
    ProtocolError,
    Reconnected,
    RStreamError,
    ServerError,
    TransportError,
)

__all__ = [
    "DEFAULT_HEALTHY_AFTER",
    "HEARTBEAT_FACTOR",
    "EventSink",
    "LiveConnection",
    "LiveTransport",
    "ServerEndedError",
]

log = logging.getLogger("rstream.live")

HEARTBEAT_FACTOR = 2.5
"""The read timeout is this many heartbeat intervals (``RStream-Heartbeat``)."""
DEFAULT_HEALTHY_AFTER = 10.0
"""A connection open this long (seconds) counts as healthy even if the stream was quiet."""


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


class EventSink(Protocol):
    """What a connection feeds (the live tail), all on the reader thread."""

    def prepare(self) -> int | None:
        """Before each connection: the revision to resume after (None: afresh).
        May raise the errors of a request (TransportError, ServerError,
        ProtocolError): the connection then fails over."""
        ...

    def apply(self, event: SSEEvent) -> bool:
        """Apply one event; True when it changed the live state."""
        ...

    def flush(self) -> None:
        """Deliver what was applied (before each blocking read)."""
        ...

    def notice(self, notice: BaseException) -> None:
        """A notice for every subscriber, after the changes applied before it."""
        ...


class ServerEndedError(Exception):
    """The server answered 204: it wants this client to stop following."""


class _ReconnectError(Exception):
    """A connection ended without making progress; tenacity waits and tries again."""

    def __init__(self, cause: BaseException, retry_after: float | None = None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.retry_after = retry_after


class _StopError(Exception):
    """stop() was called (or the transport closed): leave quietly."""


# The errors of a dying or broken connection: all mean "reconnect".
_CONNECTION_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.HTTPError,
    OSError,
)


class LiveConnection:
    """The reader thread's connections to one stream's ``/live`` (see the module).

    :meth:`run` is the reader thread's loop; :meth:`stop` may be called from any
    thread. ``heartbeat_timeout`` is the read timeout that detects a dead
    connection (default: 2.5x the server's ``RStream-Heartbeat``, or the
    transport's read timeout until the server has told it). ``sleep`` replaces
    the interruptible backoff wait; ``wait`` replaces the backoff strategy;
    ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        transport: LiveTransport,
        path: str,
        sink: EventSink,
        health: HealthTracker,
        *,
        name: str,
        heartbeat_timeout: float | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        sleep: Callable[[float], None] | None = None,
        wait: tenacity.wait.WaitBaseT | None = None,
        healthy_after: float = DEFAULT_HEALTHY_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.stream_id = name
        self._path = path
        self._sink = sink
        self._health = health
        self._heartbeat_timeout = heartbeat_timeout
        self._max_event_bytes = max_event_bytes
        # time.sleep cannot be interrupted by stop(): use the stop event instead.
        self._user_sleep = None if sleep is time.sleep else sleep
        self._wait = wait if wait is not None else reconnect_wait()
        self._healthy_after = healthy_after
        self._clock = clock
        self._stop = threading.Event()
        self._response: requests.Response | None = None
        self._waiting: socket.socket | None = None  # a request's, before its response
        self._response_lock = threading.Lock()

        # Owned by the reader thread.
        self._url_index = getattr(transport, "current_index", 0)
        self._server_retry = 0.0  # the server's retry:, seconds
        self._server_heartbeat: float | None = None  # RStream-Heartbeat, seconds
        self._was_open = False  # a connection has been open: losing it is an outage
        self._down_since: float | None = None  # when the current outage began (clock)

    def run(self) -> None:
        """Connect, read, reconnect, until :meth:`stop` (then return). Raises
        :class:`ServerEndedError` on a 204, the public error that stops the tail
        (an :class:`~rstream.RStreamError`), or a bug's exception."""
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
        finally:
            self._set_response(None)

    def stop(self) -> None:
        """End :meth:`run`: interrupt the read or the wait (any thread; idempotent)."""
        self._stop.set()
        self._interrupt()

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
        try:
            resume = self._sink.prepare()
        except (TransportError, ServerError, ProtocolError) as exc:  # as the live GET's
            self._check_stop()
            self._failed_over(exc)
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
                if self._sink.apply(event):
                    progressed = True
            cause = TransportError(f"the server closed the live stream ({url})")
        except ProtocolError as exc:
            cause = exc
        except _CONNECTION_ERRORS as exc:
            self._check_stop()  # the dying read after close() is not news
            cause = TransportError(f"the live stream from {url} broke: {exc}")
        except AttributeError:
            # http.client reading a response that close() closed under it (the
            # fallback of _interrupt): the end of the tail, not a bug.
            self._check_stop()
            raise
        finally:
            self._sink.flush()  # what was applied is delivered, whatever ended the connection
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
            raise ServerEndedError
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
            self._sink.flush()  # deliver what the last chunk gave before blocking on the socket
            chunk = next(chunks, None)
            if chunk is None:
                return
            data()
            yield chunk

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
        self._sink.notice(
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
        self._sink.notice(
            Reconnected(
                f"the live tail of stream {self.stream_id!r} is connected again to {url} "
                f"after {downtime:.1f} s",
                url=url,
                downtime=downtime,
            )
        )

    # -- the reader thread --------------------------------------------------------
