"""RemoteStream: one stream on a server, read at any time or followed live.

Reads go through the stream's :class:`~rstream.client.windows.WindowStore`:
``state_at`` finds (or fetches once) the window around a time and replays it;
``history`` reads the windows it can from the cache and fetches the rest as
ranges of NDJSON pages, pipelined on the client's worker pool (the next page is
requested as soon as the current page's headers name it), committing every
complete window it streams past. The live tail (:mod:`rstream.client.live`) is
started on the first ``subscribe``/``states``.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
import operator
import re
import socket
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

import requests
import tenacity

from rstream.client.changelog import DEFAULT_LAG_WARNING, DEFAULT_LATEST_TIMEOUT
from rstream.client.interrupt import shutdown
from rstream.client.retry import blocking_policy
from rstream.client.transport import Transport, json_body, quote_stream_id
from rstream.client.windows import (
    DEFAULT_MAX_CACHED_ENTRIES,
    Bounds,
    Pair,
    Window,
    WindowState,
    WindowStore,
    state_in,
)
from rstream.core.entry import Entry, EntryKind
from rstream.core.jsontype import check_json
from rstream.core.mutation import apply_mutation, copy_json
from rstream.core.stream import RateConfig
from rstream.core.timestamps import (
    EPOCH,
    TimeLike,
    format_rfc3339,
    from_micros,
    parse_rfc3339,
    to_micros,
)
from rstream.errors import (
    ClientClosed,
    ConfigError,
    EntryFormatError,
    InvalidJSONType,
    InvalidTimestamp,
    OutOfRange,
    ProtocolError,
    StreamNotFound,
    TransportError,
)

if TYPE_CHECKING:
    from rstream.client.changelog import Overflow
    from rstream.client.health import Health
    from rstream.client.live import LiveTail
    from rstream.client.queues import StateQueue
    from rstream.client.subscription import Subscription

__all__ = ["NDJSONDecoder", "RemoteStream", "StreamMetadata", "parse_ndjson"]

logger = logging.getLogger("rstream.client")

_ONE_ATTEMPT = blocking_policy(
    tenacity.Retrying(stop=tenacity.stop_after_attempt(1)), sleep=lambda seconds: None
)
"""A request tried once (for the live tail, which has its own backoff)."""

State = dict[str, Any]
_NDJSON = "application/x-ndjson"
_CHUNK = 2**20  # bytes read from a page body at a time (each chunk: one json.loads)
_BATCH_LINES = 512  # lines parsed per json.loads call (see parse_ndjson)

_Body: TypeAlias = "tuple[str, list[bytes]]"
"""A page's body as fetched by a worker: its URL (for errors) and its bytes."""

_Chunk: TypeAlias = "tuple[Sequence[int], Sequence[Pair]]"
"""Consecutive changes: their timestamps in microseconds and their ``(datetime, state)``."""

_Columns: TypeAlias = "tuple[list[int], list[datetime], list[int], list[State], Sequence[int]]"
"""A page's entries by field: times (epoch microseconds) and as datetimes, kinds
(0 for a snapshot, 1 for a mutation), data, and the line each entry is on."""


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

    @property
    def keyframe_frequency(self) -> timedelta | None:
        """A write this long after the newest snapshot is stored as a new snapshot."""
        return _opt_delta(self.keyframe_frequency_ms)

    @property
    def change_frequency(self) -> timedelta | None:
        """A write sooner than this after the newest mutation amends it (0: never)."""
        return _opt_delta(self.change_frequency_ms)

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


def parse_ndjson(lines: Iterable[bytes], *, where: str = "response") -> Iterator[Entry]:
    """Entries from NDJSON lines; a malformed line raises :class:`~rstream.ProtocolError`.

    Lines are decoded in batches with one :func:`json.loads` of a JSON array
    (faster than a call per line); a batch that fails is parsed again line by
    line to name the bad line.
    """
    lineno = 0
    batch: list[bytes] = []
    for line in lines:
        lineno += 1
        batch.append(line)
        if len(batch) >= _BATCH_LINES:
            yield from _parse_lines(batch, lineno - len(batch) + 1, where)
            batch = []
    if batch:
        yield from _parse_lines(batch, lineno - len(batch) + 1, where)


class NDJSONDecoder:
    """Entries from an NDJSON body that arrives in chunks of bytes cut anywhere.

    ``feed(chunk)`` returns the entries of the lines the chunk completes;
    ``close()`` those of a last line without a newline. Every complete run of
    lines is decoded with one :func:`json.loads` (see :func:`parse_ndjson`).
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
        return _parse_lines(lines, first, self.where)


def _parse_lines(lines: list[bytes], first_line: int, where: str) -> list[Entry]:
    """The entries of NDJSON ``lines``, the first being line ``first_line`` of ``where``."""
    return _entries_of(*_load_lines(lines, first_line, where), where)


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


def _decode(body: _Body) -> list[Entry]:
    url, chunks = body
    decoder = NDJSONDecoder(where=url)
    entries: list[Entry] = []
    for chunk in chunks:
        entries += decoder.feed(chunk)
    entries += decoder.close()
    return entries


class _Irregular(Exception):
    """An entry the fast path of :func:`_entries_of` leaves to :meth:`Entry.from_json`."""


def _entries_of(objs: list[Any], lines: Sequence[int], where: str) -> list[Entry]:
    """Entries from parsed JSON objects; ``lines[i]`` is the line of ``objs[i]``.

    The common form (``"type": 0|1``, a ``"Z"`` timestamp) is read inline, which
    is several times faster than :meth:`Entry.from_json`; anything else (the
    ``"snapshot"``/``"mutation"`` spelling, or a malformed entry, which then
    raises :class:`~rstream.ProtocolError` naming its line) goes through it.
    """
    out: list[Entry] = []
    append = out.append
    new = Entry.from_micros
    parse = parse_rfc3339
    snapshot, mutation = EntryKind.SNAPSHOT, EntryKind.MUTATION
    count = len(objs)
    while len(out) < count:
        done = len(out)
        try:
            for obj in objs[done:] if done else objs:
                kind = obj["type"]
                data = obj["data"]
                rev = obj.get("rev")
                if (
                    type(data) is not dict
                    or type(kind) is not int
                    or not 0 <= kind <= 1
                    or (rev is not None and (type(rev) is not int or rev < 0))
                ):
                    raise _Irregular
                append(new(parse(obj["timestamp"]), mutation if kind else snapshot, data, rev))
        except (_Irregular, LookupError, TypeError, AttributeError, InvalidTimestamp):
            i = len(out)
            try:
                append(Entry.from_json(objs[i], where=f"line {lines[i]}"))
            except EntryFormatError as exc:
                raise ProtocolError(f"malformed entry in {where}: {exc}") from None
    return out


_PAIRS = operator.itemgetter(1)  # of a chunk
_TIMESTAMP = operator.itemgetter("timestamp")
_TYPE = operator.itemgetter("type")
_DATA = operator.itemgetter("data")
_INT_KINDS = frozenset({0, 1})
_NONE = type(None)


def _page_columns(body: _Body) -> _Columns:
    """A page's entries as columns, with no :class:`Entry` per line (for ``history``).

    Each field is read for the whole page at once (``map`` over the parsed
    objects runs no Python code per entry; the timestamps, see
    :func:`_read_stamps`, neither when they are in the server's form), then
    checked by the set of its types. A page with anything else than the
    common form (``"type": 0|1``, ``"data"`` an object, ``"rev"`` absent or a
    non-negative integer) is read by :func:`_entries_of` instead, entry by
    entry: the ``"snapshot"``/``"mutation"`` spelling then works, and a
    malformed entry raises :class:`~rstream.ProtocolError` naming its line.
    """
    url, chunks = body
    objs, lines = _load_page(chunks[0] if len(chunks) == 1 else b"".join(chunks), url)
    try:
        kinds = list(map(_TYPE, objs))
        datas = list(map(_DATA, objs))
        revs = list(map(dict.get, objs, itertools.repeat("rev")))
        stamps = list(map(_TIMESTAMP, objs))
        times, dates = _read_stamps(stamps)
    except (LookupError, TypeError, InvalidTimestamp):
        return _columns_of(_entries_of(objs, lines, url), lines)
    if objs and (
        set(map(type, kinds)) != {int}  # bool, float and the spelled-out kinds too
        or not _INT_KINDS.issuperset(kinds)
        or set(map(type, datas)) != {dict}
        or not _revs_valid(revs)
    ):
        return _columns_of(_entries_of(objs, lines, url), lines)
    return times, dates, kinds, datas, lines


# The timestamps of a page in the form the server writes (UTC, "T", "Z", seconds
# 00-59, up to nine fraction digits): RFC 3339 that datetime.fromisoformat reads
# exactly as parse_rfc3339 does (a fraction past microseconds truncated too).
_UTC_STAMPS = re.compile(r"(?:\d{4}-\d\d-\d\dT\d\d:\d\d:[0-5]\d(?:\.\d{1,9})?Z\n)*", re.ASCII)
_ONE_US = timedelta(microseconds=1)


def _read_stamps(stamps: list[str]) -> tuple[list[int], list[datetime]]:
    """The epoch microseconds and datetimes of a page's timestamps.

    When all are in the server's form (one regular expression over them all),
    they are read by :meth:`datetime.fromisoformat` and converted with
    ``map`` (no Python code per entry, a third of :func:`parse_rfc3339`'s
    cost); otherwise, or if a date does not exist, :func:`parse_rfc3339` reads
    each (and raises :class:`~rstream.InvalidTimestamp` for a bad one), and
    :func:`from_micros` makes the datetimes.
    """
    if _UTC_STAMPS.fullmatch("\n".join(stamps) + "\n"):
        try:
            dates = list(map(datetime.fromisoformat, stamps))
        except ValueError:
            pass  # e.g. February 30: parse_rfc3339 says what is wrong
        else:
            spans = map(operator.sub, dates, itertools.repeat(EPOCH))
            return list(map(operator.floordiv, spans, itertools.repeat(_ONE_US))), dates
    times = list(map(parse_rfc3339, stamps))
    return times, list(map(from_micros, times))


def _load_page(text: bytes, where: str) -> tuple[list[Any], Sequence[int]]:
    """The JSON values of a page's NDJSON ``text`` and their line numbers.

    One :func:`json.loads` of the text with its newlines made commas; a text
    that does not give one value per line (a blank or broken line, two values
    on one line) is read by :func:`_load_lines`, which names a bad line.
    """
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


def _loads_as_array(values: bytes | memoryview, count: int) -> list[Any] | None:
    """``count`` comma-separated JSON values (one per NDJSON line) with one
    :func:`json.loads`, about 15% faster than one call per line; None when they
    are not exactly ``count`` valid values (a blank or broken line, two values
    on one line): the caller then reads line by line, to name the bad one."""
    try:
        objs = json.loads(b"".join((b"[", values, b"]")))
    except ValueError:
        return None
    return objs if len(objs) == count else None


def _revs_valid(revs: list[Any]) -> bool:
    """Whether every ``rev`` is absent or a non-negative integer (as :meth:`Entry.from_json`)."""
    types = set(map(type, revs))
    if types == {int}:
        return bool(min(revs) >= 0)
    return types == {_NONE}  # a page mixing both is left to Entry.from_json


def _columns_of(entries: list[Entry], lines: Sequence[int]) -> _Columns:
    """The columns of entries read one by one (see :func:`_page_columns`)."""
    times = [e.micros for e in entries]
    kinds = [0 if e.kind is EntryKind.SNAPSHOT else 1 for e in entries]
    return times, list(map(from_micros, times)), kinds, [e.data for e in entries], lines


def _check_order(times: list[int], lines: Sequence[int], after: int | None, where: str) -> None:
    """Timestamps strictly increase (the server's order), all after ``after`` (if known).

    A :class:`~rstream.ProtocolError` names the first line out of order.
    """
    if (after is None or times[0] > after) and all(
        map(operator.lt, times, itertools.islice(times, 1, None))
    ):
        return
    previous = after
    for micros, line in zip(times, lines, strict=True):
        if previous is not None and micros <= previous:
            raise ProtocolError(
                f"entries out of order in {where}, line {line}: {format_rfc3339(micros)} "
                f"is not after {format_rfc3339(previous)}"
            )
        previous = micros


def _replay_page(
    datas: list[State], snaps: list[int], state: State | None, lo: int, cut: int
) -> list[State]:
    """The state after each entry of a page's ``[lo, cut)``.

    ``snaps`` are the indices of the snapshots in that range; the entries
    before the first of them go on from ``state``, the state before the page
    (None only if ``lo`` is a snapshot). Each window's mutations are applied
    by ``accumulate``, which calls :func:`apply_mutation` from C.
    """
    states: list[State] = []
    head = snaps[0] if snaps else cut
    if lo < head:
        assert state is not None
        carried = itertools.accumulate(datas[lo:head], apply_mutation, initial=state)
        states += itertools.islice(carried, 1, None)  # the first is ``state`` itself
    for a, b in itertools.pairwise([*snaps, cut]):
        states += itertools.accumulate(datas[a + 1 : b], apply_mutation, initial=datas[a])
    return states


def _snapshots(kinds: list[int], stop: int) -> list[int]:
    """The indices of the snapshots among ``kinds[:stop]``."""
    found: list[int] = []
    index = kinds.index  # scans in C: windows are long, snapshots few
    i = 0
    try:
        while True:
            i = index(0, i, stop)
            found.append(i)
            i += 1
    except ValueError:
        return found


class _Pages:
    """The pages of one range, each requested as soon as the page before names it.

    Workers only fetch: a page is its body, ``(url, chunks of bytes)``. The
    reading thread parses it: parsing holds the GIL, so spread over workers it
    would only take turns, and the reader would wait for whole pages anyway.

    A worker that has a page's headers hands its ``RStream-Next-Start`` to
    :meth:`next_start` *before* reading the body, and the next request leaves
    at once from that worker: the reader never holds a request back, so the
    server's work, the network and the parsing overlap. At most ``depth``
    pages are in flight or waiting to be read (the reader's own included); a
    next start learned beyond that waits for the reader to move on.
    """

    def __init__(
        self,
        fetch: Callable[[_Pages, int | None, int | None], _Body],
        executor: Executor,
        start: int | None,
        end: int | None,
        depth: int,
    ) -> None:
        self._fetch = fetch
        self._executor = executor
        self._end = end
        self._depth = max(1, depth)
        self._lock = threading.Lock()
        self._queue: deque[Future[_Body]] = deque()
        self._in_flight = 0  # submitted and not yet fully read
        self._deferred: int | None = None
        self._error: BaseException | None = None
        self.stopped = False
        """Set when the reader stops; a worker reading a body then gives up."""
        with self._lock:
            self._submit(start)
        if self._error is not None:
            raise self._error

    def next_start(self, start: int | None) -> None:
        """A worker's page names the next one (None: it was the last)."""
        if start is None or (self._end is not None and start >= self._end):
            return
        with self._lock:
            if self.stopped:
                return
            if self._in_flight < self._depth:
                self._submit(start)
            else:
                self._deferred = start

    def __iter__(self) -> Iterator[_Body]:
        """The pages' bodies, in order; stopping early cancels what is not started."""
        reading = False
        try:
            while True:
                with self._lock:
                    if reading:
                        self._in_flight -= 1
                    if self._deferred is not None and self._in_flight < self._depth:
                        start, self._deferred = self._deferred, None
                        self._submit(start)
                    if not self._queue:
                        if self._error is not None:
                            raise self._error
                        return
                    future = self._queue.popleft()
                reading = True
                # A page's worker calls next_start() before its result is set,
                # so once it is read the queue already holds what follows.
                yield future.result()
        except CancelledError:  # the pool was shut down before the page started
            raise ClientClosed("the client is closed; create a new rstream.Client") from None
        finally:
            self.close()

    def close(self) -> None:
        """Request nothing more; cancel the pages not started yet."""
        with self._lock:
            self.stopped = True
            self._deferred = None
            queued = list(self._queue)
            self._queue.clear()
        for future in queued:
            future.cancel()

    def _submit(self, start: int | None) -> None:
        # The lock is held.
        try:
            future = self._executor.submit(self._fetch, self, start, self._end)
        except RuntimeError:  # the pool was shut down: the client is closing
            self._error = ClientClosed("the client is closed; create a new rstream.Client")
            return
        self._queue.append(future)
        self._in_flight += 1


class RemoteStream:
    """One stream of a :class:`~rstream.Client`: ``client.stream("robot-1")``.

    Thread-safe. Times are aware datetimes or epoch seconds; states returned by
    :meth:`state_at` and :meth:`latest` are copies the caller owns.
    """

    def __init__(
        self,
        transport: Transport,
        stream_id: str,
        *,
        executor: Executor,
        max_cached_entries: int = DEFAULT_MAX_CACHED_ENTRIES,
        prefetch: int = 4,
        page_size: int | None = None,
        heartbeat_timeout: float | None = None,
        max_event_bytes: int = 16 * 2**20,
        sleep: Callable[[float], None] | None = None,
        on_close: Callable[[RemoteStream], None] | None = None,
    ) -> None:
        self.id = stream_id
        self._path = f"/v1/streams/{quote_stream_id(stream_id)}"
        self._transport = transport
        self._executor = executor
        self._prefetch = max(1, prefetch)
        self._page_size = page_size
        self._heartbeat_timeout = heartbeat_timeout
        self._max_event_bytes = max_event_bytes
        self._sleep = sleep
        self._on_close = on_close
        self._lock = threading.Lock()
        self._closed = False
        self._tail: LiveTail | None = None
        self._retired: list[LiveTail] = []  # tails that ended by themselves (see _ensure_tail)
        self._first: int | None = None  # the first entry's time, once known
        self._responses: set[requests.Response] = set()  # open page bodies, for close()
        self.windows = WindowStore(
            self._fetch_bounds, self._fetch_window_entries, max_cached_entries=max_cached_entries
        )
        """The window cache (see :mod:`rstream.client.windows`)."""

    def __repr__(self) -> str:
        return f"<RemoteStream {self.id!r} on {self._transport.urls[0]}>"

    # -- reading the past --------------------------------------------------------------

    def state_at(self, when: TimeLike) -> State:
        """The state in effect at ``when``; raises :class:`~rstream.OutOfRange` before
        the stream's first snapshot."""
        at = to_micros(when)
        self._check_open()
        try:
            window = self.windows.get(at)
            if window.state is WindowState.COMMITTED:
                # Replayed once, then every later time in the window is a bisect.
                pairs = self.windows.states(window)
                assert window.micros is not None
                state = pairs[bisect.bisect_right(window.micros, at) - 1][1]
            else:
                state = self._live_state_at(at)
        except OutOfRange as exc:
            raise OutOfRange(
                f"stream {self.id!r} has no state at {format_rfc3339(at)}: it is before the "
                "first snapshot (or the stream is empty); ask for a later time",
                when=when,
            ) from exc
        return copy_json(state)  # type: ignore[no-any-return]

    def latest(self, timeout: float | None = DEFAULT_LATEST_TIMEOUT) -> tuple[datetime, State]:
        """The newest ``(timestamp, state)``: from the live tail if it runs, else fetched.

        With a tail running, waits up to ``timeout`` seconds (default 10; None:
        no limit) for it to receive the stream's current state, then raises
        :class:`~rstream.Timeout` saying so (the server may be down).
        """
        self._check_open()
        tail = self._tail
        if tail is not None and not tail.ended:
            return tail.latest(timeout)  # already the caller's own copy
        try:
            bounds = self._fetch_bounds(None)
        except OutOfRange as exc:
            raise OutOfRange(
                f"stream {self.id!r} has no state yet (no snapshot); write one first"
            ) from exc
        if bounds.end is None:  # the live window: known now, so the walk needs no lookup
            self.windows.observe_live(bounds.start)
        newest: Pair | None = None
        # A walk of the live window: what a pass already read of it is not fetched again.
        for batch in self._changes(bounds.start, None):
            for _, pairs in batch:
                if pairs:
                    newest = pairs[-1]
        if newest is None:
            raise ProtocolError(
                f"the live window of {self.id!r} at {format_rfc3339(bounds.start)} came back "
                "without its snapshot"
            )
        return newest[0], copy_json(newest[1])

    def history(
        self,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        step: timedelta | float | None = None,
        copy: bool = False,
    ) -> Iterator[tuple[datetime, State]]:
        """Every change in ``[start, end)`` as ``(timestamp, state)``, in order.

        The first pair is the state in effect at ``start``, stamped ``start``
        (unless an entry is exactly at ``start``); then one pair per entry. A
        ``start`` before the first snapshot begins at the first snapshot;
        ``None`` means the stream's first entry, ``end=None`` its newest one.

        With ``step`` (a ``timedelta`` or seconds), the state is sampled at
        ``start``, ``start + step``, ... before ``end`` (with ``end=None``: up
        to the newest entry), skipping times before the first snapshot.

        Raises :class:`~rstream.ConfigError` (a ``ValueError``), before any
        request, for ``end`` before ``start`` or a ``step`` that is not
        positive.

        **The states are read-only.** They are the cache's own objects, shared
        with every other reader and with each other (a state shares its
        unchanged parts with the one before it): modifying one corrupts every
        later ``history``/``state_at`` answer. To change a state, copy it first
        (``rstream.core.mutation.copy_json(state)``), or pass ``copy=True`` to
        get private copies (several times slower). ``state_at`` and the
        subscribers of the live tail always get private copies.
        """
        step_us = None if step is None else _step_micros(step)
        start_us = None if start is None else to_micros(start)
        end_us = None if end is None else to_micros(end)
        if start_us is not None and end_us is not None and end_us < start_us:
            raise ConfigError(
                f"end ({format_rfc3339(end_us)}) is before start ({format_rfc3339(start_us)}); "
                "swap them"
            )
        self._check_open()
        return self._history(start_us, end_us, step_us, copy)

    def _history(
        self, start: int | None, end: int | None, step: int | None, copy: bool
    ) -> Iterator[tuple[datetime, State]]:
        batches = self._changes(start, end)
        pairs: Iterator[tuple[datetime, State]]
        if step is None:
            # The pairs are the cache's own (or were built once while
            # fetching): chaining their lists runs no Python code per pair,
            # nor per chunk.
            chunks = itertools.chain.from_iterable(batches)
            pairs = itertools.chain.from_iterable(map(_PAIRS, chunks))
        else:
            changes = (
                (micros, pair[1])
                for batch in batches
                for times, chunk in batch
                for micros, pair in zip(times, chunk, strict=True)
            )
            sampled = _sample(changes, start, end, step)
            pairs = ((from_micros(micros), state) for micros, state in sampled)
        if copy:
            return ((ts, copy_json(state)) for ts, state in pairs)
        return pairs

    def entries(
        self, start: TimeLike | None = None, end: TimeLike | None = None
    ) -> Iterator[Entry]:
        """The raw entries with ``start <= timestamp < end``, fetched page by page."""
        start_us = None if start is None else to_micros(start)
        end_us = None if end is None else to_micros(end)
        self._check_open()
        return self._iter_range(start_us, end_us)

    def info(self) -> StreamMetadata:
        """The stream's metadata (``GET /v1/streams/{id}``), its record rate included.

        Raises :class:`~rstream.StreamNotFound` for a stream the server does not know.
        """
        self._check_open()
        return StreamMetadata.from_json(self._transport.get_json(self._path, stream_id=self.id))

    def configure(
        self,
        *,
        keyframe_frequency: timedelta | None = None,
        change_frequency: timedelta | None = None,
    ) -> StreamMetadata:
        """Set how the server's writer records :meth:`write_state` (``PUT /v1/streams/{id}``).

        ``keyframe_frequency``: a write this long after the newest snapshot is
        stored as a new snapshot (default 60 s). ``change_frequency``: a write
        sooner than this after the newest mutation amends that mutation
        instead of adding one (default 1 s); ``timedelta(0)`` records every
        write that changes the state. A rate not given keeps the stream's
        current one (asked with :meth:`info`). Creates the stream if it does
        not exist. Returns the metadata as :meth:`info` would.

        Raises ``TypeError`` for a value that is not a ``timedelta``, and
        :class:`~rstream.ConfigError` for a negative one or for neither given,
        before anything is sent.
        """
        given = {"keyframe_frequency": keyframe_frequency, "change_frequency": change_frequency}
        for name, value in given.items():
            if value is not None and not isinstance(value, timedelta):
                raise TypeError(f"{name} must be a timedelta, not {type(value).__name__}")
        rate = {name: value for name, value in given.items() if value is not None}
        if not rate:
            raise ConfigError("give keyframe_frequency, change_frequency or both (timedeltas)")
        RateConfig(**rate)  # ConfigError for a negative value, before anything is sent
        self._check_open()
        if len(rate) < len(given):
            try:
                current = self.info()
            except StreamNotFound:
                pass  # created with the server's default for what is not given
            else:
                kept = {
                    "keyframe_frequency": current.keyframe_frequency,
                    "change_frequency": current.change_frequency,
                }
                rate = {**{k: v for k, v in kept.items() if v is not None}, **rate}
        body = {"record_rate": RateConfig(**rate).to_json()}
        response = self._transport.request("PUT", self._path, json=body, stream_id=self.id)
        try:
            return StreamMetadata.from_json(json_body(response))
        finally:
            response.close()

    # -- writing -----------------------------------------------------------------------

    def write_state(
        self, state: Mapping[str, Any], timestamp: TimeLike | None = None
    ) -> Entry | None:
        """Write ``state`` through the server's writer; the entry written, or None.

        The server decides: a snapshot, a mutation, an amend of the newest
        mutation, or nothing (None) when the state did not change. Without
        ``timestamp`` the server's clock is used.

        Before anything is sent: a ``state`` that is not a mapping, or holds
        anything but JSON (see :func:`rstream.core.jsontype.check_json`),
        raises :class:`~rstream.InvalidJSONType` (a ``TypeError``) or
        :class:`~rstream.InvalidJSON` (a ``ValueError``, e.g. for NaN or
        Infinity) naming the path of the bad value.
        """
        if not isinstance(state, Mapping):
            raise InvalidJSONType(
                f"a state must be a JSON object (a dict), not {type(state).__name__}"
            )
        state = dict(state)
        check_json(state)
        self._check_open()
        body: dict[str, Any] = {"state": state}
        if timestamp is not None:
            body["timestamp"] = format_rfc3339(to_micros(timestamp))
        response = self._transport.request(
            "POST", self._path + "/state", json=body, stream_id=self.id
        )
        try:
            answer = json_body(response)
        finally:
            response.close()
        if not isinstance(answer, dict) or answer.get("action") not in (
            "snapshot",
            "mutation",
            "amend",
            "none",
        ):
            raise ProtocolError(f"malformed answer to a write: {answer!r:.200}")
        if answer["action"] == "none":
            return None
        try:
            return Entry.from_json(answer.get("entry"), where="write answer")
        except EntryFormatError as exc:
            raise ProtocolError(str(exc)) from None

    def append_entries(self, entries: bytes | str | Iterable[Entry]) -> int:
        """Append raw entries (NDJSON, or Entry objects), all or nothing; the new revision."""
        self._check_open()
        if isinstance(entries, str):
            body = entries.encode()
        elif isinstance(entries, bytes):
            body = entries
        else:
            body = b"".join(
                json.dumps(e.to_json(), separators=(",", ":")).encode() + b"\n" for e in entries
            )
        response = self._transport.request(
            "POST",
            self._path + "/entries",
            data=body,
            headers={"Content-Type": _NDJSON},
            stream_id=self.id,
        )
        try:
            answer = json_body(response)
        finally:
            response.close()
        if not isinstance(answer, dict) or type(answer.get("revision")) is not int:
            raise ProtocolError(f"malformed answer to an append: {answer!r:.200}")
        return int(answer["revision"])

    # -- following live ----------------------------------------------------------------

    def subscribe(
        self,
        on_state: Callable[[datetime, State], object],
        on_error: Callable[[BaseException], object] | None = None,
        *,
        maxsize: int = 10_000,
        overflow: Overflow = "block",
        lag_warning: float | None = DEFAULT_LAG_WARNING,
        copy: bool = True,
    ) -> Subscription:
        """Call ``on_state(ts, state)`` for the current state, then every change, in order.

        Callbacks run on the subscription's own dispatcher thread, never on
        the socket reader, and never slow the stream or another subscriber.
        ``on_error`` receives a raising callback's exception, the notices
        (:class:`~rstream.Gap`, :class:`~rstream.Disconnected`,
        :class:`~rstream.Reconnected`) and the fatal error that ends the
        subscription. ``overflow`` and ``maxsize`` are as for :meth:`states`;
        past ``lag_warning`` seconds behind (None: never), a warning is logged.
        Raises :class:`TypeError` at once when ``on_state`` cannot take ``(ts, state)``.

        Each state is the callback's own private copy, unless ``copy=False``:
        then **the states are read-only**, the live tail's own objects, shared
        with every other ``copy=False`` subscriber and with each other (a state
        shares its unchanged parts with the one before it); modifying one
        corrupts what the others receive. For consumers that only read: it
        saves a deep copy per state.
        """
        from rstream.client.subscription import check_callback

        check_callback(on_state, "on_state", 2)  # before a tail is started for it
        return self._ensure_tail().subscribe(
            on_state,
            on_error,
            maxsize=maxsize,
            overflow=overflow,
            lag_warning=lag_warning,
            copy=copy,
        )

    def states(
        self,
        maxsize: int = 1000,
        overflow: Overflow = "block",
        *,
        on_error: Callable[[BaseException], object] | None = None,
        lag_warning: float | None = DEFAULT_LAG_WARNING,
        copy: bool = True,
    ) -> StateQueue:
        """A queue of ``(ts, state)``, polled like :class:`queue.Queue`: the current
        state, then every change.

        ``overflow``: ``"block"`` (every change, once, in order, however far
        behind: what no longer fits in memory is read again from the server),
        ``"drop_oldest"`` (at most ``maxsize`` waiting), or ``"latest"`` (only
        the newest). No queue ever slows the stream or another subscriber.

        ``copy``: as for :meth:`subscribe` (``False``: shared, read-only states).
        """
        return self._ensure_tail().states(
            maxsize=maxsize,
            overflow=overflow,
            on_error=on_error,
            lag_warning=lag_warning,
            copy=copy,
        )

    @property
    def health(self) -> Health:
        """The live tail's health, with each subscriber's lag; "not following" (IDLE)
        before any subscribe."""
        tail = self._tail
        if tail is not None:
            return tail.health
        from rstream.client.health import NOT_FOLLOWING

        return NOT_FOLLOWING

    def _ensure_tail(self) -> LiveTail:
        with self._lock:
            self._check_open()
            tail = self._tail
            if tail is not None and tail.ended:
                # It stopped by itself (a 204, a 404 before the stream existed, a
                # refused token), and its subscribers were told. Following again
                # starts a new tail; the old one's dispatchers still deliver what
                # they hold, so it is closed (joined) with this stream, not now.
                self._retired.append(tail)
                self._tail = None
            if self._tail is None:
                from rstream.client.live import LiveTail

                self._tail = LiveTail(
                    self._transport,
                    self.id,
                    heartbeat_timeout=self._heartbeat_timeout,
                    max_event_bytes=self._max_event_bytes,
                    on_commit=self._on_live_commit,
                    capacity=self.windows.max_cached_entries,
                    fetch=self._entries_from,
                    current_revision=self._revision,
                    sleep=self._sleep,
                )
                self._tail.start()
            return self._tail

    def _entries_from(self, start: int) -> Iterator[Entry]:
        """The entries from ``start`` on: what a subscriber that fell behind missed."""
        self._check_open()
        return self._iter_range(start, None)

    def _revision(self) -> int:
        """The stream's revision now (the live tail's backlog ends there).

        One attempt: the live tail retries with its own backoff, which
        ``close()`` cuts short, where the blocking policy's waits would hold it.
        """
        self._check_open()
        response = self._transport.request("GET", self._path, stream_id=self.id, retry=_ONE_ATTEMPT)
        try:
            return StreamMetadata.from_json(json_body(response)).revision
        finally:
            response.close()

    def _on_live_commit(self, entries: list[Entry]) -> None:
        # The tail tells us the window's entries; its end is the new live
        # window's snapshot, which the tail holds by now.
        end = None
        tail = self._tail
        window = tail.live_window() if tail is not None else None
        if window and entries and window[0].micros > entries[-1].micros:
            end = window[0].micros
        try:
            self.windows.commit(entries, end)
        except (ProtocolError, ClientClosed) as exc:
            logger.debug("live window of %s not cached: %s", self.id, exc)

    # -- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the live tail, drop the cache, abort page reads. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            tails = [*self._retired, self._tail] if self._tail is not None else self._retired
            self._tail, self._retired = None, []
            responses = list(self._responses)
        for tail in tails:
            tail.close()
        self.windows.close()
        for response in responses:
            _abort(response)
        if self._on_close is not None:
            self._on_close(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> RemoteStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed or self._transport.closed:
            raise ClientClosed(f"stream {self.id!r} is closed; open it again from a new Client")

    # -- HTTP: bounds and entries --------------------------------------------------------

    def _fetch_bounds(self, at: int | None) -> Bounds:
        params = None if at is None else {"at": format_rfc3339(at)}
        obj = self._transport.get_json(self._path + "/window", params=params, stream_id=self.id)
        try:
            start = parse_rfc3339(obj["start"])
            end = None if obj["end"] is None else parse_rfc3339(obj["end"])
            revision = obj["revision"]
            if type(revision) is not int:
                raise TypeError("revision is not an integer")
        except (KeyError, TypeError, InvalidTimestamp) as exc:
            raise ProtocolError(f"malformed window bounds {obj!r:.200}: {exc}") from None
        return Bounds(start, end, revision)

    def _fetch_window_entries(self, start: int, end: int) -> list[Entry]:
        entries: list[Entry] = []
        for page in self._pages(start, end):
            entries += page
        return entries

    def _fetch_page(self, pages: _Pages, start: int | None, end: int | None) -> _Body:
        """One page (on a worker): pass its next start to ``pages``, then read the body."""
        params: dict[str, str] = {}
        if start is not None:
            params["start"] = format_rfc3339(start)
        if end is not None:
            params["end"] = format_rfc3339(end)
        if self._page_size is not None:
            params["limit"] = str(self._page_size)
        self._check_open()
        response = self._transport.request(
            "GET",
            self._path + "/entries",
            params=params,
            headers={"Accept": _NDJSON},
            stream=True,
            stream_id=self.id,
        )
        with self._lock:
            self._responses.add(response)
        try:
            raw = response.headers.get("RStream-Next-Start")
            try:
                next_start = None if not raw else parse_rfc3339(raw)
            except InvalidTimestamp as exc:
                raise ProtocolError(f"malformed RStream-Next-Start header {raw!r}: {exc}") from None
            if next_start is not None and start is not None and next_start <= start:
                raise ProtocolError(f"RStream-Next-Start {raw!r} does not move forward")
            pages.next_start(next_start)
            chunks: list[bytes] = []
            try:
                for chunk in response.iter_content(chunk_size=_CHUNK):
                    if pages.stopped:
                        return response.url, []  # nobody will read this page
                    chunks.append(chunk)
            except (requests.RequestException, OSError, AttributeError, ValueError) as exc:
                self._check_open()  # an aborted read after close() is not news
                raise TransportError(
                    f"reading entries of {self.id!r} from {response.url} failed: {exc}"
                ) from exc
            return response.url, chunks
        finally:
            with self._lock:
                self._responses.discard(response)
            response.close()

    def _bodies(self, start: int | None, end: int | None) -> Iterator[_Body]:
        """The pages of ``[start, end)``, fetched ahead on the pool (see :class:`_Pages`)."""
        try:
            pages = _Pages(self._fetch_page, self._executor, start, end, self._prefetch)
        except ClientClosed:
            raise ClientClosed(f"stream {self.id!r} is closed") from None
        try:
            yield from pages
        except ClientClosed:
            raise ClientClosed(f"stream {self.id!r} is closed") from None

    def _pages(self, start: int | None, end: int | None) -> Iterator[list[Entry]]:
        """The entries of ``[start, end)``, a page at a time."""
        for body in self._bodies(start, end):
            yield _decode(body)

    def _iter_range(self, start: int | None, end: int | None) -> Iterator[Entry]:
        """The entries of ``[start, end)``, pages fetched up to ``prefetch`` ahead."""
        for page in self._pages(start, end):
            yield from page

    def _live_state_at(self, at: int) -> State:
        """The state at ``at`` in the LIVE window: from the live tail's window when a
        tail runs, else from a walk of the window (what a history pass already read
        of it is not fetched again, see :meth:`_walk`)."""
        tail = self._tail
        if tail is not None:
            live = tail.live_window()
            if live and live[0].micros <= at:
                return state_in(live, [e.micros for e in live], at)[1]
        for batch in self._changes(at, at + 1):
            for _, pairs in batch:
                if pairs:
                    return pairs[0][1]
        raise OutOfRange(f"no state of {self.id!r} at {format_rfc3339(at)}")

    # -- history -----------------------------------------------------------------------

    def _first_micros(self) -> int | None:
        """The stream's first timestamp (asked once: entries are never removed)."""
        if self._first is None:
            first = self.info().first
            if first is not None:
                self._first = to_micros(first)
        return self._first

    def _changes(self, start: int | None, end: int | None) -> Iterator[list[_Chunk]]:
        """The changes in ``[start, end)``, led by the state at ``start``, in batches.

        A batch is a list of chunks; a chunk is ``(micros, pairs)``: the entries'
        timestamps and their ``(datetime, state)``. Cached windows are passed as
        they are (sliced at the ends of the range), a run of them in one batch,
        so a pass over the cache costs a few operations per run of windows, not
        per entry, nor per window.
        """
        if start is None:
            start = self._first_micros()
            if start is None:
                return
        if end is not None and end <= start:
            return
        edge = _Edge(start, end)
        for batch in self._walk(start, end):
            if edge.started and (end is None or _before(_last_time(batch), end)):
                yield batch  # neither end of the range is in it: passed whole
                continue
            out = edge.cut(batch)
            if out:
                yield out
            if edge.done:
                return
        if not edge.started and edge.before is not None:
            yield [([start], [(from_micros(start), edge.before)])]

    def _walk(self, start: int, end: int | None) -> Iterator[list[_Chunk]]:
        """Chunks from the window around ``start`` to ``end`` (see :meth:`_changes`).

        Cached windows are passed whole (their states computed once, then
        kept); the gaps between them are fetched as ranges and every complete
        window seen is committed with its states. The first and the last
        window are asked for through the store, so they are complete too and a
        second pass over the same range makes no request at all.
        """
        store = self.windows
        try:
            first: Window | None = store.get(start)
        except OutOfRange:
            first = None  # the range begins before the stream: start at its first snapshot
        pos = start if first is None else first.start
        assert pos is not None
        last: Window | None = None
        if end is not None and end - 1 > pos:
            try:
                last = store.get(end - 1)
            except OutOfRange:
                return  # nothing at all before end
        stop = None if last is None else (last.end if last.end is not None else None)
        if end is not None and last is None and first is not None:
            stop = first.end
        while stop is None or pos < stop:
            run = store.cached_run(pos, end)
            if run:
                yield [
                    (window.micros or [], window.pairs or store.states(window)) for window in run
                ]
                last = run[-1]
                if last.end is None or (end is not None and last.end >= end):
                    return
                pos = last.end
                continue
            upto = store.next_start_after(pos)
            if stop is not None and (upto is None or upto > stop):
                upto = stop
            held = store.live_prefix(pos) if upto is None else None
            if held is not None and len(held[0]) > 1:
                # The live window, as an earlier pass read it: all but its newest
                # entry are final; that one may have been amended since, so the
                # fetch starts at it.
                micros, pairs = held
                seed = micros[:-1], pairs[:-1]
                yield [seed]
                if end is not None and end <= micros[-1]:
                    return
                yield from self._walk_range(micros[-1], None, end, seed=seed)
                return
            done = yield from self._walk_range(pos, upto, end)
            if done or upto is None:
                return
            pos = upto

    def _walk_range(
        self,
        start: int,
        upto: int | None,
        end: int | None,
        *,
        seed: tuple[list[int], list[Pair]] | None = None,
    ) -> Generator[list[_Chunk], None, bool]:
        """Fetch ``[start, upto)``, yield a chunk per page, commit its complete windows.

        ``upto`` is a window boundary (or None: to the newest entry, whose last
        window is live and is not committed). Returns True when ``end`` was passed.

        A page is read by field (:func:`_page_columns`), replayed a window at a
        time (:func:`_replay_page`) into one list of times and one of pairs, and
        the windows it completes are committed as slices of those lists.

        ``seed``: the times and states of the window before ``start``, from its
        snapshot up to (not including) ``start``, already passed to the caller;
        the range continues it. The live window read last is held in the store
        (:meth:`~rstream.client.windows.WindowStore.hold_live`), so that the next
        pass fetches only what follows it.
        """
        commit = self.windows.commit_states
        run_times: list[int] = []  # the window being read, as far as earlier pages hold it
        run_pairs: list[Pair] = []
        state: State | None = None  # the state after the last entry read
        last: int | None = None  # the last entry's time
        if seed is not None:
            run_times, run_pairs = list(seed[0]), list(seed[1])
            state, last = run_pairs[-1][1], run_times[-1]
        for body in self._bodies(start, upto):
            times, dates, kinds, datas, lines = _page_columns(body)
            if not times:
                continue
            _check_order(times, lines, last, body[0])
            last = times[-1]
            count = cut = len(times)
            if end is not None and last >= end:
                cut = bisect.bisect_left(times, end)
            snaps = _snapshots(kinds, cut)
            lo = 0
            if state is None:  # a mutation before any snapshot has no state: skipped
                lo = snaps[0] if snaps else cut
            states = _replay_page(datas, snaps, state, lo, cut)
            if states:
                state = states[-1]
            page_times = times if lo == 0 and cut == count else times[lo:cut]
            pairs = list(zip(dates[lo:cut], states, strict=True))
            # The windows the page completes: each ends at the next snapshot.
            ends = snaps
            if cut < count:
                if kinds[cut] == 0:
                    ends = [*snaps, cut]
                elif state is not None:
                    # Applied as when entries were read one by one: an
                    # invalid mutation just past the end still raises.
                    apply_mutation(state, datas[cut])
            opened: int | None = None  # the index of the open window's snapshot on this page
            for b in ends:
                if opened is not None:
                    commit(times[opened:b], pairs[opened - lo : b - lo], times[b])
                elif run_times or lo < b:
                    commit(run_times + times[lo:b], run_pairs + pairs[: b - lo], times[b])
                opened = b
            if opened is None:
                run_times += page_times
                run_pairs += pairs
            else:
                run_times, run_pairs = times[opened:cut], pairs[opened - lo :]
            if page_times:
                yield [(page_times, pairs)]
            if cut < count:
                return True
        if run_times:
            if upto is not None:
                commit(run_times, run_pairs, upto)
            else:
                self.windows.hold_live(run_times, run_pairs)
        return False


class _Edge:
    """Cuts the chunks of a walk to ``[start, end)``, led by the state at ``start``.

    Only the batches holding ``start`` or ``end`` are cut (see
    :meth:`RemoteStream._changes`); the ones between are passed whole.
    """

    __slots__ = ("before", "done", "end", "start", "started")

    def __init__(self, start: int, end: int | None) -> None:
        self.start = start
        self.end = end
        self.started = False  # the first change at or after start was passed
        self.done = False  # end was reached
        self.before: State | None = None  # the state in effect just before start

    def cut(self, batch: list[_Chunk]) -> list[_Chunk]:
        """The part of ``batch`` in the range: only the chunks holding ``start`` or
        ``end`` are cut, the ones between are passed as they are."""
        out: list[_Chunk] = []
        i, count = 0, len(batch)
        while i < count and not self.started:
            out += self._cut(*batch[i])
            i += 1
            if self.done:
                return out
        end = self.end
        j = count
        if end is not None:
            # Backwards from the last chunk (end is usually in it, or past it): the
            # chunks entirely at or after end, then the one holding it.
            rest = [chunk for chunk in batch[i:] if chunk[0]]
            i, j, batch = 0, len(rest), rest
            while j > 0 and batch[j - 1][0][-1] >= end:
                j -= 1
        out += batch[i:j]
        if j < len(batch):
            out += self._cut(*batch[j])  # it holds end, or begins after it
        return out

    def _cut(self, micros: Sequence[int], pairs: Sequence[Pair]) -> list[_Chunk]:
        if not micros:
            return []
        out: list[_Chunk] = []
        start, end = self.start, self.end
        lo = 0
        if not self.started:
            lo = bisect.bisect_left(micros, start)
            if lo:
                self.before = pairs[lo - 1][1]
            if lo == len(micros):
                return out
            self.started = True
            if micros[lo] > start and self.before is not None:
                out.append(([start], [(from_micros(start), self.before)]))
        hi = len(micros)
        if end is not None and micros[-1] >= end:
            hi = bisect.bisect_left(micros, end, lo)
            self.done = True
        if lo == 0 and hi == len(micros):
            out.append((micros, pairs))
        elif lo < hi:
            out.append((micros[lo:hi], pairs[lo:hi]))
        return out


def _last_time(batch: list[_Chunk]) -> int | None:
    """The time of the last entry of a batch (None: its chunks are empty)."""
    for micros, _ in reversed(batch):
        if micros:
            return micros[-1]
    return None


def _before(micros: int | None, end: int) -> bool:
    return micros is None or micros < end


def _sample(
    changes: Iterator[tuple[int, State]], start: int | None, end: int | None, step: int
) -> Iterator[tuple[int, State]]:
    """The state at ``start``, ``start + step``, ... before ``end`` from a run of changes."""
    current: State | None = None
    t = start
    for micros, state in changes:
        if t is None:
            t = micros
        while current is not None and t < micros and (end is None or t < end):
            yield t, current
            t += step
        if current is None and t < micros:
            # Before the first state: skip the sample times that have none.
            t += -(-(micros - t) // step) * step
        current = state
        if t == micros and (end is None or t < end):
            yield t, current
            t += step
    if current is not None and t is not None and end is not None:
        while t < end:
            yield t, current
            t += step


def _step_micros(step: timedelta | float) -> int:
    """``step`` (a timedelta or seconds) in microseconds; ConfigError unless positive."""
    if isinstance(step, timedelta):
        micros = step // timedelta(microseconds=1)
    elif isinstance(step, int | float) and not isinstance(step, bool):
        if not math.isfinite(step):
            raise ConfigError(f"step must be a finite number of seconds, not {step!r}")
        micros = round(step * 1_000_000)
    else:
        raise TypeError(f"step must be a timedelta or seconds, not {type(step).__name__}")
    if micros <= 0:
        raise ConfigError(f"step must be positive (at least a microsecond), not {step!r}")
    return micros


def _abort(response: requests.Response) -> None:
    """Shut down the socket under a response another thread may be reading."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        shutdown(sock)
    response.close()
