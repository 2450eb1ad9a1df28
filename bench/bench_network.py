"""History and the live tail over a real network: a link of 40 ms round trip and 20 Mbit/s.

The server (a real ``rstream serve`` subprocess on SQLite) holds the
200,000-entry stream of ``bench history``; the client reaches it through
:mod:`bench.linkproxy` (in its own process), which adds 20 ms each way and caps
each direction at 20 Mbit/s. Reported:

- bytes per entry on the wire (server -> client, HTTP headers included) for a
  plain pass over every page, compressed (requests' defaults accept gzip)
  against uncompressed (``Accept-Encoding: identity``);
- the same for a ``history()`` pass, whose client asks for the columns form;
- ``history()`` over the whole range against a plain loop of ``requests.get``
  + ``json.loads`` over the same pages, through the same link, with requests'
  defaults (so the loop gets compression too, and NDJSON); best of ``ROUNDS``,
  alternating; the same two over loopback, for comparison;
- where each pass's time goes over the link: the plain loop's CPU (the rest is
  waiting), history()'s reading thread's CPU (and the garbage collector's
  share of the pass), its fetch workers' CPU, and its bytes' transfer time;
- the time from a dropped live connection (the link cuts it) to the first
  state written after the drop reaching a subscriber over the link.
"""

from __future__ import annotations

import gc
import os
import queue
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from bench.bench_history import COUNT, count, fill, plain_pass
from bench.linkproxy import running_link
from rstream.client import Client
from tests.serverutil import ServerProcess

RTT = 0.040
MBIT = 20.0
ROUNDS = 3
DROPS = 5


class Split(NamedTuple):
    """Where a pass's time went, per thread."""

    wall: float
    reader_cpu: float  # the thread iterating (decode, replay, the cache)
    gc: float  # of which the garbage collector (in whichever thread it ran)
    workers_cpu: float  # the fetching threads (requests, gunzip)


def history_pass(url: str) -> Split:
    """A fresh client's ``history()`` over the whole stream, and its time by thread."""
    collecting = _GCTimer()
    with Client(url, max_workers=4) as client:
        gc.collect()
        started, cpu = time.perf_counter(), time.thread_time()
        with collecting:
            n = count(client.stream("bench").history())
        elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
        workers = sum(
            thread_cpu(t) for t in threading.enumerate() if t.name.startswith("rstream-fetch")
        )
    assert n == COUNT, n
    return Split(elapsed, cpu, collecting.seconds, workers)


class _GCTimer:
    """The seconds the garbage collector runs while the block runs (the bench's own
    process: the library never touches the collector)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began

    def __enter__(self) -> None:
        gc.callbacks.append(self._callback)

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def thread_cpu(thread: threading.Thread) -> float:
    """A live thread's CPU seconds (Linux: from /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/self/task/{thread.native_id}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plain_seconds(url: str, headers: dict[str, str] | None = None) -> tuple[float, float]:
    """Seconds for the plain loop over every page, and its thread's CPU seconds."""
    started, cpu = time.perf_counter(), time.thread_time()
    n = plain_pass(url, "bench", headers)
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    assert n == COUNT, n
    return elapsed, cpu


def link_bytes(target_port: int, headers: dict[str, str] | None) -> tuple[int, float]:
    """Bytes server -> client for a plain pass through a fresh link, and its seconds."""
    with running_link("127.0.0.1", target_port, rtt=RTT, mbit=MBIT) as link:
        seconds, _ = plain_seconds(f"http://127.0.0.1:{link.port}", headers)
    return link.down, seconds


def history_bytes(target_port: int) -> int:
    """Bytes server -> client for a fresh client's history() through a fresh link."""
    with running_link("127.0.0.1", target_port, rtt=RTT, mbit=MBIT) as link:
        history_pass(f"http://127.0.0.1:{link.port}")
    return link.down


def reconnect_times(server_url: str, target_port: int) -> list[float]:
    """Seconds from each of DROPS cuts to the next state reaching a subscriber."""
    got: queue.Queue[Any] = queue.Queue()
    times = []
    with (
        running_link("127.0.0.1", target_port, rtt=RTT, mbit=MBIT) as link,
        Client(server_url) as writer,
        Client(f"http://127.0.0.1:{link.port}") as reader,
    ):
        writer.stream("live").write_state({"n": 0})

        def on_state(ts: datetime, state: Any) -> None:
            got.put(state["n"])

        subscription = reader.stream("live").subscribe(on_state, lambda exc: None)
        try:
            assert got.get(timeout=30) == 0
            for n in range(1, DROPS + 1):
                link.cut_all()
                started = time.perf_counter()
                writer.stream("live").write_state({"n": n})
                while (seen := got.get(timeout=60)) != n:
                    assert seen < n, seen
                times.append(time.perf_counter() - started)
        finally:
            subscription.close()
    return times


class Rounds(NamedTuple):
    plain: list[tuple[float, float]]  # (seconds, CPU seconds) over the link
    history: list[Split]
    plain_lo: list[float]  # the same over loopback
    history_lo: list[float]


def rounds(url: str, port: int) -> Rounds:
    """ROUNDS alternations of the plain loop and history(), over the link and loopback."""
    out = Rounds([], [], [], [])
    for _ in range(ROUNDS):
        with running_link("127.0.0.1", port, rtt=RTT, mbit=MBIT) as link:
            linked = f"http://127.0.0.1:{link.port}"
            out.plain.append(plain_seconds(linked))
            out.history.append(history_pass(linked))
        out.plain_lo.append(plain_seconds(url)[0])
        out.history_lo.append(history_pass(url).wall)
        (plain, _), split = out.plain[-1], out.history[-1]
        print(
            f"   link: plain {plain:6.2f} s, history() {split.wall:6.2f} s;"
            f" loopback: plain {out.plain_lo[-1]:6.3f} s, history() {out.history_lo[-1]:6.3f} s",
            flush=True,
        )
    return out


def report_split(done: Rounds, history_down: int) -> None:
    """Where each pass's time goes over the link, per thread (the best round of each)."""
    plain, plain_cpu = min(done.plain)
    split = min(done.history)
    transfer = history_down / (MBIT * 1e6 / 8)
    print(
        f"   over the link, plain loop: {plain:.2f} s, its thread's CPU {plain_cpu:.2f} s"
        f" (requests, gunzip, json.loads); the rest waits for round trips and bytes"
    )
    print(
        f"   over the link, history(): {split.wall:.2f} s; reading thread's CPU"
        f" {split.reader_cpu:.2f} s (decode, replay, cache), garbage collector"
        f" {split.gc:.2f} s of the pass; fetch workers' CPU {split.workers_cpu:.2f} s;"
        f" its {history_down / 1e6:.2f} MB take {transfer:.2f} s at {MBIT:g} Mbit/s"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        with ServerProcess(db) as server:
            url = server.url
            port = int(url.rsplit(":", 1)[1])
            fill(url)
            plain_seconds(url)  # warm the server's page cache
            raw, raw_s = link_bytes(port, {"Accept-Encoding": "identity"})
            gz, _ = link_bytes(port, None)
            history_down = history_bytes(port)
            print(f"   plain pass through the link, uncompressed: {raw_s:7.2f} s")
            done = rounds(url, port)
            drops = reconnect_times(url, port)
    print(f"   link: {RTT * 1000:.0f} ms round trip, {MBIT:g} Mbit/s each way")
    print(
        f"   bytes per entry on the wire: uncompressed {raw / COUNT:6.1f}, gzip {gz / COUNT:5.1f}"
        f" = {gz / raw:.1%} of raw  (target < 20%); history()'s columns form, gzip:"
        f" {history_down / COUNT:5.1f} = {history_down / raw:.1%}"
    )
    report_split(done, history_down)
    plain, history = min(done.plain)[0], min(done.history).wall
    print(
        f"   history() vs plain requests loop over the link (best of {ROUNDS}):"
        f" {plain:.2f} s / {history:.2f} s = {plain / history:.2f}x  (target >= 2)"
    )
    plain_lo, history_lo = min(done.plain_lo), min(done.history_lo)
    print(
        f"   the same over loopback: {plain_lo:.3f} s / {history_lo:.3f} s"
        f" = {plain_lo / history_lo:.2f}x  (bench history's b1: target >= 1.0)"
    )
    print(
        f"   dropped live connection to the first new state, over the link ({DROPS} drops):"
        f" median {statistics.median(drops) * 1000:.0f} ms, max {max(drops) * 1000:.0f} ms"
        f"  (floor: the server's SSE retry of 1000 ms + 2 round trips)"
    )
