"""Reading requests: JSON bodies and query values, held to exactly what the
protocol (``docs/protocol.rst``) and its OpenAPI document allow.

Every function here either returns values a writer or a storage can take as
they are, or raises an :class:`~rstream.RStreamError` that
:mod:`rstream.server.errors` turns into a 4xx: nothing a client sends gets
further than this module unchecked. The patterns and bounds the OpenAPI
document publishes (:mod:`rstream.server.openapi`) are the constants below, so
the schema and the server cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, NoReturn

from rstream.core.entry import Entry, EntryKind
from rstream.core.jsontype import MAX_DEPTH, check_json
from rstream.core.mutation import MAX_MUTATION_DEPTH
from rstream.core.stream import RateConfig
from rstream.core.timestamps import parse_rfc3339, parse_time, to_micros
from rstream.errors import ConfigError, EntryFormatError, InvalidJSON, InvalidTimestamp
from rstream.server.errors import fail
from rstream.server.storage.base import MAX_US, MIN_US, check_entry_time, dump_json

__all__ = [
    "MAX_EPOCH_SECONDS",
    "MAX_MUTATION_DEPTH",
    "MAX_REVISION",
    "MIN_EPOCH_SECONDS",
    "NUMBER_PATTERN",
    "TIME_PATTERN",
    "Batch",
    "RateUpdate",
    "heartbeat_param",
    "limit_param",
    "parse_entries",
    "parse_json",
    "parse_rate_body",
    "parse_state_write",
    "resume_point",
    "state_size",
    "time_param",
]

# RFC 3339 date-time as the server reads it (the OpenAPI ``date-time`` format,
# narrowed to the storable years 0001-9999 and at most 9 fractional digits).
TIME_PATTERN = (
    r"^(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-[0-9]{2}-[0-9]{2}[Tt]"
    r"[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
# A decimal number as query values carry it (epoch seconds, heartbeat seconds).
# The exponent has at most six significant digits: a longer one is no time at all,
# and past decimal's own limit it is not even a number.
NUMBER_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?0*[0-9]{1,6})?$"
_TIME_RE = re.compile(TIME_PATTERN, re.ASCII)
_NUMBER_RE = re.compile(NUMBER_PATTERN, re.ASCII)
_DIGITS_RE = re.compile(r"^[0-9]+$", re.ASCII)

#: Epoch seconds a body timestamp may take (years 0001 to 9999).
MIN_EPOCH_SECONDS = MIN_US // 1_000_000
MAX_EPOCH_SECONDS = MAX_US // 1_000_000
#: The largest ``since`` revision a client may ask for.
MAX_REVISION = 10**18 - 1
MIN_HEARTBEAT, MAX_HEARTBEAT = 0.05, 300.0

# Compact JSON re-encoding grows a body by at most 4.5 times (the 4-character
# float "9e15" is re-encoded as "9000000000000000.0"; strings and ints never
# grow): a body this many times under the state limit needs no measuring.
_MAX_GROWTH = 5
_JSON_SPACE = b" \t\r\n"
_STATE_FIELDS = frozenset({"state", "timestamp"})
_RATE_FIELDS = frozenset({"keyframe_frequency", "change_frequency"})
_ENTRY_FIELDS = frozenset({"timestamp", "type", "data", "rev"})


# -- JSON bodies --------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"the key {key[:60]!r} appears twice in one object")
            seen.add(key)
    return obj


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# One decoder for every body: json.loads would build one per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_unique_keys)


def is_empty(body: bytes) -> bool:
    """True for a body with nothing but JSON whitespace (space, tab, CR, LF)."""
    return not body.strip(_JSON_SPACE)


def parse_json(body: bytes, what: str) -> Any:
    """The JSON value of ``body``; 400 ``invalid_json`` for an empty body, text
    that is not JSON in UTF-8 (NaN, Infinity, other encodings and a byte order
    mark included) or an object with a key twice."""
    if is_empty(body):
        fail(400, "invalid_json", f"{what} is empty")
    try:
        # Decoded as UTF-8 here: json.loads would also take UTF-16, UTF-32 and a BOM.
        return _DECODER.decode(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        fail(400, "invalid_json", f"{what} is not valid JSON: {exc}")


def _check_value(value: object, *, path: str, max_depth: int = MAX_DEPTH) -> None:
    """:func:`check_json` answered as a 400 ``invalid_json`` naming the path."""
    try:
        check_json(value, max_depth=max_depth, path=path)
    except InvalidJSON as exc:
        fail(400, "invalid_json", str(exc))


def state_size(data: Mapping[str, Any], where: str, raw_len: int, limit: int) -> None:
    """413 ``too_large`` if ``data`` takes more than ``limit`` bytes as stored
    (compact JSON, :func:`~rstream.server.storage.base.dump_json`);
    ``raw_len`` is the size of the body it was read from."""
    if raw_len * _MAX_GROWTH <= limit:
        return
    size = len(dump_json(data).encode())
    if size > limit:
        fail(413, "too_large", f"{where} is {size} bytes as stored, over the limit of {limit}")


# -- POST /state and PUT /streams/{id} ------------------------------------------------


def parse_state_write(obj: object) -> tuple[dict[str, Any], int | None]:
    """``(state, micros or None)`` from the body of ``POST .../state``."""
    if not isinstance(obj, dict):
        fail(400, "bad_request", 'the body must be a JSON object {"state": {...}}')
    extra = set(obj) - _STATE_FIELDS
    if extra:
        fail(400, "bad_request", f"unknown field(s) {sorted(extra)!r}")
    if "state" not in obj:
        fail(400, "bad_request", "missing field 'state'")
    state = obj["state"]
    if not isinstance(state, dict):
        fail(400, "bad_request", "'state' must be a JSON object")
    _check_value(state, path="$.state")
    when = _body_time(obj["timestamp"]) if "timestamp" in obj else None
    return state, when


def _body_time(value: object) -> int:
    where = "field 'timestamp'"
    if isinstance(value, str):
        micros = _rfc3339(value, where)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not MIN_EPOCH_SECONDS <= value <= MAX_EPOCH_SECONDS:
            raise InvalidTimestamp(
                f"{where}: {value!r} is outside the storable range: epoch seconds from "
                f"{MIN_EPOCH_SECONDS} to {MAX_EPOCH_SECONDS} (years 1 to 9999)"
            )
        micros = to_micros(value)
    else:
        kind = "null" if value is None else type(value).__name__
        raise InvalidTimestamp(f"{where} must be RFC 3339 text or epoch seconds, not {kind}")
    check_entry_time(micros, where)
    return micros


def _rfc3339(text: str, where: str) -> int:
    if _TIME_RE.match(text) is None:
        raise InvalidTimestamp(_not_a_time(where, text))
    try:
        return parse_rfc3339(text)
    except InvalidTimestamp as exc:
        raise InvalidTimestamp(f"{where}: {exc}") from None


def _not_a_time(where: str, text: str) -> str:
    return (
        f"{where}: {text[:64]!r} is not an RFC 3339 timestamp in years 0001 to 9999 "
        "(expected e.g. 2024-05-01T12:00:00.5Z)"
    )


@dataclass(frozen=True, slots=True)
class RateUpdate:
    """What a ``PUT /v1/streams/{id}`` body changes: the record rate (None: kept)
    and, when ``set_retention``, the retention (None: keep everything)."""

    record_rate: RateConfig | None = None
    set_retention: bool = False
    retention: timedelta | None = None

    def apply(self, current: RateConfig | None) -> RateConfig:
        """The stream's new config from its ``current`` one (None: a new stream's defaults)."""
        base = current or RateConfig()
        rate = base if self.record_rate is None else self.record_rate
        retention = self.retention if self.set_retention else base.retention
        return replace(rate, retention=retention)


def parse_rate_body(body: bytes) -> RateUpdate | None:
    """What a ``PUT /v1/streams/{id}`` body sets (``record_rate``, ``retention``,
    both optional: one left out is kept), or None (no body, or nothing set)."""
    if not body:
        return None
    obj = parse_json(body, "request body")
    if not isinstance(obj, dict):
        fail(400, "bad_request", "the body must be a JSON object")
    extra = set(obj) - {"record_rate", "retention"}
    if extra:
        fail(400, "bad_request", f"unknown field(s) {sorted(extra)!r}")
    if not obj:
        return None
    try:
        retention = RateConfig.retention_from_json(obj.get("retention"))
    except ConfigError as exc:
        fail(400, "bad_request", f"retention: {exc}")
    if "record_rate" not in obj:
        return RateUpdate(set_retention=True, retention=retention)
    value = obj["record_rate"]
    if not isinstance(value, dict):
        fail(400, "bad_request", "'record_rate' must be a JSON object")
    extra = set(value) - _RATE_FIELDS
    if extra:
        fail(400, "bad_request", f"unknown record_rate field(s) {sorted(extra)!r}")
    try:
        rate = RateConfig.from_json(value)
    except ConfigError as exc:
        fail(400, "bad_request", f"record_rate: {exc}")
    return RateUpdate(rate, "retention" in obj, retention)


# -- POST /entries ------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """The entries of a ``POST .../entries`` body.

    ``deep``: the indexes of mutations nested deeper than a state may be; the
    state each of them makes must be checked once it is applied.
    """

    entries: list[Entry]
    deep: frozenset[int]
    #: The size of the text each entry was read from (an NDJSON line; the
    #: whole body for an array): a bound for :func:`state_size`.
    sizes: list[int]

    def check_sizes(self, limit: int) -> None:
        """413 ``too_large`` if an entry's data is over ``limit`` bytes as stored."""
        for i, (entry, size) in enumerate(zip(self.entries, self.sizes, strict=True)):
            state_size(entry.data, f"entry {i} of the batch", size, limit)


def parse_entries(body: bytes, *, ndjson: bool) -> Batch:
    """The entries of a ``POST .../entries`` body (an entry, an array, or NDJSON),
    each checked as the storage will keep it."""
    items: list[tuple[object, str]] = []
    sizes: list[int] = []
    if ndjson:
        for n, line in enumerate(body.split(b"\n"), 1):
            if not is_empty(line):
                items.append((parse_json(line, f"line {n}"), f"line {n}"))
                sizes.append(len(line))
    else:
        obj = parse_json(body, "request body")
        if isinstance(obj, dict):
            items = [(obj, "entry")]
        elif isinstance(obj, list):
            items = [(item, f"entry {i}") for i, item in enumerate(obj)]
        else:
            raise EntryFormatError("malformed entry: expected an entry object, an array or NDJSON")
        sizes = [len(body)] * len(items)
    entries: list[Entry] = []
    deep: set[int] = set()
    for i, (item, where) in enumerate(items):
        if isinstance(item, dict):
            _check_entry_fields(item, where)
        entry = Entry.from_json(item, where=where)
        if _check_data(entry, where):
            deep.add(i)
        entries.append(entry)
    return Batch(entries, frozenset(deep), sizes)


def _check_data(entry: Entry, where: str) -> bool:
    """400 ``invalid_json`` unless ``entry``'s data is JSON storage keeps; True
    for a mutation nested deeper than a state may be (within its own bound)."""
    path = f"{where}: $.data"
    if entry.kind is EntryKind.SNAPSHOT:
        _check_value(entry.data, path=path)
        return False
    try:
        check_json(entry.data, path=path)
    except InvalidJSON:
        # Deeper than a state may be is fine for a mutation, up to a bound
        # that keeps applying it far from the recursion limit.
        _check_value(entry.data, path=path, max_depth=MAX_MUTATION_DEPTH)
        return True
    return False


def _check_entry_fields(item: dict[str, Any], where: str) -> None:
    """What the OpenAPI ``Entry`` forbids and :meth:`Entry.from_json` lets by:
    unknown fields, a null ``rev``, a timestamp outside years 0001-9999."""
    if not _ENTRY_FIELDS.issuperset(item):
        extra = set(item) - _ENTRY_FIELDS
        raise EntryFormatError(f"malformed entry ({where}): unknown field(s) {sorted(extra)!r}")
    if "rev" in item and item["rev"] is None:
        raise EntryFormatError(f"malformed entry ({where}): field 'rev' must be an integer")
    raw_ts = item.get("timestamp")
    if isinstance(raw_ts, str) and _TIME_RE.match(raw_ts) is None:
        problem = _not_a_time("field 'timestamp'", raw_ts)
        raise EntryFormatError(f"malformed entry ({where}): {problem}")


def check_state_depth(state: dict[str, Any], where: str) -> None:
    """400 ``invalid_json`` if ``state`` (made by applying a mutation) is nested
    deeper than :data:`~rstream.core.jsontype.MAX_DEPTH`."""
    _check_value(state, path=f"the state after {where}: $")


# -- query values -------------------------------------------------------------------


def time_param(query: Mapping[str, str], name: str) -> int | None:
    """A time query value (RFC 3339, or epoch seconds) as epoch micros; None if absent."""
    raw = query.get(name)
    if raw is None:
        return None
    where = f"query parameter {name!r}"
    if _NUMBER_RE.match(raw) is not None:
        try:
            return parse_time(raw)
        except InvalidTimestamp as exc:
            raise InvalidTimestamp(f"{where}: {exc}") from None
    return _rfc3339(raw, where)


def limit_param(query: Mapping[str, str], page_size: int) -> int:
    """``limit``: a positive integer, capped by ``page_size`` (the default)."""
    raw = query.get("limit")
    if raw is None:
        return page_size
    # Leading zeros stripped before the cut: more than 12 digits is over any page size.
    digits = raw.lstrip("0")
    if _DIGITS_RE.match(raw) is None or not digits:
        fail(400, "bad_request", f"limit must be a positive integer, not {raw[:40]!r}")
    return min(int(digits[:12]), page_size)


def heartbeat_param(query: Mapping[str, str], default: float) -> float:
    """``heartbeat``: seconds between pings, from 0.05 to 300."""
    raw = query.get("heartbeat")
    if raw is None:
        return default
    value = float(raw) if _NUMBER_RE.match(raw) is not None else float("nan")
    if not MIN_HEARTBEAT <= value <= MAX_HEARTBEAT:
        fail(
            400,
            "bad_request",
            f"heartbeat must be a number of seconds from {MIN_HEARTBEAT} to {MAX_HEARTBEAT}, "
            f"not {raw[:40]!r}",
        )
    return value


def resume_point(header: str | None, query: Mapping[str, str]) -> tuple[int | None, str | None]:
    """``(since, reset_reason)`` of a live request: ``Last-Event-ID`` wins over
    ``?since``; an unusable Last-Event-ID (browsers send whatever id they saw)
    is answered with a reset, an unusable ``since`` with a 400."""
    if header is not None and header.strip():
        text = header.strip()
        value = _revision(text)
        if value is not None:
            return value, None
        return None, f"Last-Event-ID {text[:40]!r} is not a revision"
    raw = query.get("since")
    if raw is None:
        return None, None
    value = _revision(raw)
    if value is None:
        fail(
            400,
            "bad_request",
            f"since must be a revision from 0 to {MAX_REVISION}, not {raw[:40]!r}",
        )
    return value, None


def _revision(text: str) -> int | None:
    if _DIGITS_RE.match(text) is None:
        return None
    digits = text.lstrip("0")
    if len(digits) > len(str(MAX_REVISION)):
        return None
    value = int(digits or "0")
    return value if value <= MAX_REVISION else None
