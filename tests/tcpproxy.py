"""A small TCP proxy for fault injection: cut connections, stall them, count bytes.

One thread runs a selector loop over every connection (so ``close()`` has one
thread to join). Each accepted connection gets a *fate* from :attr:`TCPProxy.fate`,
decided when it is accepted:

``("pass", None)``
    forward everything (the default);
``("cut", n)``
    forward ``n`` bytes from the server, then close both sides (the client
    sees the stream end mid-response, wherever ``n`` falls);
``("stall", n)``
    forward ``n`` bytes from the server, then forward nothing more in either
    direction while keeping both sockets open: a half-open, silent
    connection, as after a network partition.

:meth:`TCPProxy.stall_all` and :meth:`TCPProxy.cut_all` act on the
connections open now. ``bytes_down`` counts bytes forwarded server -> client;
``cuts`` and ``stalls`` count the faults that happened.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Literal

__all__ = ["Fate", "TCPProxy", "random_faults"]

Fate = tuple[Literal["pass", "cut", "stall"], "int | None"]

_CHUNK = 65536


class _Pair:
    """One proxied connection: the client side and the upstream side."""

    __slots__ = ("budget", "client", "mode", "pending_down", "pending_up", "upstream")

    def __init__(self, client: socket.socket, upstream: socket.socket, fate: Fate) -> None:
        self.client = client
        self.upstream = upstream
        # "stalled" once the stall has happened (from a "stall" fate or stall_all()).
        self.mode: Literal["pass", "cut", "stall", "stalled"] = fate[0]
        self.budget = fate[1]
        self.pending_down = b""  # server -> client, not yet written
        self.pending_up = b""  # client -> server, not yet written


class TCPProxy:
    """Listen on a loopback port and forward to ``(host, port)``; see the module doc."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.fate: Callable[[], Fate] = lambda: ("pass", None)
        self.bytes_down = 0
        self.bytes_up = 0
        self.connections = 0
        self.cuts = 0  # connections cut by their fate
        self.stalls = 0  # connections stalled by their fate or stall_all()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._pairs: list[_Pair] = []
        self._commands: list[str] = []
        self._lock = threading.Lock()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="tcpproxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stall_all(self) -> None:
        """Stop forwarding on every open connection, keeping them open."""
        self._command("stall")

    def cut_all(self) -> None:
        """Close every open connection now."""
        self._command("cut")

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        """Close the listener and every connection; join the thread. Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._wake()
        self._thread.join(5)
        for pair in list(self._pairs):
            self._close_pair(pair)
        self._sel.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> TCPProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop -------------------------------------------------------------------

    def _command(self, name: str) -> None:
        with self._lock:
            self._commands.append(name)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _loop(self) -> None:
        while not self._closing:
            for key, _ in self._sel.select(1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    self._drain_wake()
                else:
                    self._pump(key.data, key.fileobj)  # type: ignore[arg-type]

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(4096)
        with self._lock:
            commands, self._commands = self._commands, []
        for command in commands:
            for pair in list(self._pairs):
                if command == "cut":
                    self._close_pair(pair)
                elif command == "stall":
                    self._stall(pair)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()  # the server is down: refuse the way a dead server would
            return
        client.setblocking(False)
        upstream.setblocking(False)
        pair = _Pair(client, upstream, self.fate())
        self.connections += 1
        with self._lock:
            self._pairs.append(pair)
        self._sel.register(client, selectors.EVENT_READ, pair)
        self._sel.register(upstream, selectors.EVENT_READ, pair)

    def _stall(self, pair: _Pair) -> None:
        if pair.mode == "stalled":
            return
        pair.mode = "stalled"
        self.stalls += 1
        for sock in (pair.client, pair.upstream):
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)

    def _pump(self, pair: _Pair, sock: socket.socket) -> None:
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_pair(pair)
            return
        if sock is pair.client:
            self.bytes_up += len(data)
            self._send(pair, pair.upstream, data)
            return
        if pair.mode in ("cut", "stall") and pair.budget is not None:
            allowed = data[: pair.budget]
            pair.budget -= len(allowed)
            self.bytes_down += len(allowed)
            self._send(pair, pair.client, allowed)
            if pair.budget <= 0:
                if pair.mode == "cut":
                    self.cuts += 1
                    self._close_pair(pair)
                else:
                    self._stall(pair)
            return
        self.bytes_down += len(data)
        self._send(pair, pair.client, data)

    def _send(self, pair: _Pair, sock: socket.socket, data: bytes) -> None:
        # Loopback sockets have large buffers; a short blocking send is fine here.
        sock.setblocking(True)
        sock.settimeout(5)
        try:
            sock.sendall(data)
        except OSError:
            self._close_pair(pair)
        finally:
            if sock.fileno() != -1:
                sock.setblocking(False)

    def _close_pair(self, pair: _Pair) -> None:
        for sock in (pair.client, pair.upstream):
            with contextlib.suppress(KeyError, ValueError, RuntimeError):
                self._sel.unregister(sock)
            with contextlib.suppress(OSError):
                sock.close()
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)


def random_faults(
    rng: random.Random, *, cut: float, stall: float, low: int, high: int
) -> Callable[[], Fate]:
    """A fate function: cut with probability ``cut``, stall with ``stall``, after a
    random number of bytes in ``[low, high]``; otherwise pass."""

    def fate() -> Fate:
        roll = rng.random()
        if roll < cut:
            return ("cut", rng.randint(low, high))
        if roll < cut + stall:
            return ("stall", rng.randint(low, high))
        return ("pass", None)

    return fate
