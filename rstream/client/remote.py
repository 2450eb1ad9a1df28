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

import contextlib
import itertools
import json
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests

from rstream.client.transport import Transport, json_body, quote_stream_id
from rstream.client.windows import (
    DEFAULT_MAX_CACHED_ENTRIES,
    Bounds,
    Window,
    WindowState,
    WindowStore,
    split_windows,
    state_in,
)
from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import apply_mutation, copy_json
from rstream.core.timestamps import (
    TimeLike,
    format_rfc3339,
    from_micros,
    parse_rfc3339,
    to_micros,
)
from rstream.errors import (
    ClientClosed,
    EntryFormatError,
    InvalidTimestamp,
    OutOfRange,
    ProtocolError,
    TransportError,
)

if TYPE_CHECKING:
    from rstream.client.health import Health
    from rstream.client.live import LiveTail
    from rstream.client.queues import StateQueue
    from rstream.client.subscription import Subscription

__all__ = ["RemoteStream", "StreamMetadata", "parse_ndjson"]

logger = logging.getLogger("rstream.client")

State = dict[str, Any]
_NDJSON = "application/x-ndjson"
_CHUNK = 65536
_BATCH_LINES = 512  # lines parsed per json.loads call (see parse_ndjson)


@dataclass(frozen=True, slots=True)
class StreamMetadata:
    """What the server says about a stream (``GET /v1/streams[/{id}]``).

    ``record_rate`` (milliseconds) and ``latest_snapshot`` are only known from
    :meth:`RemoteStream.info`, not from :meth:`Client.streams`.
    """

    id: str
    first: datetime | None
    last: datetime | None
    revision: int
    keyframe_frequency_ms: int | None = None
    change_frequency_ms: int | None = None
    latest_snapshot: datetime | None = None

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
                keyframe_frequency_ms=_opt_int(rate.get("keyframe_frequency")),
                change_frequency_ms=_opt_int(rate.get("change_frequency")),
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


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise TypeError(f"expected an integer, not {value!r}")
    return value


def parse_ndjson(lines: Iterable[bytes], *, where: str = "response") -> Iterator[Entry]:
    """Entries from NDJSON lines; a malformed line raises :class:`~rstream.ProtocolError`.

    Lines are decoded in batches with one :func:`json.loads` of a JSON array
    (several times faster than a call per line); a batch that fails is parsed
    again line by line to name the bad line.
    """
    lineno = 0
    batch: list[bytes] = []
    for line in lines:
        lineno += 1
        if not line.strip():
            continue
        batch.append(line)
        if len(batch) >= _BATCH_LINES:
            yield from _parse_batch(batch, lineno - len(batch) + 1, where)
            batch = []
    if batch:
        yield from _parse_batch(batch, lineno - len(batch) + 1, where)


def _parse_batch(batch: list[bytes], first_line: int, where: str) -> list[Entry]:
    # first_line is approximate only when blank lines were skipped; the slow
    # path below recounts exactly what it reports.
    try:
        objs = json.loads(b"[" + b",".join(batch) + b"]")
        if len(objs) != len(batch):  # a line held two values ("1,2"): find it
            raise ValueError("line count mismatch")
    except ValueError:
        objs = []
        for i, line in enumerate(batch):
            try:
                objs.append(json.loads(line))
            except ValueError as exc:
                raise ProtocolError(
                    f"malformed NDJSON in {where}, line {first_line + i}: {exc}: {line[:120]!r}"
                ) from None
    out = []
    from_json = Entry.from_json
    for i, obj in enumerate(objs):
        try:
            out.append(from_json(obj, where=f"line {first_line + i}"))
        except EntryFormatError as exc:
            raise ProtocolError(f"malformed entry in {where}: {exc}") from None
    return out


class _Page:
    """One page of a range: its ``RStream-Next-Start`` arrives before its entries."""

    __slots__ = ("entries", "next_start")

    def __init__(self) -> None:
        self.next_start: Future[int | None] = Future()
        self.entries: Future[list[Entry]] | None = None


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
            entries, micros = self._window_entries(window, at)
            _, state = state_in(entries, micros, at)
        except OutOfRange as exc:
            raise OutOfRange(
                f"stream {self.id!r} has no state at {format_rfc3339(at)}: it is before the "
                "first snapshot (or the stream is empty); ask for a later time",
                when=when,
            ) from exc
        return copy_json(state)  # type: ignore[no-any-return]

    def latest(self, timeout: float | None = None) -> tuple[datetime, State]:
        """The newest ``(timestamp, state)``: from the live tail if it runs, else fetched.

        ``timeout`` bounds the wait for a running tail to be anchored.
        """
        self._check_open()
        tail = self._tail
        if tail is not None:
            ts, state = tail.latest(timeout)
            return ts, copy_json(state)
        try:
            bounds = self._fetch_bounds(None)
        except OutOfRange as exc:
            raise OutOfRange(
                f"stream {self.id!r} has no state yet (no snapshot); write one first"
            ) from exc
        runs = self._fetch_from(bounds.start)
        live = runs[-1]
        state = live[0].data
        for entry in live[1:]:
            state = apply_mutation(state, entry.data)
        return from_micros(live[-1].micros), copy_json(state)

    def history(
        self,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        step: timedelta | None = None,
        copy: bool = True,
    ) -> Iterator[tuple[datetime, State]]:
        """Every change in ``[start, end)`` as ``(timestamp, state)``, in order.

        The first pair is the state in effect at ``start``, stamped ``start``
        (unless an entry is exactly at ``start``); then one pair per entry. A
        ``start`` before the first snapshot begins at the first snapshot;
        ``None`` means the stream's first entry, ``end=None`` its newest one.

        With ``step``, the state is sampled at ``start``, ``start + step``, ...
        before ``end`` (with ``end=None``: up to the newest entry), skipping
        times before the first snapshot.

        ``copy=False`` yields states that share structure with each other and
        with the cache: faster, but they must not be modified.
        """
        if step is not None and step <= timedelta(0):
            raise ValueError(f"step must be positive, not {step}")
        start_us = None if start is None else to_micros(start)
        end_us = None if end is None else to_micros(end)
        self._check_open()
        return self._history(start_us, end_us, step, copy)

    def _history(
        self, start: int | None, end: int | None, step: timedelta | None, copy: bool
    ) -> Iterator[tuple[datetime, State]]:
        changes = self._changes(start, end)
        if step is not None:
            changes = _sample(changes, start, end, _micros_of(step))
        for micros, state in changes:
            yield from_micros(micros), (copy_json(state) if copy else state)

    def entries(
        self, start: TimeLike | None = None, end: TimeLike | None = None
    ) -> Iterator[Entry]:
        """The raw entries with ``start <= timestamp < end``, fetched page by page."""
        start_us = None if start is None else to_micros(start)
        end_us = None if end is None else to_micros(end)
        self._check_open()
        return self._iter_range(start_us, end_us)

    def info(self) -> StreamMetadata:
        """The stream's metadata (``GET /v1/streams/{id}``)."""
        self._check_open()
        return StreamMetadata.from_json(self._transport.get_json(self._path, stream_id=self.id))

    # -- writing -----------------------------------------------------------------------

    def write_state(
        self, state: Mapping[str, Any], timestamp: TimeLike | None = None
    ) -> Entry | None:
        """Write ``state`` through the server's writer; the entry written, or None.

        The server decides: a snapshot, a mutation, an amend of the newest
        mutation, or nothing (None) when the state did not change. Without
        ``timestamp`` the server's clock is used.
        """
        self._check_open()
        body: dict[str, Any] = {"state": dict(state)}
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
    ) -> Subscription:
        """Call ``on_state(ts, state)`` for every change, on a dispatcher thread."""
        return self._ensure_tail().subscribe(on_state, on_error)

    def states(self, maxsize: int = 1000, overflow: str = "block") -> StateQueue:
        """A queue of ``(ts, state)`` changes; ``overflow``: "block", "drop_oldest", "latest"."""
        return self._ensure_tail().states(maxsize=maxsize, overflow=overflow)

    @property
    def health(self) -> Health:
        """The live tail's health; "not following" (IDLE) before any subscribe."""
        tail = self._tail
        if tail is not None:
            return tail.health
        from rstream.client.health import NOT_FOLLOWING

        return NOT_FOLLOWING

    def _ensure_tail(self) -> LiveTail:
        with self._lock:
            self._check_open()
            if self._tail is None:
                from rstream.client.live import LiveTail

                self._tail = LiveTail(
                    self._transport,
                    self.id,
                    heartbeat_timeout=self._heartbeat_timeout,
                    max_event_bytes=self._max_event_bytes,
                    on_commit=self._on_live_commit,
                    sleep=self._sleep,
                )
                self._tail.start()
            return self._tail

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
            tail, self._tail = self._tail, None
            responses = list(self._responses)
        if tail is not None:
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
        return list(self._iter_range(start, end))

    def _fetch_page(self, page: _Page, start: int | None, end: int | None) -> list[Entry]:
        """One page: resolve ``page.next_start`` from the headers, then parse the body."""
        params: dict[str, str] = {}
        if start is not None:
            params["start"] = format_rfc3339(start)
        if end is not None:
            params["end"] = format_rfc3339(end)
        if self._page_size is not None:
            params["limit"] = str(self._page_size)
        try:
            self._check_open()
            response = self._transport.request(
                "GET",
                self._path + "/entries",
                params=params,
                headers={"Accept": _NDJSON},
                stream=True,
                stream_id=self.id,
            )
        except BaseException as exc:
            page.next_start.set_exception(exc)
            raise
        with self._lock:
            self._responses.add(response)
        try:
            raw = response.headers.get("RStream-Next-Start")
            try:
                next_start = None if not raw else parse_rfc3339(raw)
            except InvalidTimestamp as exc:
                error = ProtocolError(f"malformed RStream-Next-Start header {raw!r}: {exc}")
                page.next_start.set_exception(error)
                raise error from None
            if next_start is not None and start is not None and next_start <= start:
                error = ProtocolError(f"RStream-Next-Start {raw!r} does not move forward")
                page.next_start.set_exception(error)
                raise error
            page.next_start.set_result(next_start)
            try:
                return list(
                    parse_ndjson(response.iter_lines(chunk_size=_CHUNK), where=response.url)
                )
            except (requests.RequestException, OSError, AttributeError, ValueError) as exc:
                if isinstance(exc, ProtocolError):
                    raise
                self._check_open()  # an aborted read after close() is not news
                raise TransportError(
                    f"reading entries of {self.id!r} from {response.url} failed: {exc}"
                ) from exc
        finally:
            with self._lock:
                self._responses.discard(response)
            response.close()

    def _submit_page(self, start: int | None, end: int | None) -> _Page:
        page = _Page()
        try:
            page.entries = self._executor.submit(self._fetch_page, page, start, end)
        except RuntimeError:  # the pool was shut down
            raise ClientClosed(f"stream {self.id!r} is closed") from None

        def cancelled(future: Future[list[Entry]]) -> None:
            # Cancelled by the pool's shutdown before it ran: nobody else will
            # ever resolve the page's next start.
            if future.cancelled() and not page.next_start.done():
                page.next_start.set_exception(ClientClosed(f"stream {self.id!r} is closed"))

        page.entries.add_done_callback(cancelled)
        return page

    def _iter_range(self, start: int | None, end: int | None) -> Iterator[Entry]:
        """The entries of ``[start, end)``, page by page, up to ``prefetch`` pages ahead.

        A page's next start is in its headers, so the next request leaves as
        soon as they arrive, while this thread still parses or yields the
        current page: server time, network and parsing overlap.
        """
        try:
            yield from self._iter_pages(start, end)
        except CancelledError:
            raise ClientClosed(f"stream {self.id!r} is closed") from None

    def _iter_pages(self, start: int | None, end: int | None) -> Iterator[Entry]:
        pages: deque[_Page] = deque([self._submit_page(start, end)])
        try:
            while pages:
                last = pages[-1]
                while len(pages) < self._prefetch:
                    next_start = last.next_start.result()
                    if next_start is None or (end is not None and next_start >= end):
                        break
                    last = self._submit_page(next_start, end)
                    pages.append(last)
                page = pages.popleft()
                assert page.entries is not None
                yield from page.entries.result()
                if not pages:
                    next_start = page.next_start.result()
                    if next_start is not None and (end is None or next_start < end):
                        pages.append(self._submit_page(next_start, end))
        finally:
            for page in pages:  # the caller stopped early: do not fetch what nobody reads
                if page.entries is not None:
                    page.entries.cancel()

    def _fetch_from(self, start: int) -> list[list[Entry]]:
        """Entries from ``start`` to the newest, cut into windows; commits complete ones."""
        runs = list(split_windows(self._iter_range(start, None)))
        if not runs or runs[0][0].micros != start or not runs[0][0].is_snapshot:
            raise ProtocolError(
                f"entries of {self.id!r} from {format_rfc3339(start)} do not begin with "
                "the window's snapshot"
            )
        for run, following in itertools.pairwise(runs):
            self.windows.commit(run, following[0].micros)
        self.windows.observe_live(runs[-1][0].micros)
        return runs

    def _window_entries(self, window: Window, at: int) -> tuple[list[Entry], list[int]]:
        """The entries of ``window`` (COMMITTED or LIVE) to compute the state at ``at``."""
        if window.state is WindowState.COMMITTED:
            assert window.entries is not None
            assert window.micros is not None
            return window.entries, window.micros
        tail = self._tail
        if tail is not None:
            live = tail.live_window()
            if live and live[0].micros <= at:
                return live, [e.micros for e in live]
        assert window.start is not None
        runs = self._fetch_from(window.start)
        run = next(r for r in reversed(runs) if r[0].micros <= at)
        return run, [e.micros for e in run]

    # -- history -----------------------------------------------------------------------

    def _changes(self, start: int | None, end: int | None) -> Iterator[tuple[int, State]]:
        """``(micros, state)`` per change in ``[start, end)``, led by the state at ``start``."""
        if start is None:
            first = self.info().first
            if first is None:
                return
            start = to_micros(first)
        if end is not None and end <= start:
            return
        before: State | None = None  # the state in effect just before the next change
        started = False
        for entry_micros, state in self._walk(start, end):
            if entry_micros < start:
                before = state
                continue
            if not started:
                started = True
                if entry_micros > start and before is not None:
                    yield start, before
            yield entry_micros, state
        if not started and before is not None:
            yield start, before

    def _walk(self, start: int, end: int | None) -> Iterator[tuple[int, State]]:
        """``(micros, state)`` for every entry from the window around ``start`` to ``end``.

        Cached windows are replayed; the gaps between them are fetched as ranges
        and every complete window seen is committed. The first and the last
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
            window = store.covering(pos)
            if window is not None and window.state is WindowState.COMMITTED:
                window = store.get(pos)  # counts the hit and refreshes the LRU
                assert window.entries is not None
                yield from _replay(window.entries, end)
                if window.end is None or (end is not None and window.end >= end):
                    return
                pos = window.end
                continue
            upto = store.next_start_after(pos)
            if stop is not None and (upto is None or upto > stop):
                upto = stop
            done = yield from self._walk_range(pos, upto, end)
            if done or upto is None:
                return
            pos = upto

    def _walk_range(
        self, start: int, upto: int | None, end: int | None
    ) -> Generator[tuple[int, State], None, bool]:
        """Fetch ``[start, upto)``, yield its states, commit its complete windows.

        ``upto`` is a window boundary (or None: to the newest entry, whose last
        window is live and is not committed). Returns True when ``end`` was passed.
        """
        run: list[Entry] = []
        state: State | None = None
        for entry in self._iter_range(start, upto):
            if entry.kind is EntryKind.SNAPSHOT:
                if run and run[0].is_snapshot:
                    self.windows.commit(run, entry.micros)
                run = []
                state = entry.data
            elif state is None:
                continue  # a mutation before any snapshot: no state yet
            else:
                state = apply_mutation(state, entry.data)
            run.append(entry)
            if end is not None and entry.micros >= end:
                return True
            yield entry.micros, state
        if run and run[0].is_snapshot:
            if upto is not None:
                self.windows.commit(run, upto)
            else:
                self.windows.observe_live(run[0].micros)
        return False


def _replay(entries: list[Entry], end: int | None) -> Iterator[tuple[int, State]]:
    state = entries[0].data
    if end is not None and entries[0].micros >= end:
        return
    yield entries[0].micros, state
    for entry in entries[1:]:
        if end is not None and entry.micros >= end:
            return
        state = apply_mutation(state, entry.data)
        yield entry.micros, state


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


def _micros_of(step: timedelta) -> int:
    return step // timedelta(microseconds=1)


def _abort(response: requests.Response) -> None:
    """Shut down the socket under a response another thread may be reading."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)
    response.close()
