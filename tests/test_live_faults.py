"""Fault injection: the live tail through a proxy that cuts and stalls connections.

Whatever the faults, the states delivered must be exactly the server's log
replayed with the core: nothing lost, nothing repeated, in order.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import tenacity

from rstream.client.health import ConnectionState
from rstream.client.live import LiveTail
from rstream.client.transport import Transport
from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import apply_mutation, build_mutation
from rstream.errors import Disconnected, Reconnected
from tests.serverutil import running_server
from tests.tcpproxy import TCPProxy, random_faults
from tests.threadutil import Collector

T0 = 1_714_564_800_000_000
HEARTBEAT = 0.2
State = dict[str, Any]


class Feed:
    """Appends raw entries to a stream (a snapshot every ``window`` entries)."""

    def __init__(self, url: str, *, window: int = 40, stream_id: str = "robot-1") -> None:
        self.url = f"{url}/v1/streams/{stream_id}"
        self.session = requests.Session()
        self.window = window
        self.count = 0
        self.state: State = {}

    def append(self, n: int) -> None:
        entries = []
        for _ in range(n):
            i = self.count
            new = {"i": i, "pos": [i % 7, i % 5], "mode": ["idle", "run", "dock"][i % 3]}
            if i % self.window == 0:
                entry = Entry.from_micros(T0 + i * 1000, EntryKind.SNAPSHOT, new)
            else:
                entry = Entry.from_micros(
                    T0 + i * 1000, EntryKind.MUTATION, build_mutation(self.state, new)
                )
            entries.append(entry.to_json())
            self.state = new
            self.count += 1
        self.session.post(f"{self.url}/entries", json=entries, timeout=10).raise_for_status()

    def entries(self) -> list[Entry]:
        import json

        response = self.session.get(f"{self.url}/entries", timeout=10)
        response.raise_for_status()
        return [Entry.from_json(json.loads(line)) for line in response.text.splitlines()]

    def close(self) -> None:
        self.session.close()


def replay(entries: list[Entry]) -> list[tuple[int, State]]:
    out: list[tuple[int, State]] = []
    state: State = {}
    for entry in entries:
        state = entry.data if entry.is_snapshot else apply_mutation(state, entry.data)
        out.append((entry.micros, state))
    return out


def live_start(entries: list[Entry]) -> int:
    """Where the live window of ``entries`` begins: a fresh tail starts there."""
    return max(i for i, entry in enumerate(entries) if entry.is_snapshot)


def outages(errors: list[BaseException]) -> None:
    """The subscriber was told of each outage (Disconnected, then Reconnected), and
    of nothing else: no gap, no error."""
    assert errors, "the cuts were not reported"
    kinds = [type(error) for error in errors]
    assert kinds[::2] == [Disconnected] * len(kinds[::2]), kinds
    assert kinds[1::2] == [Reconnected] * len(kinds[1::2]), kinds


def windows(entries: list[Entry]) -> list[list[Entry]]:
    out: list[list[Entry]] = []
    for entry in entries:
        if entry.is_snapshot:
            out.append([])
        out[-1].append(entry)
    return out


@pytest.fixture
def server() -> Iterator[str]:
    with running_server(heartbeat=HEARTBEAT, retry_ms=100) as url:
        yield url


@pytest.fixture
def proxy(server: str) -> Iterator[TCPProxy]:
    host, port = server.removeprefix("http://").rsplit(":", 1)
    with TCPProxy(host, int(port)) as p:
        yield p


def follow(url: str, collector: Collector) -> tuple[LiveTail, Transport]:
    transport = Transport(url, retry=tenacity.Retrying())
    tail = LiveTail(
        transport,
        "robot-1",
        on_commit=collector.on_commit,
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=0.3),
    )
    tail.subscribe(collector.on_state, collector.on_error)
    return tail, transport


def test_random_cuts_deliver_the_servers_log_exactly(server: str, proxy: TCPProxy) -> None:
    feed = Feed(server)
    feed.append(130)
    start = live_start(feed.entries())  # 120: the tail starts with the live window
    current = feed.count - 1  # a subscriber's first state: the current one
    proxy.fate = random_faults(random.Random(7), cut=0.8, stall=0.0, low=60, high=3000)
    collector = Collector()
    tail, transport = follow(proxy.url, collector)
    try:
        collector.wait_for_count(1, timeout=10)  # loaded
        for _ in range(6):  # more entries while the tail is being cut
            feed.append(30)
        collector.wait_for_count(feed.count - current, timeout=15)
        entries = feed.entries()
        assert collector.items == replay(entries)[current:]
        assert collector.commits == windows(entries[start:])[:-1]
        assert tail.live_window() == windows(entries)[-1]
        assert proxy.cuts >= 5  # the faults did happen
        assert tail.health.reconnects == proxy.connections - 1
        outages(collector.errors)
    finally:
        tail.close()
        transport.close()
        feed.close()


# The stall test's own server: a heartbeat long enough that 2 heartbeats leave room
# for the reconnection after the read timeout of 1.5 heartbeats (the server's retry:
# floor, 0.1 s, the backoff's jitter, up to 0.05 s, a new connection). Measured: the
# state after the stall arrives 0.855-0.867 s after it with a 0.5 s heartbeat, idle
# or with 4 busy processes and another test run on 2 cores; 0.6 s leaves 0.2 s.
STALL_HEARTBEAT = 0.6
STALL_TIMEOUT = 1.5 * STALL_HEARTBEAT  # the client's heartbeat_timeout


def test_a_stalled_connection_is_detected_and_replaced_within_two_heartbeats() -> None:
    # The issue: "a stalled connection is detected and replaced within 2x the
    # heartbeat interval". Replaced here means the state written after the stall
    # has been delivered through the new connection.
    with running_server(heartbeat=STALL_HEARTBEAT, retry_ms=100) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with TCPProxy(host, int(port)) as proxy:
            feed = Feed(url)
            feed.append(5)
            collector = Collector()
            transport = Transport(proxy.url, retry=tenacity.Retrying())
            tail = LiveTail(
                transport,
                "robot-1",
                heartbeat_timeout=STALL_TIMEOUT,
                wait=tenacity.wait_random_exponential(multiplier=0.05, max=0.3),
            )
            tail.subscribe(collector.on_state, collector.on_error)
            try:
                collector.wait_for_count(1, timeout=5)  # the current state
                assert tail.health.state is ConnectionState.OPEN
                proxy.stall_all()  # silent, but open: only the read timeout can tell
                stalled_at = time.monotonic()
                feed.append(1)
                collector.wait_for_count(2, timeout=5)
                replaced_after = time.monotonic() - stalled_at
                assert replaced_after < 2 * STALL_HEARTBEAT, replaced_after
                # It was the read timeout: no byte for STALL_TIMEOUT, and the last
                # byte (a heartbeat at the latest) came at most one heartbeat before
                # the stall.
                assert replaced_after >= STALL_TIMEOUT - STALL_HEARTBEAT
                assert "timed out" in str(tail.health.last_error).lower()
                assert collector.items == replay(feed.entries())[4:]
                assert tail.health.reconnects == 1
                assert proxy.stalls == 1
            finally:
                tail.close()
                transport.close()
                feed.close()


def test_cuts_and_stalls_mid_event_lose_and_repeat_nothing(server: str, proxy: TCPProxy) -> None:
    feed = Feed(server, window=25)
    feed.append(60)
    start = live_start(feed.entries())
    current = feed.count - 1
    # Every connection fails one way or the other, somewhere in its first 3 KB.
    proxy.fate = random_faults(random.Random(11), cut=0.6, stall=0.4, low=80, high=3000)
    collector = Collector()
    tail, transport = follow(proxy.url, collector)
    try:
        collector.wait_for_count(1, timeout=10)
        for _ in range(20):
            # Small batches, each waited for: the server writes each as its own
            # HTTP chunk, so a connection's byte budget can let whole chunks through.
            feed.append(5)
            collector.wait_for_count(feed.count - current, timeout=10)
        entries = feed.entries()
        assert collector.items == replay(entries)[current:]
        assert collector.commits == windows(entries[start:])[:-1]
        assert proxy.cuts >= 2
        assert proxy.stalls >= 2
    finally:
        tail.close()
        transport.close()
        feed.close()
