"""What a connection or a refused request may leave behind: connection cap and
timeouts, per-stream state, and repeated log messages."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from starlette.applications import Starlette
from starlette.types import Message

from rstream.server import Limits, ServerThread, create_app
from rstream.server.connections import ConnectionLimits, connection_cap
from rstream.server.logs import RepeatFilter
from rstream.server.storage import MemoryStorage
from tests.serverutil import ServerProcess

MiB = 1024 * 1024


@contextlib.contextmanager
def guarded_server(**limits: float) -> Iterator[ServerThread]:
    with contextlib.closing(MemoryStorage()) as store:
        server = ServerThread(create_app(store), connections=ConnectionLimits(**limits))  # type: ignore[arg-type]
        with server.start():
            yield server


def connect(server: ServerThread) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (10 s at most)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


# -- per-stream state ------------------------------------------------------------------


async def post(app: Starlette, path: str, body: bytes) -> int:
    """POST ``body`` to ``path`` of the ASGI ``app`` in this loop; the status."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body))],
    }  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_refused_posts_to_unknown_streams_leave_nothing_behind() -> None:
    # An empty batch to a stream that does not exist is refused (404) after
    # the server looked for the stream, where a per-stream lock used to be
    # made and kept. The app is called in-process: 10,000 requests over HTTP
    # would take the suite 15 s; the handler and its locking are the same.
    async def refuse(app: Starlette, first: int, count: int) -> set[int]:
        return {await post(app, f"/v1/streams/unknown-{i}/entries", b"[]")
                for i in range(first, first + count)}  # fmt: skip

    with contextlib.closing(MemoryStorage()) as store:
        app = create_app(store)
        assert asyncio.run(refuse(app, 0, 500)) == {404}  # warm up caches and pools
        gc.collect()
        before = sys.getallocatedblocks()
        assert asyncio.run(refuse(app, 500, 10_000)) == {404}
        gc.collect()
        grown = sys.getallocatedblocks() - before
        assert store.list_streams() == []
    # A leftover lock, its id and its dict slot are two blocks: 20,000 for 10,000.
    assert grown < 2_000, f"{grown} memory blocks kept after 10,000 refused writes"


# -- connections -----------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed() -> None:
    with guarded_server(idle_timeout=0.3) as server, connect(server) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started >= 0.25


def test_a_kept_alive_connection_is_closed_when_idle() -> None:
    with guarded_server(idle_timeout=0.3) as server, connect(server) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.endswith(b'{"status":"ok"}')


def trickle(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` a byte every 50 ms until the server answers; the answer."""
    for byte in data:
        sock.sendall(bytes([byte]))
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            return read_until_closed(sock)
    raise AssertionError("the server waited for the whole trickled request")


def test_a_trickled_request_head_is_answered_408() -> None:
    head = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 2000
    with guarded_server(idle_timeout=0.2, request_timeout=0.5) as server, connect(server) as sock:
        started = time.monotonic()
        answer = trickle(sock, head)
        assert time.monotonic() - started >= 0.45
    assert answer.startswith(b"HTTP/1.1 408 ")
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body == {
        "error": {"code": "request_timeout", "message": "the request did not arrive in time"}
    }


def test_a_trickled_request_body_is_answered_408() -> None:
    head = (
        b"POST /v1/streams/s/state HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )
    with guarded_server(request_timeout=0.5) as server, connect(server) as sock:
        sock.sendall(head)
        answer = trickle(sock, b'{"state": {"a": "' + b"x" * 4000)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert server.app.state.storage.list_streams() == []


def test_over_the_cap_the_longest_idle_connection_makes_room() -> None:
    # An idle timeout of a minute: only the cap can close a connection here.
    with guarded_server(max_connections=10, idle_timeout=60) as server, \
            contextlib.ExitStack() as stack:  # fmt: skip
        idle = [stack.enter_context(connect(server)) for _ in range(30)]
        with requests.Session() as http:
            for _ in range(3):
                assert http.get(f"{server.url}/v1/health", timeout=5).status_code == 200
        # The oldest were closed to make room, in the order they came.
        for sock in idle[:20]:
            assert read_until_closed(sock) == b""


def test_over_the_cap_with_every_connection_busy_a_new_one_gets_503() -> None:
    with guarded_server(max_connections=2) as server, contextlib.ExitStack() as stack:
        with requests.Session() as http:
            assert http.put(f"{server.url}/v1/streams/s").status_code == 201
        for _ in range(2):  # live tails: busy for as long as they last
            sock = stack.enter_context(connect(server))
            sock.sendall(b"GET /v1/streams/s/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.1 200 ")
        with connect(server) as extra:
            answer = read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1\r\n" in answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "unavailable"


def tcp_state(sock: socket.socket) -> int:
    """The kernel's state of a TCP socket (``tcpi_state``: 1 established, 7 closed)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def test_a_response_its_client_does_not_take_is_dropped() -> None:
    limits = Limits(page_bytes=64 * MiB)
    with contextlib.closing(MemoryStorage()) as store, requests.Session() as http:
        connections = ConnectionLimits(send_timeout=0.5)
        with ServerThread(create_app(store, limits=limits), connections=connections) as server:
            entries = f"{server.url}/v1/streams/s/entries"
            for i in range(12):  # a 10 MB page, more than the kernel buffers on the way
                snapshot = {"timestamp": f"2030-01-01T00:00:{i:02d}Z", "type": "snapshot",
                            "data": {"blob": f"{i:08d}" * 100_000}}  # fmt: skip
                assert http.post(entries, json=snapshot).ok
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", server.port))
                sock.sendall(b"GET /v1/streams/s/entries HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                waited = threading.Event()
                deadline = time.monotonic() + 10
                while tcp_state(sock) == 1 and time.monotonic() < deadline:
                    waited.wait(0.02)  # the server resets the connection once stalled
                assert tcp_state(sock) == 7  # closed by a reset: nothing more will come
                sock.settimeout(5)
                with pytest.raises(ConnectionResetError):
                    read_until_closed(sock)
            # The server goes on serving.
            assert http.get(f"{server.url}/v1/streams/s").json()["revision"] == 12


def limit_files() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_1100_idle_sockets_under_a_1024_file_limit(tmp_path: Path) -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1300:
        pytest.skip(f"this test opens 1,100 sockets; the open files limit is {soft}")
    db = f"sqlite:///{tmp_path / 'files.db'}"
    with ServerProcess(db, preexec_fn=limit_files) as server, contextlib.ExitStack() as stack:
        idle = [
            stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            for _ in range(1100)
        ]
        with requests.Session() as http:
            for i in range(20):
                r = http.post(
                    f"{server.url}/v1/streams/s/state", json={"state": {"i": i}}, timeout=5
                )
                assert r.status_code in (200, 201), r.text
                http.close()  # a new connection each time: each must find room
            assert http.get(f"{server.url}/v1/streams/s", timeout=5).json()["revision"] == 20
        # The server accepted every socket (the oldest were closed to make room).
        closed = sum(1 for sock in idle[:100] if read_until_closed(sock) == b"")
        assert closed == 100
        assert len(idle) == 1100
        log = server.log_text()
    assert "accepting at most 896 connections (open files limit: 1024)" in log
    assert "out of system resource" not in log
    assert len(log) < 20_000, log[-2000:]


@pytest.mark.parametrize(
    ("requested", "files", "cap"),
    [(None, 1024, 896), (100, 1024, 100), (5000, 1024, 896), (None, 70, 6), (None, 65, 1),
     (None, 100_000, 87_500), (None, None, 10_000), (7, None, 7)],
)  # fmt: skip
def test_connection_cap(requested: int | None, files: int | None, cap: int) -> None:
    assert connection_cap(requested, files) == cap


# -- repeated log messages -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeated_messages_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = logging.getLogger("rstream.server")
    detach = RepeatFilter(burst=2, period=10.0, clock=clock).attach()
    try:
        with caplog.at_level(logging.WARNING, logger="rstream.server"):
            for i in range(50):
                log.warning("accept failed on fd %d", i)
            log.warning("another message")
            clock.now = 9.9
            log.warning("accept failed on fd %d", 98)
            clock.now = 10.0
            log.warning("accept failed on fd %d", 99)
            log.warning("accept failed on fd %d", 100)
    finally:
        detach()
    assert [r.getMessage() for r in caplog.records] == [
        "accept failed on fd 0",
        "accept failed on fd 1",
        "another message",
        "accept failed on fd 99 (49 similar messages suppressed)",
        "accept failed on fd 100",
    ]
    assert log.filters == []


def test_the_filter_forgets_the_oldest_messages() -> None:
    repeat = RepeatFilter(burst=1, max_keys=2)

    def passes(msg: str) -> bool:
        return repeat.filter(logging.LogRecord("x", logging.INFO, "f", 1, msg, None, None))

    assert [passes(m) for m in ("a", "a", "b", "c", "a", "c")] == [
        True, False, True, True, True, False,
    ]  # fmt: skip
