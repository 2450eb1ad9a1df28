"""The live tail against a real server (uvicorn on a loopback port, or ``rstream serve``)."""

from __future__ import annotations

import contextlib
import gc
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import tenacity

import rstream
from rstream.client.client import Client
from rstream.client.health import ConnectionState
from rstream.client.live import LiveTail
from rstream.client.transport import Transport
from rstream.core.entry import Entry
from rstream.core.mutation import apply_mutation, build_mutation
from rstream.core.timestamps import format_rfc3339, from_micros, to_micros
from rstream.errors import ClientClosed, Gap, StreamNotFound
from rstream.server import ServerThread, create_app
from rstream.server.limits import Limits
from rstream.server.storage import MemoryStorage
from tests.serverutil import ServerProcess, running_app, running_server
from tests.threadutil import Collector

T0 = 1_714_564_800_000_000  # 2024-05-01T12:00:00Z, epoch micros
State = dict[str, Any]


class Writer:
    """Writes to a stream: states through the server's writer, or raw entries in batches."""

    def __init__(self, url: str, stream_id: str = "robot-1", *, change_ms: int = 0) -> None:
        self.url = f"{url}/v1/streams/{stream_id}"
        self.session = requests.Session()
        rate = {"keyframe_frequency": 3_600_000, "change_frequency": change_ms}
        self.session.put(self.url, json={"record_rate": rate}, timeout=5).raise_for_status()
        self.state: State | None = None

    def write(self, state: State, micros: int) -> dict[str, Any]:
        """POST one state at ``micros`` through the writer; its answer."""
        body = {"state": state, "timestamp": format_rfc3339(micros)}
        response = self.session.post(f"{self.url}/state", json=body, timeout=5)
        response.raise_for_status()
        self.state = state
        return response.json()  # type: ignore[no-any-return]

    def append(self, states: list[tuple[int, State]]) -> None:
        """Append states as raw entries in one request (a snapshot first on an empty stream)."""
        entries = []
        for micros, new in states:
            if self.state is None:
                entry = Entry(micros / 1e6, 0, new)
            else:
                entry = Entry(micros / 1e6, 1, build_mutation(self.state, new))
            entries.append(Entry.from_micros(micros, entry.kind, entry.data).to_json())
            self.state = new
        response = self.session.post(f"{self.url}/entries", json=entries, timeout=10)
        response.raise_for_status()

    def entries(self) -> list[Entry]:
        response = self.session.get(f"{self.url}/entries", timeout=5)
        response.raise_for_status()
        return [Entry.from_json(json.loads(line)) for line in response.text.splitlines()]

    def close(self) -> None:
        self.session.close()


def states(start: int, stop: int) -> list[tuple[int, State]]:
    return [(T0 + i * 1000, state(i)) for i in range(start, stop)]


def replay(entries: list[Entry]) -> list[tuple[int, State]]:
    """The state after each entry, computed with the core."""
    out: list[tuple[int, State]] = []
    state: State = {}
    for entry in entries:
        state = entry.data if entry.is_snapshot else apply_mutation(state, entry.data)
        out.append((entry.micros, state))
    return out


def state(i: int) -> State:
    return {"i": i, "battery": round(1 - i / 1000, 3), "pos": [i, -i], "tags": ["a"] * (i % 3)}


@pytest.fixture
def no_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # server threads end asynchronously after stop()
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra:
            break
        time.sleep(0.02)
    assert not extra, f"threads left running: {extra}"
    assert gc.isenabled()  # no GC pause of a reader thread left behind


def tail_for(url: str | list[str], **kwargs: Any) -> tuple[LiveTail, Transport]:
    transport = Transport(url, retry=tenacity.Retrying())
    kwargs.setdefault("wait", tenacity.wait_random_exponential(multiplier=0.05, max=0.5))
    return LiveTail(transport, "robot-1", **kwargs), transport


def test_subscribe_and_queue_get_current_state_then_changes(no_leaks: None) -> None:
    with running_server() as url:
        writer = Writer(url)
        for i in range(3):
            writer.write(state(i), T0 + i * 1000)
        tail, transport = tail_for(url)
        try:
            first = tail.states()
            # The current state once loaded: not a replay of the live window.
            assert first.get(timeout=10)[1] == state(2)
            assert first.empty()
            assert tail.latest(timeout=5)[1] == state(2)
            late = Collector()
            tail.subscribe(late.on_state, late.on_error)
            late.wait_for(lambda c: len(c.items) == 1)
            assert late.items == [(T0 + 2000, state(2))]  # the current state first
            later = tail.states()
            for i in range(3, 6):
                writer.write(state(i), T0 + i * 1000)
            late.wait_for(lambda c: len(c.items) == 4)
            expected = replay(writer.entries())
            assert late.items == expected[2:]
            assert [(to_micros(t), s) for t, s in (later.get(timeout=5) for _ in range(4))] == (
                expected[2:]
            )
            assert [(to_micros(t), s) for t, s in (first.get(timeout=5) for _ in range(3))] == (
                expected[3:]
            )
            health = tail.health
            assert health.state is ConnectionState.OPEN
            assert health.revision == 6
            assert health.reconnects == 0
            assert health.last_data_at is not None
            assert tail.live_window() == writer.entries()
        finally:
            tail.close()
            transport.close()
            writer.close()


def test_amends_are_delivered_as_replacements(no_leaks: None) -> None:
    with running_server() as url:
        writer = Writer(url, change_ms=60_000)  # writes within 60 s amend the newest mutation
        collector = Collector()
        tail, transport = tail_for(url)
        try:
            assert writer.write(state(0), T0)["action"] == "snapshot"
            tail.subscribe(collector.on_state)
            collector.wait_for(lambda c: len(c.items) == 1)
            assert writer.write(state(1), T0 + 1000)["action"] == "mutation"
            collector.wait_for(lambda c: len(c.items) == 2)
            # Each amend is waited for before the next: amends the server has
            # folded into one entry before the tail read them arrive as one (the
            # newest), so two written back to back may be delivered as one.
            assert writer.write(state(2), T0 + 2000)["action"] == "amend"
            collector.wait_for(lambda c: len(c.items) == 3)
            assert writer.write(state(3), T0 + 3000)["action"] == "amend"
            collector.wait_for(lambda c: len(c.items) == 4)
            assert collector.items == [
                (T0, state(0)),
                (T0 + 1000, state(1)),
                (T0 + 1000, state(2)),  # same timestamp: the mutation was replaced
                (T0 + 1000, state(3)),
            ]
            assert tail.live_window() == writer.entries()
            assert tail.revision == 4
        finally:
            tail.close()
            transport.close()
            writer.close()


def test_reset_when_the_resume_point_is_ahead_of_the_server(no_leaks: None) -> None:
    first = ServerThread(create_app(MemoryStorage(), heartbeat=0.2, retry_ms=50)).start()
    port = first.port
    collector = Collector()
    tail, transport = tail_for(first.url)
    second: ServerThread | None = None
    try:
        writer = Writer(first.url)
        for i in range(5):
            writer.write(state(i), T0 + i * 1000)
        writer.close()
        tail.subscribe(collector.on_state, collector.on_error)
        collector.wait_for(lambda c: len(c.items) == 1)  # the current state
        assert collector.items == [(T0 + 4000, state(4))]
        first.stop()
        # A fresh, empty store on the same port: revision 2 < the tail's 5.
        second = ServerThread(create_app(MemoryStorage(), heartbeat=0.2), port=port).start()
        writer = Writer(second.url)
        writer.write({"fresh": 0}, T0 + 100_000)
        writer.write({"fresh": 1}, T0 + 101_000)
        collector.wait_for(
            lambda c: len(c.items) == 3 and any(isinstance(e, Gap) for e in c.errors)
        )
        gaps = [e for e in collector.errors if isinstance(e, Gap)]
        assert len(gaps) == 1
        assert (gaps[0].after_rev, gaps[0].resumed_rev) == (5, 1)
        assert [s for _, s in collector.items[1:]] == [{"fresh": 0}, {"fresh": 1}]
        writer.write({"fresh": 2}, T0 + 102_000)
        collector.wait_for(lambda c: len(c.items) == 4)
        assert tail.revision == 3
        assert tail.health.reconnects >= 1
        writer.close()
    finally:
        tail.close()
        transport.close()
        first.stop()
        if second is not None:
            second.stop()


def test_server_killed_and_restarted_mid_tail_loses_and_repeats_nothing(
    tmp_path: Path, no_leaks: None
) -> None:
    db = f"sqlite:///{tmp_path / 'streams.db'}"
    with ServerProcess(db, args=("--heartbeat", "0.2")) as server:
        writer = Writer(server.url)
        collector = Collector()
        tail, transport = tail_for(server.url)
        try:
            writer.append(states(0, 20))
            tail.subscribe(collector.on_state, collector.on_error)
            collector.wait_for(lambda c: len(c.items) == 1)  # the current state
            server.kill()
            writer.close()
            server.start()  # same port, same file
            writer = Writer(server.url)
            writer.state = state(19)
            writer.append(states(20, 40))
            collector.wait_for(lambda c: len(c.items) == 21)
            assert collector.items == replay(writer.entries())[19:]
            assert not [e for e in collector.errors if isinstance(e, Gap)]
            assert tail.health.reconnects >= 1
        finally:
            tail.close()
            transport.close()
            writer.close()


def _dead_url() -> str:
    with socket.socket() as sock:  # a port nothing listens on (closed right away)
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_two_urls_with_one_dead(no_leaks: None) -> None:
    with running_server(heartbeat=0.2) as url:
        writer = Writer(url)
        for i in range(3):
            writer.write(state(i), T0 + i * 1000)
        tail, transport = tail_for([_dead_url(), url])
        try:
            q = tail.states()
            assert q.get(timeout=10)[1] == state(2)
            assert tail.health.url is not None
            assert tail.health.url.startswith(url)
        finally:
            tail.close()
            transport.close()
            writer.close()


def test_overflow_policies(no_leaks: None) -> None:
    with running_server() as url:
        writer = Writer(url)
        tail, transport = tail_for(url)
        try:
            writer.write(state(0), T0)
            latest = tail.states(overflow="latest")
            dropping = tail.states(maxsize=5, overflow="drop_oldest")
            blocking = tail.states(maxsize=2, overflow="block")
            assert tail.latest(timeout=5)[1] == state(0)  # loaded: what follows is news
            writer.append(states(1, 30))
            got_blocking = [blocking.get(timeout=10)[1] for _ in range(30)]
            assert got_blocking == [state(i) for i in range(30)]
            # The tail has delivered everything (the blocking consumer saw the last one).
            assert latest.get(timeout=5)[1] == state(29)
            assert latest.qsize() == 0
            assert latest.dropped == 29
            assert [dropping.get(timeout=5)[1] for _ in range(5)] == [
                state(i) for i in range(25, 30)
            ]
            assert dropping.dropped == 25
        finally:
            tail.close()
            transport.close()
            writer.close()


def test_blocking_consumer_slower_than_the_server_allows_resumes_without_loss(
    no_leaks: None,
) -> None:
    # A queue of one, read only after 4 MB of changes: the reader thread blocks (back-
    # pressure); the server may drop it as a slow subscriber, and it resumes by revision.
    limits = Limits(subscriber_events=20, subscriber_bytes=4096)
    with running_server(limits=limits, heartbeat=0.2) as url:
        writer = Writer(url)
        writer.write(state(0), T0)
        tail, transport = tail_for(url)
        try:
            q = tail.states(maxsize=1, overflow="block")
            assert q.get(timeout=10)[1] == state(0)
            # 4 MB of changes while the consumer reads nothing: more than the
            # socket buffers hold, so the server sees the subscriber fall behind.
            big = [(T0 + i * 1000, {**state(i), "blob": f"{i:08d}" * 1000}) for i in range(1, 501)]
            for start in range(0, 500, 100):
                writer.append(big[start : start + 100])
            got = [q.get(timeout=10) for _ in range(500)]
            assert [(to_micros(t), s) for t, s in got] == replay(writer.entries())[1:]
            with pytest.raises(rstream.Empty):
                q.get(timeout=0.05)  # nothing repeated
            # Whether the server dropped this reader (its slow-subscriber rule) depends on
            # how much the socket buffers absorb; either way nothing was lost or repeated.
        finally:
            tail.close()
            transport.close()
            writer.close()


def test_slow_and_raising_callbacks_do_not_stall_others(no_leaks: None) -> None:
    with running_server() as url:
        writer = Writer(url)
        writer.write(state(0), T0)
        tail, transport = tail_for(url)
        release = threading.Event()
        slow_seen: list[int] = []
        raised = Collector()

        def slow(ts: datetime, st: State) -> None:
            release.wait(10)  # stuck until the test lets it go
            slow_seen.append(st["i"])

        def raising(ts: datetime, st: State) -> None:
            st["i"] = "mine"  # each subscriber owns its copy
            raise ValueError(f"bad state {ts}")

        fast = Collector()
        try:
            tail.subscribe(slow)
            tail.subscribe(raising, raised.on_error)
            tail.subscribe(fast.on_state, fast.on_error)
            fast.wait_for(lambda c: len(c.items) == 1)  # loaded: what follows is news
            writer.append(states(1, 50))
            fast.wait_for(lambda c: len(c.items) == 50)
            assert [s for _, s in fast.items] == [state(i) for i in range(50)]
            raised.wait_for(lambda c: len(c.errors) == 50)
            assert len(slow_seen) == 0
            assert all(isinstance(e, ValueError) for e in raised.errors)
            release.set()
            deadline = time.monotonic() + 10
            while len(slow_seen) < 50 and time.monotonic() < deadline:
                time.sleep(0.01)  # nothing to wait on: the slow callback is user code
            assert slow_seen == list(range(50))
            assert not fast.errors
        finally:
            release.set()
            tail.close()
            transport.close()
            writer.close()


def test_close_mid_read_is_fast_and_leaves_no_threads(no_leaks: None) -> None:
    with running_server(heartbeat=15) as url:  # no byte for 15 s: the read is blocked
        writer = Writer(url)
        writer.write(state(0), T0)
        tail, transport = tail_for(url)
        collector = Collector()
        try:
            tail.subscribe(collector.on_state, collector.on_error)
            q = tail.states()
            blocked: queue.Queue[BaseException] = queue.Queue()

            def consumer() -> None:
                q.get()
                try:
                    q.get()
                except ClientClosed as exc:
                    blocked.put(exc)

            thread = threading.Thread(target=consumer)
            thread.start()
            collector.wait_for(lambda c: len(c.items) == 1)
            before = tail.health
            assert before.state is ConnectionState.OPEN
            started = time.perf_counter()
            tail.close()
            elapsed = time.perf_counter() - started
            assert elapsed < 0.1, f"close() took {elapsed:.3f} s"
            assert isinstance(blocked.get(timeout=2), ClientClosed)
            thread.join(2)
            after = tail.health
            assert after.state is ConnectionState.CLOSED
            assert not collector.errors  # the dying read is not reported
            with pytest.raises(ClientClosed):
                tail.latest()
            with pytest.raises(ClientClosed):
                tail.subscribe(collector.on_state)
            tail.close()  # idempotent
        finally:
            tail.close()
            transport.close()
            writer.close()


class SilentServer:
    """Accepts one connection, reads the request, and never answers it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.asked = threading.Event()  # the request has arrived
        self.hung_up = threading.Event()  # the client closed its side
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            self.asked.set()
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                while conn.recv(4096):
                    pass
            self.hung_up.set()

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()
        assert not self.thread.is_alive()


def test_close_while_the_server_has_not_answered_is_fast_and_leaves_no_threads(
    no_leaks: None,
) -> None:
    # No response object yet: close() shuts down the socket the request waits on.
    server = SilentServer()
    tail, transport = tail_for(server.url, heartbeat_timeout=60)
    try:
        q = tail.states()
        assert server.asked.wait(5)
        assert tail.health.state is ConnectionState.CONNECTING
        started = time.perf_counter()
        tail.close()
        elapsed = time.perf_counter() - started
        assert elapsed < 0.1, f"close() took {elapsed:.3f} s"
        assert tail._thread is not None
        assert not tail._thread.is_alive()
        assert server.hung_up.wait(5)
        with pytest.raises(ClientClosed):
            q.get(timeout=1)
    finally:
        tail.close()
        transport.close()
        server.close()


def test_through_the_client_api(no_leaks: None) -> None:
    with running_app(heartbeat=0.2) as server:
        writer = Writer(server.url)
        writer.write(state(0), T0)
        with Client(server.url) as client:
            robot = client.stream("robot-1")
            idle = robot.health
            assert idle.state is ConnectionState.IDLE
            collector = Collector()
            sub = robot.subscribe(collector.on_state, collector.on_error)
            q = robot.states(maxsize=10, overflow="latest")
            collector.wait_for(lambda c: len(c.items) == 1)
            robot.write_state(state(1))
            collector.wait_for(lambda c: len(c.items) == 2)
            assert collector.items[1][1] == state(1)
            assert robot.health.state is ConnectionState.OPEN
            sub.close()
            assert q.get(timeout=5)[1] in (state(0), state(1))
        # Client.close() closed the tail and its queue.
        with pytest.raises(ClientClosed):
            q.get(timeout=5)
        writer.close()


def test_following_again_after_the_tail_ended_starts_a_new_tail(no_leaks: None) -> None:
    # A tail that stopped by itself (here a 404: the stream did not exist yet)
    # does not make the stream unfollowable: the next subscriber starts afresh,
    # while the old queue keeps the error it was given.
    with running_app(heartbeat=0.2) as server, Client(server.url) as client:
        robot = client.stream("robot-1")
        early = robot.states()
        with pytest.raises(StreamNotFound):
            early.get(timeout=5)
        assert robot.health.state is ConnectionState.FAILED
        robot.write_state(state(0), from_micros(T0))
        assert robot.latest(timeout=5)[1] == state(0)  # over HTTP, not from the old tail
        late = robot.states()
        assert late.get(timeout=5)[1] == state(0)
        collector = Collector()
        robot.subscribe(collector.on_state, collector.on_error)
        robot.write_state(state(1), from_micros(T0 + 1))
        collector.wait_for(lambda c: len(c.items) == 2)
        assert [s for _, s in collector.items] == [state(0), state(1)]
        assert collector.errors == []
        with pytest.raises(StreamNotFound):
            early.get(timeout=5)
        health = robot.health  # read anew: the tail moved on since the assert above
        assert health.state is ConnectionState.OPEN
