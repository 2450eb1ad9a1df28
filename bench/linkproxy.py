"""A link-shaping TCP proxy for benchmarks: a slow network, in user space over loopback.

Every byte forwarded crosses a *link* with, per direction, a one-way delay
(half the round trip) and a bandwidth cap shared by every connection through
the proxy, as on one real link: a chunk read at ``t`` leaves the link once the
bytes queued before it have been sent at the capped rate, plus its own
serialization time, and arrives one delay later. Each connection's directions
keep their order; nothing is dropped or reordered.

Run it in its own process (:func:`running_link`), so that its threads do not
take the interpreter lock from the client being measured::

    with running_link("127.0.0.1", server_port, rtt=0.040, mbit=20) as link:
        ...  # talk to 127.0.0.1:link.port; link.cut_all() drops every connection

``python -m bench.linkproxy HOST PORT RTT_S MBIT`` listens on an ephemeral
loopback port and prints it; a line ``cut`` on stdin drops the connections open
(answered ``cut``); when stdin closes it prints the bytes that went each way
(``UP DOWN``) and exits.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Link", "LinkProcess", "running_link"]

_CHUNK = 16384


class _Direction:
    """One direction of the link: its delay, its rate, and when it is next free."""

    def __init__(self, delay: float, bytes_per_s: float) -> None:
        self.delay = delay
        self.bytes_per_s = bytes_per_s
        self.free_at = 0.0
        self.bytes = 0
        self._lock = threading.Lock()

    def arrival(self, size: int, now: float) -> float:
        """When ``size`` bytes handed to the link at ``now`` arrive at the far end."""
        with self._lock:
            start = max(now, self.free_at)
            self.free_at = start + size / self.bytes_per_s
            self.bytes += size
            return self.free_at + self.delay


class Link:
    """Forward connections from a loopback port to ``(host, port)`` through the link."""

    def __init__(self, host: str, port: int, *, rtt: float, mbit: float) -> None:
        self.target = (host, port)
        rate = mbit * 1e6 / 8
        self.up = _Direction(rtt / 2, rate)
        self.down = _Direction(rtt / 2, rate)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        self._start(self._accept)

    def _start(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            self._start(self._pump, client, upstream, self.up)
            self._start(self._pump, upstream, client, self.down)

    def _pump(self, source: socket.socket, sink: socket.socket, way: _Direction) -> None:
        """Read from ``source``; a writer thread delivers each chunk at its arrival time."""
        queue: collections.deque[tuple[float, bytes]] = collections.deque()
        ready = threading.Condition()

        def deliver() -> None:
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    arrival, chunk = queue.popleft()
                wait = arrival - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    if chunk:
                        sink.sendall(chunk)
                    else:
                        sink.shutdown(socket.SHUT_WR)
                        return
                except OSError:
                    return

        self._start(deliver)
        while True:
            try:
                chunk = source.recv(_CHUNK)
            except OSError:
                chunk = b""
            arrival = way.arrival(len(chunk), time.monotonic())
            with ready:
                queue.append((arrival, chunk))
                ready.notify()
            if not chunk:
                return

    def cut_all(self) -> None:
        """Drop every connection open now (both ends see it closed, as after a reset)."""
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@dataclass
class LinkProcess:
    """A :class:`Link` running in a subprocess (:func:`running_link`)."""

    proc: subprocess.Popen[str]
    port: int
    up: int = 0  # bytes forwarded client -> server, once the link has stopped
    down: int = 0  # bytes forwarded server -> client, once the link has stopped

    def cut_all(self) -> None:
        """Drop every connection open now; returns once they are dropped."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("cut\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer == "cut", answer


@contextlib.contextmanager
def running_link(host: str, port: int, *, rtt: float, mbit: float) -> Iterator[LinkProcess]:
    """A :class:`Link` to ``(host, port)`` in a subprocess, stopped on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.linkproxy", host, str(port), str(rtt), str(mbit)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    link = LinkProcess(proc, int(proc.stdout.readline()))
    try:
        yield link
    finally:
        proc.stdin.close()
        up, down = proc.stdout.readline().split()
        link.up, link.down = int(up), int(down)
        proc.wait(timeout=10)


def main(argv: list[str]) -> None:
    host, port, rtt, mbit = argv
    link = Link(host, int(port), rtt=float(rtt), mbit=float(mbit))
    print(link.port, flush=True)
    for line in sys.stdin:  # until the parent closes our stdin
        if line.strip() == "cut":
            link.cut_all()
            print("cut", flush=True)
    link.close()
    print(link.up.bytes, link.down.bytes, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
