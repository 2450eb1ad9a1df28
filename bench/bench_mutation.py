"""Mutations against JSON Patch on realistic device states.

A device state has a few hundred fields (identity, position, battery, sensor
groups, config) and ~100 tasks; every step changes 1-5% of the leaves and
sometimes pushes or pops a task. The (old, new) pairs are generated once with a
fixed seed; old and new never share objects (as if each came from JSON).

Measured per step, best of several repeats:

1. ``apply_mutation(old, m)`` against ``jsonpatch.apply_patch(old, p)`` (which
   copies ``old``; ours never changes its input either). Target: >= 1.5x.
2. ``build_mutation(old, new)`` against ``jsonpatch.make_patch(old, new)``.
   Target: >= 1.0x.

Also printed for information: ``copy_json`` against ``copy.deepcopy``, and the
mutation and patch sizes as JSON.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import jsonpatch

from rstream.mutation import apply_mutation, build_mutation, copy_json

SEED = 20240501
STEPS = 300
REPEATS = 7
STATUSES = ["queued", "running", "paused", "done", "failed"]


def make_state(rng: random.Random) -> dict[str, Any]:
    sensors = {
        f"group_{g}": {
            f"sensor_{s}": {
                "value": round(rng.uniform(-50, 150), 3),
                "ok": True,
                "unit": rng.choice(["C", "V", "A", "Pa", "%"]),
            }
            for s in range(10)
        }
        for g in range(8)
    }
    return {
        "device": {
            "id": "dev-0042",
            "name": "rover 42",
            "firmware": {"version": "3.4.1", "build": 20240501, "channel": "stable"},
            "online": True,
            "uptime_s": 86_400,
        },
        "position": {
            "lat": 52.52,
            "lon": 13.405,
            "alt": 34.0,
            "heading": 90.0,
            "speed": 1.2,
            "accuracy": 0.8,
        },
        "battery": {
            "level": 0.87,
            "voltage": 24.1,
            "current": -1.3,
            "temperature": 31.5,
            "charging": False,
            "cycles": 412,
            "cells": [3.71, 3.70, 3.72, 3.71, 3.69, 3.70],
        },
        "sensors": sensors,
        "config": {
            f"param_{i}": rng.choice([True, False, rng.randint(0, 1000), f"mode-{i % 4}"])
            for i in range(30)
        },
        "tasks": [make_task(rng, i) for i in range(100)],
    }


def make_task(rng: random.Random, task_id: int) -> dict[str, Any]:
    return {
        "id": task_id,
        "name": f"task {task_id}",
        "progress": round(rng.random(), 3),
        "status": rng.choice(STATUSES),
    }


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of the scalar leaves (not inside battery cells, to keep arrays stable)."""
    if type(value) is dict:
        return [p for k, v in value.items() for p in leaves(v, (*path, k))]
    if type(value) is list and path[-1:] == ("tasks",):
        return [p for i, v in enumerate(value) for p in leaves(v, (*path, i))]
    return [path]


def changed_value(rng: random.Random, old: Any) -> Any:
    if type(old) is bool:
        return not old
    if type(old) is int:
        return old + rng.randint(1, 5)
    if type(old) is float:
        return round(old + rng.uniform(-1, 1), 3)
    if type(old) is str:
        return rng.choice([*STATUSES, old + "!"])
    return rng.random()


def step(rng: random.Random, old: dict[str, Any], next_id: int) -> dict[str, Any]:
    new: dict[str, Any] = copy_json(old)
    paths = leaves(new)
    for path in rng.sample(paths, max(1, int(len(paths) * rng.uniform(0.01, 0.05)))):
        parent = new
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = changed_value(rng, parent[path[-1]])
    roll = rng.random()
    if roll < 0.15:
        new["tasks"].append(make_task(rng, next_id))
    elif roll < 0.25 and new["tasks"]:
        new["tasks"].pop()
    return new


def best_per_op(func: Callable[[Any, Any], object], pairs: list[tuple[Any, Any]]) -> float:
    """Best of REPEATS runs over all pairs, in microseconds per call."""
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for a, b in pairs:
            func(a, b)
        times.append(time.perf_counter() - started)
    return min(times) / len(pairs) * 1e6


def main() -> None:
    rng = random.Random(SEED)
    states = [make_state(rng)]
    for i in range(STEPS):
        states.append(step(rng, states[-1], 1000 + i))
    pairs = list(itertools.pairwise(states))
    mutations = [build_mutation(old, new) for old, new in pairs]
    patches = [jsonpatch.make_patch(old, new) for old, new in pairs]
    if any(apply_mutation(a, m) != b for (a, b), m in zip(pairs, mutations, strict=True)):
        raise RuntimeError("bench data does not round-trip; the timings would mean nothing")

    fields = len(leaves(states[0]))
    mut_bytes = statistics.mean(len(json.dumps(m)) for m in mutations)
    patch_bytes = statistics.mean(len(p.to_string()) for p in patches)
    print(f"   {len(pairs)} steps, {fields} leaf fields, {len(states[0]['tasks'])} tasks")
    print(f"   mean size as JSON: mutation {mut_bytes:.0f} B, JSON Patch {patch_bytes:.0f} B")

    rows = [
        (
            "apply",
            best_per_op(apply_mutation, list(zip(states, mutations, strict=False))),
            best_per_op(jsonpatch.apply_patch, list(zip(states, patches, strict=False))),
            1.5,
        ),
        (
            "build",
            best_per_op(build_mutation, pairs),
            best_per_op(jsonpatch.make_patch, pairs),
            1.0,
        ),
        (
            "deep copy",
            best_per_op(lambda v, _: copy_json(v), pairs),
            best_per_op(lambda v, _: copy.deepcopy(v), pairs),
            None,
        ),
    ]
    print(f"   {'operation':<10} {'rstream µs':>11} {'baseline µs':>12} {'ratio':>7} {'target':>7}")
    for name, ours, theirs, target in rows:
        goal = "-" if target is None else f">={target:.1f}x"
        mark = "" if target is None else ("  ok" if theirs / ours >= target else "  MISSED")
        print(f"   {name:<10} {ours:>11.1f} {theirs:>12.1f} {theirs / ours:>6.1f}x {goal:>7}{mark}")
    print("   baselines: jsonpatch.apply_patch (copies), jsonpatch.make_patch, copy.deepcopy")
