"""Requests that another thread can interrupt while they wait for the response.

A blocked ``requests`` call can be interrupted by shutting down its socket, but
until the response's headers have arrived the caller has no response object,
and so no socket: a live tail connecting to a server that accepted the
connection and never answers could not be stopped by ``close()`` before its
read timeout (minutes for a long heartbeat). Here the connections of a
:class:`ObservableAdapter` announce their socket, just before they wait for the
response, to a callback that the sending thread installed with
:func:`observe_sockets`; the callback's owner can then ``shutdown()`` it from
any thread. Requests sent without a callback installed are unaffected.

It works for the connections the adapter makes itself (``http`` and
``https``); through a proxy (``requests``' proxy managers) nothing is
announced, and such a request is stopped by its read timeout as before.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import requests.adapters
import urllib3.connection
import urllib3.connectionpool

__all__ = ["ObservableAdapter", "observe_sockets"]

_local = threading.local()  # .callback: the sending thread's, or absent


@contextlib.contextmanager
def observe_sockets(callback: Callable[[socket.socket], None]) -> Iterator[None]:
    """Within the block, requests sent by this thread through an
    :class:`ObservableAdapter` call ``callback(sock)`` with their socket just
    before they wait for the response's headers."""
    previous = getattr(_local, "callback", None)
    _local.callback = callback
    try:
        yield
    finally:
        _local.callback = previous


def _announce(sock: socket.socket | None) -> None:
    callback = getattr(_local, "callback", None)
    if callback is not None and sock is not None:
        callback(sock)


class _ObservableHTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self) -> Any:  # the request is sent; waiting for the headers begins
        _announce(self.sock)
        return super().getresponse()


class _ObservableHTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self) -> Any:
        _announce(self.sock)
        return super().getresponse()


class _ObservableHTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _ObservableHTTPConnection


class _ObservableHTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _ObservableHTTPSConnection


class ObservableAdapter(requests.adapters.HTTPAdapter):
    """An ``HTTPAdapter`` whose connections announce their socket (see the module)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _ObservableHTTPConnectionPool,
            "https": _ObservableHTTPSConnectionPool,
        }
