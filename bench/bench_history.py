"""history() against a plain requests loop, and a second pass from the window cache.

A real ``rstream serve`` subprocess on a SQLite file (so the server's CPU is not
the client's) holds 200,000 entries, a snapshot every 100. Then:

- b1: ``history()`` over the whole range (fresh client: every window fetched,
  mutations applied, states built and cached; states shared, the default)
  against the least a client can do: one plain ``requests`` GET per page
  (paging the same way) and ``json.loads`` per line, no states at all;
  b1' the same with ``copy=True`` (a private copy of every state);
- b2: the same ``history()`` a second time, from the cache (no HTTP), against
  the first pass.

Other processes on the machine make single timings noisy, so the plain loop
and the first pass alternate ``ROUNDS`` times and the best of each is used. The
server's CPU time during the plain loop (Linux: from /proc) shows how much of
the baseline is the server's; the CPU time of the thread that reads (the plain
loop's, or the one that decodes history's pages while workers fetch them) shows
the client's own cost per entry.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

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


def plain_pass(url: str, stream_id: str) -> int:
    """GET every page with requests and json.loads every line: the floor."""
    count = 0
    params: dict[str, str] = {}
    with requests.Session() as session:
        while True:
            with session.get(
                f"{url}/v1/streams/{stream_id}/entries", params=params, stream=True
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


def first_pass(url: str, *, copy: bool) -> tuple[float, int, float, int, float]:
    """A fresh client's first pass and second pass: (seconds, count) of each, and
    the CPU seconds of the thread that read the first pass."""
    with Client(url, max_workers=4) as client:
        robot = client.stream("bench")
        started = time.perf_counter()
        cpu = time.thread_time()
        n1 = sum(1 for _ in robot.history(copy=copy))
        first = time.perf_counter() - started
        cpu = time.thread_time() - cpu
        started = time.perf_counter()
        n2 = sum(1 for _ in robot.history(copy=copy))
        second = time.perf_counter() - started
    return first, n1, second, n2, cpu


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        with ServerProcess(db) as server:
            url = server.url
            with Client(url) as client:
                robot = client.stream("bench")
                timed(
                    f"fill: {COUNT} entries in batches of {BATCH}",
                    lambda: [
                        robot.append_entries(make_ndjson(i, BATCH)) for i in range(0, COUNT, BATCH)
                    ],
                )
            plain_pass(url, "bench")  # warm the server's page cache
            assert server.proc is not None
            plains, firsts, seconds, server_share = [], [], [], []
            plain_cpus, first_cpus = [], []
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
                first, n1, second, n2, first_cpu = first_pass(url, copy=False)
                first_cpus.append(first_cpu)
                assert n1 == n2 == COUNT, (n1, n2)
                print(f"   {'history() first pass (fetch, apply, cache)':<52} {first:7.3f} s")
                print(f"   {'history() second pass (cache)':<52} {second:7.3f} s", flush=True)
                firsts.append(first)
                seconds.append(second)
            copied, n3, copied_again, n4, _ = first_pass(url, copy=True)
            assert n3 == n4 == COUNT, (n3, n4)
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
    print(f"   b2': copy=True second pass vs its first pass:     {copied / copied_again:6.1f}x")
