"""The entries endpoint: pages spliced from the stored JSON text against pages
built by parsing each row into an Entry and encoding it again.

A SQLite stream holds 100,000 entries (a snapshot every 100, mutations between).
A :class:`~rstream.server.runner.ServerThread` serves it and every page
(``limit=10000``) is fetched with plain ``requests``, twice over:

- before: the page built as it was until the splice (``iter_range`` parses
  each row's JSON into an :class:`~rstream.core.entry.Entry`,
  ``encode_entry`` dumps it again), patched in for this run only;
- after: the server as it is (``iter_range_raw`` rows spliced by ``encode_row``).

Reports, for each, the CPU time the server spent building one 10,000-entry page
(measured on the worker thread that builds it) and the wall time to fetch every
page, and the ratios; the two runs' bodies must be byte-identical.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from rstream.core.entry import Entry, EntryKind
from rstream.core.wire import encode_entry
from rstream.server import app as server_app
from rstream.server import reads
from rstream.server.runner import ServerThread
from rstream.server.storage import SQLiteStorage

COUNT = 100_000
PAGE = 10_000
PER_WINDOW = 100
STREAM = "entries"
T0 = 1_700_000_000_000_000  # epoch micros
ROUNDS = 3  # each mode fetches the whole stream this many times; the best counts


def make_entries() -> list[Entry]:
    entries = []
    for i in range(COUNT):
        if i % PER_WINDOW == 0:
            kind = EntryKind.SNAPSHOT
            data: dict[str, Any] = {
                "i": i,
                "battery": 1.0 - i / COUNT,
                "pos": {"x": i * 0.01, "y": 0.0, "heading": 90},
                "status": "patrolling — zone B",
                "tasks": ["patrol", "charge"],
            }
        else:
            kind = EntryKind.MUTATION
            data = {"i": i, "battery": 1.0 - i / COUNT, "pos": {"x": i * 0.01}}
        entries.append(Entry.from_micros(T0 + i * 100_000, kind, data))
    return entries


def page_via_entries(
    self: Any, stream_id: str, start: int | None, end: int | None, limit: int, columns: bool
) -> Any:
    """``ReadRoutes._page`` as it was before the splice (parse, then encode; NDJSON only,
    as the bench asks for it)."""
    info = self.ctx.info(stream_id)
    log = self.ctx.storage.log(stream_id)
    immutable = end is not None and info.latest_snapshot is not None and end <= info.latest_snapshot
    lines: list[bytes] = []
    size = 0
    next_start: int | None = None
    budget = self.ctx.limits.page_bytes
    with contextlib.closing(log.iter_range(start, end, limit + 1)) as entries:
        for entry in entries:
            if len(lines) >= limit or size >= budget:
                next_start = entry.micros
                break
            line = encode_entry(entry) + b"\n"
            lines.append(line)
            size += len(line)
    return reads._Page(b"".join(lines), len(lines), next_start, immutable)


@contextlib.contextmanager
def timed_pages(build: Callable[..., Any], cpu: list[float]) -> Iterator[None]:
    """Patch ``ReadRoutes._page`` with ``build``, adding each call's thread CPU time to ``cpu``."""
    original = reads.ReadRoutes._page

    def page(self: Any, *args: Any) -> Any:
        t0 = time.thread_time()
        result = build(self, *args)
        cpu.append(time.thread_time() - t0)
        return result

    reads.ReadRoutes._page = page  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        reads.ReadRoutes._page = original  # type: ignore[method-assign]


def fetch_all(url: str) -> tuple[bytes, float]:
    """Every page, following ``RStream-Next-Start``; the bodies and the wall time."""
    bodies = []
    params = {"limit": str(PAGE)}
    t0 = time.perf_counter()
    with requests.Session() as http:
        while True:
            r = http.get(f"{url}/v1/streams/{STREAM}/entries", params=params, timeout=60)
            r.raise_for_status()
            bodies.append(r.content)
            next_start = r.headers.get("RStream-Next-Start")
            if next_start is None:
                break
            params["start"] = next_start
    return b"".join(bodies), time.perf_counter() - t0


def measure(url: str, build: Callable[..., Any]) -> tuple[bytes, float, float]:
    """The body, the best CPU seconds per page and the best wall seconds per pass."""
    best_cpu = best_wall = float("inf")
    body = b""
    for _ in range(ROUNDS):
        cpu: list[float] = []
        with timed_pages(build, cpu):
            body, wall = fetch_all(url)
        best_cpu = min(best_cpu, sum(cpu) / len(cpu))
        best_wall = min(best_wall, wall)
    return body, best_cpu, best_wall


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        SQLiteStorage(Path(tmp) / "entries.db") as storage,
    ):
        storage.create_stream(STREAM)
        storage.log(STREAM).append_many(make_entries())
        with ServerThread(server_app.create_app(storage)) as server:
            before, before_cpu, before_wall = measure(server.url, page_via_entries)
            after, after_cpu, after_wall = measure(server.url, reads.ReadRoutes._page)
    pages = -(-COUNT // PAGE)
    print(f"{COUNT:,} entries on SQLite, {pages} pages of {PAGE:,} ({len(after) / 1e6:.1f} MB)")
    print(f"{'':34}{'before':>10}{'after':>10}{'ratio':>9}")
    rows = [
        ("server CPU ms / 10k-entry page", before_cpu * 1000, after_cpu * 1000),
        ("fetch every page, wall ms", before_wall * 1000, after_wall * 1000),
    ]
    for name, a, b in rows:
        print(f"{name:34}{a:>10.1f}{b:>10.1f}{a / b:>8.2f}x")
    print(f"pages byte-identical: {'yes' if before == after else 'NO'}")


if __name__ == "__main__":
    main()
