from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import rstream
from rstream.core import timestamps
from rstream.core.timestamps import (
    EPOCH,
    format_rfc3339,
    from_micros,
    parse_rfc3339,
    parse_time,
    to_micros,
)


def test_epoch_seconds_int_and_float_are_exact() -> None:
    assert to_micros(1) == 1_000_000
    assert to_micros(1.000001) == 1_000_001
    assert to_micros(1714564800.123456) == 1714564800_123456
    assert to_micros(-0.5) == -500_000


def test_aware_datetimes_of_any_zone_compare_exactly() -> None:
    utc = datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=UTC)
    plus2 = datetime(2024, 5, 1, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    assert to_micros(utc) == to_micros(plus2)
    assert from_micros(to_micros(utc)) == utc


class NoOffset(tzinfo):
    """A time zone that does not know its offset: the datetime is naive after all."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


class Seconds(int):
    """An int subclass, as a library may hand out."""


def test_naive_datetime_is_refused_with_the_fix() -> None:
    for naive in (datetime(2024, 5, 1), datetime(2024, 5, 1, tzinfo=NoOffset())):
        with pytest.raises(rstream.InvalidTimestamp) as info:
            to_micros(naive)
        assert str(info.value) == (
            "naive datetime '2024-05-01T00:00:00' has no time zone; pass an aware one, "
            "e.g. datetime.now(timezone.utc) or value.replace(tzinfo=timezone.utc)"
        )
        assert isinstance(info.value, ValueError)


def test_epoch_seconds_of_every_number_type() -> None:
    assert to_micros(Seconds(2)) == 2_000_000
    assert type(to_micros(Seconds(2))) is int
    assert to_micros(1.5e-06) == 1  # below a microsecond: floored
    assert to_micros(-5e-07) == -1
    for bad, message in [
        (float("nan"), "timestamp nan is not a finite number of seconds"),
        (float("-inf"), "timestamp -inf is not a finite number of seconds"),
        (True, "a bool (True) is not a timestamp"),
        ("1", "timestamp must be an aware datetime or epoch seconds, not str"),
    ]:
        with pytest.raises(rstream.InvalidTimestamp) as info:
            to_micros(bad)  # type: ignore[arg-type]
        assert str(info.value) == message


@pytest.mark.parametrize("bad", [True, "2024-01-01", None, float("nan"), float("inf")])
def test_other_types_are_refused(bad: object) -> None:
    with pytest.raises(rstream.InvalidTimestamp):
        to_micros(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.000001Z", 1),
        ("1970-01-01T00:00:00.123456789Z", 123456),
        ("1970-01-01T00:00:00.5z", 500_000),
        ("1970-01-01T02:00:00+02:00", 0),
        ("1969-12-31T19:00:00-05:00", 0),
        ("1970-01-01t00:00:01Z", 1_000_000),
    ],
)
def test_parse_rfc3339(text: str, micros: int) -> None:
    assert parse_rfc3339(text) == micros


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-01-01",
        "2024-01-01T00:00:00",
        "2024-13-01T00:00:00Z",
        "2024-01-01T00:00:00.1234567890Z",
        "2024-02-30T00:00:00Z",
        "2024-01-01T00:00:00+24:00",
    ],
)
def test_parse_rfc3339_refuses_malformed(text: str) -> None:
    with pytest.raises(rstream.InvalidTimestamp):
        parse_rfc3339(text)


def test_format_round_trips_and_trims_zeros() -> None:
    assert format_rfc3339(0) == "1970-01-01T00:00:00Z"
    assert format_rfc3339(1_500_000) == "1970-01-01T00:00:01.5Z"
    year_one = to_micros(datetime(1, 1, 1, tzinfo=UTC))
    assert format_rfc3339(year_one) == "0001-01-01T00:00:00Z"
    for micros in (0, 1, 999_999, 1714564800_123456, -1, year_one, year_one + 10**6 + 5):
        assert parse_rfc3339(format_rfc3339(micros)) == micros


def test_parse_time_accepts_epoch_seconds_and_rfc3339() -> None:
    assert parse_time("1.25") == 1_250_000
    assert parse_time("1970-01-01T00:00:02Z") == 2_000_000


@pytest.mark.parametrize("text", ["1e999990", "9" * 5000, "1e999999", "1e999999999"])
def test_parse_time_bounds_huge_numbers(text: str) -> None:
    # Past year 9999 either way, with the sign kept, in few digits: unbounded,
    # "1e999990" cost a million-digit int (seconds of CPU on the server's event
    # loop) and "1e999999" raised decimal.Overflow (a 500).
    limit = to_micros(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert limit < parse_time(text) < 10**30
    assert -(10**30) < parse_time("-" + text) < -limit


def test_cached_prefix_path_agrees_with_the_full_parser() -> None:
    # The second parse of a prefix goes through the cache; both must agree,
    # and the cache must not make malformed fractions acceptable.
    for text in ("2024-05-01T12:00:07Z", "2024-05-01T12:00:07.5Z", "2024-05-01T12:00:07.000001Z"):
        first = parse_rfc3339(text)
        assert parse_rfc3339(text) == first
    assert (
        parse_rfc3339("2024-05-01T12:00:07.123456789Z") - parse_rfc3339("2024-05-01T12:00:07Z")
        == 123456
    )
    for bad in (
        "2024-05-01T12:00:07.Z",
        "2024-05-01T12:00:07.1234567890Z",
        "2024-05-01T12:00:07.12a4Z",
        "2024-05-01T12:00:07.\u0661Z",
        "2024-05-01T12:00:07xZ",
    ):
        with pytest.raises(rstream.InvalidTimestamp):
            parse_rfc3339(bad)


_MINUTE = "2024-05-01T12:07:"


@settings(max_examples=400)
@given(
    st.one_of(
        # well-formed: seconds, an optional fraction of 1 to 10 digits, "Z"
        st.builds(
            lambda s, f: f"{s:02d}{f}Z",
            st.integers(0, 60),
            st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,10}", fullmatch=True)),
        ),
        st.text(alphabet="0123456789.:Zz+-x\u0661 ", max_size=14),
    )
)
@example("59.123456789Z")
@example("60Z")
@example("60.5Z")
@example("7Z")
@example("075Z")
@example("07.Z")
@example("07x5Z")
@example("\u0661\u0661Z")
def test_cached_minute_path_agrees_with_the_full_parser(suffix: str) -> None:
    # Once a minute is cached, any text after "YYYY-MM-DDTHH:MM:" takes the
    # cached path first: it must give what the regex parser gives, or refuse
    # exactly what the regex parser refuses.
    parse_rfc3339(_MINUTE + "00Z")  # the minute is now cached
    text = _MINUTE + suffix
    try:
        expected: int | None = timestamps._parse_rfc3339_slow(text)
    except rstream.InvalidTimestamp:
        expected = None
    if expected is None:
        with pytest.raises(rstream.InvalidTimestamp):
            parse_rfc3339(text)
    else:
        assert parse_rfc3339(text) == expected


# The datetime range in epoch microseconds: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z.
_MIN_US = (datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
_MAX_US = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


@settings(max_examples=500)
@given(st.one_of(st.integers(_MIN_US, _MAX_US), st.integers(-(10**7), 10**7)))
@example(0)
@example(-1)
@example(-1_000_000)
@example(-1_000_001)
@example(999_999)
@example(_MIN_US)
@example(_MAX_US)
def test_from_micros_is_the_exact_utc_datetime(micros: int) -> None:
    # Twice: the first call may fill the per-second cache, the second reads it.
    for _ in range(2):
        value = from_micros(micros)
        assert value == EPOCH + timedelta(microseconds=micros)
        assert value.tzinfo is UTC
        assert to_micros(value) == micros


def test_from_micros_keeps_the_microsecond_within_a_cached_second() -> None:
    base = 1714564800 * 1_000_000
    assert [from_micros(base + us).microsecond for us in (0, 1, 500_000, 999_999)] == [
        0,
        1,
        500_000,
        999_999,
    ]
    # Before the epoch, the second is the one below: -0.25 s is 23:59:59.75 on 1969-12-31.
    assert from_micros(-250_000) == datetime(1969, 12, 31, 23, 59, 59, 750_000, tzinfo=UTC)


def test_from_micros_stays_exact_past_the_cache_size() -> None:
    seconds = range(-3000, 3000)  # more distinct seconds than the cache holds
    for _ in range(2):
        for s in seconds:
            assert from_micros(s * 1_000_000 + 7) == EPOCH + timedelta(seconds=s, microseconds=7)


@pytest.mark.parametrize("micros", [_MIN_US - 1, _MAX_US + 1])
def test_from_micros_out_of_range_is_an_overflow(micros: int) -> None:
    with pytest.raises(OverflowError):
        from_micros(micros)


def test_parse_time_reads_only_ascii_digits() -> None:
    for text in ("\u0661\u0667\u0661\u0664", "1\u0667", "-\u0661"):
        with pytest.raises(rstream.InvalidTimestamp):
            parse_time(text)
    assert parse_time(" 12 ") == 12_000_000


@st.composite
def rfc3339_parts(draw: st.DrawFn) -> tuple[str, int]:
    """A well-formed RFC 3339 text and its epoch microseconds, computed by datetime."""
    day = draw(st.dates(min_value=datetime(2, 1, 1).date(), max_value=datetime(9998, 1, 1).date()))
    hour, minute, second = (
        draw(st.integers(0, 23)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 60)),
    )
    fraction = draw(st.one_of(st.just(""), st.from_regex(r"[0-9]{1,9}", fullmatch=True)))
    offset = draw(st.one_of(st.none(), st.integers(-(23 * 60 + 59), 23 * 60 + 59)))
    if offset is None:
        zone, tz = draw(st.sampled_from("Zz")), UTC
    else:
        zone = f"{'-' if offset < 0 else '+'}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
        tz = timezone(timedelta(minutes=offset))
    text = f"{day.isoformat()}T{hour:02d}:{minute:02d}:{second:02d}"
    text += f".{fraction}" if fraction else ""
    micros_of_fraction = int(fraction[:6].ljust(6, "0")) if fraction else 0
    if second == 60:  # a leap second reads as the last microsecond of its minute
        second, micros_of_fraction = 59, 999_999
    when = datetime(day.year, day.month, day.day, hour, minute, second, micros_of_fraction, tz)
    return text + zone, (when - EPOCH) // timedelta(microseconds=1)


@settings(max_examples=300)
@given(rfc3339_parts())
@example(("2024-05-01T12:34:56.5+05:30", to_micros(datetime(2024, 5, 1, 7, 4, 56, 500_000, UTC))))
@example(("2024-05-01T12:34:56-09:45", to_micros(datetime(2024, 5, 1, 22, 19, 56, tzinfo=UTC))))
@example(("2016-12-31T23:59:60Z", to_micros(datetime(2016, 12, 31, 23, 59, 59, 999_999, UTC))))
@example(("2024-05-01T23:59:00+23:59", to_micros(datetime(2024, 5, 1, 0, 0, tzinfo=UTC))))
def test_parse_rfc3339_gives_what_datetime_computes(case: tuple[str, int]) -> None:
    text, micros = case
    for _ in range(2):  # the second parse may take the cached path
        parsed = parse_rfc3339(text)
        assert type(parsed) is int
        assert parsed == micros


def test_a_leap_second_leaves_the_rest_of_its_minute_exact() -> None:
    assert parse_rfc3339("2016-12-31T23:58:60Z") == parse_rfc3339("2016-12-31T23:58:59.999999Z")
    assert parse_rfc3339("2016-12-31T23:58:30Z") == to_micros(
        datetime(2016, 12, 31, 23, 58, 30, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (5, "RFC 3339 timestamp must be a string, not int"),
        (
            "2024-02-30T00:00:00Z",
            "'2024-02-30T00:00:00Z' is not a valid date-time: day is out of range for month",
        ),
        ("2024-01-01T00:00:00+00:60", "'2024-01-01T00:00:00+00:60' has an invalid UTC offset"),
        ("2024-01-01T00:00:00+24:00", "'2024-01-01T00:00:00+24:00' has an invalid UTC offset"),
        (
            "x" * 100,
            f"{'x' * 64!r} is not an RFC 3339 timestamp (expected e.g. 2024-05-01T12:00:00.5Z)",
        ),
    ],
)
def test_malformed_timestamps_say_what_is_wrong(text: object, message: str) -> None:
    with pytest.raises(rstream.InvalidTimestamp) as info:
        parse_rfc3339(text)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_parse_time_floors_below_a_microsecond_and_refuses_infinities() -> None:
    assert parse_time("0.0000015") == 1
    assert parse_time("-0.0000005") == -1
    with pytest.raises(
        rstream.InvalidTimestamp, match=r"^'\+inf' is not a finite number of seconds$"
    ):
        parse_time("+inf")
