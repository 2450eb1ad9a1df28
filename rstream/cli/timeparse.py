"""Times and durations as people type them on a command line.

A time is RFC 3339 (``2024-05-01T12:00:00Z``), epoch seconds (``1714564800.25``),
``now``, or relative to now: ``-5m``, ``-1h30m``, ``-2d``, ``+10s``. A duration
(``--step``) is ``500ms``, ``1s``, ``1m30s`` or plain seconds (``0.25``).

Pure functions: ``now`` is passed in, so tests never depend on the clock. A
command reads "now" once (:func:`command_now`), so ``--start -40m --end -37m``
is three minutes exactly; tests inject the clock with ``obj=CommandClock(...)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import click

from rstream.core.timestamps import from_micros, parse_time
from rstream.errors import InvalidTimestamp

__all__ = [
    "DURATION",
    "TIME",
    "CommandClock",
    "DurationParam",
    "TimeParam",
    "command_now",
    "parse_duration",
    "parse_when",
]

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
# One or more "<number><unit>" parts; "ms" before "m" so "500ms" is not "500m" + "s".
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d|w)")
_DURATION = re.compile(rf"(?:{_PART.pattern})+")


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``, ``500ms``, ``2.5s`` or plain seconds (``0.25``) to a timedelta.

    Raises :class:`ValueError` (with the accepted forms) on anything else.
    """
    try:
        return _parse_duration(text)
    except ArithmeticError:  # OverflowError, decimal.Overflow: past timedelta's range
        raise ValueError(f"duration {text!r} is out of range") from None


def _parse_duration(text: str) -> timedelta:
    spec = text.strip().lower()
    try:
        seconds = Decimal(spec)
    except InvalidOperation:
        pass
    else:
        if not seconds.is_finite() or seconds < 0:
            raise ValueError(f"duration {text!r} must be a finite, non-negative number of seconds")
        return timedelta(microseconds=int(seconds * 1_000_000))
    if not _DURATION.fullmatch(spec):
        raise ValueError(
            f"{text!r} is not a duration: use e.g. 500ms, 10s, 5m, 1h30m, 2d or seconds (0.25)"
        )
    total = timedelta()
    for number, unit in _PART.findall(spec):
        total += _UNITS[unit] * float(Decimal(number))
    return total


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """Parse a time: RFC 3339, epoch seconds, ``now``, or ``-5m``/``+1h30m`` relative to ``now``.

    Returns an aware UTC datetime. Raises :class:`ValueError` naming the
    accepted forms when ``text`` is none of them.
    """
    try:
        return _parse_when(text, now)
    except OverflowError:  # a valid form, past the years a datetime holds
        raise ValueError(f"time {text!r} is out of range") from None


def _parse_when(text: str, now: datetime | None) -> datetime:
    if now is None:
        now = datetime.now(UTC)
    spec = text.strip()
    if spec.lower() == "now":
        return now
    if spec[:1] in ("-", "+") and _DURATION.fullmatch(spec[1:].lower()):
        offset = parse_duration(spec[1:])
        return now - offset if spec[0] == "-" else now + offset
    try:
        return from_micros(parse_time(spec))
    except InvalidTimestamp:
        _reject_a_missing_zone(text)
        raise ValueError(
            f"{text!r} is not a time: use RFC 3339 (2024-05-01T12:00:00Z), epoch seconds "
            "(1714564800.5), 'now', or relative to now (-5m, -1h30m, -2d)"
        ) from None


def _reject_a_missing_zone(text: str) -> None:
    """Raise a :class:`ValueError` saying how to add the zone when ``text`` is a
    date-time without one (a time people mean in their own zone, which the
    command must not guess); return otherwise."""
    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError:
        return
    if naive.tzinfo is not None:
        return
    spelled = naive.isoformat()
    raise ValueError(
        f"{text.strip()!r} has no time zone: add Z for UTC ({spelled}Z) "
        f"or an offset ({spelled}+02:00)"
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CommandClock:
    """Where a command reads "now": pass ``obj=CommandClock(read)`` to the
    ``rstream`` group (``CliRunner.invoke(main, args, obj=...)``) to fix it."""

    read: Callable[[], datetime] = _utc_now


_NOW = "rstream.now"  # ctx.meta key: shared by every context of one invocation


def command_now(ctx: click.Context | None) -> datetime:
    """The running command's "now": read from its :class:`CommandClock` (the real
    UTC clock by default) on the first call, the same value on every later one.

    Without a context (a parameter type used on its own) the real clock is read.
    """
    if ctx is None:
        return _utc_now()
    now: datetime | None = ctx.meta.get(_NOW)
    if now is None:
        clock = ctx.find_object(CommandClock) or CommandClock()
        now = ctx.meta[_NOW] = clock.read()
    return now


class TimeParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A click parameter type for :func:`parse_when`, relative to :func:`command_now`."""

    name = "TIME"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_when(str(value), command_now(ctx))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class DurationParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A click parameter type for :func:`parse_duration`; rejects zero."""

    name = "DURATION"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            duration = parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if duration <= timedelta():
            self.fail(f"duration {value!r} must be more than zero", param, ctx)
        return duration


TIME = TimeParam()
DURATION = DurationParam()
