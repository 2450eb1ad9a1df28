"""Subscribers as cursors: an unread queue slows nobody, and catches up from the server.

A real ``rstream serve`` subprocess on a SQLite file; a writer posts 200 states
per second for 60 s (every write its own entry). The client keeps at most
2,000 entries in memory (``max_cached_entries``) and has three subscribers:

- a ``"block"`` queue that nobody reads during the run;
- a ``"latest"`` queue read in a loop, and a callback: the live consumers.

Printed: the live consumers' staleness (how long after its write each state
reached them: worst and 99th percentile; the target is 100 ms), the client's
RSS growth during the run against the size of what the cache limit allows,
the most the change log held, and, once the unread queue is drained, how many
of its states were re-fetched from the server and whether they equal the
server's log exactly (every change once, in order).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

import rstream
from rstream.client.client import Client
from rstream.client.queues import StateQueue
from rstream.client.stream import RemoteStream
from rstream.core.entry import Entry
from rstream.core.mutation import apply_mutation
from rstream.core.timestamps import to_micros
from tests.serverutil import ServerProcess

RATE = 200  # states per second
SECONDS = 60.0
CACHE = 2_000  # max_cached_entries
State = dict[str, Any]


def rss() -> int:
    """This process's resident memory, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def deep_size(value: object) -> int:
    """Bytes of a JSON value and everything in it (shared parts counted each time)."""
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(deep_size(k) + deep_size(v) for k, v in value.items())
    elif isinstance(value, list):
        size += sum(deep_size(v) for v in value)
    return size


def make_state(i: int) -> State:
    return {
        "i": i,
        "battery": round(1 - i / 100_000, 5),
        "pos": {"x": i * 0.01, "y": -i * 0.01, "heading": i % 360},
        "status": ["idle", "run", "dock"][i % 3],
        "log": f"tick {i}",
    }


def server_log(url: str, stream_id: str) -> list[tuple[int, State]]:
    out: list[tuple[int, State]] = []
    state: State = {}
    start: str | None = None
    with requests.Session() as session:
        while True:
            params = {"start": start} if start else {}
            response = session.get(f"{url}/v1/streams/{stream_id}/entries", params=params)
            response.raise_for_status()
            for line in response.text.splitlines():
                entry = Entry.from_json(json.loads(line))
                state = entry.data if entry.is_snapshot else apply_mutation(state, entry.data)
                out.append((entry.micros, state))
            start = response.headers.get("RStream-Next-Start")
            if not start:
                return out


class Staleness:
    """How long after its write each state reached a consumer: a histogram of 1 ms
    buckets, allocated up front so that measuring adds nothing to the RSS."""

    def __init__(self, written: list[float]) -> None:
        self.written = written
        self.buckets = [0] * 10_001  # the last one: 10 s or more
        self.worst = 0.0
        self.count = 0

    def saw(self, state: State) -> None:
        i = state["i"]
        if i < 0:
            return
        delay = time.monotonic() - self.written[i]
        self.worst = max(self.worst, delay)
        self.buckets[min(int(delay * 1000), 10_000)] += 1
        self.count += 1

    def summary(self) -> str:
        if not self.count:
            return "nothing received"
        cumulative = itertools.accumulate(self.buckets)
        p99 = next(ms for ms, seen in enumerate(cumulative) if seen >= self.count * 0.99)
        return f"worst {self.worst * 1000:6.1f} ms, p99 < {p99 + 1} ms ({self.count:,} states)"


def counting(
    fetch: Callable[[int], Iterator[Entry]], counter: list[int]
) -> Callable[[int], Iterator[Entry]]:
    def fetched(start: int) -> Iterator[Entry]:
        for entry in fetch(start):
            counter[0] += 1
            yield entry

    return fetched


class Run:
    """The writer and the live consumers of ``robot``, and what they measured."""

    def __init__(self, url: str, stream_id: str, robot: RemoteStream) -> None:
        self.url, self.stream_id, self.robot = url, stream_id, robot
        self.writer = requests.Session()
        self.count = int(RATE * SECONDS)
        self.written = [float("inf")] * self.count  # when each state was sent
        self.by_callback, self.by_queue = Staleness(self.written), Staleness(self.written)
        self.done = threading.Event()
        self.held = 0  # the most changes the change log held
        self.rss_before = self.rss_peak = 0

    def post(self, i: int) -> None:
        self.writer.post(
            f"{self.url}/v1/streams/{self.stream_id}/state",
            json={"state": make_state(i)},
            timeout=10,
        ).raise_for_status()

    def write(self) -> None:
        started = time.monotonic()
        for i in range(self.count):
            time.sleep(max(started + i / RATE - time.monotonic(), 0.0))
            self.written[i] = time.monotonic()
            self.post(i)
            if i % RATE == 0:
                tail = self.robot._tail
                if tail is not None:
                    self.held = max(self.held, tail.changelog.held)
                self.rss_peak = max(self.rss_peak, rss())
        self.done.set()

    def read_latest(self, latest: StateQueue) -> None:
        while not self.done.is_set():
            with contextlib.suppress(rstream.Empty):
                self.by_queue.saw(latest.get(timeout=0.5)[1])

    def run(self) -> float:
        """Write and consume for ``SECONDS``; the seconds it took."""
        self.robot.subscribe(lambda ts, state: self.by_callback.saw(state), lag_warning=None)
        latest = self.robot.states(overflow="latest", lag_warning=None)
        self.rss_before = self.rss_peak = rss()
        threads = [
            threading.Thread(target=self.write),
            threading.Thread(target=self.read_latest, args=(latest,)),
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.monotonic() - started


def drain(unread: StateQueue, expected: list[tuple[int, State]]) -> tuple[float, bool]:
    """Read ``unread`` to its end: the seconds it took, and whether it gave
    exactly ``expected`` (every change once, in order, nothing more)."""
    started = time.monotonic()
    got = [(to_micros(ts), state) for ts, state in (unread.get(timeout=30) for _ in expected)]
    seconds = time.monotonic() - started
    try:
        unread.get(timeout=0.5)
    except rstream.Empty:
        return seconds, got == expected
    return seconds, False


def main() -> None:
    stream_id = "catchup"
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        with ServerProcess(db) as server, Client(server.url, max_cached_entries=CACHE) as client:
            robot = client.stream(stream_id)
            run = Run(server.url, stream_id, robot)
            run.writer.put(
                f"{server.url}/v1/streams/{stream_id}",
                json={"record_rate": {"keyframe_frequency": 60_000, "change_frequency": 0}},
                timeout=10,
            ).raise_for_status()
            run.post(-1)
            refetched = [0]
            robot._entries_from = counting(robot._entries_from, refetched)  # type: ignore[method-assign,assignment]
            unread = robot.states()  # "block", never read during the run
            robot.latest(timeout=10)
            elapsed = run.run()
            rss_after = rss()
            lag = unread.lag
            expected = server_log(server.url, stream_id)
            drain_seconds, exact = drain(unread, expected)
            run.writer.close()
        per_state = sum(deep_size(s) for _, s in expected[-1000:]) / 1000
        limit_bytes = CACHE * per_state
        growth = max(rss_after, run.rss_peak) - run.rss_before
        print(
            f"a  {len(expected) - 1:,} states written at {RATE}/s in {elapsed:.1f} s; "
            f"max_cached_entries={CACHE:,}\n"
            f"   live consumers' staleness (write to receipt; target 100 ms):\n"
            f"     callback       {run.by_callback.summary()}\n"
            f"     latest queue   {run.by_queue.summary()}\n"
            f"   the unread 'block' queue at the end: {lag.entries:,} states, "
            f"{lag.seconds:.1f} s behind\n"
            f"   change log held at most {run.held:,} changes in memory\n"
            f"   client RSS growth during the run {growth / 2**20:.1f} MiB (peak); "
            f"the cache limit's size: {CACHE:,} states x {per_state:.0f} B = "
            f"{limit_bytes / 2**20:.1f} MiB (ratio {growth / limit_bytes:.2f}; the change "
            f"log's states and the live window's entries share the limit, half each)\n"
            f"b  drained in {drain_seconds:.2f} s: {len(expected):,} states, "
            f"{refetched[0]:,} entries re-fetched from the server; "
            f"equal to the server's log, once, in order: {exact}"
        )


if __name__ == "__main__":
    main()
