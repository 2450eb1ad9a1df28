"""Requests that another thread can interrupt, whatever they are waiting for.

A blocked ``requests`` call can be interrupted by shutting down its socket, but
the caller has no socket to shut down: until the response's headers have
arrived it has no response object either. Here the connections of an
:class:`ObservableAdapter` announce their socket:

* to the adapter's ``on_socket`` callback, as soon as it is connected (before
  the request is sent), whichever thread sends it. An :class:`Interrupter`
  is such a callback: it holds the sockets of a session's connections, and
  :meth:`Interrupter.interrupt` shuts them all down, which wakes every thread
  sending a request, waiting for a response or reading a body on them. This
  is how :meth:`rstream.Client.close` stops every call of the client;
* to a callback that the sending thread installed with :func:`observe_sockets`,
  just before the request waits for the response's headers, so that one
  request (the live tail's) can be told apart and interrupted alone.

It works for the connections the adapter makes itself (``http`` and
``https``); through a proxy (``requests``' proxy managers) nothing is
announced, and such a request is stopped by its timeouts as before.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.poolmanager

__all__ = ["Interrupter", "ObservableAdapter", "observe_sockets", "shutdown"]

SocketCallback = Callable[[socket.socket], None]

_local = threading.local()  # .callback: the sending thread's, or absent


@contextlib.contextmanager
def observe_sockets(callback: SocketCallback) -> Iterator[None]:
    """Within the block, requests sent by this thread through an
    :class:`ObservableAdapter` call ``callback(sock)`` with their socket just
    before they wait for the response's headers."""
    previous = getattr(_local, "callback", None)
    _local.callback = callback
    try:
        yield
    finally:
        _local.callback = previous


def shutdown(sock: socket.socket) -> None:
    """Shut ``sock`` down both ways: a thread blocked on it wakes at once (any thread)."""
    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)


class Interrupter:
    """The sockets of a session's connections, shut down together by :meth:`interrupt`.

    Pass :meth:`add` as an :class:`ObservableAdapter`'s ``on_socket``. The
    sockets are held weakly: a connection that is closed and dropped leaves
    nothing behind. After :meth:`interrupt`, a socket added (a connection
    that was being made meanwhile) is shut down at once. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._interrupted = False

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def add(self, sock: socket.socket) -> None:
        """Hold ``sock`` (a connection of the session was just connected)."""
        with self._lock:
            self._sockets.add(sock)
            interrupted = self._interrupted
        if interrupted:
            shutdown(sock)

    def interrupt(self) -> None:
        """Shut down every socket held, now and from now on. Idempotent."""
        with self._lock:
            self._interrupted = True
            sockets = list(self._sockets)
        for sock in sockets:
            shutdown(sock)


def _announce(sock: socket.socket | None) -> None:
    callback = getattr(_local, "callback", None)
    if callback is not None and sock is not None:
        callback(sock)


class _ObservableHTTPConnection(urllib3.connection.HTTPConnection):
    on_socket: SocketCallback | None = None  # the adapter's, set by the pool

    def connect(self) -> None:
        super().connect()
        if self.on_socket is not None and self.sock is not None:
            self.on_socket(self.sock)

    def getresponse(self) -> Any:  # the request is sent; waiting for the headers begins
        _announce(self.sock)
        return super().getresponse()


# The MRO puts HTTPSConnection's connect() (TLS included) under the one above.
class _ObservableHTTPSConnection(_ObservableHTTPConnection, urllib3.connection.HTTPSConnection):
    pass


def _observed(conn: Any, on_socket: SocketCallback | None) -> Any:
    conn.on_socket = on_socket
    return conn


class _ObservableHTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _ObservableHTTPConnection
    on_socket: SocketCallback | None = None  # set by the pool manager

    def _new_conn(self) -> Any:
        return _observed(super()._new_conn(), self.on_socket)


class _ObservableHTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _ObservableHTTPSConnection
    on_socket: SocketCallback | None = None

    def _new_conn(self) -> Any:
        return _observed(super()._new_conn(), self.on_socket)


class _ObservablePoolManager(urllib3.poolmanager.PoolManager):
    def __init__(self, *args: Any, on_socket: SocketCallback | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_socket = on_socket
        self.pool_classes_by_scheme = {
            "http": _ObservableHTTPConnectionPool,
            "https": _ObservableHTTPSConnectionPool,
        }

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> Any:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.on_socket = self.on_socket  # type: ignore[attr-defined]
        return pool


class ObservableAdapter(requests.adapters.HTTPAdapter):
    """An ``HTTPAdapter`` whose connections announce their socket (see the module).

    ``on_socket(sock)`` is called with every connection's socket once it is
    connected, from the thread that connects it.
    """

    def __init__(self, *, on_socket: SocketCallback | None = None, **kwargs: Any) -> None:
        self._on_socket = on_socket  # before super().__init__, which makes the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _ObservablePoolManager(
            num_pools=connections,
            maxsize=maxsize,
            block=block,
            on_socket=self._on_socket,
            **pool_kwargs,
        )
