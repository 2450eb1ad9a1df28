"""What one TCP connection may hold: a cap on connections under the process's
file limit, and deadlines for idle and half-sent connections.

uvicorn keeps a connection that never sends a request for ever, and accepts
connections until the process runs out of file descriptors (after which it
accepts nothing, and asyncio logs every failed ``accept()``). The HTTP/1.1
protocol built by :func:`guarded_protocol` adds, per connection:

- an *idle* deadline: a connection waiting for a request (just opened, or
  kept alive after a response) is closed after ``idle_timeout`` seconds
  without a byte;
- a *request* deadline: once the first byte of a request has arrived, its
  head and body must have arrived within ``request_timeout`` seconds (a
  client that trickles a request, slowloris-style, is answered 408 and
  closed);
- a *send* deadline: a response whose client takes no byte for
  ``send_timeout`` seconds while the server has bytes for it is dropped (the
  connection reset), so a client that never reads cannot pin a response in
  memory;
- a *cap*: past ``max_connections`` open connections, a new connection closes
  the connection that has waited longest for a request; when every
  connection is busy with a request (a live tail, say), the new one is
  answered 503 at once and closed.

Otherwise nothing is limited while the server handles a request or sends a
response: a live tail may stay open for days.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import h11

from rstream.errors import ConfigError
from rstream.server.errors import error_json
from rstream.server.http11 import JSONErrorsH11Protocol

__all__ = ["ConnectionLimits", "connection_cap", "file_limit", "guarded_protocol", "reset"]

logger = logging.getLogger("rstream.server")

# File descriptors kept out of the connection cap: the listening socket,
# storage files and pools, the event loop's own, logs, and the one accepted
# connection that is over the cap while it is being closed.
_MIN_RESERVE = 64


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection limits of a :class:`~rstream.server.ServerThread`.

    - ``max_connections``: open connections at most; ``None`` means as many as
      the file limit allows (:func:`connection_cap`).
    - ``idle_timeout``: seconds a connection may wait for a request.
    - ``request_timeout``: seconds from a request's first byte to its last.
    - ``send_timeout``: seconds a response may wait for its client to take data.
    """

    max_connections: int | None = None
    idle_timeout: float = 5.0
    request_timeout: float = 30.0
    send_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_connections is not None and (
            type(self.max_connections) is not int or self.max_connections < 1
        ):
            raise ConfigError(
                f"max_connections must be a positive int, not {self.max_connections!r}"
            )
        for name in ("idle_timeout", "request_timeout", "send_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")


def file_limit() -> int | None:
    """The process's soft limit of open files (``RLIMIT_NOFILE``), or None if unlimited/unknown."""
    try:
        import resource
    except ImportError:  # not on Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_cap(requested: int | None, files: int | None) -> int:
    """Connections to accept at most: ``requested``, but always under ``files``.

    An eighth of the file limit (at least 64) is left for everything else the
    process opens. ``requested=None`` takes all that remains; with no known
    file limit, ``requested`` or 10,000.
    """
    if files is None:
        return requested if requested is not None else 10_000
    room = max(1, files - max(_MIN_RESERVE, files // 8))
    return room if requested is None else min(requested, room)


def guarded_protocol(limits: ConnectionLimits, cap: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (``uvicorn.Config(http=...)``) with ``limits``
    and at most ``cap`` connections; see the module's docstring. One class per
    server: its connections are counted together."""
    return type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {
            "cap": cap,
            "idle_timeout": float(limits.idle_timeout),
            "request_timeout": float(limits.request_timeout),
            "send_timeout": float(limits.send_timeout),
            "waiting": {},
        },
    )


def _raw_error(status: int, reason: str, code: str, message: str) -> bytes:
    # Written before h11 has seen a request, so built by hand; the body is the
    # protocol's JSON error form.
    body = error_json(code, message)
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "cache-control: no-store\r\n"
        + ("retry-after: 1\r\n" if status == 503 else "")
        + "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_FULL = _raw_error(
    503,
    "Service Unavailable",
    "unavailable",
    "the server has too many open connections; retry later",
)
_SLOW = _raw_error(408, "Request Timeout", "request_timeout", "the request did not arrive in time")


class _GuardedH11Protocol(JSONErrorsH11Protocol):
    cap: ClassVar[int]
    idle_timeout: ClassVar[float]
    request_timeout: ClassVar[float]
    send_timeout: ClassVar[float]
    # The server's connections waiting for (the head of) a request, the one
    # that has waited longest first; a dict is an ordered set.
    waiting: ClassVar[dict[_GuardedH11Protocol, None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._stalled: asyncio.TimerHandle | None = None  # the send deadline
        self._receiving = False

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.cap and not self._evict_one():
            logger.warning(
                "%d connections open (the cap): refusing new connections with 503", self.cap
            )
            self._close(_FULL)
            return
        self._wait_for_request()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self.waiting.pop(self, None)
        self._unstall()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = self.loop.call_later(self.send_timeout, self._on_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._track()

    # -- deadlines -------------------------------------------------------------------

    def _track(self) -> None:
        """Arm the deadline that fits where the connection is now."""
        if self.transport.is_closing():
            return
        their = self.conn.their_state
        if their is h11.IDLE and not self.conn.trailing_data[0]:
            if self not in self.waiting or self._receiving:
                self._wait_for_request()
        elif their in (h11.IDLE, h11.SEND_BODY):
            if not self._receiving:  # the first byte of a request
                self._receiving = True
                self._set_deadline(self.request_timeout, self._on_slow_request)
            if their is h11.SEND_BODY:  # a request is being handled: never evicted
                self.waiting.pop(self, None)
        else:  # the request is in; the response may take as long as it needs
            self._receiving = False
            self.waiting.pop(self, None)
            self._cancel_deadline()

    def _wait_for_request(self) -> None:
        self._receiving = False
        self.waiting.pop(self, None)
        self.waiting[self] = None  # last in the line
        self._set_deadline(self.idle_timeout, self._on_idle)

    def _set_deadline(self, seconds: float, callback: Callable[[], None]) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(seconds, callback)

    def _cancel_deadline(self) -> None:
        self._deadline = _cancel(self._deadline)

    def _on_idle(self) -> None:
        self._deadline = None
        self._close(b"")

    def _unstall(self) -> None:
        self._stalled = _cancel(self._stalled)

    def _on_stalled(self) -> None:
        self._stalled = None
        logger.info("a client took no data for %g s: dropping its response", self.send_timeout)
        if self.cycle is not None:
            self.cycle.disconnected = True
        reset(self.transport)

    def _on_slow_request(self) -> None:
        self._deadline = None
        # A 408 only if no response has begun (the app may be reading the body).
        started = self.cycle is not None and self.cycle.response_started
        self._close(b"" if started else _SLOW)

    # -- the cap ---------------------------------------------------------------------

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a request; whether there was one."""
        oldest = next(iter(self.waiting), None)
        if oldest is None:
            return False
        logger.warning("%d connections open (the cap): closing the one idle longest", self.cap)
        oldest._close(b"")
        return True

    def _close(self, answer: bytes) -> None:
        self._cancel_deadline()
        self.waiting.pop(self, None)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's later sends go nowhere
        if answer:
            self.transport.write(answer)
        self.transport.close()
        # Out of the count now: the connection is gone as far as the cap goes.
        self.connections.discard(self)


def _cancel(timer: asyncio.TimerHandle | None) -> asyncio.TimerHandle | None:
    """Cancel ``timer`` if there is one; returns None, for the attribute that held it."""
    if timer is not None:
        timer.cancel()
    return None


def reset(transport: asyncio.Transport) -> None:
    """Drop a connection at once, with what is queued for the peer."""
    # Linger 0: the kernel drops what is queued for the peer and sends a
    # reset, instead of trickling megabytes to a client that does not read.
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
