"""The server when its storage fails (issue 17), through a real server.

- A storage that raises an unexpected error: the client gets the protocol's
  JSON error (500 ``internal``, or 503 ``unavailable`` with ``Retry-After``
  for errors that mean the storage is out of reach), never a traceback, and
  the server keeps serving: once the fault is gone every request works, no
  failed write left anything behind, and a live subscriber sees every
  acknowledged change once.
- PostgreSQL connections terminated in the middle of the server's writes
  and in its idle pool: same checks.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from rstream import ClientClosed, RStreamError, StorageUnavailable
from rstream.server.storage.postgres import PostgresStorage
from rstream.server.storage.sqlite import SQLiteStorage
from tests.pgutil import Backends, PgSchema, assert_exactly_once, fresh_schema, held_pid
from tests.serverutil import SSEReader, running_server

_T = TypeVar("_T")
T0 = 1_714_564_800_000_000
S = 1_000_000
NO_AMENDS = {"record_rate": {"keyframe_frequency": 4, "change_frequency": 0}}


class FaultyStorage(SQLiteStorage):
    """A SQLite storage whose reads or writes raise ``faults["read"]`` /
    ``faults["write"]`` while they are set (every read and write of the
    storage and its logs goes through ``_read`` and ``_write``)."""

    def __init__(self, path: Path) -> None:
        self.faults: dict[str, BaseException] = {}
        super().__init__(path)

    def _trip(self, kind: str) -> None:
        fault = self.faults.get(kind)
        if fault is not None:
            raise fault

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        self._trip("read")
        return super()._read(fn)

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        self._trip("write")
        return super()._write(fn)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[FaultyStorage]:
    with FaultyStorage(tmp_path / "faulty.db") as storage:
        yield storage


def post_state(session: requests.Session, url: str, state: dict[str, Any]) -> requests.Response:
    return session.post(f"{url}/v1/streams/robot/state", json={"state": state}, timeout=10)


def assert_error(response: requests.Response, status: int, code: str) -> None:
    """The protocol's JSON error, telling nothing of the cause."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "error": {
            "code": code,
            "message": "internal server error"
            if status == 500
            else "storage unavailable; retry later",
        }
    }
    assert ("Retry-After" in response.headers) == (status == 503)


def follow(reader: SSEReader, url: str, last: int, *, until: int) -> tuple[list[int], SSEReader]:
    """The revisions of the changes after ``last`` up to ``until``, read as a
    client does: a live response that a storage error ended is resumed with
    ``Last-Event-ID``. Returns them and the reader in use (to close)."""
    ids: list[int] = []
    while last < until:
        try:
            event = reader.next()
        except (StopIteration, requests.exceptions.ChunkedEncodingError):
            reader.close()
            reader = SSEReader(url, headers={"Last-Event-ID": str(last)})
            continue
        if event.event in ("entry", "amend"):
            last = int(event.id or 0)
            ids.append(last)
    return ids, reader


UNEXPECTED = [
    (RuntimeError("secret detail"), 500, "internal"),
    (KeyError("secret detail"), 500, "internal"),
    (OSError("secret detail"), 503, "unavailable"),
    (TimeoutError("secret detail"), 503, "unavailable"),
    (sqlite3.OperationalError("database is locked"), 503, "unavailable"),
    (StorageUnavailable("secret detail"), 503, "unavailable"),
    (ClientClosed("secret detail"), 503, "unavailable"),
]


@pytest.mark.parametrize(("fault", "status", "code"), UNEXPECTED, ids=lambda v: repr(v)[:30])
def test_a_failing_storage_is_a_json_error_and_the_server_keeps_serving(
    storage: FaultyStorage,
    fault: BaseException,
    status: int,
    code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running_server(storage, heartbeat=0.5) as url, requests.Session() as session:
        assert session.put(f"{url}/v1/streams/robot", json=NO_AMENDS).status_code == 201
        acknowledged = [{"n": 0}]
        assert post_state(session, url, acknowledged[0]).status_code == 200
        reader = SSEReader(f"{url}/v1/streams/robot/live")
        try:
            assert reader.take(1)[0].json()["data"] == {"n": 0}
            storage.faults["read"] = fault
            for path in ("/v1/streams", "/v1/streams/robot", "/v1/streams/robot/entries"):
                assert_error(session.get(f"{url}{path}", timeout=10), status, code)
            assert_error(post_state(session, url, {"lost": "read"}), status, code)
            del storage.faults["read"]
            storage.faults["write"] = fault
            assert_error(post_state(session, url, {"lost": "write"}), status, code)
            batch = [{"timestamp": "2030-01-01T00:00:00Z", "type": "snapshot", "data": {}}]
            response = session.post(f"{url}/v1/streams/robot/entries", json=batch, timeout=10)
            assert_error(response, status, code)
            del storage.faults["write"]
            # Served again; the writer goes on from what is really stored.
            for n in range(1, 6):
                response = post_state(session, url, {"n": n})
                assert response.status_code == 200, response.text
                acknowledged.append({"n": n})
            ids, reader = follow(reader, f"{url}/v1/streams/robot/live", 1, until=6)
        finally:
            reader.close()
        assert ids == [2, 3, 4, 5, 6]
        assert session.get(f"{url}/v1/streams/robot", timeout=10).json()["revision"] == 6
    assert_exactly_once(storage.log("robot"), acknowledged)
    if not isinstance(fault, RStreamError):  # logged with its traceback, not shown
        assert any(r.exc_info and r.exc_info[1] is fault for r in caplog.records)


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture
def schema() -> Iterator[PgSchema]:
    with fresh_schema() as schema:
        yield schema


def test_server_writes_survive_connections_killed_mid_write_and_in_the_pool(
    schema: PgSchema,
) -> None:
    """Every third write's locked connection is terminated by the writer's
    clock (called inside the write lock, before the pipelined write): the
    client gets 503 and sends the write again. Between writes the idle pool
    is terminated too, which costs no error. A live subscriber on another
    replica (woken by LISTEN/NOTIFY) and the log both hold every
    acknowledged write once, in order."""
    backends = Backends(schema)
    times = itertools.count(T0, S)
    clock_calls = itertools.count()
    storage = PostgresStorage(backends.url)

    kills: list[int] = []

    def clock() -> int:
        if next(clock_calls) % 3 == 2:
            kills.append(backends.terminate(pid=held_pid(storage.log("robot"))))
        return next(times)

    with (
        storage,
        PostgresStorage(schema.storage_url) as other,
        running_server(storage, clock=clock) as url,
        running_server(other, heartbeat=0.5) as other_url,
        requests.Session() as session,
    ):
        assert session.put(f"{url}/v1/streams/robot", json=NO_AMENDS).status_code == 201
        acknowledged: list[dict[str, Any]] = []
        unavailable = 0
        with SSEReader(f"{other_url}/v1/streams/robot/live") as reader:
            for n in range(20):
                state = {"n": n, "tail": list(range(n % 5))}
                while (response := post_state(session, url, state)).status_code == 503:
                    assert response.json()["error"]["code"] == "unavailable"
                    unavailable += 1
                assert response.status_code in (200, 201), response.text
                acknowledged.append(state)
                backends.terminate()  # the idle pool: replaced without an error
            events = reader.take(20)
        # Each kill cost its write one 503; the dead pool cost nothing.
        assert kills == [1] * unavailable
        assert unavailable >= 6
        assert [event.id for event in events] == [str(rev) for rev in range(1, 21)]
        assert [event.event for event in events] == ["entry"] * 20
        assert_exactly_once(storage.log("robot"), acknowledged)
        assert_exactly_once(other.log("robot"), acknowledged)


def test_a_dead_pooled_connection_costs_the_client_nothing(
    schema: PgSchema, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rstream")
    backends = Backends(schema)
    with (
        PostgresStorage(backends.url, min_size=2, max_size=2) as storage,
        running_server(storage) as url,
        requests.Session() as session,
    ):
        assert session.put(f"{url}/v1/streams/robot", json=NO_AMENDS).status_code == 201
        acknowledged = []
        for n in range(5):
            assert backends.terminate() >= 1
            state = {"n": n}
            assert post_state(session, url, state).status_code == 200
            acknowledged.append(state)
            assert backends.terminate() >= 1
            assert session.get(f"{url}/v1/streams/robot", timeout=10).json()["revision"] == n + 1
        assert_exactly_once(storage.log("robot"), acknowledged)
    assert "a pooled connection was dead" in caplog.text
