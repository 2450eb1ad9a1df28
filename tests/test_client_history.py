"""The client against a real server: windows, history, pagination, cache, failover, close."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from rstream.client import Client, RemoteStream, connect
from rstream.client.window import WindowState, states_weight
from rstream.core.entry import Entry, EntryKind
from rstream.core.timestamps import format_rfc3339, from_micros, parse_rfc3339
from rstream.core.wire import COLUMNS, NDJSON
from rstream.errors import (
    ClientClosed,
    ConfigError,
    OutOfOrder,
    OutOfRange,
    ProtocolError,
    StreamNotFound,
)
from rstream.server.limits import Limits
from tests.serverutil import running_server
from tests.threadutil import new_client_threads

T0 = 1_700_000_000  # epoch seconds of the first entry
PER_WINDOW = 10
COUNT = 95  # 9 complete windows and a live one of 5


def make_entries(count: int = COUNT, per_window: int = PER_WINDOW) -> list[Entry]:
    """Entry i at T0 + i seconds; a snapshot every ``per_window``; state {"i", "w", "log"}."""
    out = []
    for i in range(count):
        if i % per_window == 0:
            out.append(Entry(T0 + i, EntryKind.SNAPSHOT, {"i": i, "w": i // per_window, "log": []}))
        else:
            out.append(Entry(T0 + i, EntryKind.MUTATION, {"i": i, "log": {"$push": [i]}}))
    return out


def expected_state(i: int) -> dict[str, Any]:
    """The state after entry ``i``."""
    snap = i - i % PER_WINDOW
    return {"i": i, "w": i // PER_WINDOW, "log": list(range(snap + 1, i + 1))}


def at(seconds: float) -> datetime:
    return from_micros(round((T0 + seconds) * 1_000_000))


class Counter:
    """Counts the HTTP requests a session sends (a response hook)."""

    def __init__(self, session: requests.Session) -> None:
        self.urls: list[str] = []
        session.hooks["response"].append(self.hook)

    def hook(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self.urls.append(response.url)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    # A small page size, so every range spans several pages.
    with running_server(limits=Limits(page_size=7)) as url:
        with Client(url) as client:
            client.stream("robot-1").append_entries(make_entries())
        yield url


@pytest.fixture
def client(server_url: str) -> Iterator[Client]:
    with Client(server_url, max_workers=3) as client:
        yield client


@pytest.fixture
def robot(client: Client) -> RemoteStream:
    return client.stream("robot-1")


# -- latest and state_at --------------------------------------------------------------


def test_latest_is_the_newest_state(robot: RemoteStream) -> None:
    ts, state = robot.latest()
    assert ts == at(COUNT - 1)
    assert state == expected_state(COUNT - 1)


@pytest.mark.parametrize(
    ("seconds", "index"),
    [
        (0, 0),  # the first snapshot
        (0.5, 0),
        (9.999999, 9),  # just before a snapshot
        (10, 10),  # at a snapshot
        (10.000001, 10),  # just after
        (47.5, 47),
        (90, 90),  # the live window's snapshot
        (93, 93),  # inside the live window
        (10_000, 94),  # after the newest entry
    ],
)
def test_state_at(robot: RemoteStream, seconds: float, index: int) -> None:
    assert robot.state_at(at(seconds)) == expected_state(index)


def test_state_at_before_the_first_snapshot_is_out_of_range(robot: RemoteStream) -> None:
    when = at(-0.000001)
    with pytest.raises(OutOfRange, match="before the first snapshot") as info:
        robot.state_at(when)
    assert info.value.when == when


def test_state_at_returns_a_copy_the_caller_owns(robot: RemoteStream) -> None:
    state = robot.state_at(at(15))
    state["log"].append("mine")
    state["i"] = -1
    assert robot.state_at(at(15)) == expected_state(15)


def test_state_at_in_a_cached_window_makes_no_request(client: Client, robot: RemoteStream) -> None:
    counter = Counter(client.transport.session)
    robot.state_at(at(23))
    made = len(counter.urls)
    assert made == 2 + 1  # bounds, then the window's entries in two pages of 7
    for seconds in (20, 21.5, 29.999999, 23):
        robot.state_at(at(seconds))
    assert len(counter.urls) == made


def test_concurrent_state_at_in_one_window_shares_one_fetch(
    client: Client, robot: RemoteStream
) -> None:
    counter = Counter(client.transport.session)
    results: dict[int, dict[str, Any]] = {}
    start = threading.Barrier(6)

    def ask(i: int) -> None:
        start.wait(5)
        results[i] = robot.state_at(at(60 + i))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert results == {i: expected_state(60 + i) for i in range(6)}
    bounds = [u for u in counter.urls if "/window" in u]
    pages = [u for u in counter.urls if "/entries" in u]
    assert len(bounds) == 1
    assert len(pages) == 2  # one window of 10 entries, pages of 7


def test_unknown_stream(client: Client) -> None:
    with pytest.raises(StreamNotFound) as info:
        client.stream("nobody").state_at(at(1))
    assert info.value.stream_id == "nobody"


# -- history -------------------------------------------------------------------------------


def test_history_yields_the_state_at_start_then_every_change(robot: RemoteStream) -> None:
    items = list(robot.history(at(12.5), at(31)))
    assert items[0] == (at(12.5), expected_state(12))
    assert items[1:] == [(at(i), expected_state(i)) for i in range(13, 31)]


def test_history_from_an_entry_starts_with_it(robot: RemoteStream) -> None:
    items = list(robot.history(at(20), at(22)))
    assert items == [(at(20), expected_state(20)), (at(21), expected_state(21))]


def test_history_whole_stream_and_into_the_live_window(robot: RemoteStream) -> None:
    items = list(robot.history())
    assert items == [(at(i), expected_state(i)) for i in range(COUNT)]
    assert list(robot.history(at(-50), at(3))) == [(at(i), expected_state(i)) for i in range(3)]
    assert list(robot.history(at(88), None))[-1] == (at(COUNT - 1), expected_state(COUNT - 1))


def test_history_before_the_stream_or_empty_range(robot: RemoteStream) -> None:
    assert list(robot.history(at(-50), at(-1))) == []
    assert list(robot.history(at(5), at(5))) == []


def test_history_sampled_with_step(robot: RemoteStream) -> None:
    items = list(robot.history(at(-2), at(31), step=timedelta(seconds=7.5)))
    # -2 and 5.5 ... : the first sample time with a state is 5.5
    times = [5.5, 13, 20.5, 28]
    assert items == [(at(t), expected_state(int(t))) for t in times]


def test_history_step_must_be_positive(robot: RemoteStream) -> None:
    with pytest.raises(ConfigError, match="positive"):  # also a ValueError
        robot.history(at(0), at(1), step=timedelta(0))


def test_second_history_pass_makes_no_request(client: Client, robot: RemoteStream) -> None:
    first = list(robot.history(at(3.5), at(71)))
    counter = Counter(client.transport.session)
    second = list(robot.history(at(3.5), at(71)))
    assert second == first
    assert counter.urls == []
    robot.state_at(at(44))  # windows history walked are cached for state_at too
    assert counter.urls == []


def test_second_pass_yields_the_cached_pairs_themselves(
    client: Client, robot: RemoteStream
) -> None:
    first = list(robot.history(at(3.5), at(71)))
    counter = Counter(client.transport.session)
    second = list(robot.history(at(3.5), at(71)))
    assert counter.urls == []
    assert second == first
    assert second[0][1] is first[0][1]  # the state at start, stamped start
    assert all(a is b for a, b in zip(first[1:], second[1:], strict=True))


def expected_history(start: float, end: float) -> list[tuple[datetime, dict[str, Any]]]:
    """What history(at(start), at(end)) yields, from the model of the stream."""
    first = max(start, 0)
    items = [(at(i), expected_state(i)) for i in range(COUNT) if first <= i < end]
    if start > 0 and start != int(start) and start < end:
        items.insert(0, (at(start), expected_state(int(start))))
    return items


def test_every_range_of_cached_windows_is_cut_exactly(client: Client, robot: RemoteStream) -> None:
    # A second pass moves whole runs of cached windows at once and cuts only the
    # windows holding start and end: starts and ends on an entry, between entries,
    # on a window's snapshot, just before it, in the first and the last window.
    assert list(robot.history(None, at(90))) == expected_history(-1, 90)
    counter = Counter(client.transport.session)
    bounds = [0, 0.5, 9, 9.5, 10, 10.5, 19.99, 20, 45, 49.5, 50, 79, 80, 89.5, 90]
    for start in bounds:
        for end in (end for end in bounds if end >= start):  # end < start: ConfigError
            got = list(robot.history(at(start), at(end)))
            assert got == expected_history(start, end), (start, end)
    assert counter.urls == []
    # A start before the stream: the server is asked where the stream begins.
    for end in bounds:
        assert list(robot.history(at(-3), at(end))) == expected_history(-3, end), end


def test_whole_stream_twice_asks_for_its_first_entry_once(
    client: Client, robot: RemoteStream
) -> None:
    first = list(robot.history(None, at(40)))
    counter = Counter(client.transport.session)
    assert list(robot.history(None, at(40))) == first
    assert counter.urls == []


def test_history_states_are_shared_by_default(robot: RemoteStream) -> None:
    one = [state for _, state in robot.history(at(10), at(15))]
    two = [state for _, state in robot.history(at(10), at(15))]
    assert one == [expected_state(i) for i in range(10, 15)]
    assert all(a is b for a, b in zip(one, two, strict=True))


def test_history_copy_true_yields_private_states(robot: RemoteStream) -> None:
    shared = [state for _, state in robot.history(at(10), at(15))]
    for _, state in robot.history(at(10), at(15), copy=True):
        assert all(state is not s and state["log"] is not s["log"] for s in shared)
        state["log"].append("mine")
    assert [s for _, s in robot.history(at(10), at(15))] == [
        expected_state(i) for i in range(10, 15)
    ]
    assert robot.state_at(at(14)) == expected_state(14)


def test_state_at_copies_the_cached_state(robot: RemoteStream) -> None:
    cached = dict(robot.history(at(20), at(25)))
    state = robot.state_at(at(23))
    assert state == cached[at(23)]
    assert state is not cached[at(23)]
    state["log"].append("mine")
    assert cached[at(23)] == expected_state(23)


def test_history_commits_windows_with_their_states(robot: RemoteStream) -> None:
    list(robot.history(at(0), at(60)))
    committed = [w for w in robot.windows.windows() if w.state is WindowState.COMMITTED]
    assert len(committed) == 6
    for window in committed:
        assert window.entries is None  # the states replace them
        assert window.pairs is not None
        assert window.micros is not None
        base = (window.micros[0] // 1_000_000) - T0
        assert window.pairs == [(at(base + i), expected_state(base + i)) for i in range(10)]
    assert robot.windows.cached_entries == 60
    assert robot.windows.cached_weight == sum(
        states_weight(s for _, s in w.pairs or []) for w in committed
    )


def test_a_tiny_cache_still_answers(server_url: str) -> None:
    with Client(server_url, max_cached_entries=5) as client:
        robot = client.stream("robot-1")
        assert list(robot.history(at(0), at(40))) == [(at(i), expected_state(i)) for i in range(40)]
        assert robot.state_at(at(33)) == expected_state(33)
        assert robot.windows.cached_entries <= 5


def test_the_live_window_is_not_fetched_again(client: Client, robot: RemoteStream) -> None:
    assert list(robot.history()) == [(at(i), expected_state(i)) for i in range(COUNT)]
    counter = Counter(client.transport.session)
    assert list(robot.history()) == [(at(i), expected_state(i)) for i in range(COUNT)]
    # Only from its newest entry on, which may have been amended since.
    newest = format_rfc3339(parse_rfc3339(line_time(COUNT - 1))).replace(":", "%3A")
    assert [url.rsplit("/", 1)[1] for url in counter.urls] == [f"entries?start={newest}"]


def test_latest_without_a_tail_asks_for_the_newest_window_then_its_entries(
    client: Client, robot: RemoteStream
) -> None:
    counter = Counter(client.transport.session)
    assert robot.latest() == (at(COUNT - 1), expected_state(COUNT - 1))
    paths = [url.rsplit("/", 1)[1].split("?")[0] for url in counter.urls]
    assert paths == ["window", "entries"]


def test_state_at_and_latest_in_the_live_window_read_only_what_follows(
    client: Client, robot: RemoteStream
) -> None:
    list(robot.history(at(85)))  # the live window (90..94) is read and held
    counter = Counter(client.transport.session)
    # Before the newest entry held, nothing can have changed: no request at all.
    assert robot.state_at(at(92.5)) == expected_state(92)
    assert counter.urls == []
    # At or after it: read again from it on (it may have been amended).
    assert robot.state_at(at(94.5)) == expected_state(94)
    assert robot.latest() == (at(COUNT - 1), expected_state(COUNT - 1))
    newest = line_time(COUNT - 1).replace(":", "%3A")
    entries = [url.rsplit("/", 1)[1] for url in counter.urls if "/entries?" in url]
    assert entries == [f"entries?start={newest}", f"entries?start={newest}"]


def line_time(i: int) -> str:
    return format_rfc3339((T0 + i) * 1_000_000)


def test_what_the_live_window_became_is_read_from_its_newest_entry() -> None:
    # Between two passes: the newest mutation is amended, mutations follow, then a
    # new snapshot starts a new live window. The second pass, which fetched only
    # from the newest entry it knew, equals a fresh client's pass.
    with running_server(limits=Limits(page_size=7)) as url:
        base = f"{url}/v1/streams/robot-1"
        rate = {"keyframe_frequency": 3_600_000, "change_frequency": 60_000}
        with requests.Session() as http:
            http.put(base, json={"record_rate": rate}, timeout=5).raise_for_status()

            def write(i: int, state: dict[str, Any]) -> str:
                body = {"state": state, "timestamp": line_time(i)}
                response = http.post(f"{base}/state", json=body, timeout=5)
                response.raise_for_status()
                return str(response.json()["action"])

            assert write(0, {"v": 0}) == "snapshot"
            assert write(1, {"v": 1}) == "mutation"
            assert write(2, {"v": 2}) == "amend"  # within 60 s: the newest is replaced
            with Client(url) as client:
                robot = client.stream("robot-1")
                first = list(robot.history())
                assert first == [(at(0), {"v": 0}), (at(1), {"v": 2})]
                assert write(3, {"v": 3}) == "amend"  # the entry at 1 s again
                robot.append_entries(
                    [
                        Entry(T0 + 70, EntryKind.MUTATION, {"v": 70}),
                        Entry(T0 + 80, EntryKind.SNAPSHOT, {"v": 80, "w": 1}),
                        Entry(T0 + 81, EntryKind.MUTATION, {"v": 81}),
                    ]
                )
                counter = Counter(client.transport.session)
                second = list(robot.history())
                expected = [
                    (at(0), {"v": 0}),
                    (at(1), {"v": 3}),
                    (at(70), {"v": 70}),
                    (at(80), {"v": 80, "w": 1}),
                    (at(81), {"v": 81, "w": 1}),
                ]
                assert second == expected
                assert counter.urls[0].endswith("entries?start=" + line_time(1).replace(":", "%3A"))
                # The old live window is now a committed window; the new one is held.
                assert robot.state_at(at(75)) == {"v": 70}
                assert list(robot.history()) == expected
            with Client(url) as fresh:
                assert list(fresh.stream("robot-1").history()) == expected


def test_a_live_window_larger_than_the_cache_is_not_held(server_url: str) -> None:
    with Client(server_url, max_cached_entries=3) as client:
        robot = client.stream("robot-1")
        assert list(robot.history(at(90))) == [(at(i), expected_state(i)) for i in range(90, COUNT)]
        assert robot.windows.live_prefix(at_micros(90)) is None


def at_micros(seconds: int) -> int:
    return (T0 + seconds) * 1_000_000


# -- pages read by field, from a server that sends what it is told ------------------------

Row = tuple[int, bool, bytes]
"""A canned entry: its time (what pages and windows are cut by), whether it is a
snapshot, and the NDJSON line sent for it, as it is."""


def line_of(entry: Entry) -> bytes:
    return json.dumps(entry.to_json(with_rev=True), separators=(",", ":")).encode()


def rows_of(entries: list[Entry]) -> list[Row]:
    return [(e.micros, e.is_snapshot, line_of(e)) for e in entries]


class _CannedHandler(http.server.BaseHTTPRequestHandler):
    """A server that knows only NDJSON pages (as before the columns form)."""

    rows: list[Row] = []
    page_size = 7
    accepts: list[str]  # the Accept header of every entries request

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        if url.path == "/v1/streams/canned":
            self.send(200, json.dumps({"id": "canned", "revision": len(self.rows)}).encode())
        elif url.path == "/v1/streams/canned/window":
            self.window(parse_rfc3339(query["at"]))
        elif url.path == "/v1/streams/canned/entries":
            self.accepts.append(self.headers.get("Accept", ""))
            self.entries(query)
        else:
            self.send(404, b'{"error": {"code": "not_found", "message": "no such route"}}')

    def window(self, at: int) -> None:
        snapshots = [t for t, snapshot, _ in self.rows if snapshot]
        before = [t for t in snapshots if t <= at]
        if not before:
            self.send(404, b'{"error": {"code": "out_of_range", "message": "before the stream"}}')
            return
        after = [t for t in snapshots if t > at]
        body = {
            "start": format_rfc3339(before[-1]),
            "end": format_rfc3339(after[0]) if after else None,
            "revision": len(self.rows),
        }
        self.send(200, json.dumps(body).encode())

    def entries(self, query: dict[str, str]) -> None:
        start = parse_rfc3339(query["start"]) if "start" in query else None
        end = parse_rfc3339(query["end"]) if "end" in query else None
        rows = [
            row
            for row in self.rows
            if (start is None or row[0] >= start) and (end is None or row[0] < end)
        ]
        page, rest = rows[: self.page_size], rows[self.page_size :]
        body = b"".join(line + b"\n" for _, _, line in page)
        headers = {"RStream-Next-Start": format_rfc3339(rest[0][0])} if rest else {}
        self.send(200, body, "application/x-ndjson", headers)

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def canned_stream(rows: list[Row], accepts: list[str] | None = None) -> Iterator[RemoteStream]:
    """Stream "canned" of a server that sends ``rows`` in pages of 7 lines as NDJSON;
    ``accepts`` collects the Accept header of each page request."""
    handler = type(
        "Handler", (_CannedHandler,), {"rows": rows, "accepts": [] if accepts is None else accepts}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll: shutdown() waits for the serving loop to look at its flag.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,))
    thread.start()
    try:
        with Client(f"http://127.0.0.1:{server.server_address[1]}", max_workers=3) as client:
            yield client.stream("canned")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        assert not thread.is_alive()


def test_history_reads_each_page_by_field_and_commits_its_windows() -> None:
    with canned_stream(rows_of(make_entries())) as robot:
        assert list(robot.history(at(-1))) == [(at(i), expected_state(i)) for i in range(COUNT)]
        windows = robot.windows.windows()
        assert [w.state for w in windows] == [WindowState.COMMITTED] * 9 + [WindowState.LIVE]
        for window in windows[:-1]:
            assert window.entries is None
            assert window.micros is not None
            assert window.pairs is not None
            base = window.micros[0] // 1_000_000 - T0
            assert window.pairs == [(at(base + i), expected_state(base + i)) for i in range(10)]


def test_pages_asked_for_in_the_columns_form_are_read_as_ndjson_when_sent_so() -> None:
    accepts: list[str] = []
    with canned_stream(rows_of(make_entries()), accepts) as robot:
        assert list(robot.history(at(-1))) == [(at(i), expected_state(i)) for i in range(COUNT)]
        assert list(robot.entries()) == make_entries()
    assert accepts
    assert set(accepts) == {f"{COLUMNS}, {NDJSON};q=0.5"}


def test_history_reads_the_spelled_out_types_blank_lines_and_crlf() -> None:
    rows = rows_of(make_entries())
    for i in (3, 10, 11, 40):  # the snapshots at 10 and 40, mutations at 3 and 11
        entry = make_entries()[i]
        obj = {**entry.to_json(), "type": "snapshot" if entry.is_snapshot else "mutation"}
        rows[i] = (entry.micros, entry.is_snapshot, json.dumps(obj).encode())
    rows[20] = (rows[20][0], rows[20][1], rows[20][2] + b"\r\n  ")  # and a blank line
    with canned_stream(rows) as robot:
        assert list(robot.history(at(-1))) == [(at(i), expected_state(i)) for i in range(COUNT)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "malformed NDJSON in .*/entries.*, line 3"),
        (b'{"timestamp": "2023-11-14T22:13:29Z", "type": 1, "data": []}', "field 'data'"),
        (b'{"timestamp": "2023-11-14T22:13:29Z", "type": 2, "data": {}}', "field 'type'"),
        (b'{"timestamp": "yesterday", "type": 1, "data": {}}', "field 'timestamp'"),
    ],
)
def test_a_bad_line_in_the_middle_of_a_page_is_a_protocol_error_naming_it(
    line: bytes, message: str
) -> None:
    rows = rows_of(make_entries())
    rows[9] = (rows[9][0], False, line)  # the third line of the second page
    with canned_stream(rows) as robot:
        items = robot.history(at(-1))
        with pytest.raises(ProtocolError, match=message) as info:
            list(items)
        assert "line 3" in str(info.value)


def test_history_skips_mutations_before_the_first_snapshot() -> None:
    orphans = [
        Entry(T0 - 2, EntryKind.MUTATION, {"i": -2}),
        Entry(T0 - 1, EntryKind.MUTATION, {"log": {"$push": [-1]}}),
    ]
    with canned_stream(rows_of(orphans + make_entries())) as robot:
        assert list(robot.history(at(-5))) == [(at(i), expected_state(i)) for i in range(COUNT)]
        assert list(robot.history(at(-5), at(2))) == [(at(i), expected_state(i)) for i in range(2)]


@pytest.mark.parametrize(
    ("row", "seconds", "line"),
    [
        (12, 11, 6),  # the same time as the entry before
        (12, 5, 6),  # earlier than the entry before
        (7, 6, 1),  # a page's first entry, not after the page before's last
    ],
)
def test_entries_out_of_order_are_a_protocol_error(row: int, seconds: int, line: int) -> None:
    entries = make_entries()
    rows = rows_of(entries)
    moved = entries[row].replace(micros=(T0 + seconds) * 1_000_000)
    rows[row] = (entries[row].micros, entries[row].is_snapshot, line_of(moved))
    with (
        canned_stream(rows) as robot,
        pytest.raises(ProtocolError, match=f"out of order.*line {line}"),
    ):
        list(robot.history(at(-1)))


# -- entries --------------------------------------------------------------------------------


def test_entries_follow_pagination(client: Client, robot: RemoteStream) -> None:
    counter = Counter(client.transport.session)
    got = list(robot.entries(at(3), at(40)))
    assert got == make_entries()[3:40]
    assert [e.rev for e in got] == list(range(4, 41))
    assert len(counter.urls) == 6  # 37 entries in pages of 7
    assert list(robot.entries()) == make_entries()


def test_stopping_early_leaves_nothing_running(client: Client, robot: RemoteStream) -> None:
    before = set(threading.enumerate())
    for entry in robot.entries():
        if entry.micros >= at(8).timestamp() * 1_000_000:
            break
    assert robot.state_at(at(8)) == expected_state(8)
    # The server runs in this process: its worker threads may grow too.
    new = [t.name for t in new_client_threads(before)]
    assert all(name.startswith("rstream-fetch") for name in new), new


# -- writes -------------------------------------------------------------------------------------


def test_write_state_and_read_it_back(server_url: str) -> None:
    with connect(server_url, "writer-test") as robot:
        first = robot.write_state({"a": 1}, timestamp=T0)
        assert first is not None
        assert first.kind is EntryKind.SNAPSHOT
        assert robot.write_state({"a": 1}, timestamp=T0 + 1) is None  # unchanged
        second = robot.write_state({"a": 2}, timestamp=T0 + 2)
        assert second is not None
        assert second.kind is EntryKind.MUTATION
        assert robot.latest() == (at(2), {"a": 2})
        assert robot.state_at(at(1)) == {"a": 1}
        with pytest.raises(OutOfOrder):
            robot.write_state({"a": 3}, timestamp=T0)
        assert robot.info().revision == 2


def test_streams_and_same_object_per_id(client: Client) -> None:
    ids = [s.id for s in client.streams()]
    assert "robot-1" in ids
    assert ids == sorted(ids)
    assert client.stream("robot-1") is client.stream("robot-1")
    assert client.ping()


# -- failover and shutdown ----------------------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_two_urls_with_the_first_dead(server_url: str) -> None:
    waits: list[float] = []
    with Client([closed_port_url(), server_url], sleep=waits.append) as client:
        robot = client.stream("robot-1")
        assert robot.state_at(at(55)) == expected_state(55)
        assert list(robot.history(at(0), at(3))) == [(at(i), expected_state(i)) for i in range(3)]
        assert client.transport.current_index == 1
    assert waits == []


def test_close_joins_threads_and_later_calls_raise(server_url: str) -> None:
    before = set(threading.enumerate())
    client = Client(server_url, max_workers=4)
    robot = client.stream("robot-1")
    items = robot.history(at(0), None)
    next(items)  # pages in flight on the pool
    client.close()
    client.close()
    assert new_client_threads(before) == []
    with pytest.raises(ClientClosed):
        robot.state_at(at(1))
    with pytest.raises(ClientClosed):
        client.stream("robot-1")
    with pytest.raises(ClientClosed):
        list(items)


def test_connect_owns_its_client(server_url: str) -> None:
    robot = connect(server_url, "robot-1")
    assert robot.state_at(at(1)) == expected_state(1)
    robot.close()
    robot.close()
    with pytest.raises(ClientClosed):
        robot.latest()
