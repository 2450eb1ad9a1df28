"""``rstream backup`` of a SQLite store while a server writes to it.

A store holds ``RSTREAM_BENCH_ENTRIES`` entries (100,000, about 40 MB) in one
stream; a :class:`~rstream.server.runner.ServerThread` serves it while four
writer threads post new states to another stream, ``RSTREAM_BENCH_RATE``
times a second together (200). The store is backed up twice, as ``rstream backup`` does it
(steps of 1,024 pages inside one read transaction) and in a single step, and
for each the benchmark prints the copy's size and time, and the writer's
latency (p50, p99, max) and rate during the copy next to the same figures
for the seconds before it: a backup that blocked writers would show there.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

from rstream.cli.backup import STEP_PAGES, backup_sqlite
from rstream.core.entry import Entry, EntryKind
from rstream.server import create_app
from rstream.server.runner import ServerThread
from rstream.server.storage import SQLiteStorage

ENTRIES = int(os.environ.get("RSTREAM_BENCH_ENTRIES", "100000"))
RATE = float(os.environ.get("RSTREAM_BENCH_RATE", "200"))
THREADS = 4
BEFORE = 3.0  # seconds of writes measured before each backup
T0 = 1_700_000_000_000_000  # epoch micros


class Writers:
    """THREADS threads posting states at RATE together; ``latencies[label]``
    collects each write's seconds (one thread alone waits out each fsync)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.label = "idle"
        self.latencies: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(THREADS)]
        for thread in self.threads:
            thread.start()

    def _run(self, writer: int) -> None:
        with requests.Session() as http:
            next_at = time.monotonic()
            n = 0
            while not self.stopping.is_set():
                n += 1
                started = time.monotonic()
                body = {"state": {"writer": writer, "n": n}}
                http.post(f"{self.url}/v1/streams/live/state", json=body).raise_for_status()
                with self.lock:
                    self.latencies.setdefault(self.label, []).append(time.monotonic() - started)
                next_at += THREADS / RATE
                self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def close(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()


def describe(latencies: list[float], seconds: float) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{len(ordered) / seconds:6.0f} writes/s, p50 {statistics.median(ordered) * 1e3:5.1f} ms, "
        f"p99 {p99 * 1e3:5.1f} ms, max {ordered[-1] * 1e3:5.1f} ms"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "streams.db"
        with SQLiteStorage(db) as storage:
            storage.create_stream("bulk")
            log = storage.log("bulk")
            for start in range(0, ENTRIES, 10_000):
                log.append_many(
                    [
                        Entry.from_micros(
                            T0 + i * 1000, EntryKind.SNAPSHOT, {"i": i, "pad": "y" * 300}
                        )
                        for i in range(start, min(ENTRIES, start + 10_000))
                    ]
                )
            with ServerThread(create_app(storage)) as server:
                writer = Writers(server.url)
                try:
                    for name, pages in (("steps", STEP_PAGES), ("one step", -1)):
                        writer.label = f"before {name}"
                        time.sleep(BEFORE)
                        writer.label = name
                        started = time.monotonic()
                        report = backup_sqlite(db, Path(tmp) / "backup.db", force=True, pages=pages)
                        elapsed = time.monotonic() - started
                        writer.label = "idle"
                        print(
                            f"{name:>8}: {report.size / 1e6:.1f} MB, {report.entries} entries "
                            f"copied in {elapsed:.2f} s"
                        )
                        with writer.lock:
                            before = writer.latencies.pop(f"before {name}")
                            during = writer.latencies.pop(name, [])
                        print(f"  writes before: {describe(before, BEFORE)}")
                        if during:
                            print(f"  writes during: {describe(during, elapsed)}")
                finally:
                    writer.close()
