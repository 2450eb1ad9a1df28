"""The live tail (SSE) of the reference server, read with a plain SSE reader."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from rstream.server import Limits, ServerThread, create_app
from rstream.server.storage import MemoryStorage, Storage
from rstream.server.storage.memory import MemoryStreamLog
from tests.serverutil import SSEEvent, SSEReader, running_app
from tests.test_server_api import T0, iso, mut, snap
from tests.threadutil import wait_for


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def post(http: requests.Session, url: str, stream: str, entries: list[dict[str, Any]]) -> int:
    r = http.post(f"{url}/v1/streams/{stream}/entries", json=entries)
    assert r.ok, r.text
    rev: int = r.json()["revision"]
    return rev


def summary(events: list[SSEEvent]) -> list[tuple[str, str | None, Any]]:
    return [(e.event, e.id, json.loads(e.data)) for e in events]


def test_initial_window_then_new_entries(url: str, http: requests.Session) -> None:
    post(http, url, "s", [snap(T0, n=0), mut(T0 + 1, n=1), snap(T0 + 2, n=2), mut(T0 + 3, n=3)])
    with SSEReader(f"{url}/v1/streams/s/live") as reader:
        assert reader.status == 200
        assert reader.headers["Content-Type"].startswith("text/event-stream")
        assert reader.headers["RStream-Heartbeat"] == "15"
        assert reader.headers["Cache-Control"] == "no-store"
        first = reader.next()
        assert (first.event, first.retry) == ("retry", 1000)
        assert summary(reader.take(2)) == [
            ("entry", "3", {"timestamp": iso(T0 + 2), "type": 0, "data": {"n": 2}, "rev": 3}),
            ("entry", "4", {"timestamp": iso(T0 + 3), "type": 1, "data": {"n": 3}, "rev": 4}),
        ]
        post(http, url, "s", [mut(T0 + 4, n=4), snap(T0 + 5, n=5)])
        assert [(e.event, e.id) for e in reader.take(2)] == [("entry", "5"), ("entry", "6")]


def test_empty_stream_then_first_entry(url: str, http: requests.Session) -> None:
    http.put(f"{url}/v1/streams/e")
    with SSEReader(f"{url}/v1/streams/e/live", params={"heartbeat": "0.05"}) as reader:
        assert reader.next().event == "retry"
        assert reader.next(comments=True) == SSEEvent("comment", "ping")
        post(http, url, "e", [snap(T0, a=1)])
        assert summary(reader.take(1)) == [
            ("entry", "1", {"timestamp": iso(T0), "type": 0, "data": {"a": 1}, "rev": 1})
        ]


def test_amend_events(url: str, http: requests.Session) -> None:
    state = f"{url}/v1/streams/a/state"
    http.post(state, json={"state": {"x": 0}, "timestamp": T0})
    with SSEReader(f"{url}/v1/streams/a/live") as reader:
        assert reader.take(1)[0].id == "1"
        assert http.post(state, json={"state": {"x": 1}, "timestamp": T0 + 5}).json()["action"] == (
            "mutation"
        )
        assert (
            http.post(state, json={"state": {"x": 2}, "timestamp": T0 + 5.5}).json()["action"]
            == "amend"
        )
        events = reader.take(2)
        assert [(e.event, e.id) for e in events] == [("entry", "2"), ("amend", "3")]
        assert events[0].json()["timestamp"] == events[1].json()["timestamp"] == iso(T0 + 5)
        assert events[1].json()["data"] == {"x": 2}


def test_resume_exactly_after_a_revision(url: str, http: requests.Session) -> None:
    post(http, url, "r", [snap(T0, i=0)] + [mut(T0 + i, i=i) for i in range(1, 6)])
    live = f"{url}/v1/streams/r/live"
    with SSEReader(live, headers={"Last-Event-ID": "3"}) as reader:
        assert reader.next().event == "retry"
        assert [e.id for e in reader.take(3)] == ["4", "5", "6"]
    with SSEReader(live, params={"since": "5"}) as reader:
        assert [e.id for e in reader.take(1)] == ["6"]
        post(http, url, "r", [mut(T0 + 10, i=10)])
        assert [e.id for e in reader.take(1)] == ["7"]
    # The header wins over ?since.
    with SSEReader(live, params={"since": "1"}, headers={"Last-Event-ID": "6"}) as reader:
        assert [e.id for e in reader.take(1)] == ["7"]
    # Caught up: nothing until the next change.
    with SSEReader(live, params={"since": "7", "heartbeat": "0.05"}) as reader:
        assert reader.next().event == "retry"
        assert reader.next(comments=True).event == "comment"
        post(http, url, "r", [mut(T0 + 11, i=11)])
        assert [e.id for e in reader.take(1)] == ["8"]


@pytest.mark.parametrize(
    ("headers", "params"),
    [({"Last-Event-ID": "99"}, {}), ({}, {"since": "99"}), ({"Last-Event-ID": "abc"}, {}),
     ({"Last-Event-ID": "\u00b2"}, {})],  # "²": str.isdigit() says yes, int() says no
)  # fmt: skip
def test_reset_on_an_impossible_resume_point(
    url: str, http: requests.Session, headers: dict[str, str], params: dict[str, str]
) -> None:
    post(http, url, "x", [snap(T0, n=0), mut(T0 + 1, n=1), snap(T0 + 2, n=2)])
    with SSEReader(f"{url}/v1/streams/x/live", headers=headers, params=params) as reader:
        reset, window = reader.take(2)
        # An empty id clears a browser's last event ID (see docs/protocol.rst).
        assert (reset.event, reset.id) == ("reset", "")
        assert reset.json()["revision"] == 3
        assert isinstance(reset.json()["reason"], str)
        assert (window.event, window.id, window.json()["data"]) == ("entry", "3", {"n": 2})


def test_heartbeats_and_bad_parameters(url: str, http: requests.Session) -> None:
    http.put(f"{url}/v1/streams/h")
    with SSEReader(f"{url}/v1/streams/h/live", params={"heartbeat": "0.05"}) as reader:
        assert reader.headers["RStream-Heartbeat"] == "0.05"
        started = time.monotonic()
        pings = [reader.next(comments=True) for _ in range(4)][1:]
        assert all(p == SSEEvent("comment", "ping") for p in pings)
        # Three pings at the asked 0.05 s, not at the default 15 s (a bound far
        # from both, for a busy machine).
        assert time.monotonic() - started < 10
    for params in ({"heartbeat": "0.01"}, {"heartbeat": "301"}, {"heartbeat": "x"},
                   {"heartbeat": "nan"}, {"since": "-1"}, {"since": "x"},
                   {"since": "\u00b2"}):  # fmt: skip
        r = http.get(f"{url}/v1/streams/h/live", params=params)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "bad_request"
    r = http.get(f"{url}/v1/streams/nope/live")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "stream_not_found")


class _ThreadRecordingStorage(MemoryStorage):
    """Records the thread of every ``log()`` call (a database read in the SQL backends)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_threads: list[int] = []

    def log(self, stream_id: str) -> MemoryStreamLog:
        self.log_threads.append(threading.get_ident())
        return super().log(stream_id)


def test_live_asks_storage_for_the_log_off_the_event_loop(http: requests.Session) -> None:
    # SQL storages read the database in log(): on the event loop, that read
    # would stall every other live tail (for a connect timeout when PostgreSQL
    # is unreachable).
    storage = _ThreadRecordingStorage()
    with contextlib.closing(storage), running_app(storage) as server:
        post(http, server.url, "t", [snap(T0, n=0)])
        storage.log_threads.clear()
        with SSEReader(f"{server.url}/v1/streams/t/live") as reader:
            assert [e.event for e in reader.take(1)] == ["entry"]
        assert storage.log_threads
        loop_thread = server._thread.ident if server._thread is not None else None
        assert loop_thread not in storage.log_threads


def test_subscriber_limit(storage: Storage, http: requests.Session) -> None:
    with running_app(storage, limits=Limits(max_subscribers=1)) as server:
        url = server.url
        http.put(f"{url}/v1/streams/l")
        with SSEReader(f"{url}/v1/streams/l/live") as reader:
            assert reader.next().event == "retry"
            r = http.get(f"{url}/v1/streams/l/live")
            assert (r.status_code, r.json()["error"]["code"]) == (429, "too_many_subscribers")
            assert r.headers["Retry-After"]
        # The server notices the disconnect on its own; nothing to await from here.
        wait_for(lambda: server.app.state.hub.subscriber_count("l") == 0, timeout=30)
        with SSEReader(f"{url}/v1/streams/l/live") as reader:
            assert reader.status == 200


def test_stop_ends_live_responses(storage: Storage, http: requests.Session) -> None:
    # A live response never ends by itself: were stop() to leave it open, it
    # would wait out the graceful timeout (60 s here) before cancelling it.
    graceful = 60
    server = ServerThread(create_app(storage), graceful_timeout=graceful, stop_timeout=graceful)
    with server:
        http.put(f"{server.url}/v1/streams/z")
        with SSEReader(f"{server.url}/v1/streams/z/live") as reader:
            assert reader.next().event == "retry"
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < graceful / 4
            assert list(reader) == []  # the response ended cleanly


def test_slow_subscriber_is_disconnected_others_are_not(
    storage: Storage, http: requests.Session
) -> None:
    limits = Limits(subscriber_bytes=1024 * 1024, subscriber_events=10_000)
    n, size = 40, 100_000
    with running_app(storage, limits=limits) as server, socket.socket() as stuck:
        url = server.url
        host, port = url.removeprefix("http://").split(":")
        http.post(f"{url}/v1/streams/big/state", json={"state": {"blob": ""}, "timestamp": T0})
        # A reader that never reads: small receive buffer, request sent, then silence.
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect((host, int(port)))
        stuck.sendall(b"GET /v1/streams/big/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        # A reader that keeps up, in a thread.
        received: queue.Queue[str | None] = queue.Queue()
        with SSEReader(f"{url}/v1/streams/big/live") as good:
            assert good.take(1)[0].id == "1"

            def follow() -> None:
                try:
                    for event in good:
                        if event.event in ("entry", "amend"):
                            received.put(event.id)
                        if event.id == str(n + 1):
                            break
                except requests.RequestException:
                    pass
                received.put(None)

            reader_thread = threading.Thread(target=follow)
            reader_thread.start()
            try:
                # Each write waits until the good reader has its event, so only
                # the stuck reader falls behind, however busy the machine is.
                ids: list[str | None] = []
                for i in range(1, n + 1):
                    blob = f"{i:06d}" * (size // 6)
                    body = {"state": {"blob": blob}, "timestamp": T0 + 1.1 * i}
                    r = http.post(f"{url}/v1/streams/big/state", json=body)
                    assert r.json()["action"] == "mutation"
                    ids.append(received.get(timeout=30))
                assert ids == [str(rev) for rev in range(2, n + 2)]
            finally:
                reader_thread.join(10)
        assert not reader_thread.is_alive()
        assert server.app.state.hub.overflows == 1
        # The stuck connection was dropped: reading it now ends (EOF or reset)
        # well before the 4 MB written.
        stuck.settimeout(5)
        got = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := stuck.recv(65536):
                got += len(chunk)
        assert got < n * size // 2
