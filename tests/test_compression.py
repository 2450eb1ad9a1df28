"""gzip and the columns form for pages of history, against a real server: one
validator per representation, 304s for the one the client holds, ``immutable``
kept, and the live stream never compressed."""

from __future__ import annotations

import gzip
import http.client
import json
from urllib.parse import urlencode, urlsplit

import pytest
import requests

from rstream.client import Client
from rstream.core.entry import Entry, EntryKind
from rstream.core.timestamps import format_rfc3339
from rstream.core.wire import COLUMNS, NDJSON, read_columns, read_page
from rstream.server.compression import GZIP_MIN_BYTES, accepts_columns, accepts_gzip
from rstream.server.storage import Storage

T0 = 1_700_000_000_000_000  # epoch micros
IMMUTABLE = "public, max-age=31536000, immutable"


def iso(seconds_after_t0: float) -> str:
    return format_rfc3339(T0 + int(seconds_after_t0 * 1_000_000))


@pytest.fixture
def filled(url: str) -> str:
    """A stream ``c`` of 300 entries, a snapshot every 100 s: the first two
    hundred are before the latest snapshot, so their pages are immutable."""
    lines = []
    for i in range(300):
        kind = EntryKind.SNAPSHOT if i % 100 == 0 else EntryKind.MUTATION
        data = {"i": i, "battery": 1 - i / 300, "pos": {"x": i * 0.5}}
        lines.append(json.dumps(Entry(T0 / 1e6 + i, kind, data).to_json()))
    r = requests.post(
        f"{url}/v1/streams/c/entries",
        data="\n".join(lines).encode(),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 201, r.text
    return url


def raw_get(url: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """A GET that neither sends nor decodes anything it was not told to."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def entries_path(**params: str) -> str:
    return "/v1/streams/c/entries?" + urlencode(params)


IMMUTABLE_RANGE = {"start": iso(0), "end": iso(200)}


def test_immutable_page_has_a_validator_per_representation(filled: str) -> None:
    path = entries_path(**IMMUTABLE_RANGE)
    status, plain_headers, plain = raw_get(filled, path, {})
    assert status == 200
    assert "content-encoding" not in plain_headers
    assert len(plain) >= GZIP_MIN_BYTES
    status, gz_headers, gz = raw_get(filled, path, {"Accept-Encoding": "gzip"})
    assert status == 200
    assert gz_headers["content-encoding"] == "gzip"
    assert gzip.decompress(gz) == plain
    assert len(gz) < len(plain) / 3
    for headers in (plain_headers, gz_headers):
        assert headers["cache-control"] == IMMUTABLE
        assert headers["vary"] == "Accept, Accept-Encoding"
    assert gz_headers["etag"] != plain_headers["etag"]
    assert gz_headers["etag"].startswith('"')
    assert gz_headers["etag"].endswith('"')
    # The same representation asked again: the same validator.
    assert raw_get(filled, path, {"Accept-Encoding": "gzip"})[1]["etag"] == gz_headers["etag"]


def test_304_answers_the_validator_of_the_chosen_representation(filled: str) -> None:
    path = entries_path(**IMMUTABLE_RANGE)
    plain_etag = raw_get(filled, path, {})[1]["etag"]
    gz_etag = raw_get(filled, path, {"Accept-Encoding": "gzip"})[1]["etag"]
    status, headers, body = raw_get(
        filled, path, {"Accept-Encoding": "gzip", "If-None-Match": gz_etag}
    )
    assert (status, body) == (304, b"")
    assert headers["etag"] == gz_etag
    assert headers["cache-control"] == IMMUTABLE
    assert headers["vary"] == "Accept, Accept-Encoding"
    assert raw_get(filled, path, {"If-None-Match": plain_etag})[0] == 304
    # A validator of the other representation does not match this one.
    status, headers, body = raw_get(
        filled, path, {"Accept-Encoding": "gzip", "If-None-Match": plain_etag}
    )
    assert status == 200
    assert headers["etag"] == gz_etag
    assert gzip.decompress(body)
    assert raw_get(filled, path, {"If-None-Match": gz_etag})[0] == 200


def test_304_keeps_the_paging_headers(filled: str) -> None:
    path = entries_path(**IMMUTABLE_RANGE, limit="50")
    _, headers, _ = raw_get(filled, path, {"Accept-Encoding": "gzip"})
    status, again, _ = raw_get(
        filled, path, {"Accept-Encoding": "gzip", "If-None-Match": headers["etag"]}
    )
    assert status == 304
    assert again["rstream-next-start"] == headers["rstream-next-start"] == iso(50)
    assert again["link"] == headers["link"]


def test_requests_gets_compressed_pages_and_decodes_them(filled: str) -> None:
    r = requests.get(f"{filled}/v1/streams/c/entries")
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.headers["Cache-Control"] == "no-store"
    assert "ETag" not in r.headers
    assert [json.loads(line)["data"]["i"] for line in r.content.splitlines()] == list(range(300))


def test_small_bodies_and_refusals_stay_identity(filled: str) -> None:
    status, headers, body = raw_get(
        filled, entries_path(**IMMUTABLE_RANGE), {"Accept-Encoding": "gzip;q=0, br"}
    )
    assert status == 200
    assert "content-encoding" not in headers
    assert json.loads(body.splitlines()[0])["data"]["i"] == 0
    status, headers, body = raw_get(filled, "/v1/streams/c/window", {"Accept-Encoding": "gzip"})
    assert status == 200
    assert len(body) < GZIP_MIN_BYTES
    assert "content-encoding" not in headers
    assert headers["vary"] == "Accept-Encoding"
    assert json.loads(body)["start"] == iso(200)


def test_live_stream_is_not_compressed(filled: str, storage: Storage) -> None:
    with requests.get(
        f"{filled}/v1/streams/c/live",
        headers={"Accept-Encoding": "gzip"},
        stream=True,
        timeout=10,
    ) as r:
        assert r.status_code == 200
        assert "Content-Encoding" not in r.headers
        first = next(r.raw.stream(256, decode_content=False))
    assert first.startswith(b"retry:") or b"event:" in first or first.startswith(b":")


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("gzip, deflate", True),
        ("deflate, GZIP;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("gzip;q=nonsense", False),
        ("br, identity", False),
    ],
)
def test_accepts_gzip(header: str | None, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


# -- the columns form ------------------------------------------------------------------

ASK_COLUMNS = {"Accept": f"{COLUMNS}, {NDJSON};q=0.5"}


@pytest.mark.parametrize("limit", ["50", "10000"])
def test_a_columns_page_holds_the_ndjson_page_and_its_paging(filled: str, limit: str) -> None:
    path = entries_path(start=iso(10), limit=limit)
    _, lines_headers, lines = raw_get(filled, path, {})
    status, headers, body = raw_get(filled, path, ASK_COLUMNS)
    assert status == 200
    assert lines_headers["content-type"] == NDJSON
    assert headers["content-type"] == COLUMNS
    assert headers["vary"] == "Accept, Accept-Encoding"
    assert headers.get("rstream-next-start") == lines_headers.get("rstream-next-start")
    assert headers.get("link") == lines_headers.get("link")
    assert read_columns(body, "test") == read_page(lines, "test")
    assert len(read_columns(body, "test").times) == min(int(limit), 290)


def test_a_columns_page_has_its_own_validators_and_304s(filled: str) -> None:
    path = entries_path(**IMMUTABLE_RANGE)
    tags = {}
    for name, headers in [
        ("lines", {}),
        ("lines-gzip", {"Accept-Encoding": "gzip"}),
        ("columns", ASK_COLUMNS),
        ("columns-gzip", {**ASK_COLUMNS, "Accept-Encoding": "gzip"}),
    ]:
        status, answer, body = raw_get(filled, path, headers)
        assert status == 200
        assert answer["cache-control"] == IMMUTABLE
        assert raw_get(filled, path, headers)[1]["etag"] == answer["etag"]  # stable
        tags[name] = answer["etag"]
        if name == "columns-gzip":
            assert gzip.decompress(body) == raw_get(filled, path, ASK_COLUMNS)[2]
    assert len(set(tags.values())) == 4
    assert tags["columns-gzip"] == tags["columns"][:-1] + '-gzip"'
    status, answer, body = raw_get(filled, path, {**ASK_COLUMNS, "If-None-Match": tags["columns"]})
    assert (status, body) == (304, b"")
    assert answer["etag"] == tags["columns"]
    assert answer["vary"] == "Accept, Accept-Encoding"
    # The other form's validator does not match this one.
    status, answer, _ = raw_get(filled, path, {**ASK_COLUMNS, "If-None-Match": tags["lines"]})
    assert (status, answer["etag"]) == (200, tags["columns"])
    assert raw_get(filled, path, {"If-None-Match": tags["columns"]})[0] == 200


@pytest.mark.parametrize(
    ("header", "columns"),
    [
        (None, False),
        ("*/*", False),
        (NDJSON, False),
        (COLUMNS, True),
        (f"{NDJSON}, {COLUMNS.upper()};q=0.9", True),
        (f"{COLUMNS};q=0", False),
    ],
)
def test_accepts_columns(header: str | None, columns: bool) -> None:
    assert accepts_columns(header) is columns


def test_the_client_reads_pages_in_the_columns_form(filled: str) -> None:
    with Client(filled) as client:
        stream = client.stream("c")
        fetcher = stream._pages  # what history() and entries() read through
        bodies = list(fetcher.bodies(None, None))
        assert [body.columns for body in bodies] == [True]
        assert [e.data["i"] for e in stream.entries()] == list(range(300))
        assert [state["i"] for _, state in stream.history()] == list(range(300))
