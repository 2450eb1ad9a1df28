"""history() against a plain requests loop, and a second pass from the window cache.

A real ``rstream serve`` subprocess on a SQLite file (so the server's CPU is not
the client's) holds 200,000 entries, a snapshot every 100. Then:

- b1: ``history()`` over the whole range (fresh client: every window fetched,
  mutations applied, states built and cached; states shared, the default)
  against the least a client can do: one plain ``requests`` GET per page
  (paging the same way) and ``json.loads`` per line, no states at all;
  b1' the same with ``copy=True`` (a private copy of every state);
- b2: the same ``history()`` a second time, from the cache (no HTTP but one
  request for what followed the live window's newest entry), against the first
  pass. Both passes are consumed without Python code per item (:func:`count`);
  the second pass counted by a plain Python loop is shown too, as that loop
  alone costs about as much as the pass.

Other processes on the machine make single timings noisy, so the plain loop
and the first pass alternate ``ROUNDS`` times and the best of each is used. The
server's CPU time during the plain loop (Linux: from /proc) shows how much of
the baseline is the server's; the CPU time of the thread that reads (the plain
loop's, or the one that decodes history's pages while workers fetch them) shows
the client's own cost per entry.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import requests

from rstream.client import Client
from rstream.core.entry import Entry, EntryKind
from tests.serverutil import ServerProcess

COUNT = 200_000
PER_WINDOW = 100
BATCH = 10_000
T0 = 1_700_000_000
ROUNDS = 3


def make_ndjson(first: int, count: int) -> bytes:
    lines = []
    for i in range(first, first + count):
        if i % PER_WINDOW == 0:
            data = {
                "i": i,
                "battery": 1.0 - i / COUNT,
                "pos": {"x": 0.0, "y": 0.0, "heading": 90},
                "status": "ok",
                "tasks": ["patrol", "charge"],
            }
            kind = EntryKind.SNAPSHOT
        else:
            data = {"i": i, "battery": 1.0 - i / COUNT, "pos": {"x": i * 0.01}}
            kind = EntryKind.MUTATION
        entry = Entry(T0 + i / 10, kind, data)
        lines.append(json.dumps(entry.to_json(), separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def fill(url: str, stream_id: str = "bench") -> None:
    """Write the benchmark's stream: COUNT entries, a snapshot every PER_WINDOW."""
    with Client(url) as client:
        robot = client.stream(stream_id)
        timed(
            f"fill: {COUNT} entries in batches of {BATCH}",
            lambda: [robot.append_entries(make_ndjson(i, BATCH)) for i in range(0, COUNT, BATCH)],
        )


def plain_pass(url: str, stream_id: str, headers: dict[str, str] | None = None) -> int:
    """GET every page with requests and json.loads every line: the floor.

    ``headers``: sent with every GET besides requests' defaults (which accept gzip).
    """
    count = 0
    params: dict[str, str] = {}
    with requests.Session() as session:
        while True:
            with session.get(
                f"{url}/v1/streams/{stream_id}/entries", params=params, headers=headers, stream=True
            ) as r:
                r.raise_for_status()
                for line in r.iter_lines(chunk_size=65536):
                    if line:
                        json.loads(line)
                        count += 1
                next_start = r.headers.get("RStream-Next-Start")
            if not next_start:
                return count
            params = {"start": next_start}


def timed(label: str, func: object) -> tuple[float, object]:
    started = time.perf_counter()
    result = func()  # type: ignore[operator]
    elapsed = time.perf_counter() - started
    print(f"   {label:<52} {elapsed:7.3f} s", flush=True)
    return elapsed, result


def per_entry(seconds: float) -> str:
    return f"{seconds / COUNT * 1e6:.2f} us/entry"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux), or None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count(items: Iterable[object]) -> int:
    """Consume ``items`` without running Python code per item; how many there were.

    The passes measure ``history()``, not a loop over it: a Python loop that does
    nothing costs 15-60 ns per item (3-12 ms for 200,000), as much as a whole
    second pass, so its cost is shown apart (``python_loop``). A list is what a
    caller keeping the states would build anyway.
    """
    return len(list(items))


def python_loop(items: Iterable[object]) -> int:
    """The same, with the plainest Python loop."""
    n = 0
    for _ in items:
        n += 1
    return n


class Passes(NamedTuple):
    first: float
    n1: int
    second: float
    n2: int
    cpu: float  # CPU seconds of the thread that read the first pass
    second_python: float  # the second pass again, consumed by python_loop


def first_pass(url: str, *, copy: bool) -> Passes:
    """A fresh client's first pass and second pass: seconds and count of each."""
    with Client(url, max_workers=4) as client:
        robot = client.stream("bench")
        # Each pass starts from a collected heap: the full collection that building
        # a cache of 200,000 states makes due would otherwise land in whichever pass
        # allocates next (a one-time 50-80 ms, as long as several cached passes).
        gc.collect()
        started = time.perf_counter()
        cpu = time.thread_time()
        n1 = count(robot.history(copy=copy))
        first = time.perf_counter() - started
        cpu = time.thread_time() - cpu
        gc.collect()
        started = time.perf_counter()
        n2 = count(robot.history(copy=copy))
        second = time.perf_counter() - started
        gc.collect()
        started = time.perf_counter()
        n3 = python_loop(robot.history(copy=copy))
        second_python = time.perf_counter() - started
        assert n3 == n2
    return Passes(first, n1, second, n2, cpu, second_python)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        with ServerProcess(db) as server:
            url = server.url
            fill(url)
            plain_pass(url, "bench")  # warm the server's page cache
            assert server.proc is not None
            plains, firsts, seconds, server_share = [], [], [], []
            plain_cpus, first_cpus, seconds_python = [], [], []
            for _ in range(ROUNDS):
                cpu_before = cpu_seconds(server.proc.pid)
                thread_before = time.thread_time()
                base, count = timed(
                    "plain requests + json.loads per line", lambda: plain_pass(url, "bench")
                )
                plain_cpus.append(time.thread_time() - thread_before)
                cpu_after = cpu_seconds(server.proc.pid)
                assert count == COUNT
                plains.append(base)
                if cpu_before is not None and cpu_after is not None:
                    server_share.append((cpu_after - cpu_before) / base)
                passes = first_pass(url, copy=False)
                first_cpus.append(passes.cpu)
                assert passes.n1 == passes.n2 == COUNT, passes
                label = "history() first pass (fetch, apply, cache)"
                print(f"   {label:<52} {passes.first:7.3f} s")
                print(f"   {'history() second pass (cache)':<52} {passes.second:7.3f} s")
                print(
                    f"   {'history() second pass, counted by a Python loop':<52} "
                    f"{passes.second_python:7.3f} s",
                    flush=True,
                )
                firsts.append(passes.first)
                seconds.append(passes.second)
                seconds_python.append(passes.second_python)
            copies = first_pass(url, copy=True)
            assert copies.n1 == copies.n2 == COUNT, copies
            copied, copied_again = copies.first, copies.second
            print(f"   {'history(copy=True) first pass':<52} {copied:7.3f} s")
            print(
                f"   {'history(copy=True) second pass (cache + copies)':<52} {copied_again:7.3f} s"
            )
    base, first, second = min(plains), min(firsts), min(seconds)
    if server_share:
        print(f"   the server's CPU during the plain loop: {max(server_share):.0%} of its time")
    print(
        f"   reading thread's CPU (best of {ROUNDS}): plain loop {per_entry(min(plain_cpus))}, "
        f"history() first pass {per_entry(min(first_cpus))}"
    )
    print(
        f"   b1: history() first pass vs plain loop (best of {ROUNDS}): {base / first:6.2f}x"
        "  (target >= 1.0)"
    )
    print(f"   b1': history(copy=True) first pass vs plain:      {base / copied:6.2f}x")
    print(
        f"   b2: history() second pass (cache) vs first:       {first / second:6.1f}x"
        "  (target >= 100)"
    )
    print(
        f"   b2 with the second pass counted by a Python loop:  {first / min(seconds_python):6.1f}x"
    )
    print(f"   b2': copy=True second pass vs its first pass:     {copied / copied_again:6.1f}x")
