"""Live fan-out on PostgreSQL with the subscribers split across two replicas,
next to the same measurement on SQLite (one server).

Reuses ``bench_fanout``'s run (server processes, raw-socket subscribers) and
its table; only the topology differs. Three runs, same writer rate and
subscriber count:

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
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from bench.bench_fanout import _env_float, _env_int, print_table, run

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
        pg_two = run(db, n, seconds, rate, threads, replicas=2)
    results = [("sqlite x1", sqlite), ("pg x1", pg_one), ("pg x2", pg_two)]
    print_table(results, ["pg1/sqlite", "pg2/sqlite"])


if __name__ == "__main__":
    main()
