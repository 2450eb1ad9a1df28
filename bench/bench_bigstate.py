"""Real-sized states, live: a device state of a few hundred fields, as fast as the server sends it.

A real ``rstream serve`` subprocess on SQLite holds one live window: the device
state of ``bench mutation`` (690 leaf fields, 100 tasks), then ``COUNT``
mutations that each change 1-5% of its leaves (a cycle of ``STEPS`` generated
steps). A live tail subscribed before it loads receives the whole window at the
server's pace and applies every mutation. Measured, each with private copies
(the default) and with ``copy=False`` (shared, read-only states):

- a callback subscriber: states per second delivered, and the CPU per state of
  the tail's reader thread (SSE, entries, apply) and of the dispatcher thread
  (the subscriber's copy, the call); also with the plain walk that
  :func:`~rstream.core.jsontype.copy_json` used before its fast paths
  (:func:`~rstream.core.jsontype.copy_walk`), in the same run;
- an ``overflow="latest"`` queue read by a thread as fast as it can: states
  per second the tail applied (the queue skips what its reader had no time
  for), states the reader got, and the reader's CPU per state it got.

The targets: with private copies, 1.5x the figure before this work (a
callback subscriber, copies on: reader 111-114 us + dispatcher 93-94 us of CPU
per state on this machine, 4,850 states/s by CPU, 1,900-3,400 by the wall
clock); without copies, 20,000 states/s.
The reader and the dispatcher share the interpreter lock, so states/s is about
one over the sum of their CPU per state: that figure ("by CPU") is printed
beside the wall-clock one, which on a shared machine varies by half.
"""

from __future__ import annotations

import gc
import itertools
import json
import random
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import requests

from bench.bench_live import thread_cpu
from bench.bench_mutation import SEED, make_state, step
from rstream.client.live import LiveTail
from rstream.client.subscription import Subscription
from rstream.client.transport import Transport
from rstream.core.entry import Entry, EntryKind
from rstream.core.jsontype import copy_json, copy_walk
from rstream.core.mutation import build_mutation
from rstream.core.timestamps import from_micros
from rstream.errors import ClientClosed
from tests.serverutil import ServerProcess

T0 = 1_700_000_000
STEPS = 200
COUNT = 20_000
BATCH = 2_000
ROUNDS = 3
BEFORE = 4_850  # callback, private copies, states/s by CPU: this bench before this work
LAST_TS = from_micros(Entry(T0 + (COUNT - 1) / 1000, EntryKind.MUTATION, {}).micros)


def fill(url: str, stream_id: str) -> dict[str, Any]:
    """One live window: the state, then COUNT - 1 mutations; the last state."""
    rng = random.Random(SEED)
    states = [make_state(rng)]
    for i in range(STEPS):
        states.append(step(rng, states[-1], 1000 + i))
    states[-1] = states[0]  # a cycle: the last step leads back to the first state
    mutations = [json.dumps(build_mutation(a, b)) for a, b in itertools.pairwise(states)]
    snapshot = Entry(T0, EntryKind.SNAPSHOT, states[0]).to_json()
    lines = [json.dumps(snapshot)]
    for i in range(1, COUNT):
        stamp = json.dumps(Entry(T0 + i / 1000, EntryKind.MUTATION, {}).to_json())
        lines.append(stamp.replace('"data": {}', f'"data": {mutations[(i - 1) % STEPS]}'))
    with requests.Session() as session:
        for first in range(0, COUNT, BATCH):
            response = session.post(
                f"{url}/v1/streams/{stream_id}/entries",
                data="\n".join(lines[first : first + BATCH]).encode() + b"\n",
                headers={"Content-Type": "application/x-ndjson"},
                timeout=120,
            )
            response.raise_for_status()
    return states[(COUNT - 1) % STEPS]


class Rate(NamedTuple):
    per_second: float  # states the tail applied per second
    delivered: int  # states the consumer got
    reader_cpu: float  # CPU seconds per state of the tail's reader thread
    consumer_cpu: float  # CPU seconds per delivered state of the consumer's thread


def callback_rate(
    url: str, stream_id: str, last: dict[str, Any], *, copy: Callable[[Any], Any]
) -> Rate:
    """A callback subscriber on a fresh tail, until it gets the window's last state;
    ``copy`` makes what it is handed (``copy_json``, ``copy_walk``, or none)."""
    done = threading.Event()
    seen = 0
    consumer_cpu = 0.0

    def on_state(ts: datetime, state: dict[str, Any]) -> None:
        nonlocal seen, consumer_cpu
        seen += 1
        if ts == LAST_TS and state == last:
            consumer_cpu = time.thread_time()  # the dispatcher's, started with the tail
            done.set()

    with Transport(url) as transport:
        tail = LiveTail(transport, stream_id)
        subscription = Subscription(
            tail.changelog.reader("block", 10_000, name="bench", lag_warning=None),
            on_state,
            copy=copy,
        )
        try:
            gc.collect()
            started = time.perf_counter()
            subscription.start()
            tail.start()
            reader = tail._thread
            assert reader is not None
            if not done.wait(300):
                raise RuntimeError(f"the tail delivered {seen} of {COUNT} states")
            elapsed = time.perf_counter() - started
            return Rate(COUNT / elapsed, seen, thread_cpu(reader) / COUNT, consumer_cpu / seen)
        finally:
            subscription.close()
            tail.close()


def latest_rate(url: str, stream_id: str, last: dict[str, Any], *, copy: bool) -> Rate:
    """An ``overflow="latest"`` queue read by a thread as fast as it can."""
    got = 0
    consumer_cpu = 0.0
    done = threading.Event()

    def consume() -> None:
        nonlocal got, consumer_cpu
        try:
            for ts, state in states:
                got += 1
                if ts == LAST_TS and state == last:
                    break
        except ClientClosed:
            pass
        consumer_cpu = time.thread_time()
        done.set()

    with Transport(url) as transport:
        tail = LiveTail(transport, stream_id)
        try:
            gc.collect()
            started = time.perf_counter()
            states = tail.states(maxsize=1, overflow="latest", copy=copy)
            consumer = threading.Thread(target=consume)
            consumer.start()
            reader = tail._thread
            assert reader is not None
            finished = done.wait(300)
            elapsed = time.perf_counter() - started
            reader_cpu = thread_cpu(reader)
            states.close()
            consumer.join()
            if not finished:
                raise RuntimeError(f"the queue never got the window's last state ({got} got)")
            return Rate(COUNT / elapsed, got, reader_cpu / COUNT, consumer_cpu / max(got, 1))
        finally:
            tail.close()


def by_cpu(rate: Rate) -> float:
    """States per second if the two threads' CPU were all it took (they share the GIL)."""
    return 1 / (rate.reader_cpu + rate.consumer_cpu)


def show(label: str, rates: list[Rate], target: str) -> Rate:
    best = min(rates, key=lambda r: r.reader_cpu + r.consumer_cpu)
    runs = ", ".join(f"{r.per_second:,.0f}" for r in rates)
    print(
        f"   {label:<30} {by_cpu(best):7,.0f} states/s by CPU"
        f" (reader {best.reader_cpu * 1e6:5.1f} us + consumer {best.consumer_cpu * 1e6:5.1f} us"
        f" per state; wall: {max(r.per_second for r in rates):,.0f}, runs {runs});"
        f" got {best.delivered:,}  {target}",
        flush=True,
    )
    return best


def main() -> None:
    copiers: dict[str, Callable[[Any], Any]] = {
        "walk": copy_walk,
        "private": copy_json,
        "shared": lambda state: state,
    }
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        with ServerProcess(db) as server:
            last = fill(server.url, "device")
            runs: dict[str, list[Rate]] = {}
            for _ in range(ROUNDS):
                for name, copier in copiers.items():
                    runs.setdefault(name, []).append(
                        callback_rate(server.url, "device", last, copy=copier)
                    )
                for copy in (True, False):
                    runs.setdefault(f"latest, copy={copy}", []).append(
                        latest_rate(server.url, "device", last, copy=copy)
                    )
    print(f"   {COUNT:,} changes of a 690-field state, 1-5% of the fields each (best of {ROUNDS})")
    old = show("callback, walked copies", runs["walk"], "(copy_walk: the copy before)")
    copied = show(
        "callback, private copies",
        runs["private"],
        f"(target: 1.5x {BEFORE:,}, the figure before this work)",
    )
    shared = show("callback, copy=False", runs["shared"], "(target >= 20,000)")
    print(
        f"   by CPU, same run: private copies {by_cpu(copied) / by_cpu(old):.2f}x walked ones;"
        f" copy=False {by_cpu(shared) / by_cpu(copied):.2f}x private copies;"
        f" private copies {by_cpu(copied) / BEFORE:.2f}x the figure before (target 1.5x)"
    )
    for copy in (True, False):
        show_latest(f"latest queue, copy={copy}", runs[f"latest, copy={copy}"])


def show_latest(label: str, rates: list[Rate]) -> None:
    """The tail's rate (the queue skips what its reader had no time for) and the
    consumer's CPU per state it got (its copies and wake-ups)."""
    best = min(rates, key=lambda r: r.reader_cpu)
    print(
        f"   {label:<30} {1 / best.reader_cpu:7,.0f} states/s by the reader's CPU"
        f" ({best.reader_cpu * 1e6:5.1f} us per state; wall:"
        f" {max(r.per_second for r in rates):,.0f}); the consumer got {best.delivered:,},"
        f" {best.consumer_cpu * 1e6:5.1f} us of CPU each",
        flush=True,
    )
