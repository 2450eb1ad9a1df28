"""The store id: random, created with the store, kept in it, shared by every
server on one database, and reported by the read endpoints."""

from __future__ import annotations

import re
from pathlib import Path

import requests

from rstream.server.storage import MemoryStorage, open_storage
from tests.pgutil import PgSchema, pg_schema  # noqa: F401  (a fixture)
from tests.serverutil import running_server

HEX32 = re.compile(r"[0-9a-f]{32}\Z")


def test_memory_stores_have_ids_of_their_own() -> None:
    with MemoryStorage() as a, MemoryStorage() as b:
        assert HEX32.match(a.store_id)
        assert a.store_id == a.store_id
        assert a.store_id != b.store_id


def test_a_sqlite_store_keeps_its_id(tmp_path: Path) -> None:
    with open_storage(f"sqlite:///{tmp_path / 'a.db'}") as a:
        first = a.store_id
    assert HEX32.match(first)
    with open_storage(f"sqlite:///{tmp_path / 'a.db'}") as again:
        assert again.store_id == first
    with open_storage(f"sqlite:///{tmp_path / 'b.db'}") as other:
        assert other.store_id != first


def test_every_replica_on_one_postgres_schema_shares_the_id(pg_schema: PgSchema) -> None:  # noqa: F811
    with open_storage(pg_schema.storage_url) as a, open_storage(pg_schema.storage_url) as b:
        assert HEX32.match(a.store_id)
        assert a.store_id == b.store_id


def test_the_read_endpoints_report_the_id(tmp_path: Path) -> None:
    with (
        open_storage(f"sqlite:///{tmp_path / 'a.db'}") as storage,
        running_server(storage) as url,
        requests.Session() as http,
    ):
        store_id = storage.store_id
        http.post(f"{url}/v1/streams/r/state", json={"state": {"x": 1}}).raise_for_status()
        http.post(f"{url}/v1/streams/r/state", json={"state": {"x": 2}}).raise_for_status()
        assert http.get(f"{url}/v1/streams").json()["store_id"] == store_id
        assert http.get(f"{url}/v1/streams/r").json()["store_id"] == store_id
        window = http.get(f"{url}/v1/streams/r/window")
        assert window.headers["RStream-Store-Id"] == store_id
        entries = http.get(f"{url}/v1/streams/r/entries")
        assert entries.headers["RStream-Store-Id"] == store_id
        # An immutable page answered 304 still names the store.
        end = window.json()["start"]
        page = http.get(f"{url}/v1/streams/r/entries", params={"end": end})
        assert page.status_code == 200
        etag = page.headers["ETag"]
        again = http.get(
            f"{url}/v1/streams/r/entries", params={"end": end}, headers={"If-None-Match": etag}
        )
        assert again.status_code == 304
        assert again.headers["RStream-Store-Id"] == store_id
