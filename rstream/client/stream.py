"""RemoteStream: one stream on a server, read at any time or followed live.

Reads go through the stream's :class:`~rstream.client.windows.WindowStore`:
``state_at`` finds (or fetches once) the window around a time and replays it;
``history`` walks the range (:mod:`rstream.client.history`): what the cache
holds is read from it, the rest fetched as pages (:mod:`rstream.client.pages`).
The live tail (:mod:`rstream.client.live`) is started on the first
``subscribe``/``states``.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from datetime import datetime, timedelta
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import tenacity

from rstream.client.changelog import DEFAULT_LAG_WARNING, DEFAULT_LATEST_TIMEOUT
from rstream.client.follow import Follow
from rstream.client.history import Run, Walk, first_pair, history_pairs, last_pair, step_micros
from rstream.client.metadata import StreamMetadata, rate_given, read_bounds, read_write_answer
from rstream.client.pages import NDJSON, PageFetcher
from rstream.client.retry import blocking_policy
from rstream.client.sse import DEFAULT_MAX_EVENT_BYTES
from rstream.client.transport import Transport, json_body, quote_stream_id
from rstream.client.window import Bounds, WindowState, state_in
from rstream.client.windows import DEFAULT_MAX_CACHED_ENTRIES, WindowStore
from rstream.core.entry import Entry
from rstream.core.jsontype import check_json
from rstream.core.mutation import copy_json
from rstream.core.stream import RateConfig
from rstream.core.timestamps import TimeLike, format_rfc3339, to_micros
from rstream.core.wire import encode_ndjson
from rstream.errors import (
    ClientClosed,
    ConfigError,
    InvalidJSONType,
    OutOfRange,
    ProtocolError,
    StreamNotFound,
)

if TYPE_CHECKING:
    from rstream.client.changelog import Overflow
    from rstream.client.health import Health
    from rstream.client.live import LiveTail
    from rstream.client.queues import StateQueue
    from rstream.client.storecache import StreamCache
    from rstream.client.subscription import Subscription

__all__ = ["RemoteStream", "StreamMetadata"]  # StreamMetadata: see rstream.client.metadata

_ONE_ATTEMPT = blocking_policy(
    tenacity.Retrying(stop=tenacity.stop_after_attempt(1)), sleep=lambda seconds: None
)
"""A request tried once (for the live tail, which has its own backoff)."""

State = dict[str, Any]


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
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        sleep: Callable[[float], None] | None = None,
        on_close: Callable[[RemoteStream], None] | None = None,
        disk: StreamCache | None = None,
    ) -> None:
        self.id = stream_id
        self._path = f"/v1/streams/{quote_stream_id(stream_id)}"
        self._transport = transport
        self._pages = PageFetcher(
            transport,
            stream_id,
            self._path,
            executor=executor,
            prefetch=prefetch,
            page_size=page_size,
        )
        self._heartbeat_timeout = heartbeat_timeout
        self._max_event_bytes = max_event_bytes
        self._sleep = sleep
        self._on_close = on_close
        self._lock = threading.Lock()
        self._closed = False
        self._first: int | None = None  # the first entry's time, once known
        self.windows = WindowStore(
            self._fetch_bounds,
            self._fetch_window_entries,
            max_cached_entries=max_cached_entries,
            disk=disk,
        )
        """The window cache (see :mod:`rstream.client.windows`)."""
        self._follow = Follow(self.id, self.windows, self._new_tail, self._check_open)

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
        tail = self._follow.current
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
        # A walk of the live window: what a pass already read of it is not fetched again.
        newest = last_pair(self._walk(bounds.start, None))
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
        get private copies (each costs a deep copy). ``state_at`` and the
        subscribers of the live tail always get private copies.
        """
        step_us = None if step is None else step_micros(step)
        start_us = None if start is None else to_micros(start)
        end_us = None if end is None else to_micros(end)
        if start_us is not None and end_us is not None and end_us < start_us:
            raise ConfigError(
                f"end ({format_rfc3339(end_us)}) is before start ({format_rfc3339(start_us)}); "
                "swap them"
            )
        self._check_open()
        return history_pairs(self._walk(start_us, end_us), start_us, end_us, step_us, copy)

    def entries(
        self, start: TimeLike | None = None, end: TimeLike | None = None
    ) -> Iterator[Entry]:
        """The raw entries with ``start <= timestamp < end``, fetched page by page."""
        start_us = None if start is None else to_micros(start)
        end_us = None if end is None else to_micros(end)
        self._check_open()
        return self._pages.entries(start_us, end_us)

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
        retention: timedelta | EllipsisType | None = ...,
    ) -> StreamMetadata:
        """Set how the server's writer records :meth:`write_state` (``PUT /v1/streams/{id}``).

        ``keyframe_frequency``: a write this long after the newest snapshot is
        stored as a new snapshot (default 60 s). ``change_frequency``: a write
        sooner than this after the newest mutation amends that mutation
        instead of adding one (default 1 s); ``timedelta(0)`` records every
        write that changes the state. A rate not given keeps the stream's
        current one (asked with :meth:`info`). ``retention``: the server
        deletes whole windows that ended longer ago than this (never the
        newest snapshot); ``None`` keeps everything; not given: unchanged.
        Reads before the oldest kept entry then raise
        :class:`~rstream.OutOfRange`. Creates the stream if it does not exist.
        Returns the metadata as :meth:`info` would.

        Raises ``TypeError`` for a value that is not a ``timedelta``, and
        :class:`~rstream.ConfigError` for a negative one or for none given,
        before anything is sent.
        """
        rate, body = rate_given(keyframe_frequency, change_frequency, retention)
        self._check_open()
        if rate and len(rate) < 2:
            # A stream not found yet is created with the server's default for the rest.
            with contextlib.suppress(StreamNotFound):
                rate = self.info().rate_with(rate)
        if rate:
            body["record_rate"] = RateConfig(**rate).to_json()
        return StreamMetadata.from_json(self._send("PUT", self._path, json=body))

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
        return read_write_answer(self._send("POST", self._path + "/state", json=body))

    def append_entries(self, entries: bytes | str | Iterable[Entry]) -> int:
        """Append raw entries (NDJSON, or Entry objects), all or nothing; the new revision."""
        self._check_open()
        if isinstance(entries, str):
            body = entries.encode()
        elif isinstance(entries, bytes):
            body = entries
        else:
            body = encode_ndjson(entries)
        headers = {"Content-Type": NDJSON}
        answer = self._send("POST", self._path + "/entries", data=body, headers=headers)
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
        return self._follow.tail().subscribe(
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
        return self._follow.tail().states(
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
        tail = self._follow.current
        if tail is not None:
            return tail.health
        from rstream.client.health import NOT_FOLLOWING

        return NOT_FOLLOWING

    @property
    def _tail(self) -> LiveTail | None:
        """The live tail, if one was started (tests and benchmarks look at it)."""
        return self._follow.current

    def _new_tail(self, on_commit: Callable[[list[Entry]], None]) -> LiveTail:
        from rstream.client.live import LiveTail

        return LiveTail(
            self._transport,
            self.id,
            heartbeat_timeout=self._heartbeat_timeout,
            max_event_bytes=self._max_event_bytes,
            on_commit=on_commit,
            capacity=self.windows.max_cached_entries,
            fetch=self._entries_from,
            current_revision=self._revision,
            sleep=self._sleep,
        )

    def _entries_from(self, start: int) -> Iterator[Entry]:
        """The entries from ``start`` on: what a subscriber that fell behind missed."""
        self._check_open()
        return self._pages.entries(start, None)

    def _revision(self) -> int:
        """The stream's revision now (the live tail's backlog ends there).

        One attempt: the live tail retries with its own backoff, which
        ``close()`` cuts short, where the blocking policy's waits would hold it.
        """
        self._check_open()
        return StreamMetadata.from_json(self._send("GET", self._path, retry=_ONE_ATTEMPT)).revision

    # -- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the live tail, drop the cache, abort page reads. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._follow.close()
        self.windows.close()
        self._pages.close()
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

    # -- HTTP ----------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer to one request (see :meth:`Transport.request`)."""
        response = self._transport.request(method, path, stream_id=self.id, **kwargs)
        try:
            return json_body(response)
        finally:
            response.close()

    def _fetch_bounds(self, at: int | None) -> Bounds:
        params = None if at is None else {"at": format_rfc3339(at)}
        obj = self._transport.get_json(self._path + "/window", params=params, stream_id=self.id)
        return read_bounds(obj)

    def _fetch_window_entries(self, start: int, end: int) -> list[Entry]:
        return list(self._pages.entries(start, end))

    def _live_state_at(self, at: int) -> State:
        """The state at ``at`` in the LIVE window: from the live tail's window when a
        tail runs, else from a walk of the window (what a history pass already read
        of it is not fetched again, see :mod:`rstream.client.history`)."""
        tail = self._follow.current
        if tail is not None:
            live = tail.live_window()
            if live and live[0].micros <= at:
                return state_in(live, [e.micros for e in live], at)[1]
        first = first_pair(self._walk(at, at + 1))
        if first is not None:
            return first[1]
        raise OutOfRange(f"no state of {self.id!r} at {format_rfc3339(at)}")

    def _first_micros(self) -> int | None:
        """The stream's first timestamp (asked once: entries are never removed)."""
        if self._first is None:
            first = self.info().first
            if first is not None:
                self._first = to_micros(first)
        return self._first

    def _walk(self, start: int | None, end: int | None) -> Iterable[list[Run]]:
        """A pass over ``[start, end)`` (``start`` None: from the stream's first entry)."""
        if start is None:
            start = self._first_micros()
            if start is None:
                return []
        return Walk(self.windows, self._pages.bodies, start, end)
