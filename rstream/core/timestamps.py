"""Exact timestamps.

Inside rstream a timestamp is an ``int`` of microseconds since the Unix epoch
(UTC): exact to compare, cheap to store and index. At the public API a time is a
timezone-aware :class:`~datetime.datetime` or epoch seconds (``int``/``float``);
on the wire and in files it is RFC 3339 in UTC.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TypeAlias

from rstream.errors import InvalidTimestamp

__all__ = [
    "EPOCH",
    "TimeLike",
    "format_rfc3339",
    "from_micros",
    "parse_rfc3339",
    "parse_time",
    "to_micros",
]

TimeLike: TypeAlias = "datetime | int | float"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

# RFC 3339 date-time: fraction of up to 9 digits, "Z" or a numeric offset.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z",
    re.ASCII,
)


def to_micros(value: TimeLike) -> int:
    """Convert a public-API time to exact epoch microseconds.

    Floats are read through their shortest decimal form, so ``1.000001`` is
    exactly one second and one microsecond. Precision below a microsecond is
    truncated toward the past.
    """
    kind = type(value)
    if kind is int:
        return value * 1_000_000  # type: ignore[operator, return-value]
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidTimestamp(
                f"naive datetime {value.isoformat()!r} has no time zone; "
                "pass an aware one, e.g. datetime.now(timezone.utc) or "
                "value.replace(tzinfo=timezone.utc)"
            )
        return (value - EPOCH) // _ONE_US
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidTimestamp(f"timestamp {value!r} is not a finite number of seconds")
        return int((Decimal(repr(value)) * 1_000_000).to_integral_value(rounding="ROUND_FLOOR"))
    if isinstance(value, bool):
        raise InvalidTimestamp(f"a bool ({value!r}) is not a timestamp")
    if isinstance(value, int):
        return int(value) * 1_000_000
    raise InvalidTimestamp(
        f"timestamp must be an aware datetime or epoch seconds, not {kind.__name__}"
    )


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime of epoch microseconds."""
    return EPOCH + timedelta(microseconds=micros)


def format_rfc3339(micros: int) -> str:
    """RFC 3339 in UTC with trailing zeros of the fraction trimmed (as Go's RFC3339Nano)."""
    seconds, frac = divmod(micros, 1_000_000)
    text = _second_text(seconds)
    if frac:
        return f"{text}.{frac:06d}".rstrip("0") + "Z"
    return text + "Z"


@functools.lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    # Neighbouring entries share their second, and building the date-time text
    # costs more than the rest of an encoded entry together.
    d = EPOCH + timedelta(seconds=seconds)
    # Not strftime: "%Y" drops the leading zeros of years before 1000.
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"


_MINUTE_CACHE: dict[str, int] = {}
_MINUTE_CACHE_MAX = 4096
# "00".."59" (ASCII digits only): the seconds of a cached minute, in microseconds.
_SECOND_MICROS = {f"{s:02d}": s * 1_000_000 for s in range(60)}
# A fraction of n digits (n <= 6) is int(digits) * _FRACTION_SCALE[n] microseconds.
_FRACTION_SCALE = (0, 100_000, 10_000, 1_000, 100, 10, 1)


def parse_rfc3339(text: str) -> int:
    """Parse RFC 3339 (any offset, up to 9 fractional digits) to epoch microseconds."""
    # A cache of "YYYY-MM-DDTHH:MM:" (UTC): reading entries without it costs 20-40% more CPU.
    if type(text) is str and text[-1:] == "Z":
        base = _MINUTE_CACHE.get(text[:17])
        if base is not None:
            second = _SECOND_MICROS.get(text[17:19])
            if second is not None:
                digits = text[20:-1]
                size = len(digits)
                if size == 0 and len(text) == 20:  # no fraction
                    return base + second
                if text[19] == "." and 0 < size <= 9 and digits.isascii() and digits.isdigit():
                    if size <= 6:
                        return base + second + int(digits) * _FRACTION_SCALE[size]
                    return base + second + int(digits[:6])
    return _parse_rfc3339_slow(text)


def _parse_rfc3339_slow(text: str) -> int:
    if not isinstance(text, str):
        raise InvalidTimestamp(f"RFC 3339 timestamp must be a string, not {type(text).__name__}")
    match = _RFC3339.match(text)
    if match is None:
        raise InvalidTimestamp(
            f"{text[:64]!r} is not an RFC 3339 timestamp (expected e.g. 2024-05-01T12:00:00.5Z)"
        )
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = match.groups()
    try:
        base = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise InvalidTimestamp(f"{text[:64]!r} is not a valid date-time: {exc}") from None
    micros = (base - EPOCH) // _ONE_US
    if zulu and int(second) < 60:
        if len(_MINUTE_CACHE) >= _MINUTE_CACHE_MAX:
            _MINUTE_CACHE.clear()  # a dict (not lru_cache): the hit path is one get
        _MINUTE_CACHE[text[:17]] = micros - int(second) * 1_000_000
    if int(second) == 60:  # a leap second sorts as the last microsecond of its minute
        micros += 999_999
    elif frac:
        micros += int(frac[:6].ljust(6, "0"))
    if not zulu:
        offset = int(off_h) * 3600 + int(off_m) * 60
        if int(off_h) > 23 or int(off_m) > 59:
            raise InvalidTimestamp(f"{text[:64]!r} has an invalid UTC offset")
        micros -= offset * 1_000_000 if sign == "+" else -offset * 1_000_000
    return micros


_MAX_EPOCH_SECONDS = Decimal(10**15)  # about 30 million years, past year 9999 either way


_NUMBER_START = frozenset("0123456789+-.")


def parse_time(text: str) -> int:
    """Parse a time given as text: RFC 3339 or epoch seconds (``"1714564800.25"``)."""
    text = text.strip()
    # ASCII only: Decimal would also read other scripts' digits ("١٧١٤").
    if text.isascii() and text[:1] in _NUMBER_START and "T" not in text.upper():
        try:
            number = Decimal(text)
        except InvalidOperation:
            pass
        else:
            if not number.is_finite():
                raise InvalidTimestamp(f"{text!r} is not a finite number of seconds")
            # Clamped far beyond any datetime: "1e999990" would otherwise cost a
            # million-digit int (seconds of CPU) and "1e999999" a decimal.Overflow.
            number = max(-_MAX_EPOCH_SECONDS, min(number, _MAX_EPOCH_SECONDS))
            return int((number * 1_000_000).to_integral_value(rounding="ROUND_FLOOR"))
    return parse_rfc3339(text)
