"""history() against a plain requests loop, and a second pass from the window cache.

A real ``rstream serve`` subprocess on a SQLite file (so the server's CPU is not
the client's) holds 200,000 entries, a snapshot every 100. Then:

- b1: ``history()`` over the whole range (fresh client: every window fetched,
  mutations applied, states copied) against the least a client can do: one
  plain ``requests`` GET per page (paging the same way) and ``json.loads`` per
  line, no states at all;
- b2: the same ``history()`` a second time, from the cache (no HTTP), against
  the first pass.
"""

from __future__ import annotations

import json
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
    print(f"   {label:<44} {elapsed:7.3f} s", flush=True)
    return elapsed, result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        with ServerProcess(db) as server:
            url = server.url
            stream_id = "bench"
            with Client(url) as client:
                robot = client.stream(stream_id)
                timed(
                    f"fill: {COUNT} entries in batches of {BATCH}",
                    lambda: [
                        robot.append_entries(make_ndjson(i, BATCH)) for i in range(0, COUNT, BATCH)
                    ],
                )
            plain_pass(url, stream_id)  # warm the server's page cache
            base, count = timed(
                "plain requests + json.loads per line", lambda: plain_pass(url, stream_id)
            )
            assert count == COUNT
            with Client(url, max_workers=4) as client:
                robot = client.stream(stream_id)
                first, n1 = timed(
                    "history() first pass (fetch, apply, copy)",
                    lambda: sum(1 for _ in robot.history()),
                )
                second, n2 = timed(
                    "history() second pass (cache)", lambda: sum(1 for _ in robot.history())
                )
                shared, n3 = timed(
                    "history(copy=False) from cache",
                    lambda: sum(1 for _ in robot.history(copy=False)),
                )
            with Client(url, max_workers=4) as client:
                robot = client.stream(stream_id)
                nocopy, n4 = timed(
                    "history(copy=False) first pass",
                    lambda: sum(1 for _ in robot.history(copy=False)),
                )
            assert n1 == n2 == n3 == n4 == COUNT, (n1, n2, n3, n4)
    print(
        f"   b1: history() first pass vs plain loop:        {base / first:6.2f}x  (target >= 1.0)"
    )
    print(f"   b1': history(copy=False) first pass vs plain:  {base / nocopy:6.2f}x")
    print(
        f"   b2: history() second pass (cache) vs first:    {first / second:6.1f}x  (target >= 100)"
    )
    print(f"   b2': copy=False from cache vs first pass:      {first / shared:6.1f}x")
