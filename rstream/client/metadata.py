"""What the server answers about a stream: its metadata, window bounds, and writes.

Each reader takes the JSON the server sent and returns a value, or raises
:class:`~rstream.ProtocolError` saying what is malformed. No I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import EllipsisType
from typing import Any

from rstream.client.window import Bounds
from rstream.core.entry import Entry
from rstream.core.stream import RateConfig
from rstream.core.timestamps import from_micros, parse_rfc3339
from rstream.core.wire import decode_entry
from rstream.errors import ConfigError, EntryFormatError, InvalidTimestamp, ProtocolError

__all__ = ["StreamMetadata", "rate_given", "read_bounds", "read_write_answer"]


@dataclass(frozen=True, slots=True)
class StreamMetadata:
    """What the server says about a stream (``GET /v1/streams[/{id}]``).

    The record rate (:attr:`keyframe_frequency`, :attr:`change_frequency`, or
    in milliseconds as the server sends it) and ``latest_snapshot`` are only
    known from :meth:`RemoteStream.info` and :meth:`RemoteStream.configure`,
    not from :meth:`Client.streams`.
    """

    id: str
    first: datetime | None
    last: datetime | None
    revision: int
    keyframe_frequency_ms: int | float | None = None
    change_frequency_ms: int | float | None = None
    latest_snapshot: datetime | None = None
    retention_ms: int | float | None = None

    @property
    def retention(self) -> timedelta | None:
        """How long the server keeps entries (whole windows); None: for ever, or
        the server's default retention (or not known, from :meth:`Client.streams`)."""
        return _opt_delta(self.retention_ms)

    @property
    def keyframe_frequency(self) -> timedelta | None:
        """A write this long after the newest snapshot is stored as a new snapshot."""
        return _opt_delta(self.keyframe_frequency_ms)

    @property
    def change_frequency(self) -> timedelta | None:
        """A write sooner than this after the newest mutation amends it (0: never)."""
        return _opt_delta(self.change_frequency_ms)

    def rate_with(self, rate: dict[str, timedelta]) -> dict[str, timedelta]:
        """``rate``, completed with this stream's current rates for what it lacks."""
        kept = {
            "keyframe_frequency": self.keyframe_frequency,
            "change_frequency": self.change_frequency,
        }
        return {**{k: v for k, v in kept.items() if v is not None}, **rate}

    @classmethod
    def from_json(cls, obj: object) -> StreamMetadata:
        """Read the server's JSON; :class:`~rstream.ProtocolError` if it is malformed."""
        try:
            if not isinstance(obj, dict):
                raise TypeError("not an object")
            stream_id = obj["id"]
            revision = obj["revision"]
            if not isinstance(stream_id, str) or type(revision) is not int:
                raise TypeError("bad id or revision")
            rate = obj.get("record_rate") or {}
            if not isinstance(rate, dict):
                raise TypeError("bad record_rate")
            return cls(
                id=stream_id,
                first=_opt_time(obj.get("first")),
                last=_opt_time(obj.get("last")),
                revision=revision,
                keyframe_frequency_ms=_opt_ms(rate.get("keyframe_frequency")),
                change_frequency_ms=_opt_ms(rate.get("change_frequency")),
                latest_snapshot=_opt_time(obj.get("latest_snapshot")),
                retention_ms=_opt_ms(obj.get("retention")),
            )
        except (KeyError, TypeError, InvalidTimestamp) as exc:
            raise ProtocolError(f"malformed stream metadata {obj!r:.200}: {exc}") from None


def _opt_time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"a time must be a string, not {value!r}")
    return from_micros(parse_rfc3339(value))


def _opt_ms(value: object) -> int | float | None:
    """Milliseconds: an integer, or a float for a duration of a fraction of one."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise TypeError(f"expected a non-negative number of milliseconds, not {value!r}")
    return value


def _opt_delta(ms: float | None) -> timedelta | None:
    return None if ms is None else timedelta(milliseconds=ms)


def rate_given(
    keyframe_frequency: timedelta | None,
    change_frequency: timedelta | None,
    retention: timedelta | EllipsisType | None = ...,
) -> tuple[dict[str, timedelta], dict[str, Any]]:
    """What :meth:`RemoteStream.configure` was given, checked: the rates given,
    and the body's ``retention`` field (``{}`` when retention was not given).

    Raises ``TypeError`` for a value that is not a ``timedelta``, and
    :class:`~rstream.ConfigError` for a negative one or for none given.
    """
    given = {"keyframe_frequency": keyframe_frequency, "change_frequency": change_frequency}
    for name, value in {**given, "retention": retention}.items():
        if value not in (None, ...) and not isinstance(value, timedelta):
            raise TypeError(f"{name} must be a timedelta, not {type(value).__name__}")
    rate = {name: value for name, value in given.items() if value is not None}
    if not rate and retention is ...:
        raise ConfigError("give keyframe_frequency, change_frequency or retention (timedeltas)")
    # ConfigError for a negative value
    checked = RateConfig(**rate, retention=None if retention is ... else retention)
    return rate, ({} if retention is ... else {"retention": checked.retention_json()})


def read_bounds(obj: Any) -> Bounds:
    """The window bounds of a ``GET /v1/streams/{id}/window`` answer."""
    try:
        start = parse_rfc3339(obj["start"])
        end = None if obj["end"] is None else parse_rfc3339(obj["end"])
        revision = obj["revision"]
        if type(revision) is not int:
            raise TypeError("revision is not an integer")
    except (KeyError, TypeError, InvalidTimestamp) as exc:
        raise ProtocolError(f"malformed window bounds {obj!r:.200}: {exc}") from None
    return Bounds(start, end, revision)


_ACTIONS = frozenset({"snapshot", "mutation", "amend", "none"})


def read_write_answer(answer: Any) -> Entry | None:
    """The entry a ``POST /v1/streams/{id}/state`` wrote, or None (action "none")."""
    if not isinstance(answer, dict) or answer.get("action") not in _ACTIONS:
        raise ProtocolError(f"malformed answer to a write: {answer!r:.200}")
    if answer["action"] == "none":
        return None
    try:
        return decode_entry(answer.get("entry"), where="write answer")
    except EntryFormatError as exc:
        raise ProtocolError(str(exc)) from None
