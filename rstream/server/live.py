"""The live tail: an in-process fan-out hub and the Server-Sent Events generator.

Writers only *notify* (:meth:`Hub.notify`, callable from any thread); they never
wait for a subscriber. A notification wakes every subscriber of that stream,
and each subscriber reads what it has not sent yet, by revision, from a small
per-stream cache of recent changes (one storage read of
``log.changes_since(rev)`` fills it for every subscriber). Revisions are the
only cursor, so resuming after a disconnect is exact, and a storage with its
own change feed (PostgreSQL LISTEN/NOTIFY) drives the same hub by calling
``notify``.

A subscriber that falls further behind than the limits allow (events or
bytes written but not yet handed to its connection) is disconnected; unsent
events are never buffered per subscriber (they stay in the log), so a slow
reader costs the server its socket buffers and nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from bisect import bisect_right
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread

from rstream.core.entry import Entry
from rstream.core.wire import encode_entry
from rstream.server.errors import fail
from rstream.server.limits import Limits

__all__ = ["Change", "Hub", "Subscriber", "live_events"]

logger = logging.getLogger("rstream.server.live")

_FRAME_CHUNK = 256 * 1024  # join small events into writes of about this size
_WINDOW_PAGE = 1_000  # entries per storage read while sending the live window
_FOREVER_US = 2**62  # an end time after every entry


@dataclass(frozen=True, slots=True)
class Change:
    """One change as sent to subscribers: its revision, time and encoded entry."""

    rev: int
    micros: int
    payload: bytes


def _rev_of(change: Change) -> int:
    return change.rev


class LiveLog(Protocol):
    """What the live tail needs of a stream's log (a subset of ``StreamLog``)."""

    @property
    def revision(self) -> int: ...

    def changes_since(self, rev: int) -> Sequence[Entry]: ...


class Subscriber:
    """One live connection's position in the hub. Used on the event loop only."""

    __slots__ = (
        "closing",
        "on_overflow",
        "overflowed",
        "sending",
        "sent_cum",
        "sent_rev",
        "stream_id",
        "wake",
    )

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.wake = asyncio.Event()
        self.sent_rev: int | None = None  # None until the first catch-up is sent
        self.sent_cum = 0
        self.closing = False  # the server is stopping: end the response cleanly
        self.overflowed = False  # too far behind: the connection is dropped
        # Handing events to the connection (blocked while the client does not read).
        # Only then does lag count: a subscriber that is fetching is keeping up.
        self.sending = False
        self.on_overflow: Callable[[], object] | None = None

    def __repr__(self) -> str:
        return f"<Subscriber {self.stream_id!r} sent_rev={self.sent_rev}>"


class _Topic:
    """A stream's subscribers, notification counters and tail cache."""

    __slots__ = ("cum", "hi", "items", "lo", "lock", "marks", "rev", "size", "subscribers")

    def __init__(self, marks: int) -> None:
        self.subscribers: set[Subscriber] = set()
        self.rev = 0  # newest revision notified (or read)
        self.cum = 0  # bytes notified so far
        self.marks: deque[tuple[int, int, int]] = deque(maxlen=marks)  # (rev, cum after, nbytes)
        # The cache holds every change with lo < rev <= hi, oldest first.
        self.lo: int | None = None
        self.hi = 0
        self.items: list[Change] = []
        self.size = 0  # bytes of the payloads in items
        self.lock = asyncio.Lock()  # one storage read at a time fills the cache

    def cum_at(self, rev: int) -> int:
        if rev >= self.rev or not self.marks:
            return self.cum
        revs = [m[0] for m in self.marks]
        i = bisect_right(revs, rev)
        if i:
            return self.marks[i - 1][1]
        _, first_cum, first_bytes = self.marks[0]
        return first_cum - first_bytes

    def after(self, rev: int) -> list[Change]:
        # Items are in revision order; a key avoids building a list per call.
        return self.items[bisect_right(self.items, rev, key=_rev_of) :]

    def add(self, changes: Sequence[Change], max_items: int, max_bytes: int) -> None:
        for change in changes:
            if change.rev > self.hi:
                self.items.append(change)
                self.size += len(change.payload)
                self.hi = change.rev
        self.rev = max(self.rev, self.hi)
        drop = 0
        while drop < len(self.items) and (
            len(self.items) - drop > max_items or self.size > max_bytes
        ):
            self.size -= len(self.items[drop].payload)
            drop += 1
        if drop:
            self.lo = self.items[drop - 1].rev
            del self.items[:drop]


class Hub:
    """Fans writes out to live subscribers, per stream.

    ``notify(stream_id, rev, nbytes)`` may be called from any thread once the
    hub is bound to its event loop (:meth:`bind`); everything else runs on
    that loop.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._topics: dict[str, _Topic] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.overflows = 0  # subscribers disconnected for being too slow
        self.subscribed = 0  # subscribers ever registered
        self.events_sent = 0  # entry and amend events handed to live connections
        self._cache_limits = (self.limits.tail_cache_events, self.limits.tail_cache_bytes)

    # -- any thread ---------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the hub to the event loop its subscribers live on."""
        self._loop = loop
        self._closed = False

    def notify(self, stream_id: str, rev: int, nbytes: int = 0) -> None:
        """Revision ``rev`` of ``stream_id`` was written (``nbytes``: its encoded size).

        Thread-safe and non-blocking; a no-op before :meth:`bind`, after close,
        and for a stream without subscribers.
        """
        loop = self._loop
        # Nobody follows the stream: no need to wake the loop (a write's own
        # answer wakes it already). A subscriber registered after this check
        # reads the log after it, so it still sees this revision; ``in`` on a
        # dict is atomic under CPython's GIL, like streams()' copy.
        if loop is None or self._closed or stream_id not in self._topics:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens any more
            loop.call_soon_threadsafe(self._dispatch, stream_id, rev, nbytes)

    # -- event loop ---------------------------------------------------------------

    def subscribe(self, stream_id: str) -> Subscriber:
        """Register a subscriber; 429 ``too_many_subscribers`` past the limit."""
        if self._closed:
            fail(503, "unavailable", "the server is shutting down")
        topic = self._topics.get(stream_id)
        if topic is None:
            topic = self._topics[stream_id] = _Topic(self.limits.subscriber_events + 1)
        if len(topic.subscribers) >= self.limits.max_subscribers:
            fail(
                429,
                "too_many_subscribers",
                f"stream {stream_id!r} has {len(topic.subscribers)} subscribers (the limit)",
            )
        subscriber = Subscriber(stream_id)
        topic.subscribers.add(subscriber)
        self.subscribed += 1
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a subscriber (idempotent); a stream without subscribers drops its cache."""
        topic = self._topics.get(subscriber.stream_id)
        if topic is None:
            return
        topic.subscribers.discard(subscriber)
        if not topic.subscribers:
            del self._topics[subscriber.stream_id]

    def streams(self) -> list[str]:
        """The ids of the streams that have subscribers; callable from any thread.

        A storage's change feed asks this after reconnecting, to re-announce
        those streams' revisions (``notify``) so no subscriber misses a change.
        """
        # list(dict) copies in C without running Python code, so the loop thread
        # cannot change the dict mid-copy (CPython's GIL).
        return list(self._topics)

    def subscriber_count(self, stream_id: str) -> int:
        topic = self._topics.get(stream_id)
        return 0 if topic is None else len(topic.subscribers)

    def close(self) -> None:
        """Ask every subscriber to end its response, and refuse new ones."""
        self._closed = True
        for topic in self._topics.values():
            for subscriber in topic.subscribers:
                subscriber.closing = True
                subscriber.wake.set()

    def _dispatch(self, stream_id: str, rev: int, nbytes: int) -> None:
        topic = self._topics.get(stream_id)
        if topic is None:
            return
        if rev > topic.rev:
            topic.rev = rev
        topic.cum += nbytes
        topic.marks.append((rev, topic.cum, nbytes))
        max_events = self.limits.subscriber_events
        max_bytes = self.limits.subscriber_bytes
        for subscriber in topic.subscribers:
            subscriber.wake.set()
            if subscriber.sent_rev is None or subscriber.overflowed or not subscriber.sending:
                continue
            if (
                topic.rev - subscriber.sent_rev > max_events
                or topic.cum - subscriber.sent_cum > max_bytes
            ):
                self._overflow(subscriber, topic)

    def _overflow(self, subscriber: Subscriber, topic: _Topic) -> None:
        subscriber.overflowed = True
        self.overflows += 1
        logger.warning(
            "disconnecting a slow subscriber of %r: %d events / %d bytes behind",
            subscriber.stream_id,
            topic.rev - (subscriber.sent_rev or 0),
            topic.cum - subscriber.sent_cum,
        )
        if subscriber.on_overflow is not None:
            subscriber.on_overflow()

    def mark_sent(self, subscriber: Subscriber, rev: int) -> None:
        """``subscriber``'s connection has been handed every change up to ``rev``."""
        subscriber.sent_rev = rev
        topic = self._topics.get(subscriber.stream_id)
        if topic is not None:
            subscriber.sent_cum = topic.cum_at(rev)

    async def changes_after(self, subscriber: Subscriber, rev: int, log: LiveLog) -> list[Change]:
        """The changes with a revision after ``rev``, from the cache when it has them."""
        topic = self._topics.get(subscriber.stream_id)
        if topic is None:  # not subscribed (closing): read directly
            return await _read_changes(log, rev)
        if topic.lo is not None and rev >= topic.lo and topic.rev <= topic.hi:
            return topic.after(rev)
        if topic.lo is not None and rev < topic.lo:
            return await _read_changes(log, rev)  # behind the cache: a read of its own
        async with topic.lock:
            if topic.lo is None:
                changes = await _read_changes(log, rev)
                if topic.lo is None:
                    topic.lo = topic.hi = rev
                    topic.add(changes, *self._cache_limits)
                return changes
            if topic.rev > topic.hi:
                topic.add(await _read_changes(log, topic.hi), *self._cache_limits)
        if rev >= topic.lo:
            return topic.after(rev)
        return await _read_changes(log, rev)


async def _read_changes(log: LiveLog, rev: int) -> list[Change]:
    def read() -> list[Change]:
        return [Change(e.rev or 0, e.micros, encode_entry(e)) for e in log.changes_since(rev)]

    return await anyio.to_thread.run_sync(read)


# -- the event stream --------------------------------------------------------------


def _frame(event: str, rev: int, payload: bytes) -> bytes:
    return b"event: %s\nid: %d\ndata: %s\n\n" % (event.encode(), rev, payload)


#: Reads the live window in pages: ``(after_us, limit) -> changes`` (``after_us``
#: None: from the window's snapshot), each entry encoded.
WindowReader = Callable[[int | None, int], list[Change]]


async def live_events(
    hub: Hub,
    subscriber: Subscriber,
    log: LiveLog,
    read_window: WindowReader,
    *,
    since: int | None,
    reset_reason: str | None = None,
    retry_ms: int,
) -> AsyncIterator[bytes]:
    """The bytes of one live response: ``retry:``, the catch-up, then each change.

    ``since`` is the resume revision (None: start with the live window);
    ``reset_reason`` forces a ``reset`` event first (an unreadable resume point).
    ``read_window(after_us, limit)`` returns the live window's entries after
    ``after_us`` (None: from its snapshot), at most ``limit`` of them, encoded.
    """
    yield b"retry: %d\n\n" % retry_ms
    newest_us: int | None = None
    if since is not None or reset_reason is not None:
        revision = await anyio.to_thread.run_sync(lambda: log.revision)
        if since is not None and since > revision:
            reset_reason = f"resume point {since} is ahead of the stream (revision {revision})"
        if reset_reason is not None:
            yield _reset_frame(reset_reason, revision)
            since = None
    if since is None:
        # The live window, in pages; revisions grow along the log, so the last
        # entry sent is the revision to continue from.
        since = 0
        after_us: int | None = None
        while True:
            page = await anyio.to_thread.run_sync(read_window, after_us, _WINDOW_PAGE)
            if not page:
                break
            yield b"".join(_frame("entry", c.rev, c.payload) for c in page)
            hub.events_sent += len(page)
            since = max(since, page[-1].rev)
            after_us = newest_us = page[-1].micros
            if len(page) < _WINDOW_PAGE:
                break
    hub.mark_sent(subscriber, since)
    while not subscriber.closing:
        subscriber.wake.clear()
        changes = await hub.changes_after(subscriber, since, log)
        if not changes:
            await subscriber.wake.wait()
            continue
        subscriber.sending = True
        for data in _chunks(hub, subscriber, changes, newest_us):
            yield data
        subscriber.sending = False
        since, newest_us = changes[-1].rev, changes[-1].micros
        hub.mark_sent(subscriber, since)


def _chunks(
    hub: Hub, subscriber: Subscriber, changes: list[Change], newest_us: int | None
) -> Iterator[bytes]:
    """The frames of ``changes`` joined in chunks of about ``_FRAME_CHUNK`` bytes.

    A change at the time of the one before it (``newest_us`` for the first) is
    an ``amend``. Each chunk counts as sent once the caller asks for the next.
    """
    chunk: list[bytes] = []
    size = 0
    for change in changes:
        event = "amend" if change.micros == newest_us else "entry"
        frame = _frame(event, change.rev, change.payload)
        chunk.append(frame)
        size += len(frame)
        newest_us = change.micros
        if size >= _FRAME_CHUNK:
            yield b"".join(chunk)
            hub.events_sent += len(chunk)
            chunk, size = [], 0
            hub.mark_sent(subscriber, change.rev)
    if chunk:
        yield b"".join(chunk)
        hub.events_sent += len(chunk)


def _reset_frame(reason: str, revision: int) -> bytes:
    """A ``reset`` with an empty ``id:``, which clears a browser's last event ID:
    a connection dropped before the new window's snapshot then resumes without a
    resume point, onto the snapshot, instead of past it (the window's
    revisions are lower than the stream's)."""
    data: dict[str, Any] = {"reason": reason, "revision": revision}
    return b"event: reset\nid:\ndata: %s\n\n" % json.dumps(data, separators=(",", ":")).encode()
