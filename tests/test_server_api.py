"""The HTTP endpoints of the reference server, over a real uvicorn on a loopback port."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from rstream.core.entry import Entry, EntryKind
from rstream.core.stream import MAX_RATE_MS, RateConfig
from rstream.core.timestamps import format_rfc3339
from rstream.core.wire import encode_entry, encode_row
from rstream.errors import ConfigError
from rstream.server import Limits
from rstream.server.storage import MemoryStorage, Storage, open_storage
from rstream.server.storage.base import MAX_US, MIN_US, dump_json
from tests.serverutil import running_server
from tests.test_storage import TRICKY

T0 = 1_714_564_800  # 2024-05-01T12:00:00Z
# The tricky states the server takes (it refuses lone surrogates; storage keeps them).
SENDABLE = [data for data in TRICKY if "lone_surrogate" not in data]


def iso(seconds: float) -> str:
    return format_rfc3339(round(seconds * 1_000_000))


def snap(seconds: float, **data: Any) -> dict[str, Any]:
    return {"timestamp": iso(seconds), "type": 0, "data": data}


def mut(seconds: float, **data: Any) -> dict[str, Any]:
    return {"timestamp": iso(seconds), "type": 1, "data": data}


@pytest.fixture(scope="module")
def shared_url() -> Iterator[str]:
    """One server for the tests that only touch their own stream (``sid``)."""
    with running_server() as base:
        yield base


@pytest.fixture
def sid(request: pytest.FixtureRequest) -> str:
    """A stream id of this test alone."""
    return f"t{abs(hash(request.node.nodeid)):x}"


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def error_of(response: requests.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str)
    assert "Traceback" not in response.text
    code: str = body["error"]["code"]
    return code


def windowed(http: requests.Session, url: str, stream: str = "w") -> None:
    """Snapshots at T0+100, +200, +300 with mutations between."""
    entries = [
        snap(T0 + 100, n=0),
        mut(T0 + 150, n=1),
        snap(T0 + 200, n=2),
        mut(T0 + 250, n=3),
        snap(T0 + 300, n=4),
        mut(T0 + 350, n=5),
    ]
    r = http.post(f"{url}/v1/streams/{stream}/entries", json=entries)
    assert r.status_code == 201, r.text
    assert r.json() == {"count": 6, "revision": 6}


def ndjson(response: requests.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines()]


# -- basics ------------------------------------------------------------------------


def test_health_and_empty_list(url: str, http: requests.Session) -> None:
    assert http.get(f"{url}/v1/health").json() == {"status": "ok"}
    assert http.get(f"{url}/v1/streams").json()["streams"] == []


def test_put_creates_then_updates(url: str, http: requests.Session) -> None:
    r = http.put(f"{url}/v1/streams/robot-1", json={})
    assert r.status_code == 201
    body = r.json()
    assert len(body.pop("store_id")) == 32  # see tests/test_store_id.py
    assert body == {
        "id": "robot-1",
        "record_rate": {"keyframe_frequency": 60000, "change_frequency": 1000},
        "retention": None,
        "first": None,
        "last": None,
        "revision": 0,
        "latest_snapshot": None,
    }
    r = http.put(
        f"{url}/v1/streams/robot-1",
        json={"record_rate": {"keyframe_frequency": 5000, "change_frequency": 0}},
    )
    assert r.status_code == 200
    assert r.json()["record_rate"] == {"keyframe_frequency": 5000, "change_frequency": 0}
    assert http.get(f"{url}/v1/streams/robot-1").json()["record_rate"]["keyframe_frequency"] == 5000


def test_state_writes_follow_the_writer_rules(url: str, http: requests.Session) -> None:
    post = f"{url}/v1/streams/s/state"
    r = http.post(post, json={"state": {"a": 1}, "timestamp": T0})
    assert r.status_code == 201
    assert r.json() == {
        "action": "snapshot",
        "entry": {"timestamp": iso(T0), "type": 0, "data": {"a": 1}, "rev": 1},
        "revision": 1,
    }
    r = http.post(post, json={"state": {"a": 1}, "timestamp": T0 + 2})
    assert (r.status_code, r.json()) == (200, {"action": "none", "entry": None, "revision": 1})
    r = http.post(post, json={"state": {"a": 2}, "timestamp": iso(T0 + 3)})
    assert r.json()["action"] == "mutation"
    assert r.json()["entry"]["timestamp"] == iso(T0 + 3)
    r = http.post(post, json={"state": {"a": 3}, "timestamp": T0 + 3.5})
    assert r.json()["action"] == "amend"
    assert r.json()["entry"]["timestamp"] == iso(T0 + 3)
    assert r.json()["revision"] == 3
    r = http.post(post, json={"state": {"a": 4}, "timestamp": T0 + 70})
    assert r.json()["action"] == "snapshot"
    # Without a timestamp the server's clock is used, never before the newest entry.
    r = http.post(post, json={"state": {"a": 5}})
    assert r.json()["entry"]["timestamp"] > iso(T0 + 70)
    listed = http.get(f"{url}/v1/streams").json()["streams"]
    assert listed == [{"id": "s", "first": iso(T0), "last": r.json()["entry"]["timestamp"],
                       "revision": 5}]  # fmt: skip


# -- window ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "start", "end"),
    [
        (T0 + 100, T0 + 100, T0 + 200),  # exactly at a snapshot
        (T0 + 199.999999, T0 + 100, T0 + 200),  # just before the next one
        (T0 + 200, T0 + 200, T0 + 300),
        (T0 + 300, T0 + 300, None),  # the live window
        (T0 + 10_000, T0 + 300, None),  # after everything
    ],
)
def test_window_bounds(
    url: str, http: requests.Session, at: float, start: float, end: float | None
) -> None:
    windowed(http, url)
    for at_text in (iso(at), f"{at:.6f}"):
        r = http.get(f"{url}/v1/streams/w/window", params={"at": at_text})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "start": iso(start),
            "end": None if end is None else iso(end),
            "revision": 6,
        }


def test_window_before_the_first_snapshot_and_live(url: str, http: requests.Session) -> None:
    windowed(http, url)
    r = http.get(f"{url}/v1/streams/w/window", params={"at": iso(T0 + 99.999999)})
    assert (r.status_code, error_of(r)) == (404, "out_of_range")
    r = http.get(f"{url}/v1/streams/w/window")
    assert r.json() == {"start": iso(T0 + 300), "end": None, "revision": 6}
    http.put(f"{url}/v1/streams/empty")
    r = http.get(f"{url}/v1/streams/empty/window")
    assert (r.status_code, error_of(r)) == (404, "out_of_range")
    # Epoch seconds beyond the years RFC 3339 can write are still answered.
    for at in ("-1e20", "1e20"):
        r = http.get(f"{url}/v1/streams/empty/window", params={"at": at})
        assert (r.status_code, error_of(r)) == (404, "out_of_range"), at
    r = http.get(f"{url}/v1/streams/w/window", params={"at": "-1e20"})
    assert (r.status_code, error_of(r)) == (404, "out_of_range")
    r = http.get(f"{url}/v1/streams/w/window", params={"at": "1e20"})
    assert r.json() == {"start": iso(T0 + 300), "end": None, "revision": 6}
    r = http.get(f"{url}/v1/streams/w/entries", params={"start": "-1e999999"})
    assert [e["data"]["n"] for e in ndjson(r)] == [0, 1, 2, 3, 4, 5]
    # An offset and a "+" sent as %2B are read exactly.
    r = http.get(f"{url}/v1/streams/w/window?at=" + quote("2024-05-01T14:03:20+02:00"))
    assert r.json()["start"] == iso(T0 + 200 - 7200 + 7200) or r.status_code == 404


# -- entries -----------------------------------------------------------------------


def test_range_pagination_follows_link(url: str, http: requests.Session) -> None:
    entries = [snap(T0, i=0)] + [mut(T0 + i, i=i) for i in range(1, 25)]
    assert http.post(f"{url}/v1/streams/p/entries", json=entries).status_code == 201
    got: list[dict[str, Any]] = []
    next_url: str | None = f"{url}/v1/streams/p/entries?limit=10"
    pages = 0
    while next_url:
        r = http.get(next_url)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        page = ndjson(r)
        got += page
        pages += 1
        if "RStream-Next-Start" in r.headers:
            assert len(page) == 10
            assert r.headers["RStream-Next-Start"] == iso(T0 + len(got))
            next_url = url + r.links["next"]["url"]
        else:
            assert "Link" not in r.headers
            next_url = None
    assert pages == 3
    assert [e["data"]["i"] for e in got] == list(range(25))
    assert [e["rev"] for e in got] == list(range(1, 26))


def test_range_bounds_and_limits(url: str, http: requests.Session) -> None:
    windowed(http, url)
    base = f"{url}/v1/streams/w/entries"
    r = http.get(base, params={"start": iso(T0 + 150), "end": iso(T0 + 300)})
    assert [e["data"] for e in ndjson(r)] == [{"n": 1}, {"n": 2}, {"n": 3}]
    r = http.get(base, params={"start": iso(T0 + 400)})
    assert (r.status_code, r.text) == (200, "")
    r = http.get(base, params={"start": T0 + 300, "end": T0 + 200})
    assert (r.status_code, r.text) == (200, "")
    # "\u00b2" ("²") passes str.isdigit() but not int().
    for bad in ("0", "-1", "x", "1.5", "\u00b2", "0" * 20):
        r = http.get(base, params={"limit": bad})
        assert (r.status_code, error_of(r)) == (400, "bad_request"), bad[:20]
    # Leading zeros are still the number (not cut to 0, an empty page that never ends).
    r = http.get(base, params={"start": iso(T0 + 150), "limit": "0" * 15 + "2"})
    assert [e["data"] for e in ndjson(r)] == [{"n": 1}, {"n": 2}]
    assert r.headers["RStream-Next-Start"] == iso(T0 + 250)
    # A limit over the page size is capped, even one int() would refuse (over 4300 digits).
    r = http.get(base, params={"limit": "9" * 5000})
    assert [e["data"]["n"] for e in ndjson(r)] == [0, 1, 2, 3, 4, 5]
    for bad in ("yesterday", "2024-13-01T00:00:00Z", "nan", "2024-05-01T12:00:00"):
        r = http.get(base, params={"start": bad})
        assert (r.status_code, error_of(r)) == (400, "invalid_time"), bad


def test_page_byte_budget_ends_a_page_early(storage: Storage, http: requests.Session) -> None:
    with running_server(storage, limits=Limits(page_bytes=200)) as url:
        entries = [snap(T0, i=0)] + [mut(T0 + i, i=i, pad="x" * 50) for i in range(1, 10)]
        http.post(f"{url}/v1/streams/b/entries", json=entries)
        r = http.get(f"{url}/v1/streams/b/entries")
        page = ndjson(r)
        assert 1 <= len(page) < 10
        assert r.headers["RStream-Next-Start"] == iso(T0 + len(page))


@pytest.mark.parametrize(
    "micros",
    [MIN_US, MAX_US - 1, -1_500_000, -1, 0, 1, T0 * 10**6, T0 * 10**6 + 100_000,
     T0 * 10**6 + 123_450, T0 * 10**6 + 999_999, T0 * 10**6 + 1_000_001],
)  # fmt: skip
def test_encode_row_splices_the_bytes_encode_entry_makes(micros: int) -> None:
    for kind in EntryKind:
        for rev, data in enumerate(TRICKY, 1):
            entry = Entry.from_micros(micros, kind, data, rev)
            line = encode_row(micros, int(kind), dump_json(data), rev)
            assert line == encode_entry(entry)
            assert json.loads(line) == entry.to_json(with_rev=True)
            if "lone_surrogate" not in data:
                # encode_entry as it was before lone surrogates had a form of their own.
                old = json.dumps(entry.to_json(with_rev=True), ensure_ascii=False,
                                 separators=(",", ":")).encode("utf-8")  # fmt: skip
                assert line == old


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_entries_page_is_every_entry_encoded(
    backend: str, tmp_path: Path, http: requests.Session
) -> None:
    db = "memory://" if backend == "memory" else f"sqlite:///{tmp_path / 'page.db'}"
    with open_storage(db) as storage, running_server(storage) as url:
        entries = [snap(T0 + i, **data) for i, data in enumerate(SENDABLE)]
        assert http.post(f"{url}/v1/streams/t/entries", json=entries).status_code == 201
        state = {"text": "ü"}
        r = http.post(f"{url}/v1/streams/t/state", json={"state": state})
        assert r.status_code == 200, r.text
        assert r.json()["entry"]["data"] == state
        body = http.get(f"{url}/v1/streams/t/entries").content
        stored = list(storage.log("t").iter_range(None, None))
    assert len(stored) == len(SENDABLE) + 1
    assert body == b"".join(encode_entry(entry) + b"\n" for entry in stored)
    assert [json.loads(line)["data"] for line in body.splitlines()] == [*SENDABLE, state]


def test_immutable_ranges_have_an_etag(url: str, http: requests.Session) -> None:
    windowed(http, url)
    base = f"{url}/v1/streams/w/entries"
    params = {"start": iso(T0 + 100), "end": iso(T0 + 300)}
    r = http.get(base, params=params)
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    etag = r.headers["ETag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    again = http.get(base, params=params)
    assert again.headers["ETag"] == etag
    r304 = http.get(base, params=params, headers={"If-None-Match": etag})
    assert (r304.status_code, r304.content) == (304, b"")
    assert r304.headers["ETag"] == etag
    other = http.get(base, params={**params, "end": iso(T0 + 200)})
    assert other.headers["ETag"] != etag
    stale = http.get(base, params=params, headers={"If-None-Match": '"nope"'})
    assert stale.status_code == 200
    # Reaching into the live window: not cacheable.
    for live in ({"start": iso(T0 + 100)}, {"end": iso(T0 + 300.000001)}):
        r = http.get(base, params=live, headers={"If-None-Match": etag})
        assert r.status_code == 200
        assert r.headers["Cache-Control"] == "no-store"
        assert "ETag" not in r.headers


# -- raw entries -------------------------------------------------------------------


def test_post_entries_forms(url: str, http: requests.Session) -> None:
    one = http.post(f"{url}/v1/streams/e/entries", json=snap(T0, a=1))
    assert (one.status_code, one.json()) == (201, {"count": 1, "revision": 1})
    lines = "\n".join(json.dumps(e) for e in [mut(T0 + 1, a=2), mut(T0 + 2, b={"$set": 1})])
    r = http.post(
        f"{url}/v1/streams/e/entries",
        data=lines + "\n\n",
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert (r.status_code, r.json()) == (200, {"count": 2, "revision": 3})
    assert http.post(f"{url}/v1/streams/e/entries", json=[]).json() == {"count": 0, "revision": 3}
    r = http.post(f"{url}/v1/streams/e/entries", json=[{**snap(T0 + 3, z=1), "type": "snapshot"}])
    assert r.json() == {"count": 1, "revision": 4}


# -- errors ------------------------------------------------------------------------


def revision(http: requests.Session, url: str, stream: str) -> int:
    rev: int = http.get(f"{url}/v1/streams/{stream}").json()["revision"]
    return rev


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'{"state": NaN}', 400, "invalid_json"),
        (b"[" * 100_000, 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b"[]", 400, "bad_request"),
        (b'{"state": [1]}', 400, "bad_request"),
        (b'{"state": "x"}', 400, "bad_request"),
        (b'{"stat": {}}', 400, "bad_request"),
        (b'{"state": {}, "extra": 1}', 400, "bad_request"),
        (b'{"state": {"a": 1}, "timestamp": "soon"}', 400, "invalid_time"),
        (b'{"state": {"a": 1}, "timestamp": true}', 400, "invalid_time"),
        (b'{"state": {"a": 1}, "timestamp": "2024-05-01T11:00:00Z"}', 409, "out_of_order"),
        (b'{"state": {"a": 1}, "timestamp": 1714564800}', 409, "out_of_order"),
    ],
)
def test_bad_state_writes_change_nothing(
    shared_url: str, sid: str, http: requests.Session, body: bytes, status: int, code: str
) -> None:
    url = shared_url
    http.post(f"{url}/v1/streams/{sid}/state", json={"state": {"a": 0}, "timestamp": T0})
    r = http.post(f"{url}/v1/streams/{sid}/state", data=body,
                  headers={"Content-Type": "application/json"})  # fmt: skip
    assert (r.status_code, error_of(r)) == (status, code)
    assert revision(http, url, sid) == 1


@pytest.mark.parametrize(
    ("entries", "status", "code"),
    [
        ([mut(T0 + 1, a={"$push": 1})], 422, "invalid_mutation"),  # $push on a number
        ([mut(T0 + 1, a=1), mut(T0 + 2, a={"$truncate": "x"})], 422, "invalid_mutation"),
        ([mut(T0 - 1, a=1)], 409, "out_of_order"),
        ([mut(T0 + 2, a=1), mut(T0 + 1, a=2)], 409, "out_of_order"),
        ([mut(T0, a=1)], 409, "out_of_order"),
        ([{"timestamp": iso(T0 + 1), "type": 7, "data": {}}], 400, "invalid_entry"),
        ([{"timestamp": iso(T0 + 1), "type": 0}], 400, "invalid_entry"),
        ([{"timestamp": "noon", "type": 0, "data": {}}], 400, "invalid_entry"),
        ([{"timestamp": iso(T0 + 1), "type": 0, "data": [1]}], 400, "invalid_entry"),
        ("just a string", 400, "invalid_entry"),
    ],
)
def test_bad_entries_change_nothing(
    shared_url: str, sid: str, http: requests.Session, entries: Any, status: int, code: str
) -> None:
    url = shared_url
    http.post(f"{url}/v1/streams/{sid}/entries", json=[snap(T0, a=[1])])
    r = http.post(f"{url}/v1/streams/{sid}/entries", json=entries)
    assert (r.status_code, error_of(r)) == (status, code), r.text
    assert revision(http, url, sid) == 1
    assert len(ndjson(http.get(f"{url}/v1/streams/{sid}/entries"))) == 1


def test_first_entry_must_be_a_snapshot(url: str, http: requests.Session) -> None:
    r = http.post(f"{url}/v1/streams/new/entries", json=[mut(T0, a=1)])
    assert (r.status_code, error_of(r)) == (422, "invalid_mutation")


@pytest.mark.parametrize(
    "stream_id",
    [
        "..%2Fx",
        "a%2Fb",
        "a%2Fwindow",
        "%FF",
        ".hidden",
        "%22quoted%22",
        "x'%3B%20DROP%20TABLE%20entries%3B--",
        "%C3%A9t%C3%A9",
        "a%20b",
        "x" * 129,
        "y" * 10_000,
        "%00",
    ],
)
def test_odd_stream_ids(shared_url: str, http: requests.Session, stream_id: str) -> None:
    url = shared_url
    before = http.get(f"{url}/v1/streams").json()
    calls: list[tuple[str, str, object]] = [
        ("GET", "", None),
        ("PUT", "", {}),
        ("GET", "/window", None),
        ("GET", "/entries", None),
        ("POST", "/entries", [snap(T0)]),
        ("POST", "/state", {"state": {}}),
        ("GET", "/live", None),
    ]
    for method, suffix, body in calls:
        r = http.request(method, f"{url}/v1/streams/{stream_id}{suffix}", json=body)
        assert (r.status_code, error_of(r)) == (400, "invalid_stream_id"), (method, suffix)
    assert http.get(f"{url}/v1/streams").json() == before


def test_unknown_streams_routes_and_methods(url: str, http: requests.Session) -> None:
    for suffix in ("", "/window", "/entries", "/live"):
        r = http.get(f"{url}/v1/streams/ghost{suffix}")
        assert (r.status_code, error_of(r)) == (404, "stream_not_found"), suffix
    r = http.get(f"{url}/v2/streams")
    assert (r.status_code, error_of(r)) == (404, "not_found")
    r = http.get(f"{url}/v1/streams/x/y/z")
    assert (r.status_code, error_of(r)) == (404, "not_found")
    r = http.delete(f"{url}/v1/streams/ghost")
    assert (r.status_code, error_of(r)) == (405, "method_not_allowed")
    assert "PUT" in r.headers["Allow"]
    r = http.get(f"{url}/v1/streams/ghost/state")
    assert (r.status_code, error_of(r)) == (405, "method_not_allowed")
    r = http.post(f"{url}/v1/streams")
    assert (r.status_code, error_of(r)) == (405, "method_not_allowed")


def test_put_rejects_bad_rates(url: str, http: requests.Session) -> None:
    bodies: tuple[object, ...] = (
        {"record_rate": {"keyframe_frequency": -1}},
        {"record_rate": {"keyframe_frequency": "60s"}},
        {"record_rate": {"keyframe_frequency": 1e300}},
        {"record_rate": {"speed": 1}},
        {"record_rate": 5},
        {"rate": {}},
        [1],
    )
    for body in bodies:
        r = http.put(f"{url}/v1/streams/r", json=body)
        assert (r.status_code, error_of(r)) == (400, "bad_request"), body
    assert http.get(f"{url}/v1/streams/r").status_code == 404


def test_too_large(storage: Storage, http: requests.Session) -> None:
    limits = Limits(max_body_bytes=4096, max_state_bytes=1024)
    with running_server(storage, limits=limits) as url:
        post = f"{url}/v1/streams/big/state"
        r = http.post(post, json={"state": {"x": "y" * 5000}})
        assert (r.status_code, error_of(r)) == (413, "too_large")
        r = http.post(post, json={"state": {"x": "y" * 2000}})  # under the body limit
        assert (r.status_code, error_of(r)) == (413, "too_large")
        # Chunked, no Content-Length: counted while it arrives.
        r = http.post(post, data=iter([b'{"state": {"x": "', b"y" * 3000, b"y" * 3000, b'"}}']),
                      headers={"Content-Type": "application/json"})  # fmt: skip
        assert (r.status_code, error_of(r)) == (413, "too_large")
        r = http.post(f"{url}/v1/streams/big/entries", json=[snap(T0, x="y" * 2000)])
        assert (r.status_code, error_of(r)) == (413, "too_large")
        assert http.get(f"{url}/v1/streams").json()["streams"] == []
        # A 1 GB Content-Length is refused before a byte of body is read.
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/streams/big/state HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
            )
            head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 413 ")


def test_storage_unavailable_is_503(http: requests.Session) -> None:
    store = MemoryStorage()
    with running_server(store) as url:
        http.put(f"{url}/v1/streams/a")
        store.close()
        for method, path in (("GET", "/v1/streams"), ("GET", "/v1/streams/a"),
                             ("POST", "/v1/streams/a/state")):  # fmt: skip
            r = http.request(method, url + path, json={"state": {}})
            assert (r.status_code, error_of(r)) == (503, "unavailable")
            assert r.headers["Retry-After"]


# -- auth --------------------------------------------------------------------------


def test_auth(storage: Storage, http: requests.Session) -> None:
    with running_server(storage, read_token="r-tok", write_token="w-tok") as url:
        read = {"Authorization": "Bearer r-tok"}
        write = {"Authorization": "Bearer w-tok"}
        wrong = {"Authorization": "Bearer nope"}
        assert http.get(f"{url}/v1/health").status_code == 200
        for headers in ({}, wrong, {"Authorization": "Basic dzp0b2s="}):
            r = http.get(f"{url}/v1/streams", headers=headers)
            assert (r.status_code, error_of(r)) == (401, "unauthorized")
            assert r.headers["WWW-Authenticate"] == "Bearer"
            r = http.post(f"{url}/v1/streams/a/state", json={"state": {}}, headers=headers)
            assert (r.status_code, error_of(r)) == (401, "unauthorized")
        r = http.post(f"{url}/v1/streams/a/state", json={"state": {}}, headers=read)
        assert (r.status_code, error_of(r)) == (403, "forbidden")
        r = http.put(f"{url}/v1/streams/a", headers=read)
        assert (r.status_code, error_of(r)) == (403, "forbidden")
        r = http.post(f"{url}/v1/streams/a/entries", json=[snap(T0)], headers=read)
        assert (r.status_code, error_of(r)) == (403, "forbidden")
        assert http.get(f"{url}/v1/streams", headers=read).json()["streams"] == []
        r = http.post(f"{url}/v1/streams/a/state", json={"state": {}}, headers=write)
        assert r.status_code == 201
        assert http.get(f"{url}/v1/streams/a", headers=write).status_code == 200
        assert http.get(f"{url}/v1/streams/a", headers=read).status_code == 200


def test_auth_write_only(storage: Storage, http: requests.Session) -> None:
    with running_server(storage, write_token="w-tok") as url:
        assert http.get(f"{url}/v1/streams").status_code == 200
        r = http.put(f"{url}/v1/streams/a")
        assert (r.status_code, error_of(r)) == (401, "unauthorized")
        assert http.put(f"{url}/v1/streams/a", headers={"Authorization": "bearer w-tok"}).ok


def test_auth_off(url: str, http: requests.Session) -> None:
    r = http.post(f"{url}/v1/streams/a/state", json={"state": {}}, headers={"Authorization": "x"})
    assert r.status_code == 201


# -- hostile input: each refused as the protocol says, with nothing stored ---------------


def post_raw(
    http: requests.Session, url: str, body: bytes, ctype: str = "application/json"
) -> requests.Response:
    return http.post(url, data=body, headers={"Content-Type": ctype})


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """An object nested ``depth`` deep (the object itself is depth 1)."""
    value: Any = leaf
    for _ in range(depth):
        value = {"a": value}
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize("value", [9_300_000_000_000_000, 10**15 + 1, 1e300, 2**64, -1])
def test_rate_out_of_range_is_a_400_in_the_protocols_words(
    url: str, http: requests.Session, value: float
) -> None:
    for field in ("change_frequency", "keyframe_frequency"):
        r = http.put(f"{url}/v1/streams/r", json={"record_rate": {field: value}})
        assert (r.status_code, error_of(r)) == (400, "bad_request"), r.text
        message = r.json()["error"]["message"]
        assert f"{field} must be a number of milliseconds from 0 to 1000000000000000" in message
        assert "days" not in message
    assert http.get(f"{url}/v1/streams/r").status_code == 404


def test_rate_config_refuses_what_storage_cannot_hold() -> None:
    longest = timedelta(milliseconds=MAX_RATE_MS)
    assert RateConfig(longest, longest).to_json() == {
        "keyframe_frequency": MAX_RATE_MS,
        "change_frequency": MAX_RATE_MS,
    }
    with pytest.raises(ConfigError, match="at most 1000000000000000 ms"):
        RateConfig(keyframe_frequency=timedelta(days=999_999_999))
    with pytest.raises(ConfigError, match="from 0 to 1000000000000000"):
        RateConfig.from_json({"change_frequency": 9.3e15})


def test_the_longest_rate_is_stored_and_read_back(url: str, http: requests.Session) -> None:
    rate = {"keyframe_frequency": 10**15, "change_frequency": 10**15}
    r = http.put(f"{url}/v1/streams/r", json={"record_rate": rate})
    assert r.status_code == 201, r.text
    assert http.get(f"{url}/v1/streams/r").json()["record_rate"] == rate
    r = http.post(f"{url}/v1/streams/r/state", json={"state": {"a": 1}, "timestamp": T0})
    assert r.json()["action"] == "snapshot"


@pytest.mark.parametrize("padding", [0, 600_000], ids=["small", "over-512KiB"])
@pytest.mark.parametrize(
    "where",
    ["state value", "state key", "entry data", "ndjson data", "mutation data"],
)
def test_lone_surrogates_are_refused_at_any_size(
    shared_url: str, sid: str, http: requests.Session, where: str, padding: int
) -> None:
    url = shared_url
    http.post(f"{url}/v1/streams/{sid}/entries", json=[snap(T0, a=1)])
    pad = "p" * padding
    # requests sends the JSON escape \ud800: valid JSON text, but no UTF-8 can hold it.
    if where == "state value":
        r = http.post(f"{url}/v1/streams/{sid}/state", json={"state": {"p": pad, "s": "\ud800"}})
    elif where == "state key":
        r = http.post(f"{url}/v1/streams/{sid}/state", json={"state": {"p": pad, "\udfff": 1}})
    elif where == "mutation data":
        r = http.post(f"{url}/v1/streams/{sid}/entries", json=[mut(T0 + 1, p=pad, s="x\ud800")])
    else:
        entry = snap(T0 + 1, p=pad, s=["\ud83e"])
        if where == "entry data":
            r = http.post(f"{url}/v1/streams/{sid}/entries", json=[entry])
        else:
            r = post_raw(http, f"{url}/v1/streams/{sid}/entries",
                         json.dumps(entry).encode() + b"\n", "application/x-ndjson")  # fmt: skip
    assert (r.status_code, error_of(r)) == (400, "invalid_json"), r.text
    assert "lone surrogate" in r.json()["error"]["message"]
    assert revision(http, url, sid) == 1


def test_depth_limit_on_every_way_in(shared_url: str, sid: str, http: requests.Session) -> None:
    url = shared_url
    state_url, entries_url = f"{url}/v1/streams/{sid}/state", f"{url}/v1/streams/{sid}/entries"
    assert http.post(state_url, json={"state": nested(64), "timestamp": T0}).status_code == 201
    for depth in (65, 500, 950):
        r = http.post(state_url, json={"state": nested(depth, 2)})
        assert (r.status_code, error_of(r)) == (400, "invalid_json"), depth
        assert "nested deeper than 64 levels" in r.json()["error"]["message"]
        assert "$.state.a.a.a" in r.json()["error"]["message"]  # the path
        r = http.post(entries_url, json=[{**snap(T0 + 1), "data": nested(depth, 2)}])
        assert (r.status_code, error_of(r)) == (400, "invalid_json"), depth
        assert "entry 0: $.data.a.a" in r.json()["error"]["message"]
    # A mutation deeper than a state may be is refused when its state would be too
    # deep: by apply_mutation while it descends...
    r = http.post(entries_url, json=[mut(T0 + 1, z=nested(66))])
    assert (r.status_code, error_of(r)) == (422, "invalid_mutation")
    assert "nested too deeply" in r.json()["error"]["message"]
    # ...or, for a value it sets whole, by the check of the state it makes...
    r = http.post(entries_url, json=[mut(T0 + 1, z={"$set": nested(66)})])
    assert (r.status_code, error_of(r)) == (400, "invalid_json")
    assert "the state after entry 0 of the batch" in r.json()["error"]["message"]
    # ...and beyond any state's mutation, refused before it is applied.
    r = http.post(entries_url, json=[mut(T0 + 1, **nested(300))])
    assert (r.status_code, error_of(r)) == (400, "invalid_json")
    assert revision(http, url, sid) == 1
    # Writes that change the deepest value still work (no RecursionError).
    r = http.post(state_url, json={"state": nested(64, 3), "timestamp": T0 + 2})
    assert (r.status_code, r.json()["action"]) == (200, "mutation"), r.text


def test_a_deep_mutation_of_a_state_within_the_limit_is_taken(
    shared_url: str, sid: str, http: requests.Session
) -> None:
    # Arrays 40 deep: the writer's mutation spends two levels per array ($mutateIdx).
    deep: Any = 0
    for _ in range(40):
        deep = [deep]
    r = http.post(
        f"{shared_url}/v1/streams/{sid}/state", json={"state": {"x": deep}, "timestamp": T0}
    )
    assert r.status_code == 201
    changed: Any = 1
    for _ in range(40):
        changed = [changed]
    r = http.post(
        f"{shared_url}/v1/streams/{sid}/state", json={"state": {"x": changed}, "timestamp": T0 + 1}
    )
    entry = r.json()["entry"]
    assert entry["type"] == 1
    copy = f"{shared_url}/v1/streams/{sid}-copy/entries"
    first = {**snap(T0), "data": {"x": deep}}
    r = http.post(copy, json=[first, entry])
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("endpoint", ["state", "entries"])
def test_state_limit_counts_the_stored_form(
    storage: Storage, http: requests.Session, endpoint: str
) -> None:
    # 105,000 x "1e15," is a 525 KB body; stored as 1000000000000000.0 it is 1.9 MB.
    numbers = b",".join([b"1e15"] * 105_000)
    with running_server(storage) as url:
        if endpoint == "state":
            body = b'{"state": {"a": [' + numbers + b"]}}"
        else:
            body = (
                b'[{"timestamp": "2024-05-01T12:00:00Z", "type": 0, "data": {"a": ['
                + numbers
                + b"]}}]"
            )
        assert 512_000 < len(body) < 1024 * 1024
        r = post_raw(http, f"{url}/v1/streams/f/{endpoint}", body)
        assert (r.status_code, error_of(r)) == (413, "too_large"), r.text
        assert "as stored" in r.json()["error"]["message"]
        assert http.get(f"{url}/v1/streams").json()["streams"] == []


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/v1/health", {"GET", "HEAD"}),
        ("/v1/openapi.json", {"GET", "HEAD"}),
        ("/v1/streams", {"GET", "HEAD"}),
        ("/v1/streams/x", {"GET", "HEAD", "PUT"}),
        ("/v1/streams/x/window", {"GET", "HEAD"}),
        ("/v1/streams/x/entries", {"GET", "HEAD", "POST"}),
        ("/v1/streams/x/live", {"GET", "HEAD"}),
        ("/v1/streams/x/state", {"POST"}),
    ],
)
def test_allow_lists_every_method_of_the_route(
    shared_url: str, http: requests.Session, path: str, methods: set[str]
) -> None:
    for method in ("OPTIONS", "DELETE", "PATCH", "TRACE"):
        r = http.request(method, shared_url + path)
        assert (r.status_code, error_of(r)) == (405, "method_not_allowed"), (method, path)
        assert {m.strip() for m in r.headers["Allow"].split(",")} == methods, (method, path)


@pytest.mark.parametrize(
    ("method", "suffix", "body", "code", "words"),
    [
        ("POST", "/state", b'{"state": {}, "timestamp": null}', "invalid_time", "not null"),
        ("POST", "/state", b'{"state": {"a": 1}, "state": {}}', "invalid_json", "twice"),
        ("POST", "/state", b'{"state": {"a": 1, "a": 2}}', "invalid_json", "twice"),
        ("POST", "/state", b'{"state": {}, "timestamp": 1e300}', "invalid_time", "storable"),
        ("POST", "/state", b'{"state": {}, "timestamp": "2024-05-01 12:00:00Z"}', "invalid_time",
         "RFC 3339"),
        ("POST", "/state", b'{"state": {}, "timestamp": "0000-01-01T00:00:00Z"}', "invalid_time",
         "years 0001 to 9999"),
        ("PUT", "", b"\x0b", "invalid_json", "not valid JSON"),
        ("PUT", "", b"\x0c{}", "invalid_json", "not valid JSON"),
        ("PUT", "", b'{"record_rate": {}, "record_rate": {}}', "invalid_json", "twice"),
        ("POST", "/entries", b'[{"timestamp": "2024-05-01T12:00:01Z", "type": 0, "data": {}, '
         b'"rev": null}]', "invalid_entry", "'rev'"),
        ("POST", "/entries", b'[{"timestamp": "2024-05-01T12:00:01Z", "type": 0, "data": {}, '
         b'"extra": 1}]', "invalid_entry", "unknown field"),
        ("POST", "/entries", b'[{"timestamp": "2024-05-01T12:00:01Z", "type": 0, "type": 1, '
         b'"data": {}}]', "invalid_json", "twice"),
        ("POST", "/entries", b'[{"timestamp": "2024-05-01T12:00:01.1234567891Z", "type": 0, '
         b'"data": {}}]', "invalid_entry", "RFC 3339"),
    ],
)  # fmt: skip
def test_the_server_refuses_what_the_schema_forbids(
    shared_url: str,
    sid: str,
    http: requests.Session,
    method: str,
    suffix: str,
    body: bytes,
    code: str,
    words: str,
) -> None:
    url = shared_url
    http.post(f"{url}/v1/streams/{sid}/state", json={"state": {"a": 0}, "timestamp": T0})
    r = http.request(method, f"{url}/v1/streams/{sid}{suffix}", data=body,
                     headers={"Content-Type": "application/json"})  # fmt: skip
    assert (r.status_code, error_of(r)) == (400, code), r.text
    message = r.json()["error"]["message"]
    assert words in message
    assert revision(http, url, sid) == 1


@pytest.mark.parametrize(
    ("suffix", "query"),
    [
        ("/window", {"at": ""}),
        ("/window", {"at": " 1714564800"}),
        ("/window", {"at": "1_714_564_800"}),
        ("/window", {"at": "2024-05-01 12:00:00Z"}),
        ("/entries", {"end": "0000-12-31T00:00:00Z"}),
        ("/entries", {"start": "NaN"}),
        ("/live", {"heartbeat": "1_0"}),
        ("/live", {"heartbeat": " 5"}),
        ("/live", {"since": "1000000000000000000"}),
        ("/live", {"since": "-1"}),
    ],
)
def test_query_values_the_schema_forbids_are_refused(
    shared_url: str, sid: str, http: requests.Session, suffix: str, query: dict[str, str]
) -> None:
    http.post(f"{shared_url}/v1/streams/{sid}/state", json={"state": {"a": 0}, "timestamp": T0})
    r = http.get(f"{shared_url}/v1/streams/{sid}{suffix}", params=query, timeout=5)
    assert r.status_code == 400, r.text
    assert error_of(r) in ("bad_request", "invalid_time")


def test_error_messages_say_each_prefix_once(
    shared_url: str, sid: str, http: requests.Session
) -> None:
    url = f"{shared_url}/v1/streams/{sid}/state"
    for timestamp in (-3.806531945225965e16, "9999-12-31T23:59:59-01:00", "noon"):
        r = http.post(url, json={"state": {}, "timestamp": timestamp})
        assert (r.status_code, error_of(r)) == (400, "invalid_time"), r.text
        assert r.json()["error"]["message"].count("field 'timestamp'") == 1, r.text
    r = http.get(f"{shared_url}/v1/streams/{sid}/window", params={"at": "noon"})
    assert r.json()["error"]["message"].count("query parameter 'at'") == 1


def test_an_error_quoting_a_lone_surrogate_is_json(
    shared_url: str, sid: str, http: requests.Session
) -> None:
    r = http.post(f"{shared_url}/v1/streams/{sid}/state", json={"state": {}, "\ud800": 1})
    assert (r.status_code, error_of(r)) == (400, "bad_request")
    assert "\\ud800" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/streams/f/state HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\x00b\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"POST /v1/streams/f/state HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"\r\nzz\r\n",
    ],
)
def test_malformed_http_gets_a_json_error(shared_url: str, head: bytes) -> None:
    host, port = shared_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    header_text, _, body = rest.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 400 "), reply
    assert b"content-type: application/json" in header_text.lower(), reply
    assert json.loads(body)["error"]["code"] == "bad_request"
