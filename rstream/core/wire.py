"""The entry wire form, both ways: Entry JSON, NDJSON pages and SSE event data.

An entry on the wire is one JSON object::

    {"timestamp": "2024-05-01T12:00:00.5Z", "type": 0, "data": {...}, "rev": 7}

``type`` is 0 (snapshot) or 1 (mutation); readers also accept ``"snapshot"`` and
``"mutation"``. ``timestamp`` is RFC 3339 (writers send UTC with a ``Z``), ``data``
a JSON object, and ``rev`` (the log revision, sent by the server) a non-negative
integer or absent. A page of entries is NDJSON: one entry per line. The data of
an SSE ``entry``/``amend`` event is one entry.

A page may also be sent in the *columns* form (:data:`COLUMNS`), one JSON
object holding the page's fields as arrays (see :func:`encode_columns`): the
same entries, in fewer bytes, decoded with one ``json.loads`` and no per-entry
object or timestamp text.

This module is the one encoder (:func:`entry_json`, :func:`encode_entry`,
:func:`encode_row`, :func:`encode_ndjson`, :func:`encode_columns`) and the one
decoder (:func:`decode_entry`, :func:`decode_event`, :class:`NDJSONDecoder`,
:func:`parse_ndjson`, :func:`read_page`, :func:`read_columns`) of that form; the
client and the server both use it. It does no I/O.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from rstream.core.entry import Entry, EntryKind
from rstream.core.jsontype import json_type
from rstream.core.timestamps import EPOCH, format_rfc3339, from_micros, parse_rfc3339
from rstream.errors import EntryFormatError, InvalidTimestamp, ProtocolError

__all__ = [
    "COLUMNS",
    "NDJSON",
    "ROW_BYTES",
    "STORE_ID_HEADER",
    "NDJSONDecoder",
    "Page",
    "decode_entry",
    "decode_event",
    "encode_columns",
    "encode_entry",
    "encode_ndjson",
    "encode_row",
    "entry_json",
    "page_entries",
    "parse_ndjson",
    "read_columns",
    "read_page",
]

STORE_ID_HEADER = "RStream-Store-Id"
"""The response header naming the store (on window and entries answers)."""

NDJSON = "application/x-ndjson"
"""The media type of a page as NDJSON, one entry per line."""
COLUMNS = "application/vnd.rstream.columns+json"
"""The media type of a page in the columns form (:func:`encode_columns`)."""
ROW_BYTES = 64
"""About what a page's NDJSON line adds to its entry's data (for a page's byte budget)."""

State = dict[str, Any]

_KINDS = (EntryKind.SNAPSHOT, EntryKind.MUTATION)
_BATCH_LINES = 512  # NDJSON lines decoded per json.loads (see parse_ndjson)


# -- encoding ------------------------------------------------------------------------


def entry_json(entry: Entry, *, with_rev: bool = False) -> dict[str, Any]:
    """The JSON object of ``entry``; ``"rev"`` only ``with_rev`` (and when it has one)."""
    obj: dict[str, Any] = {
        "timestamp": format_rfc3339(entry.micros),
        "type": int(entry.kind),
        "data": entry.data,
    }
    if with_rev and entry.rev is not None:
        obj["rev"] = entry.rev
    return obj


def encode_entry(entry: Entry, *, with_rev: bool = True) -> bytes:
    """The compact JSON text of ``entry`` (an NDJSON line or an SSE event's data), as UTF-8.

    Data holding a lone surrogate (``"\\ud800"``, which JSON text may carry but
    UTF-8 cannot) is sent in the escaped ASCII form, as storage keeps it.
    """
    obj = entry_json(entry, with_rev=with_rev)
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def encode_row(micros: int, kind: int, data_json: str, rev: int) -> bytes:
    """:func:`encode_entry`'s bytes for a stored row, spliced without parsing.

    ``data_json`` is the entry's data as storage keeps it
    (:func:`~rstream.server.storage.base.dump_json`: compact, keys in order,
    UTF-8 or escaped ASCII), which is byte for byte what ``json.dumps`` makes
    of the parsed data inside :func:`encode_entry`.
    """
    return b'{"timestamp":"%s","type":%d,"data":%s,"rev":%d}' % (
        format_rfc3339(micros).encode("ascii"),
        kind,
        data_json.encode("utf-8"),
        rev,
    )


def encode_ndjson(entries: Iterable[Entry], *, with_rev: bool = False) -> bytes:
    """``entries`` as an NDJSON body, one :func:`encode_entry` line each."""
    return b"".join(encode_entry(e, with_rev=with_rev) + b"\n" for e in entries)


def encode_page(rows: Sequence[tuple[int, int, str, int]], columns: bool) -> bytes:
    """Stored rows ``(micros, kind, data_json, rev)`` as a page: NDJSON lines
    (:func:`encode_row`), or in the columns form (:func:`encode_columns`)."""
    if columns:
        return encode_columns(rows)
    return b"".join([encode_row(*row) + b"\n" for row in rows])


def encode_columns(rows: Sequence[tuple[int, int, str, int]]) -> bytes:
    """Stored rows ``(micros, kind, data_json, rev)`` as a page in the columns form::

        {"times": [t0, d1, d2, ...], "types": [0, 1, ...], "revs": [7, 8, ...],
         "data": [{...}, {...}, ...]}

    ``times`` holds the first entry's time in epoch microseconds, then each
    entry's distance in microseconds from the one before; ``types``, ``revs``
    and ``data`` are the entries' fields, in order. ``data_json`` is spliced as
    it is (see :func:`encode_row`).
    """
    micros = [row[0] for row in rows]
    deltas = list(map(operator.sub, micros, [0, *micros[:-1]]))
    return b'{"times":[%s],"types":[%s],"revs":[%s],"data":[%s]}' % (
        ",".join(map(str, deltas)).encode("ascii"),
        ",".join([str(row[1]) for row in rows]).encode("ascii"),
        ",".join([str(row[3]) for row in rows]).encode("ascii"),
        ",".join([row[2] for row in rows]).encode("utf-8"),
    )


# -- decoding one entry --------------------------------------------------------------


def decode_entry(obj: object, *, where: str = "entry") -> Entry:
    """The entry of a parsed JSON value (as :func:`json.loads` returns it).

    Raises :class:`~rstream.EntryFormatError` naming the field and ``where``
    (for example ``"line 12"``) when anything is malformed.
    """
    if type(obj) is not dict:
        _bad(where, f"expected a JSON object, got {json_type(obj)}")
    try:
        raw_ts = obj["timestamp"]
        raw_kind = obj["type"]
        data = obj["data"]
    except KeyError as exc:
        _bad(where, f"missing field {exc.args[0]!r}")
    try:
        micros = parse_rfc3339(raw_ts)
    except InvalidTimestamp as exc:
        _bad(where, f"field 'timestamp': {exc}")
    if type(raw_kind) is int and 0 <= raw_kind <= 1:
        kind = _KINDS[raw_kind]
    else:
        try:
            kind = EntryKind.parse(raw_kind)
        except ValueError as exc:
            _bad(where, f"field 'type': {exc}")
    if type(data) is not dict:
        _bad(where, f"field 'data' must be a JSON object, got {json_type(data)}")
    rev = obj.get("rev")
    if rev is not None and (type(rev) is not int or rev < 0):
        _bad(where, f"field 'rev' must be a non-negative integer, got {rev!r}")
    return Entry.from_micros(micros, kind, data, rev)


def _bad(where: str, message: str) -> NoReturn:
    raise EntryFormatError(f"malformed entry ({where}): {message}")


def decode_event(data: str, *, where: str) -> Entry:
    """The entry of an SSE event's ``data``; :class:`~rstream.EntryFormatError` or
    ``ValueError`` (not JSON) naming ``where`` when it is malformed."""
    return decode_entry(json.loads(data), where=where)


def decode_entries(objs: Sequence[Any], lines: Sequence[int], where: str) -> list[Entry]:
    """The entries of parsed JSON values; ``lines[i]`` is the line of ``objs[i]`` in ``where``.

    A malformed entry raises :class:`~rstream.ProtocolError` naming its line.
    """
    try:
        return [decode_entry(obj, where=f"line {n}") for obj, n in zip(objs, lines, strict=True)]
    except EntryFormatError as exc:
        raise ProtocolError(f"malformed entry in {where}: {exc}") from None


# -- NDJSON --------------------------------------------------------------------------


def parse_ndjson(lines: Iterable[bytes], *, where: str = "response") -> Iterator[Entry]:
    """Entries from NDJSON lines; a malformed line raises :class:`~rstream.ProtocolError`."""
    lineno = 0
    batch: list[bytes] = []
    for line in lines:
        lineno += 1
        batch.append(line)
        if len(batch) >= _BATCH_LINES:
            yield from _decode_lines(batch, lineno - len(batch) + 1, where)
            batch = []
    if batch:
        yield from _decode_lines(batch, lineno - len(batch) + 1, where)


class NDJSONDecoder:
    """Entries from an NDJSON body that arrives in chunks of bytes cut anywhere.

    ``feed(chunk)`` returns the entries of the lines the chunk completes;
    ``close()`` those of a last line without a newline. A malformed line raises
    :class:`~rstream.ProtocolError` naming it. One thread at a time.
    """

    __slots__ = ("_lineno", "_pending", "where")

    def __init__(self, where: str = "response") -> None:
        self.where = where
        self._pending = b""
        self._lineno = 0

    def feed(self, chunk: bytes) -> list[Entry]:
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data
            return []
        self._pending = data[cut + 1 :]
        return self._lines(data[:cut].split(b"\n"))

    def close(self) -> list[Entry]:
        data, self._pending = self._pending, b""
        return self._lines([data]) if data else []

    def _lines(self, lines: list[bytes]) -> list[Entry]:
        first = self._lineno + 1
        self._lineno += len(lines)
        return _decode_lines(lines, first, self.where)


def decode_page(chunks: Iterable[bytes], where: str) -> list[Entry]:
    """The entries of an NDJSON body that arrived as ``chunks`` (see :class:`NDJSONDecoder`)."""
    decoder = NDJSONDecoder(where=where)
    entries: list[Entry] = []
    for chunk in chunks:
        entries += decoder.feed(chunk)
    return entries + decoder.close()


def _decode_lines(lines: list[bytes], first_line: int, where: str) -> list[Entry]:
    """The entries of NDJSON ``lines``, the first being line ``first_line`` of ``where``."""
    return decode_entries(*_load_lines(lines, first_line, where), where)


def _load_lines(lines: list[bytes], first_line: int, where: str) -> tuple[list[Any], Sequence[int]]:
    """The JSON values of NDJSON ``lines`` (blank ones skipped) and their line numbers."""
    # A blank line (b"") would make ",," below: it is skipped by the loop instead.
    objs = _loads_as_array(b",".join(lines), len(lines)) if b"" not in lines else None
    if objs is not None:
        return objs, range(first_line, first_line + len(objs))
    numbers = []
    objs = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            objs.append(json.loads(line))
        except ValueError as exc:
            raise ProtocolError(
                f"malformed NDJSON in {where}, line {first_line + i}: {exc}: {line[:120]!r}"
            ) from None
        numbers.append(first_line + i)
    return objs, numbers


def _loads_as_array(values: bytes | memoryview, count: int) -> list[Any] | None:
    """``count`` comma-separated JSON values (one per NDJSON line) with one
    :func:`json.loads`; None when they are not exactly ``count`` valid values
    (a blank or broken line, two values on one line)."""
    # One json.loads for many lines: without it, history reads a page with 40-70% more CPU.
    try:
        objs = json.loads(b"".join((b"[", values, b"]")))
    except ValueError:
        return None
    return objs if len(objs) == count else None


# -- a page by field (history) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    """A page's entries by field, in order: no :class:`Entry` per line."""

    times: list[int]
    """Epoch microseconds."""
    dates: list[datetime]
    """The same times as aware UTC datetimes."""
    kinds: list[int]
    """0 for a snapshot, 1 for a mutation."""
    datas: list[State]
    """Each entry's ``data``: a state or a mutation."""
    revs: Sequence[int | None]
    """Each entry's ``rev`` (None where the page has none)."""
    lines: Sequence[int]
    """The line each entry is on, or its position from 1 in the columns form (for errors)."""


def read_page(text: bytes, where: str) -> Page:
    """The entries of an NDJSON page by field; :class:`~rstream.ProtocolError` naming
    the line of a malformed one."""
    objs, lines = _load_page(text, where)
    page = _page_by_field(objs, lines)
    if page is not None:
        return page
    entries = decode_entries(objs, lines, where)
    times = [e.micros for e in entries]
    kinds = [int(e.kind) for e in entries]
    datas, revs = [e.data for e in entries], [e.rev for e in entries]
    return Page(times, list(map(from_micros, times)), kinds, datas, revs, lines)


def page_entries(page: Page) -> list[Entry]:
    """The entries of a page read by field."""
    kinds = map(_KINDS.__getitem__, page.kinds)
    return list(map(Entry.from_micros, page.times, kinds, page.datas, page.revs))


_TIMESTAMP = operator.itemgetter("timestamp")
_TYPE = operator.itemgetter("type")
_DATA = operator.itemgetter("data")
_REV = operator.methodcaller("get", "rev")
# The timestamps the server writes (UTC, "T", "Z", seconds 00-59, up to nine
# fraction digits), which datetime.fromisoformat reads as parse_rfc3339 does.
_UTC_STAMPS = re.compile(r"(?:\d{4}-\d\d-\d\dT\d\d:\d\d:[0-5]\d(?:\.\d{1,9})?Z\n)*", re.ASCII)
_ONE_US = timedelta(microseconds=1)


def _page_by_field(objs: list[Any], lines: Sequence[int]) -> Page | None:
    """The page read a field at a time, or None unless every entry is in the server's
    form (``"type"`` 0 or 1, ``"data"`` an object, ``"rev"`` absent on every entry or
    a non-negative integer on every one, a UTC ``"timestamp"`` as the server writes)."""
    # map() and one regex, no Python code per entry: history's first pass reads
    # pages with a quarter less CPU than entry by entry.
    try:
        kinds = list(map(_TYPE, objs))
        datas = list(map(_DATA, objs))
        revs = list(map(_REV, objs))
        stamps = list(map(_TIMESTAMP, objs))
        if not objs or not _UTC_STAMPS.fullmatch("\n".join(stamps) + "\n"):
            return None
        dates = list(map(datetime.fromisoformat, stamps))
    except (LookupError, TypeError, AttributeError, ValueError):  # ValueError: e.g. Feb 30
        return None
    rev_types = set(map(type, revs))
    if (
        set(map(type, kinds)) != {int}  # bool, float and the spelled-out kinds too
        or not {0, 1}.issuperset(kinds)
        or set(map(type, datas)) != {dict}
        or not (rev_types == {type(None)} or (rev_types == {int} and min(revs) >= 0))
    ):
        return None
    spans = map(operator.sub, dates, itertools.repeat(EPOCH))
    times = list(map(operator.floordiv, spans, itertools.repeat(_ONE_US)))
    return Page(times, dates, kinds, datas, revs, lines)


_COLUMN_NAMES = ("times", "types", "revs", "data")


def read_columns(text: bytes, where: str) -> Page:
    """The entries of a page in the columns form (:func:`encode_columns`) by field;
    :class:`~rstream.ProtocolError` when it is not that form (the order of the
    times is checked by :func:`check_order`)."""
    # One json.loads and no text per timestamp: a history pass reads a page with
    # about half the CPU of NDJSON (see bench network).
    try:
        obj = json.loads(text)
        deltas, kinds, revs, datas = (obj[name] for name in _COLUMN_NAMES)
    except (ValueError, TypeError, KeyError) as exc:
        raise ProtocolError(f"malformed columns page from {where}: {exc!r:.200}") from None
    problem = _columns_problem(deltas, kinds, revs, datas)
    if problem:
        raise ProtocolError(f"malformed columns page from {where}: {problem}")
    times = list(itertools.accumulate(deltas))
    try:
        dates = list(map(EPOCH.__add__, map(_ONE_US.__mul__, times)))
    except OverflowError:
        raise ProtocolError(f"malformed columns page from {where}: a time out of range") from None
    return Page(times, dates, kinds, datas, revs, range(1, len(times) + 1))


def _columns_problem(deltas: Any, kinds: Any, revs: Any, datas: Any) -> str | None:
    """What is wrong with a columns page's arrays (None: nothing)."""
    columns = (deltas, kinds, revs, datas)
    if set(map(type, columns)) != {list}:
        return "times, types, revs and data must be arrays"
    if len({len(column) for column in columns}) != 1:
        return "times, types, revs and data must be as long as each other"
    if not deltas:
        return None
    if not set(map(type, deltas)) == set(map(type, revs)) == {int}:
        return "times and revs must be integers"
    if set(map(type, kinds)) != {int} or not {0, 1}.issuperset(kinds):
        return "types must be 0 (snapshot) or 1 (mutation)"
    if set(map(type, datas)) != {dict}:
        return "data must be JSON objects"
    if min(revs) < 0:
        return "revs must not be negative"
    return None


def _load_page(text: bytes, where: str) -> tuple[list[Any], Sequence[int]]:
    """The JSON values of a page's NDJSON ``text`` and their line numbers."""
    if text:
        ended = text[-1:] == b"\n"
        lines = text.count(b"\n") + (not ended)
        commas = text.replace(b"\n", b",")
        # Joined from a view: the page (megabytes) is copied once more, not thrice.
        values = memoryview(commas)[:-1] if ended else commas
        objs = _loads_as_array(values, lines)
        if objs is not None:
            return objs, range(1, lines + 1)
    return _load_lines(text.split(b"\n"), 1, where)


def check_order(times: list[int], lines: Sequence[int], after: int | None, where: str) -> None:
    """Timestamps strictly increase (the server's order), all after ``after`` (if known).

    A :class:`~rstream.ProtocolError` names the first line out of order.
    """
    previous = after
    for micros, line in zip(times, lines, strict=True):
        if previous is not None and micros <= previous:
            raise ProtocolError(
                f"entries out of order in {where}, line {line}: {format_rfc3339(micros)} "
                f"is not after {format_rfc3339(previous)}"
            )
        previous = micros
