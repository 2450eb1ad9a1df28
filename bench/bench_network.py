"""History and the live tail over a real network: a link of 40 ms round trip and 20 Mbit/s.

The server (a real ``rstream serve`` subprocess on SQLite) holds the
200,000-entry stream of ``bench history``; the client reaches it through
:mod:`bench.linkproxy` (in its own process), which adds 20 ms each way and caps
each direction at 20 Mbit/s. Reported:

- bytes per entry on the wire (server -> client, HTTP headers included) for a
  plain pass over every page, compressed (requests' defaults accept gzip)
  against uncompressed (``Accept-Encoding: identity``);
- ``history()`` over the whole range against a plain loop of ``requests.get``
  + ``json.loads`` over the same pages, through the same link, with requests'
  defaults (so the loop gets compression too); best of ``ROUNDS``, alternating;
  the same two over loopback, for comparison;
- the time from a dropped live connection (the link cuts it) to the first
  state written after the drop reaching a subscriber over the link.
"""

from __future__ import annotations

import gc
import queue
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.bench_history import COUNT, count, fill, plain_pass
from bench.linkproxy import running_link
from rstream.client import Client
from tests.serverutil import ServerProcess

RTT = 0.040
MBIT = 20.0
ROUNDS = 3
DROPS = 5


def history_pass(url: str) -> float:
    """Seconds for a fresh client's ``history()`` over the whole stream."""
    with Client(url, max_workers=4) as client:
        gc.collect()
        started = time.perf_counter()
        n = count(client.stream("bench").history())
        elapsed = time.perf_counter() - started
    assert n == COUNT, n
    return elapsed


def plain_seconds(url: str, headers: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    n = plain_pass(url, "bench", headers)
    elapsed = time.perf_counter() - started
    assert n == COUNT, n
    return elapsed


def link_bytes(target_port: int, headers: dict[str, str] | None) -> tuple[int, float]:
    """Bytes server -> client for a plain pass through a fresh link, and its seconds."""
    with running_link("127.0.0.1", target_port, rtt=RTT, mbit=MBIT) as link:
        seconds = plain_seconds(f"http://127.0.0.1:{link.port}", headers)
    return link.down, seconds


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
            print(f"   plain pass through the link, uncompressed: {raw_s:7.2f} s")
            plains, histories, plains_lo, histories_lo = [], [], [], []
            for _ in range(ROUNDS):
                with running_link("127.0.0.1", port, rtt=RTT, mbit=MBIT) as link:
                    linked = f"http://127.0.0.1:{link.port}"
                    plains.append(plain_seconds(linked))
                    histories.append(history_pass(linked))
                plains_lo.append(plain_seconds(url))
                histories_lo.append(history_pass(url))
                print(
                    f"   link: plain {plains[-1]:6.2f} s, history() {histories[-1]:6.2f} s;"
                    f" loopback: plain {plains_lo[-1]:6.3f} s, history() {histories_lo[-1]:6.3f} s",
                    flush=True,
                )
            drops = reconnect_times(url, port)
    print(f"   link: {RTT * 1000:.0f} ms round trip, {MBIT:g} Mbit/s each way")
    print(
        f"   bytes per entry on the wire: uncompressed {raw / COUNT:6.1f}, gzip {gz / COUNT:5.1f}"
        f" = {gz / raw:.1%} of raw  (target < 20%)"
    )
    plain, history = min(plains), min(histories)
    print(
        f"   history() vs plain requests loop over the link (best of {ROUNDS}):"
        f" {plain:.2f} s / {history:.2f} s = {plain / history:.2f}x  (target >= 2)"
    )
    plain_lo, history_lo = min(plains_lo), min(histories_lo)
    print(
        f"   the same over loopback: {plain_lo:.3f} s / {history_lo:.3f} s"
        f" = {plain_lo / history_lo:.2f}x  (bench history's b1: target >= 1.0)"
    )
    print(
        f"   dropped live connection to the first new state, over the link ({DROPS} drops):"
        f" median {statistics.median(drops) * 1000:.0f} ms, max {max(drops) * 1000:.0f} ms"
        f"  (floor: the server's SSE retry of 1000 ms + 2 round trips)"
    )
