"""Conformance of rstream.client.sse with WHATWG event-stream interpretation.

Every case is fed whole, one byte at a time and in random chunk sizes, through
both ways an event's fields are interpreted (sseclient-py, and the linear path for
events of many data lines); all must agree with the expected result and with a
literal reference implementation of the specification (``reference`` below).
"""

from __future__ import annotations

import http.server
import itertools
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from rstream import ProtocolError
from rstream.client import sse
from rstream.client.sse import (
    RETRY_MAX_MS,
    RETRY_MIN_MS,
    EventStream,
    SSEEvent,
    iter_chunks,
)

# -- harness --------------------------------------------------------------------


@dataclass
class Outcome:
    events: list[tuple[SSEEvent, str]]  # each event with last_event_id when it was yielded
    last_event_id: str
    retry_ms: int | None
    eof_mid_event: bool
    comments: list[str] = field(default_factory=list)


def parse(chunks: list[bytes], **kwargs: object) -> Outcome:
    comments: list[str] = []
    stream = EventStream(chunks, on_comment=comments.append, **kwargs)  # type: ignore[arg-type]
    events = [(event, stream.last_event_id) for event in stream]
    return Outcome(
        events, stream.last_event_id, stream.retry_ms, stream.saw_eof_mid_event, comments
    )


def chunkings(body: bytes, seeds: int = 5) -> Iterator[tuple[str, list[bytes]]]:
    yield "whole", [body]
    yield "bytes", [body[i : i + 1] for i in range(len(body))]
    for seed in range(seeds):
        rng = random.Random(seed)
        chunks, i = [], 0
        while i < len(body):
            n = rng.randint(0, max(2, len(body) // 3))  # 0: empty chunks are allowed
            chunks.append(body[i : i + n])
            i += n
        yield f"seed{seed}", chunks


@pytest.fixture(params=["sseclient", "own"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through sseclient-py for every event, then through the linear path."""
    monkeypatch.setattr(
        sse, "_SSECLIENT_MAX_DATA_LINES", 10**9 if request.param == "sseclient" else 0
    )
    return str(request.param)


def reference(body: bytes, last_event_id: str = "") -> Outcome:
    """The specification, literally: decode everything, split lines, interpret them."""
    text = body.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)
    tail = lines.pop()  # an incomplete last line ("" when the text ends with a line end)
    data, event_type, id_buffer, retry = "", "", last_event_id, None
    own_id: str | None = None
    own_retry: int | None = None
    pending = False
    out = Outcome([], last_event_id, None, False)
    for line in lines:
        if line == "":
            out.last_event_id = id_buffer
            if data:
                ev = SSEEvent(event_type or "message", data[:-1], own_id, own_retry)
                out.events.append((ev, out.last_event_id))
            data, event_type, own_id, own_retry, pending = "", "", None, None, False
            continue
        if line.startswith(":"):
            out.comments.append(line[1:])
            continue
        pending = True
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id" and "\0" not in value:
            id_buffer = own_id = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            digits = value.lstrip("0") or "0"  # int() refuses more than 4300 digits
            ms = int(digits) if len(digits) < 10 else RETRY_MAX_MS
            retry = own_retry = min(max(ms, RETRY_MIN_MS), RETRY_MAX_MS)
    out.retry_ms = retry
    out.eof_mid_event = pending or tail != ""
    return out


def check(body: bytes, **kwargs: object) -> Outcome:
    """Parse ``body`` in every chunking; all must agree with each other and the reference."""
    expected = reference(body, str(kwargs.get("last_event_id", "")))
    for name, chunks in chunkings(body):
        got = parse(chunks, **kwargs)
        assert got == expected, f"chunking {name}: {got} != {expected}"
    return expected


def ev(
    data: str, event: str = "message", id: str | None = None, retry: int | None = None
) -> SSEEvent:
    return SSEEvent(event=event, data=data, id=id, retry=retry)


# -- conformance ----------------------------------------------------------------

LONG = "x" * 20_000
# name: (body, expected events, final last_event_id, final retry_ms, saw_eof_mid_event)
CASES: dict[str, tuple[bytes, list[SSEEvent], str, int | None, bool]] = {
    "simple": (b"data: hello\n\n", [ev("hello")], "", None, False),
    "two events": (b"data: a\n\ndata: b\n\n", [ev("a"), ev("b")], "", None, False),
    "multiple data lines": (b"data: a\ndata: b\ndata: c\n\n", [ev("a\nb\nc")], "", None, False),
    "data with colons": (b"data: a:b: c\n\n", [ev("a:b: c")], "", None, False),
    "data: no space": (b"data:x\n\n", [ev("x")], "", None, False),
    "only one space stripped": (b"data:  x\n\n", [ev(" x")], "", None, False),
    "trailing space kept": (b"data: x \n\n", [ev("x ")], "", None, False),
    "value starting with colon": (b"data:: x\n\n", [ev(": x")], "", None, False),
    "data without colon": (b"data\n\n", [ev("")], "", None, False),
    "data without colon then value": (b"data\ndata: x\n\n", [ev("\nx")], "", None, False),
    "empty data lines": (b"data:\ndata:\n\n", [ev("\n")], "", None, False),
    "event name": (b"event: update\ndata: 1\n\n", [ev("1", "update")], "", None, False),
    "empty event name is message": (b"event:\ndata: 1\n\n", [ev("1")], "", None, False),
    "last event name wins": (b"event: a\nevent: b\ndata: 1\n\n", [ev("1", "b")], "", None, False),
    "event name resets": (
        b"event: a\ndata: 1\n\ndata: 2\n\n",
        [ev("1", "a"), ev("2")],
        "",
        None,
        False,
    ),
    "only event field: not dispatched": (b"event: a\n\ndata: 2\n\n", [ev("2")], "", None, False),
    "unicode event name": (
        "event: ünïcødé→✓\ndata: 1\n\n".encode(),
        [ev("1", "ünïcødé→✓")],
        "",
        None,
        False,
    ),
    "id": (b"id: 1\ndata: a\n\n", [ev("a", id="1")], "1", None, False),
    "id persists across events": (
        b"id: 1\ndata: a\n\ndata: b\n\n",
        [ev("a", id="1"), ev("b")],
        "1",
        None,
        False,
    ),
    "id without data still counts": (b"id: 7\n\ndata: x\n\n", [ev("x")], "7", None, False),
    "empty id resets": (b"id: 7\n\nid:\ndata: b\n\n", [ev("b", id="")], "", None, False),
    "id without colon resets": (b"id: 7\n\nid\n\n", [], "", None, False),
    "id with NUL ignored": (
        b"id: 1\ndata: a\n\nid: 2\x00x\ndata: b\n\n",
        [ev("a", id="1"), ev("b")],
        "1",
        None,
        False,
    ),
    "NUL id after valid id": (b"id: 1\nid: \x00\ndata: a\n\n", [ev("a", id="1")], "1", None, False),
    "NUL in data kept": (b"data: a\x00b\n\n", [ev("a\x00b")], "", None, False),
    "id trailing space kept": (b"id: 1 \n\n", [], "1 ", None, False),
    "non-ASCII id": ("id: ü-✓\n\n".encode(), [], "ü-✓", None, False),
    "id of incomplete event not committed": (
        b"data: a\n\nid: 9\ndata: b\n",
        [ev("a")],
        "",
        None,
        True,
    ),
    "retry": (b"retry: 5000\ndata: a\n\n", [ev("a", retry=5000)], "", 5000, False),
    "retry non-digits": (b"retry: 1a\ndata: a\n\n", [ev("a")], "", None, False),
    "retry empty": (b"retry:\nretry\ndata: a\n\n", [ev("a")], "", None, False),
    "retry negative": (b"retry: -1\n\n", [], "", None, False),
    "retry two spaces": (b"retry:  100\n\n", [], "", None, False),
    "retry non-ASCII digits": ("retry: ١٢٣\nretry: ²\n\n".encode(), [], "", None, False),
    "retry clamped low": (b"retry: 0\n\n", [], "", RETRY_MIN_MS, False),
    "retry clamped high": (b"retry: " + b"9" * 5000 + b"\n\n", [], "", RETRY_MAX_MS, False),
    "retry leading zeros": (b"retry: 0000001500\n\n", [], "", 1500, False),
    "retry then invalid retry": (b"retry: 1000\nretry: x\n\n", [], "", 1000, False),
    "retry applies before the blank line": (b"data: a\n\nretry: 3000\n", [ev("a")], "", 3000, True),
    "comments only": (b": hello\n:\n\n", [], "", None, False),
    "comment between data lines": (b"data: a\n: c\ndata: b\n\n", [ev("a\nb")], "", None, False),
    "unknown fields ignored": (
        b"foo: bar\ndata: a\nDATA: x\nData: y\n\n",
        [ev("a")],
        "",
        None,
        False,
    ),
    "space before colon": (b"data : x\n\n", [], "", None, False),
    "BOM stripped": (b"\xef\xbb\xbfdata: a\n\n", [ev("a")], "", None, False),
    "BOM twice": (b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n", [ev("b")], "", None, False),
    "BOM later is content": (b"data: a\n\n\xef\xbb\xbfdata: b\n\n", [ev("a")], "", None, False),
    "lone BOM prefix": (b"\xef\xbb", [], "", None, True),
    "CR": (b"data: a\rdata: b\r\r", [ev("a\nb")], "", None, False),
    "CRLF": (b"data: a\r\ndata: b\r\n\r\n", [ev("a\nb")], "", None, False),
    "CRCR": (b"data: a\r\r", [ev("a")], "", None, False),
    "LFCR": (b"data: a\n\rdata: b\n\n", [ev("a"), ev("b")], "", None, False),
    "LF CRLF": (b"data: a\n\r\ndata: b\n\n", [ev("a"), ev("b")], "", None, False),
    "CR CRLF": (b"data: a\r\r\ndata: b\n\n", [ev("a"), ev("b")], "", None, False),
    "mixed endings": (b"data: a\r\ndata: b\rdata: c\n\r\n", [ev("a\nb\nc")], "", None, False),
    "unicode line separators are data": (
        "data: a\u2028b\u2029c\u0085d\n\n".encode(),
        [ev("a\u2028b\u2029c\u0085d")],
        "",
        None,
        False,
    ),
    "str.splitlines separators are data": (
        b"data: a\x0bb\x0cc\x1cd\x1de\x1ef\n\n",
        [ev("a\x0bb\x0cc\x1cd\x1de\x1ef")],
        "",
        None,
        False,
    ),
    "very long line": (f"data: {LONG}\n\n".encode(), [ev(LONG)], "", None, False),
    "non-ASCII data": (
        "data: héllo 日本語 🎉\n\n".encode(),
        [ev("héllo 日本語 🎉")],
        "",
        None,
        False,
    ),
    "invalid UTF-8 replaced": (b"data: a\xffb\xc3\n\n", [ev("a\ufffdb\ufffd")], "", None, False),
    "truncated event discarded": (b"data: a\n\ndata: b", [ev("a")], "", None, True),
    "event without blank line discarded": (b"data: a\n\ndata: b\n", [ev("a")], "", None, True),
    "EOF after CR": (b"data: a\r", [], "", None, True),
    "EOF after comment line": (b"data: a\n\n: ping\n", [ev("a")], "", None, False),
    "EOF inside comment": (b": pi", [], "", None, True),
    "empty stream": (b"", [], "", None, False),
    "only blank lines": (b"\n\n\r\n\r", [], "", None, False),
    "many data lines": (b"data: x\n" * 50 + b"\n", [ev("\n".join(["x"] * 50))], "", None, False),
    # The rstream server's form (event, numeric id, one data line) and its near misses.
    "server form": (
        b'event: entry\nid: 12\ndata: {"a": 1}\n\nevent: amend\nid: 13\ndata: x\n\n',
        [ev('{"a": 1}', "entry", id="12"), ev("x", "amend", id="13")],
        "13",
        None,
        False,
    ),
    "server form, empty event name": (
        b"event: \nid: 1\ndata: x\n\n",
        [ev("x", id="1")],
        "1",
        None,
        False,
    ),
    "server form, empty data": (
        b"event: a\nid: 1\ndata: \n\n",
        [ev("", "a", id="1")],
        "1",
        None,
        False,
    ),
    "server form, two data lines": (
        b"event: a\nid: 1\ndata: x\ndata: y\n\n",
        [ev("x\ny", "a", id="1")],
        "1",
        None,
        False,
    ),
    "server form, id not digits": (
        b"event: a\nid: 1x\ndata: x\n\nevent: a\nid: \ndata: y\n\n",
        [ev("x", "a", id="1x"), ev("y", "a", id="")],
        "",
        None,
        False,
    ),
    "server form, non-ASCII digits in id": (
        "event: a\nid: ١٢\ndata: x\n\n".encode(),
        [ev("x", "a", id="١٢")],
        "١٢",
        None,
        False,
    ),
    "server form, id with NUL": (
        b"event: a\nid: 1\x00\ndata: x\n\n",
        [ev("x", "a")],
        "",
        None,
        False,
    ),
    "server form, no spaces": (
        b"event:a\nid:1\ndata:x\n\n",
        [ev("x", "a", id="1")],
        "1",
        None,
        False,
    ),
    "server form, data first": (
        b"data: x\nevent: a\nid: 1\n\n",
        [ev("x", "a", id="1")],
        "1",
        None,
        False,
    ),
    "server form, then a field": (
        b"event: a\nid: 1\ndata: x\nretry: 500\n\n",
        [ev("x", "a", id="1", retry=500)],
        "1",
        500,
        False,
    ),
    "server form, invalid UTF-8 data": (
        b"event: a\nid: 1\ndata: \xff\n\n",
        [ev("\ufffd", "a", id="1")],
        "1",
        None,
        False,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_conformance(name: str, path: str) -> None:
    body, events, last_event_id, retry_ms, eof_mid_event = CASES[name]
    got = check(body)
    assert [event for event, _ in got.events] == events
    assert got.last_event_id == last_event_id
    assert got.retry_ms == retry_ms
    assert got.eof_mid_event == eof_mid_event


def test_last_event_id_at_each_event(path: str) -> None:
    got = check(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\n\nid: 3\ndata: c\n\nid\ndata: d\n\n")
    assert [(event.data, last) for event, last in got.events] == [
        ("a", "1"),
        ("b", "1"),
        ("c", "3"),
        ("d", ""),
    ]


def test_initial_last_event_id_survives_blank_lines(path: str) -> None:
    got = check(b":\n\ndata: x\n\n\n", last_event_id="41")
    assert got.events == [(ev("x"), "41")]
    assert got.last_event_id == "41"
    got = check(b"id: 42\ndata: x\n\n", last_event_id="41")
    assert got.last_event_id == "42"


def test_comments_are_reported_in_order(path: str) -> None:
    log: list[str] = []
    body = b": one\ndata: a\n\n:two\n:\ndata: b\n\n: three"
    for _, chunks in chunkings(body):
        log.clear()
        stream = EventStream(chunks, on_comment=lambda text: log.append(f"comment {text!r}"))
        for event in stream:
            log.append(f"event {event.data}")
        # ": three" has no line end: incomplete, so neither reported nor counted.
        assert log == ["comment ' one'", "event a", "comment 'two'", "comment ''", "event b"]
        assert stream.saw_eof_mid_event


def test_events_are_yielded_before_more_input_is_read() -> None:
    read: list[bytes] = []

    def chunks() -> Iterator[bytes]:
        for chunk in (b"data: a\n", b"\ndata: b\n\n", b"data: c\n\n"):
            read.append(chunk)
            yield chunk

    stream = EventStream(chunks())
    assert next(stream).data == "a"
    assert read == [b"data: a\n", b"\ndata: b\n\n"]
    assert [event.data for event in stream] == ["b", "c"]


def test_bad_max_event_bytes() -> None:
    with pytest.raises(ValueError, match="max_event_bytes"):
        EventStream([], max_event_bytes=0)


# -- sseclient-py shortcomings, shown on sseclient-py itself ------------------------


def _sseclient(chunks: list[bytes]) -> list[tuple[str, str, object, object]]:
    from sseclient import SSEClient

    return [(e.event, e.data, e.id, e.retry) for e in SSEClient(iter(chunks)).events()]


def test_sseclient_shortcomings_that_this_module_works_around() -> None:
    # Half an event at EOF is dispatched.
    assert _sseclient([b"data: a\n\ndata: half"])[-1][1] == "half"
    # LF then CRLF is a blank line, but the events are merged.
    assert [e[1] for e in _sseclient([b"data: a\n\r\ndata: b\n\n"])] == ["a\nb"]
    # The same bytes give different events depending on chunking.
    assert len(_sseclient([b"data: a\r\r\ndata: b\n\n"])) == 1
    assert len(_sseclient([b"data: a\r\r", b"\ndata: b\n\n"])) == 2
    # A BOM hides the first field.
    assert _sseclient([b"\xef\xbb\xbfdata: a\n\n"]) == []
    # Invalid UTF-8 raises.
    with pytest.raises(UnicodeDecodeError):
        _sseclient([b"data: \xff\n\n"])
    # id: lost on events without data, not persisted, NUL accepted; retry unvalidated.
    assert _sseclient([b"id: 7\n\ndata: x\n\n"]) == [("message", "x", None, None)]
    assert _sseclient([b"id: 1\ndata: a\n\ndata: b\n\n"])[1][2] is None
    assert _sseclient([b"id: 2\x00\ndata: b\n\n"])[0][2] == "2\x00"
    assert _sseclient([b"retry: 1000\nretry: 1a\ndata: a\n\n"])[0][3] == "1a"


# -- limits and speed -----------------------------------------------------------


def test_event_larger_than_max_event_bytes(path: str) -> None:
    ok = b"data: 0123456789"  # 16 bytes
    assert parse([ok + b"\n\n"], max_event_bytes=16).events == [(ev("0123456789"), "")]
    body = b"data: a\n\n" + ok + b"\nid: 1\n\n"
    for name, chunks in chunkings(body):
        stream = EventStream(chunks, max_event_bytes=20)
        assert next(stream).data == "a", name
        with pytest.raises(ProtocolError, match=r"max_event_bytes=20.*without a blank line"):
            next(stream)


def test_endless_line_raises_without_reading_everything() -> None:
    read = 0

    def endless() -> Iterator[bytes]:  # a line that never ends (256 chunks, then EOF)
        nonlocal read
        for _ in range(256):
            read += 4096
            yield b"x" * 4096

    with pytest.raises(ProtocolError):
        list(EventStream(endless(), max_event_bytes=100_000))
    assert read <= 100_000 + 4096


def test_comments_do_not_accumulate_towards_the_limit() -> None:
    stream = EventStream([b": ping\n" * 1000 + b"data: a\n\n"], max_event_bytes=20)
    assert [event.data for event in stream] == ["a"]


def test_large_events_parse_in_linear_time() -> None:
    size = 8 * 1024 * 1024
    one_line = b"data: " + b"x" * size + b"\n\n"
    many_lines = b"data: " + b"y" * 74 + b"\n"
    many_lines = many_lines * (size // len(many_lines)) + b"\n"
    for body in (one_line, many_lines):
        chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
        started = time.perf_counter()
        (event,) = EventStream(chunks)
        elapsed = time.perf_counter() - started
        assert len(event.data) > size * 0.9
        # A regression guard, not a benchmark: linear parsing takes ~0.05 s here, the
        # quadratic paths of sseclient-py take many seconds.
        assert elapsed < 2, elapsed
    small = b"data: " + b"z" * (1024 * 1024) + b"\n\n"
    started = time.perf_counter()
    (event,) = EventStream(small[i : i + 128] for i in range(0, len(small), 128))
    assert time.perf_counter() - started < 2


class SSEClientSpy:
    """Stands in for sseclient.SSEClient in rstream.client.sse: records the parsers
    made and every block of input each of them reads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.blocks: list[bytes] = []
        self.parsers = 0
        monkeypatch.setattr("rstream.client.sse.SSEClient", self)

    def __call__(self, source: Iterator[bytes]) -> Any:
        from sseclient import SSEClient

        self.parsers += 1
        return SSEClient(self._recorded(source))

    def _recorded(self, source: Iterator[bytes]) -> Iterator[bytes]:
        for block in source:
            self.blocks.append(block)
            yield block


def test_sseclient_gets_one_event_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting the work instead of timing it: sseclient-py sees each event once."""
    spy = SSEClientSpy(monkeypatch)
    body = b"id: 1\nevent: e\n: c\ndata: " + b"x" * 300_000 + b"\nretry: 5\n\n" + b"data: y\n\n"
    list(EventStream(body[i : i + 1000] for i in range(0, len(body), 1000)))
    assert spy.blocks == [b"event: e\ndata: " + b"x" * 300_000 + b"\n\n", b"data: y\n\n"]
    assert spy.parsers == 1  # one sseclient-py parser for the whole stream


def test_one_sseclient_parser_follows_the_events_it_is_given() -> None:
    """Events handled by sseclient-py and by the linear path, interleaved, with ids
    and retries on some: each yielded event carries its own fields, never a
    neighbour's (sseclient-py never reads ahead of the event it is given)."""
    many = b"".join(b"data: %d\n" % i for i in range(20))
    body = (
        b"id: 1\nevent: a\ndata: one\n\n"
        + b"id: 2\n"
        + many
        + b"\n"
        + b"data: three\nretry: 2000\n\n"
        + b"event: b\ndata: four\nid: 4\n\n"
    )
    expected = [
        (ev("one", "a", id="1"), "1"),
        (ev("\n".join(str(i) for i in range(20)), id="2"), "2"),
        (ev("three", retry=2000), "2"),
        (ev("four", "b", id="4"), "4"),
    ]
    assert check(body).events == expected


# -- fuzzing ----------------------------------------------------------------------

TOKENS = [
    b"data",
    b"id",
    b"retry",
    b"event",
    b":",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\xef\xbb\xbf",
    b"\x00",
    b"12",
    b"x",
    b"\xff",
    b"\xc3",
    b"\xa9",
    "\u2028".encode(),
    b"\x85",
]
bodies = st.lists(st.sampled_from(TOKENS) | st.binary(max_size=6), max_size=40).map(b"".join)


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    return [body[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=500, deadline=None)
@given(body=bodies, cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_fuzz_matches_reference_in_any_chunking(body: bytes, cuts: list[int]) -> None:
    expected = reference(body, "start")
    assert parse([body], last_event_id="start") == expected
    assert parse(split(body, cuts), last_event_id="start") == expected


@settings(max_examples=150, deadline=None)
@given(body=bodies, cuts=st.lists(st.integers(min_value=0), max_size=12), limit=st.integers(1, 40))
def test_fuzz_only_protocol_error_escapes(body: bytes, cuts: list[int], limit: int) -> None:
    def run(chunks: list[bytes]) -> tuple[list[SSEEvent], bool]:
        stream = EventStream(chunks, max_event_bytes=limit)
        events: list[SSEEvent] = []
        try:
            events.extend(stream)
        except ProtocolError:
            return events, True
        return events, False

    assert run([body]) == run(split(body, cuts)) == run([body[i : i + 1] for i in range(len(body))])


def test_fuzz_both_interpretation_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    for _ in range(200):
        body = b"".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 60)))
        monkeypatch.setattr(sse, "_SSECLIENT_MAX_DATA_LINES", 10**9)
        via_sseclient = parse([body])
        monkeypatch.setattr(sse, "_SSECLIENT_MAX_DATA_LINES", 0)
        assert parse([body]) == via_sseclient


# -- runs of events in the server's form ----------------------------------------


def server_event(event: str, id: str, data: str) -> bytes:
    """One event exactly as an rstream server writes it (rstream.server.live)."""
    return f"event: {event}\nid: {id}\ndata: {data}\n\n".encode()


def test_server_runs_mixed_with_other_input(path: str) -> None:
    body = (
        server_event("put", "1", '{"a": 1}')
        + server_event("put", "2", "b")
        + b": ping\n"  # a comment line: part of the next event, which is not a run
        + server_event("put", "3", "c")
        + b": ping\n\n"  # a comment and a blank line: the run goes on after it
        + server_event("del", "4", "d")
        + server_event("put", "5", "e")
        + b"data: plain\n\n"  # no id: the last event ID stays 5
        + b"id: 6\nevent: put\ndata: f\n\n"  # the server's fields in another order
        + server_event("put", "7", "g")
        + b"retry: 2000\n\n"
        + b"event: put\nid: 8\ndata: h\ndata: two lines\n\n"
        + server_event("put", "9", "i")
        + b"event: put\nid: 10\n\n"  # no data: only the last event ID changes
        + server_event("put", "11", "j")
    )
    got = check(body)
    assert got.events == [
        (ev('{"a": 1}', "put", id="1"), "1"),
        (ev("b", "put", id="2"), "2"),
        (ev("c", "put", id="3"), "3"),
        (ev("d", "del", id="4"), "4"),
        (ev("e", "put", id="5"), "5"),
        (ev("plain"), "5"),
        (ev("f", "put", id="6"), "6"),
        (ev("g", "put", id="7"), "7"),
        (ev("h\ntwo lines", "put", id="8"), "8"),
        (ev("i", "put", id="9"), "9"),
        (ev("j", "put", id="11"), "11"),
    ]
    assert (got.last_event_id, got.retry_ms, got.comments) == ("11", 2000, [" ping", " ping"])


def test_server_run_then_partial_event(path: str) -> None:
    run = server_event("put", "1", "a") + server_event("put", "2", "b")
    for partial in (b"event: put\nid: 3\ndata: c", b"event: put\nid: 3\n", b"event: pu"):
        got = check(run + partial)
        assert got.events == [(ev("a", "put", id="1"), "1"), (ev("b", "put", id="2"), "2")]
        assert got.last_event_id == "2"  # the id of an incomplete event is not committed
        assert got.eof_mid_event


def test_server_events_split_across_chunks(path: str) -> None:
    run = server_event("put", "1", "a") + server_event("put", "2", "b")
    cases = [
        # The first event of the chunk continues lines held from the previous chunk.
        ([b"data: held\n", run], [ev("held\na", "put", id="1"), ev("b", "put", id="2")]),
        (
            [b"retry: 300\nid: 0\n", run],
            [ev("a", "put", id="1", retry=300), ev("b", "put", id="2")],
        ),
        # A comment line held from the previous chunk belongs to no field.
        ([b": ping\n", run], [ev("a", "put", id="1"), ev("b", "put", id="2")]),
        # Runs cut anywhere.
        ([run[:5], run[5:30], run[30:]], [ev("a", "put", id="1"), ev("b", "put", id="2")]),
    ]
    for chunks, events in cases:
        got = parse(chunks)
        assert [event for event, _ in got.events] == events
        assert got == reference(b"".join(chunks))
        assert check(b"".join(chunks)) == got


def test_server_run_of_non_ascii_utf8(path: str) -> None:
    body = server_event("ünï", "1", "ü→✓ \u2028 \x85") + server_event("put", "2", "日本")
    assert check(body).events == [
        (ev("ü→✓ \u2028 \x85", "ünï", id="1"), "1"),
        (ev("日本", "put", id="2"), "2"),
    ]


def test_server_run_with_invalid_utf8_is_replaced(path: str) -> None:
    body = (
        server_event("put", "1", "a")
        + b"event: put\nid: 2\ndata: \xff\xc3(\n\n"
        + server_event("p\xfft", "3", "é")
    )
    assert check(body).events == [
        (ev("a", "put", id="1"), "1"),
        (ev("\ufffd\ufffd(", "put", id="2"), "2"),
        (ev("é", "pÿt", id="3"), "3"),
    ]
    body = b"event: \xe2\x82\nid: 4\ndata: x\n\n"  # a truncated sequence in the name
    assert check(body).events == [(ev("x", "\ufffd", id="4"), "4")]


def test_server_run_ids_are_kept_as_written(path: str) -> None:
    body = (
        server_event("put", "007", "a")
        + server_event("put", "0", "b")
        + server_event("put", "12345678901234567890", "c")
    )
    assert check(body, last_event_id="5").events == [
        (ev("a", "put", id="007"), "007"),
        (ev("b", "put", id="0"), "0"),
        (ev("c", "put", id="12345678901234567890"), "12345678901234567890"),
    ]


def test_server_run_with_empty_event_name_is_message(path: str) -> None:
    body = server_event("", "1", "a") + b"event:\nid: 2\ndata: b\n\n" + server_event("", "3", "")
    assert check(body).events == [
        (ev("a", id="1"), "1"),
        (ev("b", id="2"), "2"),
        (ev("", id="3"), "3"),  # an empty data line is still data: dispatched
    ]


def test_server_run_larger_than_max_event_bytes(path: str) -> None:
    one = server_event("put", "1", "0123456789")  # 35 bytes, 33 without its blank line
    body = one * 50
    for name, chunks in chunkings(body):
        got = parse(chunks, max_event_bytes=33)
        assert [event for event, _ in got.events] == [ev("0123456789", "put", id="1")] * 50, name
    big = server_event("put", "2", "x" * 40)
    for name, chunks in chunkings(one * 3 + big + one):
        stream = EventStream(chunks, max_event_bytes=33)
        assert [next(stream).data for _ in range(3)] == ["0123456789"] * 3, name
        assert stream.last_event_id == "1"
        with pytest.raises(ProtocolError, match="max_event_bytes=33"):
            next(stream)


class _CountingPattern:
    """Stands in for sse._SERVER_RUN, counting the attempts to match a run."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.calls = 0

    def match(self, text: bytes, pos: int) -> re.Match[bytes] | None:
        self.calls += 1
        return self.pattern.match(text, pos)


def test_a_run_left_to_the_general_path_is_matched_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _CountingPattern(sse._SERVER_RUN)
    monkeypatch.setattr(sse, "_SERVER_RUN", counting)
    run = server_event("put", "1", "a") * 1000
    for body, limit, count in (
        (run + b"event: put\nid: 2\ndata: \xff\n\n" + run, 10**6, 2001),  # not UTF-8
        (run + run, 100, 2000),  # larger than max_event_bytes
    ):
        counting.calls = 0
        assert len(parse([body], max_event_bytes=limit).events) == count
        assert counting.calls == 1  # not once per event: that would be quadratic


def test_a_run_of_events_at_max_event_bytes_is_matched_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counting = _CountingPattern(sse._SERVER_RUN)
    monkeypatch.setattr(sse, "_SERVER_RUN", counting)
    one = server_event("put", "1", "0123456789")  # 33 bytes without its line ends
    assert len(parse([one * 1000], max_event_bytes=33).events) == 1000
    assert counting.calls == 1


def test_sseclient_gets_whole_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SSEClientSpy(monkeypatch)
    blocks = spy.blocks
    first = b"".join(server_event("put", str(i), f"{i}") for i in range(3))
    second = b"".join(server_event("put", str(i), f"{i}") for i in range(3, 5))
    assert [event.id for event in EventStream([first + b":\n\n" + second])] == list("01234")
    # Whole runs, without their id lines (the ids are taken before).
    assert blocks == [re.sub(rb"id: [0-9]+\n", b"", first), re.sub(rb"id: [0-9]+\n", b"", second)]
    # A backlog in chunks: per chunk, at most the event completed from the previous
    # chunk and one run.
    blocks.clear()
    body = b"".join(server_event("entry", str(i), f'{{"i": {i}}}') for i in range(2000))
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    assert sum(1 for _ in EventStream(chunks)) == 2000
    assert len(blocks) <= 2 * len(chunks)


def test_events_of_a_run_are_yielded_before_more_input_is_read() -> None:
    read: list[bytes] = []
    run = server_event("put", "1", "a") + server_event("put", "2", "b")

    def chunks() -> Iterator[bytes]:
        for chunk in (run, server_event("put", "3", "c")):
            read.append(chunk)
            yield chunk

    stream = EventStream(chunks())
    assert (next(stream).id, stream.last_event_id, read) == ("1", "1", [run])
    assert (next(stream).id, stream.last_event_id, read) == ("2", "2", [run])
    assert [event.id for event in stream] == ["3"]


def test_comment_lines_are_reported_before_more_input_is_read() -> None:
    read: list[bytes] = []
    seen: list[tuple[str, int]] = []

    def chunks() -> Iterator[bytes]:
        for chunk in (b"data: a\n: one\n", b": two\ndata: b\n\n"):
            read.append(chunk)
            yield chunk

    stream = EventStream(chunks(), on_comment=lambda text: seen.append((text, len(read))))
    assert [event.data for event in stream] == ["a\nb"]
    assert seen == [(" one", 1), (" two", 2)]  # each as soon as its line was complete


def test_sseclient_gets_a_run_with_invalid_utf8_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SSEClientSpy(monkeypatch)
    body = (
        server_event("put", "1", "a")
        + b"event: put\nid: 2\ndata: \xff\n\n"
        + server_event("put", "3", "b")
    )
    assert [event.data for event in EventStream([body])] == ["a", "\ufffd", "b"]
    (block,) = spy.blocks  # still one run
    assert block.decode("utf-8") == "event: put\ndata: a\n\nevent: put\ndata: \ufffd\n\n" + (
        "event: put\ndata: b\n\n"
    )


def test_a_run_longer_than_max_event_bytes_is_fed_in_whole_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = SSEClientSpy(monkeypatch)
    one = server_event("put", "1", "0123456789")  # 33 bytes without its line ends
    events = list(EventStream([one * 20], max_event_bytes=100))
    assert events == [ev("0123456789", "put", id="1")] * 20
    assert len(spy.blocks) > 1
    assert all(len(block) <= 100 and block.endswith(b"\n\n") for block in spy.blocks)
    assert b"".join(spy.blocks) == (one * 20).replace(b"id: 1\n", b"")


SERVER_NAMES = st.sampled_from(["put", "entry", "", " ", "ünï", "a:b", "x\x00"])
SERVER_IDS = st.sampled_from(["0", "007", "1", "42", "99999999999999999999"])
SERVER_DATA = st.sampled_from(['{"i": 1}', "", " lead", "a:b", "ü→✓\u2028", "\x00"]) | st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=8
)
OTHER_PIECES = [
    b": ping\n",
    b":\n\n",
    b"\n",
    b"data: plain\n\n",
    b"id: 5\n\n",
    b"id\n\n",
    b"retry: 1500\n\n",
    b"event: put\ndata: a\ndata: b\n\n",
    b"event: put\nid: 1\ndata: \xff\n\n",  # the server's form, but not UTF-8
    b"event: put\r\nid: 2\r\ndata: crlf\r\n\r\n",  # the server's form once normalised
    b"\xef\xbb\xbf",  # a BOM: only stripped at the very start
    b"event: put\nid: 3\n",  # an event that the next piece ends or continues
    b"event: put\nid: 4x\ndata: id not digits\n\n",
    b"id: 6\nevent: put\ndata: reordered\n\n",
    b"event: put\nid: 7\ndata: x\nretry: 100\n\n",
    b"event:put\nid: 8\ndata: x\n\n",
    b"data: held\n",  # lines that the next event continues
    b"retry: 300\n",
    b"data: x",  # a partial line
]
server_mixtures = st.lists(
    st.builds(server_event, SERVER_NAMES, SERVER_IDS, SERVER_DATA) | st.sampled_from(OTHER_PIECES),
    max_size=30,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(
    body=server_mixtures,
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    limit=st.none() | st.integers(1, 120),
)
def test_fuzz_server_runs_match_the_line_by_line_path(
    body: bytes, cuts: list[int], limit: int | None
) -> None:
    """One byte at a time, no chunk ever holds a whole event, let alone a run: the
    result must be the same when runs are found, in any other chunking."""

    def run(chunks: list[bytes]) -> tuple[Outcome, bool]:
        comments: list[str] = []
        stream = EventStream(
            chunks,
            last_event_id="start",
            on_comment=comments.append,
            max_event_bytes=limit or sse.DEFAULT_MAX_EVENT_BYTES,
        )
        events: list[tuple[SSEEvent, str]] = []
        try:
            for event in stream:
                events.append((event, stream.last_event_id))
        except ProtocolError:
            raised = True
        else:
            raised = False
        got = Outcome(
            events, stream.last_event_id, stream.retry_ms, stream.saw_eof_mid_event, comments
        )
        return got, raised

    expected = run([body[i : i + 1] for i in range(len(body))])
    assert run([body]) == expected
    assert run(split(body, cuts)) == expected
    got, raised = expected
    assert all(last == event.id for event, last in got.events if event.id is not None)
    if limit is None:
        assert not raised
        assert got == reference(body, "start")


# -- iter_chunks against a real server ---------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    released = threading.Event()
    waited: list[bool] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        chunked = self.path.endswith("/chunked")
        self.protocol_version = "HTTP/1.1" if chunked else "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(data: bytes) -> None:
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
            self.wfile.flush()

        if self.path.startswith("/big"):
            payload = b"data: " + b"x" * (1024 * 1024) + b"\n\n"
            for i in range(0, len(payload), 256 * 1024):
                send(payload[i : i + 256 * 1024])
        else:  # /live: one event, then wait until the client has seen it
            send(b"data: first\n\n")
            self.waited.append(self.released.wait(5))
            send(b"data: second\n\n")
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    _Handler.released.clear()
    _Handler.waited.clear()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _Handler.released.set()
        httpd.shutdown()
        httpd.server_close()  # joins the request threads
        thread.join(5)
        assert not thread.is_alive()


@pytest.mark.parametrize("kind", ["chunked", "close-delimited"])
def test_iter_chunks_reads_large_chunks(server: str, kind: str) -> None:
    url = f"{server}/big/{kind}"
    with requests.get(url, stream=True, timeout=5) as response:
        sizes = [len(chunk) for chunk in iter_chunks(response)]
    assert sum(sizes) == 1024 * 1024 + 8
    assert max(sizes) <= 65536
    # Iterating the response directly would give 8193 chunks of 128 bytes.
    assert len(sizes) < 1000, sizes
    assert max(sizes) > 8192


@pytest.mark.parametrize("kind", ["chunked", "close-delimited"])
def test_iter_chunks_does_not_wait_for_a_full_chunk(server: str, kind: str) -> None:
    with requests.get(f"{server}/live/{kind}", stream=True, timeout=5) as response:
        stream = EventStream(iter_chunks(response))
        assert next(stream).data == "first"
        _Handler.released.set()
        assert [event.data for event in stream] == ["second"]
    assert _Handler.waited == [True]  # the server was not left waiting for a timeout
