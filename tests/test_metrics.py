"""``GET /metrics``: off by default, behind the read token, and counting what the
server did (parsed with prometheus_client's own parser)."""

from __future__ import annotations

import itertools
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from rstream.core.timestamps import format_rfc3339
from rstream.server import Limits
from rstream.server.storage import SQLiteStorage, Storage
from tests.pgutil import pg_schema, pg_storage  # noqa: F401 (fixtures)
from tests.serverutil import ServerProcess, SSEReader, running_app, running_server

STATE_ROUTE = "/v1/streams/{stream_id}/state"
STREAM_ROUTE = "/v1/streams/{stream_id}"
T0 = 1_700_000_000.0


def scrape(
    url: str, token: str | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    r = requests.get(f"{url}/metrics", headers=headers, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_until(url: str, name: str, expected: float, **labels: str) -> dict[Any, float]:
    """Scrape until ``name`` reaches ``expected`` (counts updated after a response is
    handed over land a moment later); fails after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(url)
        if value(samples, name, **labels) == expected or time.monotonic() > deadline:
            assert value(samples, name, **labels) == expected
            return samples
        time.sleep(0.02)


def rfc3339(seconds: float) -> str:
    return format_rfc3339(int(seconds * 1e6))


def stepping_clock(step_us: int = 100_000) -> Any:
    """A writers' clock that moves ``step_us`` per write."""
    ticks = itertools.count()
    return lambda: int(T0 * 1e6) + next(ticks) * step_us


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def test_off_by_default(storage: Storage, http: requests.Session) -> None:
    with running_server(storage) as url:
        r = http.get(f"{url}/metrics")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"


def test_requests_and_writes_are_counted(storage: SQLiteStorage, http: requests.Session) -> None:
    with running_server(storage, metrics=True, clock=stepping_clock()) as url:
        post = f"{url}/v1/streams/a/state"
        actions = [
            http.post(post, json={"state": state}).json()["action"]
            for state in ({"x": 1}, {"x": 2}, {"x": 3}, {"x": 3})
        ]
        # The writers' clock moves 100 ms a write: within the default 1 s change
        # frequency, the third write amends the mutation of the second.
        assert actions == ["snapshot", "mutation", "amend", "none"]
        batch = [
            {"timestamp": rfc3339(T0 + 10), "type": 0, "data": {"x": 10}},
            {
                "timestamp": rfc3339(T0 + 11),
                "type": 1,
                "data": {"x": 11},
            },
        ]
        r = http.post(f"{url}/v1/streams/a/entries", json=batch)
        assert r.json()["count"] == 2
        for _ in range(2):
            assert http.get(f"{url}/v1/streams/a").status_code == 200
        assert http.get(f"{url}/v1/streams/nope").status_code == 404
        assert http.get(f"{url}/no/such/path").status_code == 404
        assert http.request("BREW", f"{url}/v1/streams").status_code == 405

        samples = scrape(url)
        requests_total = "rstream_http_requests_total"
        assert value(samples, requests_total, method="GET", route=STREAM_ROUTE, status="200") == 2
        assert value(samples, requests_total, method="GET", route=STREAM_ROUTE, status="404") == 1
        assert value(samples, requests_total, method="GET", route="none", status="404") == 1
        assert value(samples, requests_total, method="POST", route=STATE_ROUTE, status="201") == 1
        assert value(samples, requests_total, method="POST", route=STATE_ROUTE, status="200") == 3
        # Methods outside HTTP's own are one label value, whatever a client sends.
        assert (
            value(samples, requests_total, method="other", route="/v1/streams", status="405") == 1
        )
        # Route templates only: no label holds a stream id.
        routes = {dict(labels).get("route") for _, labels in samples}
        assert not any(r and ("/a" in r or "nope" in r) for r in routes)

        duration = "rstream_http_request_duration_seconds_count"
        assert value(samples, duration, method="POST", route=STATE_ROUTE) == 4
        assert (
            value(
                samples,
                "rstream_http_request_duration_seconds_bucket",
                method="POST",
                route=STATE_ROUTE,
                le="+Inf",
            )
            == 4
        )
        assert (
            value(
                samples,
                "rstream_http_request_duration_seconds_sum",
                method="POST",
                route=STATE_ROUTE,
            )
            > 0
        )

        for action in ("snapshot", "mutation", "amend", "none", "batch"):
            assert value(samples, "rstream_writes_total", action=action) == 1, action
        # The snapshot, the mutation and the batch's two entries; an amend replaces.
        assert value(samples, "rstream_entries_appended_total") == 4
        assert value(samples, "rstream_database_errors_total") == 0
        # Present, and zero until compaction runs.
        assert ("rstream_compaction_runs_total", ()) in samples
        assert value(samples, "rstream_compaction_runs_total") == 0
        assert value(samples, "rstream_compaction_entries_deleted_total") == 0

        on_disk = os.path.getsize(storage.path)
        assert value(samples, "rstream_storage_size_bytes") >= on_disk > 0


def test_live_subscribers_and_events(storage: Storage, http: requests.Session) -> None:
    with running_server(storage, metrics=True, clock=stepping_clock(2_000_000)) as url:
        post = f"{url}/v1/streams/a/state"
        http.post(post, json={"state": {"x": 0}})
        with SSEReader(f"{url}/v1/streams/a/live") as reader:
            assert [e.event for e in reader.take(1)] == ["entry"]
            for i in range(1, 4):
                assert http.post(post, json={"state": {"x": i}}).json()["action"] == "mutation"
            assert [e.id for e in reader.take(3)] == ["2", "3", "4"]
            samples = scrape_until(url, "rstream_live_events_sent_total", 4)
            assert value(samples, "rstream_live_subscribers") == 1
            assert value(samples, "rstream_live_subscriptions_total") == 1
            assert value(samples, "rstream_live_slow_disconnects_total") == 0
        samples = scrape_until(url, "rstream_live_subscribers", 0)
        assert value(samples, "rstream_live_subscriptions_total") == 1
        assert value(samples, "rstream_live_events_sent_total") == 4


def test_a_slow_subscriber_is_counted(storage: Storage, http: requests.Session) -> None:
    limits = Limits(subscriber_bytes=1024 * 1024, subscriber_events=10_000)
    with running_app(storage, limits=limits, metrics=True) as server, socket.socket() as stuck:
        url = server.url
        host, port = url.removeprefix("http://").split(":")
        http.post(f"{url}/v1/streams/big/state", json={"state": {"blob": ""}, "timestamp": T0})
        # A reader that never reads: small receive buffer, request sent, then silence.
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect((host, int(port)))
        stuck.sendall(b"GET /v1/streams/big/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        scrape_until(url, "rstream_live_subscribers", 1)
        # The kernel's socket buffers take a few MB before the server sees the
        # reader stall: write until it is disconnected (12 MB at most).
        written = 0
        while value(scrape(url), "rstream_live_slow_disconnects_total") == 0 and written < 120:
            written += 1
            body = {"state": {"blob": f"{written:06d}" * 16_000}, "timestamp": T0 + written}
            assert http.post(f"{url}/v1/streams/big/state", json=body).status_code == 200
        samples = scrape_until(url, "rstream_live_subscribers", 0)
        assert value(samples, "rstream_live_slow_disconnects_total") == 1
        assert value(samples, "rstream_live_subscriptions_total") == 1


def test_the_read_token_guards_metrics(storage: Storage, http: requests.Session) -> None:
    with running_server(storage, metrics=True, read_token="r-token", write_token="w-token") as url:
        r = http.get(f"{url}/metrics")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        r = http.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        assert "r-token" not in r.text
        samples = scrape(url, "r-token")
        assert (
            value(
                samples, "rstream_http_requests_total", method="GET", route="/metrics", status="401"
            )
            == 2
        )
        scrape(url, "w-token")


def test_database_errors_are_counted(tmp_path: Path, http: requests.Session) -> None:
    path = tmp_path / "locked.db"
    storage = SQLiteStorage(path, busy_timeout=0.05)
    with storage, running_server(storage, metrics=True) as url:
        post = f"{url}/v1/streams/a/state"
        assert http.post(post, json={"state": {"x": 1}}).status_code == 201
        # Another process's writer holds the write lock past busy_timeout.
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            r = http.post(post, json={"state": {"x": 2}})
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "unavailable"
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert http.post(post, json={"state": {"x": 3}}).status_code == 200
        samples = scrape(url)
    assert value(samples, "rstream_database_errors_total") == 1
    assert (
        value(
            samples, "rstream_http_requests_total", method="POST", route=STATE_ROUTE, status="503"
        )
        == 1
    )
    assert value(samples, "rstream_writes_total", action="mutation") == 1


def test_apps_have_their_own_registries(http: requests.Session) -> None:
    with running_app(metrics=True) as first, running_server(metrics=True) as second:
        http.post(f"{first.url}/v1/streams/a/state", json={"state": {"x": 1}})
        # Three windows long past, kept for 1 s: a compaction run deletes the first two.
        assert http.put(f"{first.url}/v1/streams/old", json={"retention": 1000}).ok
        snapshots = [
            {"timestamp": rfc3339(T0 + i), "type": "snapshot", "data": {"i": i}} for i in range(3)
        ]
        assert http.post(f"{first.url}/v1/streams/old/entries", json=snapshots).ok
        assert first.app.state.compactor.run().entries_deleted == 2
        samples = scrape(first.url)
        assert value(samples, "rstream_entries_appended_total") == 4
        assert value(samples, "rstream_compaction_runs_total") == 1
        assert value(samples, "rstream_compaction_entries_deleted_total") == 2
        samples = scrape(second)
        assert value(samples, "rstream_entries_appended_total") == 0
        assert value(samples, "rstream_compaction_runs_total") == 0
    # Nothing went to the process-wide default registry.
    names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("rstream") for name in names)


@pytest.mark.postgres
def test_metrics_on_postgresql(pg_storage: Storage, http: requests.Session) -> None:  # noqa: F811
    with running_server(pg_storage, metrics=True) as url:
        http.post(f"{url}/v1/streams/a/state", json={"state": {"x": 1}})
        samples = scrape(url)
    assert value(samples, "rstream_entries_appended_total") == 1
    assert value(samples, "rstream_writes_total", action="snapshot") == 1
    # The database's size is PostgreSQL's own metric (docs/deploy.rst).
    assert ("rstream_storage_size_bytes", ()) not in samples


def test_serve_metrics_flag(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'streams.db'}"
    with ServerProcess(db, args=("--metrics",)) as server:
        samples = scrape(server.url)
    assert value(samples, "rstream_database_errors_total") == 0
    with ServerProcess(db) as server:
        assert requests.get(f"{server.url}/metrics", timeout=5).status_code == 404
