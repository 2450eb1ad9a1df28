"""NDJSON decoding from chunks (as entries, and by field for history), the columns
form, the page chain (prefetch driven by workers)."""

from __future__ import annotations

import json
import threading
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rstream.client.pages import Body
from rstream.client.pages import PageChain as _Pages
from rstream.core import wire
from rstream.core.entry import Entry, EntryKind
from rstream.core.timestamps import format_rfc3339, from_micros, parse_rfc3339
from rstream.core.wire import NDJSONDecoder, Page, parse_ndjson, read_page
from rstream.errors import ClientClosed, InvalidTimestamp, ProtocolError
from rstream.server.storage.base import dump_json
from tests.test_storage import TRICKY


def entries(count: int) -> list[Entry]:
    out = []
    for i in range(count):
        kind = EntryKind.SNAPSHOT if i % 4 == 0 else EntryKind.MUTATION
        out.append(Entry.from_micros(1_700_000_000_000_000 + i * 250_000, kind, {"i": i}, i + 1))
    return out


def ndjson(items: list[Entry]) -> bytes:
    return b"".join(
        json.dumps(e.to_json(with_rev=True), separators=(",", ":")).encode() + b"\n" for e in items
    )


def decode(body: bytes, size: int) -> list[Entry]:
    decoder = NDJSONDecoder(where="test")
    out: list[Entry] = []
    for i in range(0, len(body), size):
        out += decoder.feed(body[i : i + size])
    return out + decoder.close()


def columns(body: bytes, size: int) -> Page:
    """The page ``body`` by field, as history reads it, arrived in chunks of ``size``."""
    page = Body("test", [body[i : i + size] for i in range(0, len(body), size)])
    return read_page(page.text(), page.url)


def _read_stamps(stamps: list[str]) -> tuple[list[int], list[datetime]]:
    """The times and datetimes read_page makes of a page with these timestamps."""
    body = b"".join(
        json.dumps({"timestamp": stamp, "type": 0, "data": {}}).encode() + b"\n" for stamp in stamps
    )
    page = read_page(body, "test")
    return page.times, page.dates


def as_entries(page: Page) -> list[Entry]:
    times, dates, kinds, datas = page.times, page.dates, page.kinds, page.datas
    assert dates == [from_micros(t) for t in times]
    assert all(d.tzinfo is UTC for d in dates)
    return [
        Entry.from_micros(t, EntryKind(k), d) for t, k, d in zip(times, kinds, datas, strict=True)
    ]


# -- decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_chunks_cut_anywhere_give_the_same_entries(size: int) -> None:
    items = entries(30)
    got = decode(ndjson(items), size)
    assert got == items
    assert [e.rev for e in got] == [e.rev for e in items]


def test_blank_lines_crlf_and_a_missing_last_newline() -> None:
    items = entries(5)
    lines = ndjson(items).split(b"\n")[:-1]
    body = b"\r\n".join(lines[:2]) + b"\r\n\n  \n" + b"\n".join(lines[2:])
    assert decode(body, 5) == items
    assert list(parse_ndjson(body.split(b"\n"))) == items


def test_the_spelled_out_type_goes_through_the_slow_path() -> None:
    body = (
        b'{"timestamp":"2024-05-01T12:00:00+02:00","type":"snapshot","data":{"a":1}}\n'
        b'{"timestamp":"2024-05-01T10:00:01Z","type":"mutation","data":{"a":2},"rev":2}\n'
    )
    got = decode(body, 1 << 20)
    assert [e.kind for e in got] == [EntryKind.SNAPSHOT, EntryKind.MUTATION]
    assert got[1].micros - got[0].micros == 1_000_000


BAD_LINES = pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "malformed NDJSON in test, line 3"),
        (b"[1, 2]", "line 3"),
        (b'{"a": 1}, {"b": 2}', "line 3"),  # two values on one line
        (b'{"timestamp": "2024-05-01T12:00:00Z", "type": 2, "data": {}}', "field 'type'"),
        (b'{"timestamp": "yesterday", "type": 0, "data": {}}', "field 'timestamp'"),
        (b'{"timestamp": "2024-05-01T12:00:00Z", "type": 0, "data": []}', "field 'data'"),
        (b'{"timestamp": "2024-05-01T12:00:00Z", "type": 0, "data": {}, "rev": -1}', "'rev'"),
        (b'{"timestamp": "2024-05-01T12:00:00Z", "type": true, "data": {}}', "field 'type'"),
        (b'{"type": 0, "data": {}}', "missing field 'timestamp'"),
        (b'{"timestamp": "2024-05-01T12:00:00Z", "type": 0, "data": {}, "rev": "1"}', "'rev'"),
    ],
)


@BAD_LINES
def test_a_bad_line_is_a_protocol_error_naming_it(line: bytes, message: str) -> None:
    body = ndjson(entries(2)) + line + b"\n" + ndjson(entries(1))
    for size in (3, 1 << 20):
        with pytest.raises(ProtocolError, match=message) as info:
            decode(body, size)
        assert "line 3" in str(info.value)


# -- a page by field (history) -----------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_page_columns_hold_the_entries(size: int) -> None:
    items = entries(30)
    page = columns(ndjson(items), size)
    assert as_entries(page) == items
    assert list(page.lines) == list(range(1, 31))


def test_page_columns_of_blank_lines_crlf_and_a_missing_last_newline() -> None:
    items = entries(5)
    lines = ndjson(items).split(b"\n")[:-1]
    body = b"\r\n".join(lines[:2]) + b"\r\n\n  \n" + b"\n".join(lines[2:])
    page = columns(body, 5)
    assert as_entries(page) == items
    assert list(page.lines) == [1, 2, 5, 6, 7]  # the lines the entries are on
    assert columns(b"", 5).times == []


def test_page_columns_read_the_spelled_out_type_offsets_and_missing_revs() -> None:
    body = (
        b'{"timestamp":"2024-05-01T12:00:00+02:00","type":"snapshot","data":{"a":1}}\n'
        b'{"timestamp":"2024-05-01T10:00:01Z","type":"mutation","data":{"a":2},"rev":2}\n'
        b'{"timestamp":"2024-05-01T10:00:02Z","type":1,"data":{"a":3}}\n'
    )
    got = as_entries(columns(body, 1 << 20))
    assert [e.kind for e in got] == [EntryKind.SNAPSHOT, EntryKind.MUTATION, EntryKind.MUTATION]
    assert [e.micros - got[0].micros for e in got] == [0, 1_000_000, 2_000_000]
    no_revs = b"".join(
        json.dumps(e.to_json(), separators=(",", ":")).encode() + b"\n" for e in entries(3)
    )
    assert as_entries(columns(no_revs, 1 << 20)) == entries(3)


@BAD_LINES
def test_a_bad_line_in_a_page_read_by_field_is_a_protocol_error_naming_it(
    line: bytes, message: str
) -> None:
    body = ndjson(entries(2)) + line + b"\n" + ndjson(entries(1))
    for size in (3, 1 << 20):
        with pytest.raises(ProtocolError, match=message) as info:
            columns(body, size)
        assert "line 3" in str(info.value)


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00.5Z",
        "2024-05-01T12:00:00.000001Z",
        "2024-05-01T12:00:00.123456789Z",  # past microseconds: truncated by both
        "2024-05-01 12:00:00.25Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "2016-12-31T23:59:60Z",  # a leap second: parse_rfc3339's own reading
        "2024-05-01t12:00:00.5z",
        "2024-05-01T14:00:00.5+02:00",
    ],
)
def test_datetimes_of_a_page_are_those_of_its_timestamps(stamp: str) -> None:
    times = [parse_rfc3339(stamp)]
    assert _read_stamps([stamp])[0] == times
    (date,) = _read_stamps([stamp])[1]
    assert date == from_micros(times[0])
    assert date.tzinfo is UTC


@given(st.lists(st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999), max_size=20))
def test_datetimes_agree_with_from_micros(micros: list[int]) -> None:
    stamps = [format_rfc3339(m) for m in micros]
    times = [parse_rfc3339(s) for s in stamps]
    assert times == micros
    assert _read_stamps(stamps) == (micros, [from_micros(m) for m in micros])


def _longer_fraction(micros: int, digits: str) -> str:
    text = format_rfc3339(micros).removesuffix("Z")
    return f"{text}{'' if '.' in text or not digits else '.'}{digits}Z"


_STAMP_PIECES = st.sampled_from(
    ["Z", "z", "T", "t", " ", ".", "-", ":", "+02:00", "60", "30", "02-30", "\n", "\u0661", "5"]
)


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999).map(format_rfc3339),
            # well-formed, with more fraction digits (up to nine)
            st.builds(
                _longer_fraction,
                st.integers(0, 4_000_000_000_000_000),
                st.text("0123456789", max_size=3),
            ),
            # damaged: a piece replaced or inserted
            st.builds(
                lambda m, i, piece: (lambda t: t[:i] + piece + t[i + 1 :])(format_rfc3339(m)),
                st.integers(0, 4_000_000_000_000_000),
                st.integers(0, 30),
                _STAMP_PIECES,
            ),
        ),
        max_size=8,
    )
)
@example(["2016-12-31T23:59:60Z"])
@example(["2024-02-30T12:00:00Z"])
@example(["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5+02:00"])
@example(["2024-05-01T12:00:00Z\n2024-05-01T12:00:01Z"])
def test_stamps_of_a_page_are_read_as_parse_rfc3339_reads_them(stamps: list[str]) -> None:
    try:
        expected: list[int] | None = [parse_rfc3339(s) for s in stamps]
    except InvalidTimestamp:
        expected = None
    if expected is None:
        with pytest.raises(ProtocolError, match="field 'timestamp'"):
            _read_stamps(stamps)
        return
    times, dates = _read_stamps(stamps)
    assert times == expected
    assert dates == [from_micros(m) for m in expected]
    assert all(d.tzinfo is UTC for d in dates)


# -- the page chain -------------------------------------------------------------------------


class Pager:
    """A fake ``fetch``: page k starts at k, names k + 1 unless it is the last."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.started: list[int] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def fetch(self, pages: _Pages, start: int | None, end: int | None) -> Body:
        k = start or 0
        with self.changed:
            self.started.append(k)
            self.changed.notify_all()
        pages.next_start(k + 1 if k + 1 < self.count else None)
        return Body(f"page {k}", [b"%d" % k])

    def wait_started(self, n: int) -> list[int]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.started) >= n, timeout=5)
            return list(self.started)


def test_workers_request_ahead_up_to_the_depth_while_the_reader_holds_a_page() -> None:
    pager = Pager(10)
    with ThreadPoolExecutor(4) as pool:
        pages = iter(_Pages(pager.fetch, pool, None, None, depth=3))
        assert next(pages) == Body("page 0", [b"0"])
        # The reader holds page 0: pages 1 and 2 are requested, and no more.
        assert pager.wait_started(3) == [0, 1, 2]
        pool.submit(lambda: None).result()  # let any stray submission run
        assert pager.started == [0, 1, 2]
        rest = [body.url for body in pages]
    assert rest == [f"page {k}" for k in range(1, 10)]
    assert pager.started == list(range(10))


def test_depth_one_fetches_a_page_only_when_the_reader_needs_it() -> None:
    pager = Pager(3)
    with ThreadPoolExecutor(2) as pool:
        pages = iter(_Pages(pager.fetch, pool, None, None, depth=1))
        next(pages)
        pool.submit(lambda: None).result()
        assert pager.started == [0]
        assert [body.url for body in pages] == ["page 1", "page 2"]


def test_an_end_stops_the_chain() -> None:
    pager = Pager(10)
    with ThreadPoolExecutor(2) as pool:
        assert len(list(_Pages(pager.fetch, pool, None, 4, depth=4))) == 4


def test_stopping_early_requests_nothing_more() -> None:
    pager = Pager(100)
    with ThreadPoolExecutor(2) as pool:
        pages = _Pages(pager.fetch, pool, None, None, depth=2)
        reader = iter(pages)
        next(reader)
        assert isinstance(reader, Generator)
        reader.close()  # what a for loop's break does to the generator
        assert pages.stopped
    assert len(pager.started) <= 3


def test_a_failed_page_raises_to_the_reader() -> None:
    def fetch(pages: _Pages, start: int | None, end: int | None) -> Body:
        if start == 2:
            raise ProtocolError("bad page")
        pages.next_start((start or 0) + 1)
        return Body("ok", [])

    with ThreadPoolExecutor(2) as pool:
        reader = iter(_Pages(fetch, pool, None, None, depth=2))
        with pytest.raises(ProtocolError, match="bad page"):
            list(reader)


def test_a_shut_down_pool_is_client_closed() -> None:
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    with pytest.raises(ClientClosed):
        _Pages(Pager(3).fetch, pool, None, None, depth=2)


@given(st.lists(st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999), max_size=20))
def test_a_page_in_the_server_form_is_read_by_field_as_entry_by_entry(micros: list[int]) -> None:
    items = [Entry.from_micros(m, EntryKind(i % 2), {"i": i}, i) for i, m in enumerate(micros)]
    body = ndjson(items)
    objs = [json.loads(line) for line in body.splitlines()]
    lines = range(1, len(objs) + 1)
    fast = wire._page_by_field(objs, lines)
    assert (fast is None) == (not items)  # the server's form: read by field
    plain = wire.decode_entries(objs, lines, "test")
    if fast is not None:
        assert fast.times == [e.micros for e in plain]
        assert fast.dates == [from_micros(e.micros) for e in plain]
        assert fast.kinds == [int(e.kind) for e in plain]
        assert fast.datas == [e.data for e in plain]


# -- the columns form -------------------------------------------------------------------


def stored_rows(items: list[Entry]) -> list[tuple[int, int, str, int]]:
    """The rows a server's storage would hold for ``items`` (data as stored JSON text)."""
    return [(e.micros, int(e.kind), dump_json(e.data), e.rev or 0) for e in items]


@given(
    st.lists(
        st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999), unique=True, max_size=30
    )
)
@example([])
@example([0])
def test_a_columns_page_reads_as_the_ndjson_page_of_the_same_rows(micros: list[int]) -> None:
    micros.sort()
    items = [
        Entry.from_micros(m, EntryKind(min(i, 1)), TRICKY[i % len(TRICKY)], i + 1)
        for i, m in enumerate(micros)
    ]
    rows = stored_rows(items)
    by_columns = wire.read_columns(wire.encode_page(rows, True), "test")
    by_lines = read_page(wire.encode_page(rows, False), "test")
    assert by_columns.times == by_lines.times == micros
    assert by_columns.dates == by_lines.dates
    assert all(d.tzinfo is UTC for d in by_columns.dates)
    assert by_columns.kinds == by_lines.kinds
    assert by_columns.datas == by_lines.datas
    assert list(by_columns.revs) == list(by_lines.revs) == [e.rev for e in items]
    assert wire.page_entries(by_columns) == items
    assert [e.rev for e in wire.page_entries(by_columns)] == [e.rev for e in items]


def test_a_body_is_read_in_the_form_it_came_in() -> None:
    items = entries(9)
    rows = stored_rows(items)
    body = wire.encode_page(rows, True)
    as_columns = Body("test", [body[:10], body[10:]], columns=True)
    as_lines = Body("test", [wire.encode_page(rows, False)])
    assert as_columns.entries() == as_lines.entries() == items
    assert as_columns.page() == as_lines.page()
    with pytest.raises(ProtocolError, match="malformed columns page from test"):
        Body("test", [wire.encode_page(rows, False)], columns=True).page()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "Expecting value"),
        (b"[]", "TypeError"),
        (b'{"times": [], "types": [], "revs": []}', "KeyError"),
        (b'{"times": {}, "types": [], "revs": [], "data": []}', "must be arrays"),
        (b'{"times": [1], "types": [], "revs": [], "data": []}', "as long as each other"),
        (b'{"times": [1.5], "types": [0], "revs": [1], "data": [{}]}', "must be integers"),
        (b'{"times": [1], "types": [0], "revs": ["1"], "data": [{}]}', "must be integers"),
        (b'{"times": [1], "types": [2], "revs": [1], "data": [{}]}', "0 \\(snapshot\\)"),
        (b'{"times": [1], "types": [true], "revs": [1], "data": [{}]}', "0 \\(snapshot\\)"),
        (b'{"times": [1], "types": [0], "revs": [1], "data": [[]]}', "JSON objects"),
        (b'{"times": [1], "types": [0], "revs": [-1], "data": [{}]}', "not be negative"),
        (b'{"times": [1e400], "types": [0], "revs": [1], "data": [{}]}', "must be integers"),
        (
            b'{"times": [253402300800000000], "types": [0], "revs": [1], "data": [{}]}',
            "out of range",
        ),
    ],
)
def test_a_malformed_columns_page_is_a_protocol_error(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        wire.read_columns(body, "test")


def test_times_out_of_order_in_a_columns_page_are_found_by_check_order() -> None:
    body = b'{"times": [5, 0], "types": [0, 1], "revs": [1, 2], "data": [{}, {}]}'
    page = wire.read_columns(body, "test")
    with pytest.raises(ProtocolError, match="out of order in test, line 2"):
        wire.check_order(page.times, page.lines, None, "test")
