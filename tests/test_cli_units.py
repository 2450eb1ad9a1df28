"""Pure parts of the CLI: time parsing, field paths, error messages, batching, rates."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
import requests
import responses

from rstream.cli.common import URL, ClientOptions, load_token
from rstream.cli.fields import MISSING, get_path, numeric_value, parse_path
from rstream.cli.output import (
    EXIT_AUTH,
    EXIT_CONNECTION,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    CLIError,
    Target,
    describe_error,
)
from rstream.cli.timeparse import (
    DURATION,
    TIME,
    CommandClock,
    command_now,
    parse_duration,
    parse_when,
)
from rstream.cli.transfer import read_batches
from rstream.cli.views import RateMeter, summarize_state
from rstream.errors import (
    AuthError,
    EntryFormatError,
    OutOfRange,
    ProtocolError,
    ServerError,
    StreamNotFound,
    TransportError,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


# -- times ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("NOW", NOW),
        ("-5m", NOW - timedelta(minutes=5)),
        ("-1h30m", NOW - timedelta(hours=1, minutes=30)),
        ("+10s", NOW + timedelta(seconds=10)),
        ("-2d", NOW - timedelta(days=2)),
        ("-1w", NOW - timedelta(weeks=1)),
        ("-500ms", NOW - timedelta(milliseconds=500)),
        ("-1.5h", NOW - timedelta(minutes=90)),
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.25Z", datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=UTC)),
        ("1714564800", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("1714564800.5", datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("  -5m ", NOW - timedelta(minutes=5)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "-5x", "-m", "2024-13-01T00:00:00Z", "5m"])
def test_parse_when_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339 .* relative to now \(-5m"):
        parse_when(text, NOW)


@pytest.mark.parametrize("text", ["1e20", "-1e20", "-99999999d", "+9999999w"])
def test_parse_when_rejects_times_past_the_datetime_range(text: str) -> None:
    # A usage error, not an OverflowError's traceback.
    with pytest.raises(ValueError, match="out of range"):
        parse_when(text, NOW)


@pytest.mark.parametrize(
    ("text", "spelled"),
    [
        ("2024-05-01T12:00:00", "2024-05-01T12:00:00"),
        ("2024-05-01 12:00", "2024-05-01T12:00:00"),
        ("2024-05-01T12:00:00.25", "2024-05-01T12:00:00.250000"),
        ("2024-05-01", "2024-05-01T00:00:00"),
    ],
)
def test_parse_when_says_when_the_zone_is_missing(text: str, spelled: str) -> None:
    with pytest.raises(ValueError, match="has no time zone") as info:
        parse_when(text, NOW)
    assert f"add Z for UTC ({spelled}Z) or an offset ({spelled}+02:00)" in str(info.value)


def test_command_now_is_read_once_per_invocation() -> None:
    reads: list[int] = []

    def clock() -> datetime:
        reads.append(1)
        return NOW + timedelta(seconds=len(reads))

    ctx = click.Context(click.Command("c"), obj=CommandClock(clock))
    child = click.Context(click.Command("d"), parent=ctx)
    assert command_now(ctx) == command_now(child) == NOW + timedelta(seconds=1)
    assert TIME.convert("-1s", None, child) == NOW
    assert len(reads) == 1
    # Another invocation reads the clock again.
    assert command_now(click.Context(click.Command("c"), obj=CommandClock(clock))) == (
        NOW + timedelta(seconds=2)
    )


def test_parse_when_reads_a_bare_negative_number_as_epoch_seconds() -> None:
    assert parse_when("-5", NOW) == datetime(1969, 12, 31, 23, 59, 55, tzinfo=UTC)


def test_parse_when_defaults_to_the_real_clock() -> None:
    before = datetime.now(UTC)
    got = parse_when("-1m")
    after = datetime.now(UTC)
    assert before - timedelta(minutes=1) <= got <= after - timedelta(minutes=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("1s", timedelta(seconds=1)),
        ("1m30s", timedelta(seconds=90)),
        ("2h", timedelta(hours=2)),
        ("0.25", timedelta(milliseconds=250)),
        ("3", timedelta(seconds=3)),
        ("1d1h1m1s1ms", timedelta(days=1, hours=1, minutes=1, seconds=1, milliseconds=1)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "abc", "5x", "-1s", "s", "1s-", "nan", "-3", "1e20", "99999999999w", "1e999999"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_param_types_report_usage_errors() -> None:
    with pytest.raises(click.BadParameter, match="not a time"):
        TIME.convert("soon", None, None)
    with pytest.raises(click.BadParameter, match="more than zero"):
        DURATION.convert("0s", None, None)
    assert DURATION.convert("2s", None, None) == timedelta(seconds=2)


def test_url_param_accepts_replicas_and_rejects_non_http() -> None:
    assert URL.convert("http://a:1/, https://b:2", None, None) == ("http://a:1", "https://b:2")
    with pytest.raises(click.BadParameter, match="not an http"):
        URL.convert("ftp://a", None, None)
    with pytest.raises(click.BadParameter, match="not an http"):
        URL.convert("localhost:8080", None, None)
    # The client's own check (rstream.client.options), as a usage error.
    with pytest.raises(click.BadParameter, match="query or fragment"):
        URL.convert("http://a:1/?x=1", None, None)
    with pytest.raises(click.BadParameter, match="needed"):
        URL.convert(" , ", None, None)


def test_retries_counts_the_repeats_of_the_sdk_policy() -> None:
    waits: list[float] = []
    opts = ClientOptions(token_file=None, timeout=5.0, retries=2, ca_bundle=None, verbose=False)
    error = {"error": {"code": "unavailable", "message": "busy"}}
    with responses.RequestsMock() as mocked:
        mocked.get("http://a.example/v1/streams", status=503, json=error)
        client = opts.client(("http://a.example",), sleep=waits.append, cache=None)
        with client, pytest.raises(ServerError, match="after 3 attempt"):
            client.streams()
        assert len(mocked.calls) == 3
    assert len(waits) == 2
    assert all(0 < wait <= 30 for wait in waits)


# -- tokens ---------------------------------------------------------------------


def test_token_from_environment_and_file(tmp_path: Path) -> None:
    assert load_token(None, {}) is None
    assert load_token(None, {"RSTREAM_TOKEN": " s3cret\n"}) == "s3cret"
    path = tmp_path / "token"
    path.write_text("from-file\n")
    token = load_token(path, {"RSTREAM_TOKEN": "ignored"})
    assert callable(token)
    assert token() == "from-file"
    path.write_text("rotated")  # re-read on every (re)connect
    assert token() == "rotated"


def test_token_file_missing_or_empty_is_an_auth_error(tmp_path: Path) -> None:
    with pytest.raises(CLIError, match="cannot read the token file") as info:
        load_token(tmp_path / "nope", {})
    assert info.value.exit_code == EXIT_AUTH
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(CLIError, match="is empty"):
        load_token(empty, {})


# -- error messages -------------------------------------------------------------

TARGET = Target("http://h:1", "robot-1", "2024-05-01T12:00:00Z")


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (
            StreamNotFound("x", stream_id="robot-1"),
            EXIT_NOT_FOUND,
            ["stream 'robot-1' not found on http://h:1", "rstream streams http://h:1"],
        ),
        (OutOfRange("too early"), EXIT_NOT_FOUND, ["no state at 2024-05-01T12:00:00Z"]),
        (AuthError("no", status=401), EXIT_AUTH, ["refused", "--token-file", "RSTREAM_TOKEN"]),
        (AuthError("no", status=403), EXIT_AUTH, ["write token"]),
        (TransportError("refused"), EXIT_CONNECTION, ["cannot reach http://h:1", "running"]),
        (requests.ConnectionError("boom"), EXIT_CONNECTION, ["cannot reach"]),
        (ServerError("bad", status=500), EXIT_ERROR, ["HTTP 500"]),
        (ProtocolError("junk"), EXIT_ERROR, ["malformed response"]),
        (EntryFormatError("bad line 3"), EXIT_ERROR, ["bad line 3", "one JSON entry per line"]),
        (CLIError("custom", 4), 4, ["custom"]),
    ],
)
def test_describe_error(exc: Exception, code: int, words: list[str]) -> None:
    described = describe_error(exc, TARGET)
    assert described is not None
    message, got = described
    assert got == code
    assert "\n" not in message
    for word in words:
        assert word in message


def test_describe_error_leaves_bugs_alone() -> None:
    assert describe_error(KeyError("x"), TARGET) is None


# -- field paths ----------------------------------------------------------------

STATE = {
    "battery": 0.5,
    "ok": True,
    "tasks": [{"p": 1}, {"p": 2}],
    "s": {"t": {"m": 40}},
    "n": None,
}


def test_get_path() -> None:
    assert get_path(STATE, parse_path("battery")) == 0.5
    assert get_path(STATE, parse_path("s.t.m")) == 40
    assert get_path(STATE, parse_path("tasks.1.p")) == 2
    assert get_path(STATE, parse_path("tasks.-1.p")) == 2
    assert get_path(STATE, parse_path("tasks.2.p")) is MISSING
    assert get_path(STATE, parse_path("tasks.x")) is MISSING
    assert get_path(STATE, parse_path("battery.x")) is MISSING
    assert get_path(STATE, parse_path("nope")) is MISSING


@pytest.mark.parametrize("path", ["", ".", "a..b", "a."])
def test_parse_path_rejects_empty_parts(path: str) -> None:
    with pytest.raises(ValueError, match="not a field path"):
        parse_path(path)


def test_numeric_value() -> None:
    assert numeric_value(3) == 3.0
    assert numeric_value(True) == 1.0
    assert numeric_value(float("inf")) is None
    assert numeric_value("3") is None
    assert numeric_value(None) is None


# -- import batches -------------------------------------------------------------


def _ndjson(count: int) -> bytes:
    lines = [json.dumps({"timestamp": "2024-05-01T12:00:00Z", "type": 0, "data": {}, "rev": 1})]
    lines += [
        json.dumps({"timestamp": f"2024-05-01T12:00:{i:02d}Z", "type": 1, "data": {"a": i}})
        for i in range(1, count)
    ]
    return ("\n".join(lines) + "\n\n").encode()


def test_read_batches_splits_by_count_and_drops_rev() -> None:
    data = _ndjson(5)
    batches = list(read_batches(io.BytesIO(data), max_entries=2))
    assert [count for _, count, _ in batches] == [2, 2, 1]
    assert batches[-1][2] == len(data)
    first = json.loads(batches[0][0].splitlines()[0])
    assert "rev" not in first
    assert first["type"] == 0
    bodies = b"".join(body for body, _, _ in batches).splitlines()
    assert len(bodies) == 5


def test_read_batches_splits_by_size() -> None:
    batches = list(read_batches(io.BytesIO(_ndjson(10)), max_entries=100, max_bytes=200))
    assert sum(count for _, count, _ in batches) == 10
    assert all(len(body) <= 200 for body, _, _ in batches)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"{not json\n", ["line 2", "not JSON"]),
        (b'{"timestamp": "x", "type": 0, "data": {}}\n', ["line 2", "timestamp"]),
        (b'{"timestamp": "2024-05-01T12:00:00Z", "data": {}}\n', ["line 2", "type"]),
    ],
)
def test_read_batches_names_the_bad_line(line: bytes, words: list[str]) -> None:
    good = b'{"timestamp": "2024-05-01T11:00:00Z", "type": 0, "data": {}}\n'
    with pytest.raises(EntryFormatError) as info:
        list(read_batches(io.BytesIO(good + line), name="f.ndjson"))
    for word in ["f.ndjson", *words]:
        assert word in str(info.value)


# -- views ----------------------------------------------------------------------


def test_rate_meter() -> None:
    now = [0.0]
    meter = RateMeter(window=2.0, clock=lambda: now[0])
    assert meter.rate() == 0.0
    for step in range(10):
        now[0] = step * 0.5
        meter.observe(step * 10)  # 20 per second
    assert meter.rate() == pytest.approx(20.0)
    meter.observe(None)
    now[0] = 5.0
    meter.observe(3)  # a reset: start over
    assert meter.rate() == 0.0


def test_summarize_state() -> None:
    text = summarize_state(
        {
            "mode": "working",
            "battery": 0.5,
            "position": {"x": 1.0, "y": 2.0},
            "tasks": [{}, {}],
            "sensors": {"temperature": {"motor": 40.1}},
        }
    )
    assert text == "mode=working battery=0.500 pos=(1.0, 2.0) tasks=2 motor=40.1C"


def test_out_of_range_without_a_time_means_an_empty_stream() -> None:
    described = describe_error(OutOfRange("x"), Target("http://h:1", "s"))
    assert described == ("stream 's' on http://h:1 has no state yet: nothing was written to it", 3)
