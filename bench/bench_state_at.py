"""state_at on a long log: a cursor against the plain ways of computing a state.

A 200,000-entry MemoryLog, one entry per second, a snapshot every 100 entries,
states of about 300 fields (sensors, motors, tasks, config). At 1,000 random
times it measures:

- a fresh READ_FORWARD cursor's ``state_at(t)`` (lookups included), against a
  plain loop: copy the nearest snapshot (``copy_json``; ``copy.deepcopy`` also
  shown) and apply the mutations up to ``t`` one by one (lookups not timed);
  target ratio <= 1.5;
- a replay from the first entry, timed on 3 of the queries; target speed-up
  >= 500x;
- and a forward walk, one entry at a time, per entry.

Measures and prints; never asserts.
"""

from __future__ import annotations

import copy
import random
import time
from statistics import mean
from typing import Any

from rstream.core.cursor import Cursor, CursorKind
from rstream.core.entry import Entry, EntryKind
from rstream.core.log import MemoryLog
from rstream.core.mutation import apply_mutation, build_mutation, copy_json
from rstream.core.timestamps import from_micros

ENTRIES = 200_000
SNAPSHOT_EVERY = 100
QUERIES = 1_000
REPLAYS = 3
WALK = 20_000
START = 1_714_564_800 * 1_000_000  # 2024-05-01T12:00:00Z
STEP = 1_000_000


def initial_state(rng: random.Random) -> dict[str, Any]:
    return {
        "device": {"id": "rover-7", "firmware": "4.2.1", "uptime": 0, "mode": "auto"},
        "position": {"x": 0.0, "y": 0.0, "z": 0.0, "heading": 0.0},
        "sensors": {
            f"sensor-{i:02d}": {"value": round(rng.uniform(0, 100), 2), "unit": "C", "ok": True}
            for i in range(60)
        },
        "motors": [{"rpm": 0, "temp": 20.0, "fault": None} for _ in range(12)],
        "tasks": [{"id": i, "name": f"task {i}", "done": False} for i in range(10)],
        "config": {f"param_{i}": i for i in range(50)},
    }


def next_state(state: dict[str, Any], step: int, rng: random.Random) -> dict[str, Any]:
    """A few fields changed, the rest shared with ``state`` (cheap to build)."""
    new = dict(state)
    new["device"] = {**state["device"], "uptime": step}
    sensors = new["sensors"] = dict(state["sensors"])
    for _ in range(rng.randint(1, 4)):
        name = f"sensor-{rng.randrange(60):02d}"
        sensors[name] = {**sensors[name], "value": round(rng.uniform(0, 100), 2)}
    if rng.random() < 0.3:
        motors = new["motors"] = list(state["motors"])
        i = rng.randrange(len(motors))
        motors[i] = {**motors[i], "rpm": rng.randrange(3000), "temp": rng.randrange(20, 90)}
    if rng.random() < 0.2:
        new["position"] = {
            k: round(v + rng.uniform(-1, 1), 3) for k, v in state["position"].items()
        }
    if rng.random() < 0.05:
        tasks = new["tasks"] = list(state["tasks"])
        if len(tasks) > 5 and rng.random() < 0.5:
            tasks.pop(0)
        else:
            tasks.append({"id": step, "name": f"task {step}", "done": False})
    if rng.random() < 0.01:
        new["config"] = {**state["config"], f"param_{rng.randrange(50)}": step}
    return new


def count_fields(value: Any) -> int:
    if isinstance(value, dict):
        return sum(count_fields(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_fields(v) for v in value)
    return 1


def build_log(rng: random.Random) -> MemoryLog:
    log = MemoryLog()
    state = initial_state(rng)
    for i in range(ENTRIES):
        micros = START + i * STEP
        if i % SNAPSHOT_EVERY == 0:
            log.append(Entry.from_micros(micros, EntryKind.SNAPSHOT, state))
        else:
            new = next_state(state, i, rng)
            log.append(Entry.from_micros(micros, EntryKind.MUTATION, build_mutation(state, new)))
            state = new
    return log


def plain(snapshot: Entry, mutations: list[Entry], copier: Any) -> dict[str, Any]:
    state: dict[str, Any] = copier(snapshot.data)
    for entry in mutations:
        state = apply_mutation(state, entry.data)
    return state


def queries(log: MemoryLog, rng: random.Random, times: list[int]) -> list[float]:
    """``state_at`` of a fresh cursor at each of ``times`` against the plain
    loops, printed; the cursor's seconds per query."""
    cursor_s: list[float] = []
    copy_s: list[float] = []
    deep_s: list[float] = []
    perf = time.perf_counter
    for micros in times:
        when = from_micros(micros)
        snapshot = log.snapshot_before(when)
        assert snapshot is not None
        mutations = log.range(from_micros(snapshot.micros + 1), from_micros(micros + 1))
        # Shuffle which runs first, so none always finds the entries in cache.
        order = [0, 1, 2]
        rng.shuffle(order)
        for which in order:
            t0 = perf()
            if which == 0:
                got = Cursor(log, CursorKind.READ_FORWARD).state_at(when)
                cursor_s.append(perf() - t0)
            elif which == 1:
                expected = plain(snapshot, mutations, copy_json)
                copy_s.append(perf() - t0)
            else:
                plain(snapshot, mutations, copy.deepcopy)
                deep_s.append(perf() - t0)
        if got != expected:
            print(f"MISMATCH at {when}")

    per_query = mean(cursor_s)
    print(f"state_at, fresh READ_FORWARD cursor: {per_query * 1e6:8.1f} µs per query")
    print(f"copy_json + plain apply loop:        {mean(copy_s) * 1e6:8.1f} µs per query")
    print(f"copy.deepcopy + plain apply loop:    {mean(deep_s) * 1e6:8.1f} µs per query")
    print(f"ratio cursor / copy_json loop:   {per_query / mean(copy_s):.2f}  (target <= 1.5)")
    print(f"ratio cursor / deepcopy loop:    {per_query / mean(deep_s):.2f}")
    return cursor_s


def replays(log: MemoryLog, rng: random.Random, times: list[int], cursor_s: list[float]) -> None:
    """A replay from the first entry at a sample of ``times``, against ``state_at``."""
    perf = time.perf_counter
    sample = rng.sample(range(QUERIES), REPLAYS)
    replay_s: list[float] = []
    for index in sample:
        end = from_micros(times[index] + 1)
        t0 = perf()
        state: dict[str, Any] = {}
        for entry in log.range(from_micros(START), end):
            state = entry.data if entry.is_snapshot else apply_mutation(state, entry.data)
        replay_s.append(perf() - t0)
    same_queries = mean(cursor_s[i] for i in sample)
    print(
        f"replay from the first entry: {mean(replay_s) * 1e3:.1f} ms per query "
        f"({REPLAYS} queries); speed-up of state_at: {mean(replay_s) / same_queries:,.0f}x "
        f"on the same queries, {mean(replay_s) / mean(cursor_s):,.0f}x against the mean "
        "(target >= 500x)"
    )


def forward_walk(log: MemoryLog, rng: random.Random) -> None:
    """``state_at`` at every entry of a stretch, against the plain apply loop."""
    perf = time.perf_counter
    walker = Cursor(log, CursorKind.READ_FORWARD)
    walk_from = rng.randrange(ENTRIES - WALK)
    steps = [from_micros(START + (walk_from + i) * STEP) for i in range(WALK)]
    t0 = perf()
    for when in steps:
        walker.state_at(when)
    walk = (perf() - t0) / WALK
    anchor = log.snapshot_before(steps[0])
    assert anchor is not None
    entries = log.range(from_micros(anchor.micros), steps[-1])
    t0 = perf()
    state: dict[str, Any] = {}
    for entry in entries:
        state = entry.data if entry.is_snapshot else apply_mutation(state, entry.data)
    loop = (perf() - t0) / len(entries)
    print(
        f"forward walk, state_at at every entry: {walk * 1e6:.1f} µs per entry "
        f"(plain apply loop: {loop * 1e6:.1f} µs per entry)"
    )


def main() -> None:
    rng = random.Random(7)
    started = time.perf_counter()
    log = build_log(rng)
    first = log.first()
    assert first is not None
    print(
        f"log: {len(log):,} entries, a snapshot every {SNAPSHOT_EVERY}, "
        f"{count_fields(first.data)} fields per state; built in "
        f"{time.perf_counter() - started:.1f} s"
    )
    times = [START + rng.randrange(ENTRIES * STEP) for _ in range(QUERIES)]
    cursor_s = queries(log, rng, times)
    replays(log, rng, times, cursor_s)
    forward_walk(log, rng)
