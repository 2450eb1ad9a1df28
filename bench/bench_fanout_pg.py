"""Live fan-out on PostgreSQL with the subscribers split across two replicas,
next to the same measurement on SQLite (one server).

Reuses ``bench_fanout``'s server process, raw-socket subscribers and figures;
only the topology differs. Three runs, same writer rate and subscriber count:

- ``sqlite x1``: one ``rstream serve`` on a SQLite file (``bench_fanout``'s run);
- ``pg x1``: one replica on PostgreSQL (the cost of the backend alone);
- ``pg x2``: two replicas on one PostgreSQL schema, the writer posting to the
  first, half of the subscribers on each. The second replica's subscribers are
  woken by LISTEN/NOTIFY, so their latency includes the database round trip.

Reports delivered events/s, server CPU seconds per 1,000 delivered events
(summed over the replicas), p50/p99 write-to-receive latency, and each as a
ratio against SQLite; every subscriber checks it received every revision.

Environment: ``RSTREAM_BENCH_SUBSCRIBERS`` (500), ``RSTREAM_BENCH_SECONDS`` (30),
``RSTREAM_BENCH_RATE`` (200 states/s), ``RSTREAM_BENCH_THREADS`` (4), as for
``bench_fanout``; ``RSTREAM_BENCH_PG_URL`` (default ``RSTREAM_TEST_POSTGRES_URL``,
else ``postgresql://postgres@127.0.0.1:5432/postgres``): the server to use. A
fresh schema is created there and dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import requests

from bench.bench_fanout import (
    LATENCY_EVERY,
    STREAM,
    Result,
    Server,
    Subscriber,
    _env_float,
    _env_int,
    read_all,
    run,
)

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def pg_schema(url: str) -> Iterator[str]:
    """A fresh schema in ``url``'s database; yields the storage URL for it."""
    import psycopg
    from psycopg import sql

    from rstream.server.storage.postgres import parse_postgres_url

    name = f"rstream_bench_{secrets.token_hex(6)}"
    conninfo = parse_postgres_url(url).conninfo
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield f"{url}{'&' if '?' in url else '?'}schema={name}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def run_replicas(
    db: str, n_subscribers: int, seconds: float, rate: float, threads: int, replicas: int = 2
) -> Result:
    """``bench_fanout.run`` with ``replicas`` servers on one database, the
    subscribers dealt round-robin among them, the writer on the first."""
    servers: list[Server] = []
    try:
        for _ in range(replicas):
            servers.append(Server(db))
        writer = servers[0]
        with requests.Session() as http:
            rr = {"record_rate": {"keyframe_frequency": 3_600_000, "change_frequency": 0}}
            http.put(f"{writer.url}/v1/streams/{STREAM}", json=rr).raise_for_status()
            start_rev = http.post(
                f"{writer.url}/v1/streams/{STREAM}/state", json={"state": {"i": 0}}
            ).json()["revision"]
            subs = []
            for k in range(n_subscribers):
                server = servers[k % replicas]
                sock = socket.create_connection(server.address)
                sock.sendall(
                    f"GET /v1/streams/{STREAM}/live?since={start_rev} HTTP/1.1\r\n"
                    "Host: bench\r\n\r\n".encode()
                )
                # Measure latency on every replica alike.
                subs.append(Subscriber(sock, measure=(k // replicas) % LATENCY_EVERY == 0))
            stop = threading.Event()
            groups = [subs[i::threads] for i in range(threads)]
            readers = [threading.Thread(target=read_all, args=(g, stop)) for g in groups if g]
            for t in readers:
                t.start()
            try:
                cpu0 = sum(s.cpu_seconds() for s in servers)
                t0 = time.perf_counter()
                writes = int(seconds * rate)
                for i in range(1, writes + 1):
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        stop.wait(delay)
                    http.post(
                        f"{writer.url}/v1/streams/{STREAM}/state",
                        json={"state": {"i": i, "sent": time.time()}},
                    ).raise_for_status()
                last_rev = start_rev + writes
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and any(
                    not s.revs or s.revs[-1] < last_rev for s in subs
                ):
                    stop.wait(0.05)  # a condition across sockets: poll, with a deadline
                elapsed = time.perf_counter() - t0
                cpu = sum(s.cpu_seconds() for s in servers) - cpu0
            finally:
                stop.set()
                for t in readers:
                    t.join()
                for s in subs:
                    s.sock.close()
    finally:
        for server in servers:
            server.stop()
    expected = list(range(start_rev + 1, last_rev + 1))
    missing = sum(1 for s in subs if s.revs != expected)
    latencies = sorted(x for s in subs for x in s.latencies)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    delivered = sum(len(s.revs) for s in subs)
    return Result(n_subscribers, delivered, elapsed, cpu, pct(0.50), pct(0.99), missing)


def main() -> None:
    n = _env_int("RSTREAM_BENCH_SUBSCRIBERS", 500)
    seconds = _env_float("RSTREAM_BENCH_SECONDS", 30)
    rate = _env_float("RSTREAM_BENCH_RATE", 200)
    threads = _env_int("RSTREAM_BENCH_THREADS", 4)
    pg_url = os.environ.get(
        "RSTREAM_BENCH_PG_URL", os.environ.get("RSTREAM_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    )
    print(f"{rate:g} states/s for {seconds:g} s to {n} subscribers: SQLite on one server; "
          "PostgreSQL on one, then on two replicas (subscribers split)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = run("sqlite:///" + os.path.join(tmp, "bench.db"), n, seconds, rate, threads)
    with pg_schema(pg_url) as db:
        pg_one = run(db, n, seconds, rate, threads)
    with pg_schema(pg_url) as db:
        pg_two = run_replicas(db, n, seconds, rate, threads, replicas=2)
    results = [("sqlite x1", sqlite), ("pg x1", pg_one), ("pg x2", pg_two)]
    header = "".join(f"{name:>12}" for name, _ in results)
    print(f"{'':26}{header}{'pg1/sqlite':>12}{'pg2/sqlite':>12}")
    rows: list[tuple[str, Callable[[Result], float], str]] = [
        ("delivered events/s", lambda r: r.events_per_s, "{:.0f}"),
        ("server CPU s / 1k events", lambda r: r.cpu_per_1000, "{:.4f}"),
        ("latency p50 (ms)", lambda r: r.p50 * 1000, "{:.2f}"),
        ("latency p99 (ms)", lambda r: r.p99 * 1000, "{:.2f}"),
    ]
    for name, get, fmt in rows:
        values = [get(result) for _, result in results]
        cells = "".join(f"{fmt.format(v):>12}" for v in values)
        ratios = "".join(
            f"{(v / values[0] if values[0] else float('nan')):>11.2f}x" for v in values[1:]
        )
        print(f"{name:26}{cells}{ratios}")
    for name, result in results:
        status = "OK" if result.missing == 0 else f"MISSING ({result.missing} subscribers)"
        print(f"{name}: {result.subscribers} subscribers received every entry: {status}")


if __name__ == "__main__":
    main()
