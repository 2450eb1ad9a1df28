"""Several server replicas on one PostgreSQL database (issue "Scale-out").

- A client that follows a stream through two ``rstream serve`` processes, one of
  which is SIGKILLed mid-run and restarted, delivers exactly the database's log:
  nothing lost, nothing twice, in order.
- Writers on both replicas at once never produce a duplicate or out-of-order
  revision; every write either lands (2xx) or is refused with a 409.
- A write on one replica reaches live subscribers of the other.

Each test has a PostgreSQL schema of its own (``tests/pgutil.py``).
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
import pytest
import requests
import tenacity

import rstream
from rstream.core.entry import Entry, EntryKind
from rstream.server.storage.postgres import PostgresStorage
from tests.pgutil import PgSchema, fresh_schema
from tests.pgutil import replay as replay_states
from tests.serverutil import ServerProcess, SSEReader, running_server
from tests.threadutil import run_threads, wait_for


@pytest.fixture
def schema() -> Iterator[PgSchema]:
    with fresh_schema() as schema:
        yield schema


def db_entries(schema: PgSchema, stream_id: str) -> list[Entry]:
    """The stream's log, straight from the database."""
    with psycopg.connect(schema.url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT ts_us, kind, data, rev FROM {schema.name}.entries "
            "WHERE stream_id = %s ORDER BY ts_us",
            (stream_id,),
        ).fetchall()
    return [
        Entry.from_micros(ts, EntryKind(kind), json.loads(data), rev)
        for ts, kind, data, rev in rows
    ]


def replay(entries: list[Entry]) -> list[tuple[datetime, dict[str, Any]]]:
    """``(timestamp, state)`` after each entry, computed with the core."""
    return list(zip((e.timestamp for e in entries), replay_states(entries), strict=True))


@contextmanager
def two_replicas(schema: PgSchema, **server_b: Any) -> Iterator[tuple[str, str, PostgresStorage]]:
    """Two replicas in this process: a storage each on ``schema``, each behind a
    server of its own (``server_b``: options of the second). Yields both URLs
    and the second's storage."""
    with (
        PostgresStorage(schema.storage_url) as store_a,
        PostgresStorage(schema.storage_url) as store_b,
        running_server(store_a) as url_a,
        running_server(store_b, **server_b) as url_b,
    ):
        yield url_a, url_b, store_b


def post_state(session: requests.Session, url: str, state: dict[str, Any]) -> dict[str, Any]:
    response = session.post(f"{url}/v1/streams/robot/state", json={"state": state}, timeout=10)
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_client_follows_two_replicas_through_a_sigkill_and_loses_nothing(
    schema: PgSchema, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rstream")
    args = ("--heartbeat", "0.5")
    with (
        ServerProcess(schema.storage_url, args=args) as a,
        ServerProcess(schema.storage_url, args=args) as b,
        requests.Session() as session,
    ):
        # Amending off (every write its own entry), a new window every 0.3 s.
        rate = {"record_rate": {"keyframe_frequency": 300, "change_frequency": 0}}
        assert session.put(f"{a.url}/v1/streams/robot", json=rate, timeout=10).status_code == 201
        fast = tenacity.Retrying(wait=tenacity.wait_fixed(0.05))
        with rstream.Client([a.url, b.url], retry=fast, heartbeat_timeout=2.0) as client:
            robot = client.stream("robot")
            states = robot.states(maxsize=100_000)
            wait_for(lambda: robot.health.state.value == "open")
            servers = {a.url: a, b.url: b}
            n = 0

            def write(url: str, count: int, alternate_with: str | None = None) -> None:
                nonlocal n
                for i in range(count):
                    target = alternate_with if alternate_with and i % 2 else url
                    post_state(session, target, {"n": n, "via": target[-5:], "pad": [n] * 3})
                    n += 1

            write(a.url, 60, alternate_with=b.url)
            live_url = robot.health.url  # the live endpoint the tail reads now
            assert live_url is not None
            victim_url = next(url for url in servers if live_url.startswith(url + "/"))
            victim = servers[victim_url]
            survivor = b if victim is a else a
            victim.kill()  # SIGKILL while the client reads from it
            write(survivor.url, 60)
            victim.start()  # same port
            assert victim.url == victim_url
            write(a.url, 60, alternate_with=b.url)

            expected = replay(db_entries(schema, "robot"))
            assert len(expected) == 180
            delivered: list[tuple[datetime, dict[str, Any]]] = []
            deadline = time.monotonic() + 10
            while len(delivered) < len(expected) and time.monotonic() < deadline:
                try:
                    delivered.append(states.get(timeout=max(0.01, deadline - time.monotonic())))
                except queue.Empty:
                    break
            health = robot.health
            states.close()
    assert delivered == expected
    assert [state["n"] for _, state in delivered] == list(range(180))
    assert health.reconnects >= 1
    assert health.revision == 180
    assert any(
        r.name.startswith("rstream") and "live tail" in r.getMessage() for r in caplog.records
    )


def test_concurrent_writers_on_two_replicas_never_repeat_or_reorder_revisions(
    schema: PgSchema,
) -> None:
    with (
        two_replicas(schema) as (url_a, url_b, _),
    ):
        rate = {"record_rate": {"keyframe_frequency": 50, "change_frequency": 0}}
        with requests.Session() as session:
            assert session.put(f"{url_a}/v1/streams/robot", json=rate).status_code == 201
        outcomes: queue.Queue[tuple[bool, int, dict[str, Any]]] = queue.Queue()

        def writer(url: str, who: int) -> None:
            with requests.Session() as session:
                for n in range(30):
                    body: dict[str, Any] = {"state": {"who": who, "n": n}}
                    given = n % 3 == 2
                    if given:  # the client's clock, a little behind: may lose (409)
                        body["timestamp"] = (time.time_ns() // 1000 - 500) / 1e6
                    response = session.post(f"{url}/v1/streams/robot/state", json=body)
                    outcomes.put((given, response.status_code, response.json()))

        writers = [
            functools.partial(writer, url, who)
            for who, url in enumerate([url_a, url_b, url_a, url_b])
        ]
        assert run_threads(*writers, timeout=60) == []
        answers = [outcomes.get_nowait() for _ in range(outcomes.qsize())]
        assert len(answers) == 120
        written = [body for _, status, body in answers if status in (200, 201)]
        refused = [(given, status, body) for given, status, body in answers if status >= 300]
        # Every refusal is a 409 of a write that carried its own timestamp:
        # server-assigned times never conflict, whichever replica took the write.
        assert all(status == 409 and given for given, status, _ in refused), refused[:3]
        assert all(body["error"]["code"] == "out_of_order" for _, _, body in refused)
        assert len(written) + len(refused) == 120
        entries = db_entries(schema, "robot")
        # Unique, increasing revisions along the log, one per acknowledged write.
        assert [e.rev for e in entries] == list(range(1, len(entries) + 1))
        assert len(entries) == len(written)
        assert sorted(body["revision"] for body in written) == list(range(1, len(written) + 1))
        by_rev = {e.rev: e for e in entries}
        for body in written:
            assert Entry.from_json(body["entry"]) == by_rev[body["revision"]]
        # Every mutation applies to the state before it; every write is a state.
        states = {(state["who"], state["n"]) for _, state in replay(entries)}
        assert len(states) == len(written)


def test_a_write_on_one_replica_reaches_subscribers_of_the_other(schema: PgSchema) -> None:
    with (
        two_replicas(schema, heartbeat=0.5) as (url_a, url_b, _),
        requests.Session() as session,
    ):
        post_state(session, url_a, {"n": 0})
        with SSEReader(f"{url_b}/v1/streams/robot/live") as reader:
            assert reader.take(1)[0].json()["data"] == {"n": 0}
            for n in range(1, 4):
                answer = post_state(session, url_a, {"n": n})
                event = reader.take(1)[0]
                assert event.event == ("amend" if answer["action"] == "amend" else "entry")
                assert event.id == str(answer["revision"])
                assert event.json() == answer["entry"]


def test_subscribers_of_a_replica_whose_listener_reconnects_miss_nothing(
    schema: PgSchema,
) -> None:
    with (
        two_replicas(schema, heartbeat=0.5) as (url_a, url_b, store_b),
        requests.Session() as session,
        psycopg.connect(schema.url, autocommit=True) as admin,
    ):
        no_amends = {"record_rate": {"change_frequency": 0}}  # every write an entry
        assert session.put(f"{url_a}/v1/streams/robot", json=no_amends).status_code == 201
        post_state(session, url_a, {"n": 0})
        with SSEReader(f"{url_b}/v1/streams/robot/live") as reader:
            assert reader.take(1)[0].json()["data"] == {"n": 0}
            # Cut replica B's LISTEN connection, and write on A while it is away.
            # Replica B reconnects, re-reads the revision of every stream it has
            # subscribers for, and its subscriber gets every change exactly once.
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE %s AND pid <> pg_backend_pid()",
                (f"LISTEN%{store_b.channel}%",),
            ).fetchall()
            assert len(cut) == 2  # both replicas' listeners (one channel per schema)
            answers = [post_state(session, url_a, {"n": n}) for n in range(1, 6)]
            events = reader.take(5)
            assert [e.event for e in events] == ["entry"] * 5
            assert [e.json() for e in events] == [a["entry"] for a in answers]
