"""Database size under steady writes, with and without retention (SQLite).

Two servers run side by side, each on a SQLite file of its own, and one writer
per server posts states at the same steady rate for the same time: one stream
keeps everything, the other has a retention (and a compactor running every
``--interval`` seconds, as ``rstream serve`` runs it every 60 s). Every
``duration / 12`` seconds the benchmark prints each file's size (the main
file, then with its WAL) and the entries it holds; at the end, the ratio.

Without retention the file grows with the writes; with it the file should
level off at about ``retention`` seconds of entries.

``python -m bench retention [--duration 60] [--rate 100] [--retention 10]
[--interval 2] [--state-bytes 1000]`` (or ``python -m bench.bench_retention
...``); the issue's measurement is ``--duration 300``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import requests

from rstream.server import ServerThread, create_app
from rstream.server.compaction import Compactor
from rstream.server.storage.sqlite import SQLiteStorage


@dataclass
class _Run:
    name: str
    path: str
    url: str
    storage: SQLiteStorage
    compactor: Compactor
    written: int = 0
    errors: list[str] = field(default_factory=list)


def _size(path: str) -> tuple[int, int]:
    main = os.path.getsize(path)
    wal = path + "-wal"
    return main, main + (os.path.getsize(wal) if os.path.exists(wal) else 0)


@contextmanager
def _server(name: str, path: str, retention: float | None, interval: float) -> Iterator[_Run]:
    storage = SQLiteStorage(path)
    # Compaction runs only where there is something to compact; the other
    # server gets a compactor that never runs, so both pay the same.
    compactor = Compactor(storage, interval=interval if retention is not None else None)
    with storage, ServerThread(create_app(storage, compactor=compactor)) as server:
        body: dict[str, object] = {
            "record_rate": {"keyframe_frequency": 1000, "change_frequency": 0}
        }
        body["retention"] = None if retention is None else retention * 1000
        requests.put(f"{server.url}/v1/streams/device", json=body, timeout=10).raise_for_status()
        yield _Run(name, path, server.url, storage, compactor)


def _write(
    run: _Run, rate: float, duration: float, state_bytes: int, stop: threading.Event
) -> None:
    """Post states at ``rate`` per second for ``duration`` seconds (paced, not bursts)."""
    session = requests.Session()
    period = 1 / rate
    started = next_at = time.monotonic()
    i = 0
    filler = "x" * max(state_bytes - 40, 0)
    while not stop.is_set() and time.monotonic() - started < duration:
        # A state that changes a little each time, as a device's would.
        state = {"seq": i, "value": i % 97, "blob": f"{i:010d}{filler}"}
        response = session.post(f"{run.url}/v1/streams/device/state", json={"state": state})
        if response.status_code >= 300:
            run.errors.append(f"{response.status_code} {response.text[:200]}")
            break
        run.written += 1
        i += 1
        next_at += period
        stop.wait(max(0.0, next_at - time.monotonic()))
    session.close()


def _kept(run: _Run) -> int:
    return run.storage.log("device").count_range(None, None)


def measure(
    duration: float, rate: float, retention: float, interval: float, state_bytes: int
) -> None:
    print(
        f"{rate:g} states/s of ~{state_bytes} B for {duration:g} s to two SQLite servers: "
        f"one keeps everything, one has a retention of {retention:g} s "
        f"(compaction every {interval:g} s)"
    )
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        runs = [
            stack.enter_context(_server("keep all", os.path.join(tmp, "all.db"), None, interval)),
            stack.enter_context(
                _server("retention", os.path.join(tmp, "ret.db"), retention, interval)
            ),
        ]
        stop = threading.Event()
        writers = [
            threading.Thread(target=_write, args=(run, rate, duration, state_bytes, stop))
            for run in runs
        ]
        started = time.monotonic()
        for writer in writers:
            writer.start()
        print(f"{'t (s)':>6} | {'keep all: file / +wal (kB), entries':>36} | "
              f"{'retention: file / +wal (kB), entries':>37}")  # fmt: skip
        step = duration / 12
        try:
            for k in range(1, 13):
                stop.wait(max(0.0, started + k * step - time.monotonic()))
                cells = []
                for run in runs:
                    main, total = _size(run.path)
                    cells.append(f"{main / 1e3:>10.0f} / {total / 1e3:>8.0f}, {_kept(run):>9}")
                print(f"{time.monotonic() - started:>6.0f} | {cells[0]:>36} | {cells[1]:>37}")
        finally:
            stop.set()
            for writer in writers:
                writer.join()
        for run in runs:
            if run.errors:
                print(f"{run.name}: write errors: {run.errors[:3]}")
        everything, kept = runs
        main_all, total_all = _size(everything.path)
        main_ret, total_ret = _size(kept.path)
        print(
            f"written: {everything.written} and {kept.written} states "
            f"({everything.written / duration:.0f}/s and {kept.written / duration:.0f}/s)"
        )
        print(
            f"compaction: {kept.compactor.runs} runs, {kept.compactor.entries_deleted} entries "
            f"deleted, {kept.compactor.bytes_reclaimed / 1e3:.0f} kB given back, "
            f"{kept.compactor.failed_runs} failed"
        )
        print(
            f"end: file {main_ret / 1e3:.0f} kB with retention vs {main_all / 1e3:.0f} kB "
            f"without ({main_ret / main_all:.2f}x); with WAL {total_ret / 1e3:.0f} vs "
            f"{total_all / 1e3:.0f} kB ({total_ret / total_all:.2f}x)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench retention", description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of writes (60)")
    parser.add_argument("--rate", type=float, default=100.0, help="states per second (100)")
    parser.add_argument("--retention", type=float, default=10.0, help="seconds kept (10)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between runs (2)")
    parser.add_argument("--state-bytes", type=int, default=1000, help="bytes per state (1000)")
    args = parser.parse_args(argv or [])
    measure(args.duration, args.rate, args.retention, args.interval, args.state_bytes)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
