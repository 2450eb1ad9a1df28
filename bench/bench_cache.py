"""The disk cache: what a script's second run costs, in fresh processes.

The 200,000-entry stream of ``bench history`` (a snapshot every 100 entries)
on a real ``rstream serve`` subprocess. Each measurement runs in a fresh
Python process, as a script would:

- c1: ``history()`` over the whole range with a cold disk cache, then the
  same in a second process with the cache the first one left: wall time
  (from creating the client to the last state, interpreter start-up not
  counted) and the bytes of the responses (their Content-Length);
- c2: the disk cache's size (its files, after the client closed them)
  against the NDJSON bytes of the stream;
- c3: ``state_at`` at a random time in a fresh process, with the warm disk
  cache and without one (timed after a ``ping()``, so that the first
  connection of the process is not counted).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_history import COUNT, T0, make_ndjson
from rstream.client import Client
from tests.serverutil import ServerProcess

BATCH = 10_000
STATE_AT_ROUNDS = 5

# Runs in a fresh process: argv = url, cache dir ("-": none), what ("history" | seconds).
CHILD = """
import json, sys, time
import rstream
url, cache, what = sys.argv[1], sys.argv[2], sys.argv[3]
fetched = [0]
def count(response, *args, **kwargs):
    fetched[0] += int(response.headers.get("Content-Length") or 0)
started = time.perf_counter()
with rstream.Client(url, cache=None if cache == "-" else cache) as client:
    client.transport.session.hooks["response"].append(count)
    stream = client.stream("bench")
    if what == "history":
        n = len(list(stream.history()))
        elapsed = time.perf_counter() - started
    else:
        client.ping()  # the first request of a process is slow: pay it before timing
        started = time.perf_counter()
        stream.state_at(float(what))
        elapsed = time.perf_counter() - started
        n = 1
print(json.dumps({"seconds": elapsed, "bytes": fetched[0], "count": n}))
"""


def child(url: str, cache: str, what: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, cache, what],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def cache_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir())


def main() -> None:
    rng = random.Random(13)
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        cache = Path(tmp) / "cache"
        ndjson_bytes = 0
        with ServerProcess(db) as server:
            url = server.url
            with Client(url) as client:
                robot = client.stream("bench")
                for i in range(0, COUNT, BATCH):
                    body = make_ndjson(i, BATCH)
                    ndjson_bytes += len(body)
                    robot.append_entries(body)
            child(url, "-", "history")  # warm the server's page cache
            first = child(url, str(cache), "history")
            second = child(url, str(cache), "history")
            assert first["count"] == second["count"] == COUNT, (first, second)
            on_disk = cache_bytes(cache)
            warm, cold = [], []
            for _ in range(STATE_AT_ROUNDS):
                at = str(T0 + rng.uniform(0, COUNT / 10 * 0.99))
                warm.append(child(url, str(cache), at)["seconds"])
                cold.append(child(url, "-", at)["seconds"])
    speedup = first["seconds"] / second["seconds"]
    ratio = second["bytes"] / first["bytes"]
    print(f"   c1: first process  {first['seconds']:7.3f} s  {first['bytes']:>12,} bytes fetched")
    print(f"       second process {second['seconds']:7.3f} s  {second['bytes']:>12,} bytes fetched")
    print(f"       second vs first: {speedup:6.1f}x faster  (target >= 20)")
    print(f"       bytes fetched by the second: {ratio:.3%} of the first's  (target < 1%)")
    print(
        f"   c2: disk cache {on_disk:,} bytes for {ndjson_bytes:,} NDJSON bytes: "
        f"{on_disk / ndjson_bytes:.1%}  (target < 30%)"
    )
    warm_s, cold_s = sorted(warm)[len(warm) // 2], sorted(cold)[len(cold) // 2]
    print(
        f"   c3: state_at at a random time, fresh process (median of {STATE_AT_ROUNDS}): "
        f"warm disk cache {warm_s * 1000:.1f} ms, cold {cold_s * 1000:.1f} ms "
        f"({cold_s / warm_s:.1f}x)"
    )
