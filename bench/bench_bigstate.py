"""Real-sized states, live: a device state of a few hundred fields, as fast as the server sends it.

A real ``rstream serve`` subprocess on SQLite holds one live window: the device
state of ``bench mutation`` (690 leaf fields, 100 tasks), then ``COUNT``
mutations that each change 1-5% of its leaves (a cycle of ``STEPS`` generated
steps). A live tail subscribed before it loads receives the whole window at the
server's pace and applies every mutation. Measured, each with private copies
(the default) and with ``copy=False`` (shared, read-only states):

- a callback subscriber: states per second delivered, and the CPU per state of
  the tail's reader thread (SSE, entries, apply) and of the dispatcher thread
  (the subscriber's copy, the call);
- an ``overflow="latest"`` queue read by a thread as fast as it can: states
  per second the tail applied (the queue skips what its reader had no time
  for), states the reader got, and the reader's CPU per state it got.

The copy is today's (:func:`~rstream.core.mutation.copy_json`: no full copy
measured 20% faster on this state, see ``docs/live.rst``), so the private
copies' figure is today's; the targets are 1.5x it with copies and 20,000
states/s without. The reader and the dispatcher share the interpreter lock, so
states/s is about one over the sum of their CPU per state.
"""

from __future__ import annotations

import gc
import itertools
import json
import random
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import requests

from bench.bench_live import thread_cpu
from bench.bench_mutation import SEED, make_state, step
from rstream.client.live import LiveTail
from rstream.client.transport import Transport
from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import build_mutation
from rstream.core.timestamps import from_micros
from rstream.errors import ClientClosed
from tests.serverutil import ServerProcess

T0 = 1_700_000_000
STEPS = 200
COUNT = 20_000
BATCH = 2_000
ROUNDS = 3
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


def callback_rate(url: str, stream_id: str, last: dict[str, Any], *, copy: bool) -> Rate:
    """A callback subscriber on a fresh tail, until it gets the window's last state."""
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
        try:
            gc.collect()
            started = time.perf_counter()
            tail.subscribe(on_state, copy=copy)
            reader = tail._thread
            assert reader is not None
            if not done.wait(300):
                raise RuntimeError(f"the tail delivered {seen} of {COUNT} states")
            elapsed = time.perf_counter() - started
            return Rate(COUNT / elapsed, seen, thread_cpu(reader) / COUNT, consumer_cpu / seen)
        finally:
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


def show(label: str, rates: list[Rate], target: str) -> Rate:
    best = max(rates, key=lambda r: r.per_second)
    runs = ", ".join(f"{r.per_second:,.0f}" for r in rates)
    print(
        f"   {label:<34} {best.per_second:8,.0f} states/s (runs: {runs});"
        f" CPU/state: reader {best.reader_cpu * 1e6:5.1f} us,"
        f" consumer {best.consumer_cpu * 1e6:5.1f} us; got {best.delivered:,}  {target}",
        flush=True,
    )
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        with ServerProcess(db) as server:
            last = fill(server.url, "device")
            runs: dict[str, list[Rate]] = {}
            for _ in range(ROUNDS):
                for copy in (True, False):
                    runs.setdefault(f"callback, copy={copy}", []).append(
                        callback_rate(server.url, "device", last, copy=copy)
                    )
                    runs.setdefault(f"latest queue, copy={copy}", []).append(
                        latest_rate(server.url, "device", last, copy=copy)
                    )
    print(f"   {COUNT:,} changes of a 690-field state, 1-5% of the fields each")
    copied = show(
        "callback, private copies",
        runs["callback, copy=True"],
        "(today's copy; target: 1.5x this)",
    )
    shared = show("callback, copy=False", runs["callback, copy=False"], "(target >= 20,000)")
    print(
        f"   copy=False vs private copies, same run: {shared.per_second / copied.per_second:.2f}x"
    )
    show("latest queue, private copies", runs["latest queue, copy=True"], "")
    show("latest queue, copy=False", runs["latest queue, copy=False"], "")
