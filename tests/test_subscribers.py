"""Subscribers are cursors over the client's copy of the stream (against a real server).

An unread ``"block"`` queue never slows the other subscribers; when it falls
out of the client's memory it catches up from the server, exactly once and in
order. Connection losses reach every subscriber as notices.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

import rstream
from rstream.client.client import Client
from rstream.core.entry import Entry
from rstream.core.mutation import apply_mutation
from rstream.core.timestamps import to_micros
from tests.serverutil import ServerProcess, running_server
from tests.threadutil import Collector, run_threads

State = dict[str, Any]
RATE = 200  # states per second
SECONDS = 3.0
CACHE = 100  # max_cached_entries: a fraction of what the unread queue falls behind


def server_log(url: str, stream_id: str) -> list[tuple[int, State]]:
    """``(micros, state)`` after each of the server's entries, replayed with the core."""
    response = requests.get(f"{url}/v1/streams/{stream_id}/entries", timeout=10)
    response.raise_for_status()
    out: list[tuple[int, State]] = []
    state: State = {}
    for line in response.text.splitlines():
        entry = Entry.from_json(json.loads(line))
        state = entry.data if entry.is_snapshot else apply_mutation(state, entry.data)
        out.append((entry.micros, state))
    return out


class Staleness:
    """How long after its write each state reached a consumer (the worst seen)."""

    def __init__(self, written: dict[int, float]) -> None:
        self.written = written
        self.worst = 0.0
        self.seen = 0
        self.late = 0  # more than 100 ms after its write

    def saw(self, state: State) -> None:
        sent = self.written.get(state["i"])
        if sent is not None:
            delay = time.monotonic() - sent
            self.worst = max(self.worst, delay)
            self.late += delay > 0.1
        self.seen += 1


def test_an_unread_queue_slows_nobody_and_catches_up_from_the_server_exactly_once() -> None:
    with running_server() as url, Client(url, max_cached_entries=CACHE) as client:
        robot = client.stream("robot")
        # Every write its own entry (no amends), so the server's log has each one.
        requests.put(
            f"{url}/v1/streams/robot",
            json={"record_rate": {"keyframe_frequency": 600_000, "change_frequency": 0}},
            timeout=5,
        ).raise_for_status()
        robot.write_state({"i": -1})
        unread = robot.states(maxsize=5)  # "block": never read while the stream moves
        assert robot.latest(timeout=10)[1] == {"i": -1}  # the tail is loaded
        written: dict[int, float] = {}
        by_callback = Staleness(written)
        by_queue = Staleness(written)
        robot.subscribe(lambda ts, state: by_callback.saw(state))
        latest = robot.states(overflow="latest")
        done = threading.Event()
        held: list[int] = []

        def write() -> None:
            count = int(RATE * SECONDS)
            started = time.monotonic()
            for i in range(count):
                time.sleep(max(started + i / RATE - time.monotonic(), 0.0))  # the writer's pace
                written[i] = time.monotonic()
                robot.write_state({"i": i, "payload": "x" * 50})
                held.append(robot._tail.changelog.held if robot._tail else 0)
            done.set()

        def read_latest() -> None:
            while not done.is_set():
                with contextlib.suppress(rstream.Empty):  # quiet for 0.5 s: look again
                    by_queue.saw(latest.get(timeout=0.5)[1])

        assert run_threads(write, read_latest, timeout=60) == []
        expected = server_log(url, "robot")
        last = expected[-1][1]["i"]
        assert last == int(RATE * SECONDS) - 1
        # The live consumers kept up with the writer the whole time: the feature is
        # 100 ms. The bounds leave room for a busy 2-core machine (measured: worst
        # 15 ms at a load of 7, 280 ms at a load of 10, when the scheduler stalls
        # the whole process); before subscribers were cursors, the unread queue
        # froze them for seconds.
        for consumer in (by_callback, by_queue):
            assert consumer.worst < 1.0, consumer.worst
            assert consumer.late <= consumer.seen // 10, (consumer.late, consumer.seen)
        assert max(held) <= CACHE  # memory held by the client's log: bounded
        assert unread.lag.entries == len(expected)  # its current state, then every change
        # The unread queue, drained: every change once, in order, equal to the
        # server's log, though most of it had left the client's memory.
        got = [(to_micros(ts), state) for ts, state in (unread.get(timeout=10) for _ in expected)]
        assert got == expected
        with pytest.raises(rstream.Empty):
            unread.get(timeout=0.2)
        lags = robot.health.subscribers
        assert [lag.overflow for lag in lags] == ["block", "block", "latest"]
        assert lags[0].entries == 0
        assert not lags[0].catching_up


def _dead_url() -> str:
    with socket.socket() as sock:  # a port nothing listens on (closed right away)
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_latest_with_a_subscription_and_no_server_fails_in_finite_time() -> None:
    with Client(_dead_url(), sleep=lambda seconds: None) as client:
        robot = client.stream("robot")
        robot.states()
        started = time.monotonic()
        with pytest.raises(rstream.Timeout, match="current state") as info:
            robot.latest(timeout=0.5)
        assert time.monotonic() - started < 5
        assert "robot" in str(info.value)


def test_connection_loss_is_a_notice_to_every_subscriber_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = f"sqlite:///{tmp_path / 'streams.db'}"
    with ServerProcess(db, args=("--heartbeat", "0.2")) as server:
        client = Client(server.url)
        try:
            robot = client.stream("robot")
            robot.write_state({"i": 0})
            first, second = Collector(), Collector()
            with caplog.at_level(logging.INFO, logger="rstream"):
                robot.subscribe(first.on_state, first.on_error)
                robot.subscribe(second.on_state, second.on_error)
                first.wait_for(lambda c: len(c.items) == 1)
                server.kill()
                server.start()  # same port, same file
                for collector in (first, second):
                    collector.wait_for(
                        lambda c: (
                            [type(e) for e in c.errors]
                            == [rstream.Disconnected, rstream.Reconnected]
                        )
                    )
                robot.write_state({"i": 1})
                first.wait_for(lambda c: len(c.items) == 2)
                second.wait_for(lambda c: len(c.items) == 2)
            lost, back = first.errors
            assert isinstance(lost, rstream.Disconnected)
            assert lost.cause is not None
            assert isinstance(back, rstream.Reconnected)
            assert back.downtime > 0
            assert [s for _, s in first.items] == [{"i": 0}, {"i": 1}]  # nothing stopped
            warnings = [
                r
                for r in caplog.records
                if r.levelno == logging.WARNING and "lost its connection" in r.getMessage()
            ]
            assert len(warnings) == 1  # one per outage, not one per subscriber or attempt
        finally:
            client.close()


def _noop(ts: datetime, state: State) -> None:
    pass


def test_subscribe_checks_the_callback_before_anything_is_started() -> None:
    with running_server() as url, Client(url) as client:
        robot = client.stream("robot")
        bad: Callable[..., Any] = lambda state: None  # noqa: E731
        with pytest.raises(TypeError, match=r"cannot be called as on_state\(ts, state\)"):
            robot.subscribe(bad)
        assert robot.health.state.name == "IDLE"  # nothing was started
        robot.subscribe(_noop).close()
