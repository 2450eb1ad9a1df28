"""Pages of entries: fetched on the client's worker pool, each requested as soon as
the page before names it (``RStream-Next-Start``).

:class:`PageChain` is the prefetch: at most ``depth`` pages in flight or
waiting to be read. :class:`PageFetcher` does the HTTP for one stream (``GET
/v1/streams/{id}/entries``) and can abort the bodies being read when the stream
closes. Pages are asked for in the columns form (:data:`~rstream.core.wire.COLUMNS`),
and read in whichever form the server sends. Workers only fetch (and gunzip,
which runs without the GIL); the thread that iterates parses: parsing holds the
GIL, so spread over workers it would only take turns, and a page parsed ahead
keeps its objects alive longer, which the garbage collector then scans.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Executor, Future
from typing import NamedTuple

import requests

from rstream.client.interrupt import shutdown
from rstream.client.transport import Transport
from rstream.core.entry import Entry
from rstream.core.timestamps import format_rfc3339, parse_rfc3339
from rstream.core.wire import (
    COLUMNS,
    NDJSON,
    Page,
    decode_page,
    page_entries,
    read_columns,
    read_page,
)
from rstream.errors import ClientClosed, InvalidTimestamp, ProtocolError, TransportError

__all__ = ["NDJSON", "Body", "PageChain", "PageFetcher"]

_CHUNK = 2**20  # bytes read from a page body at a time
_ACCEPT = f"{COLUMNS}, {NDJSON};q=0.5"


class Body(NamedTuple):
    """A page's body as a worker fetched it."""

    url: str
    """Where it came from (for errors)."""
    chunks: list[bytes]
    """Its bytes, as read."""
    columns: bool = False
    """Whether it is in the columns form (else NDJSON)."""

    def text(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)

    def page(self) -> Page:
        """Its entries by field; :class:`~rstream.ProtocolError` if malformed."""
        reader = read_columns if self.columns else read_page
        return reader(self.text(), self.url)

    def entries(self) -> list[Entry]:
        """Its entries; :class:`~rstream.ProtocolError` if malformed."""
        if self.columns:
            return page_entries(read_columns(self.text(), self.url))
        return decode_page(self.chunks, self.url)


_CLOSED = "the client is closed; create a new rstream.Client"


class PageChain:
    """The pages of one range, each requested as soon as the page before names it.

    ``fetch(chain, start, end)`` runs on a worker: it hands the page's next
    start to :meth:`next_start` *before* reading the body, so the next request
    leaves at once from that worker and the server's work, the network and the
    parsing overlap. At most ``depth`` pages are in flight or waiting to be
    read (the reader's own included); a next start learned beyond that waits
    for the reader to move on. One thread iterates; workers call
    :meth:`next_start`.
    """

    def __init__(
        self,
        fetch: Callable[[PageChain, int | None, int | None], Body],
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
        self._queue: deque[Future[Body]] = deque()
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

    def __iter__(self) -> Iterator[Body]:
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
            raise ClientClosed(_CLOSED) from None
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
            self._error = ClientClosed(_CLOSED)
            return
        self._queue.append(future)
        self._in_flight += 1


class PageFetcher:
    """The entry pages of one stream, over HTTP, prefetched on ``executor``.

    Thread-safe. :meth:`close` aborts the bodies being read; later calls raise
    :class:`~rstream.ClientClosed`.
    """

    def __init__(
        self,
        transport: Transport,
        stream_id: str,
        path: str,
        *,
        executor: Executor,
        prefetch: int,
        page_size: int | None,
    ) -> None:
        self._transport = transport
        self._stream_id = stream_id
        self._path = path + "/entries"
        self._executor = executor
        self._prefetch = max(1, prefetch)
        self._page_size = page_size
        self._lock = threading.Lock()
        self._closed = False
        self._responses: set[requests.Response] = set()  # open page bodies, for close()

    def bodies(self, start: int | None, end: int | None) -> Iterator[Body]:
        """The page bodies of ``[start, end)``, fetched up to ``prefetch`` ahead."""
        try:
            chain = PageChain(self._fetch, self._executor, start, end, self._prefetch)
            yield from chain
        except ClientClosed:
            raise ClientClosed(f"stream {self._stream_id!r} is closed") from None

    def entries(self, start: int | None, end: int | None) -> Iterator[Entry]:
        """The entries of ``[start, end)``, in order."""
        for body in self.bodies(start, end):
            yield from body.entries()

    def close(self) -> None:
        """Abort the bodies being read. Idempotent."""
        with self._lock:
            self._closed = True
            responses = list(self._responses)
        for response in responses:
            _abort(response)

    def _check_open(self) -> None:
        if self._closed or self._transport.closed:
            raise ClientClosed(
                f"stream {self._stream_id!r} is closed; open it again from a new Client"
            )

    def _fetch(self, chain: PageChain, start: int | None, end: int | None) -> Body:
        """One page (on a worker): pass its next start to ``chain``, then read the body."""
        self._check_open()
        response = self._transport.request(
            "GET",
            self._path,
            params=self._params(start, end),
            headers={"Accept": _ACCEPT},
            stream=True,
            stream_id=self._stream_id,
        )
        with self._lock:
            self._responses.add(response)
        try:
            chain.next_start(_next_start(response, start))
            chunks: list[bytes] = []
            try:
                for chunk in response.iter_content(chunk_size=_CHUNK):
                    if chain.stopped:
                        return Body(response.url, [])  # nobody will read this page
                    chunks.append(chunk)
            except (requests.RequestException, OSError, AttributeError, ValueError) as exc:
                self._check_open()  # an aborted read after close() is not news
                raise TransportError(
                    f"reading entries of {self._stream_id!r} from {response.url} failed: {exc}"
                ) from exc
            media_type = response.headers.get("Content-Type", "").partition(";")[0]
            return Body(response.url, chunks, media_type.strip().lower() == COLUMNS)
        finally:
            with self._lock:
                self._responses.discard(response)
            response.close()

    def _params(self, start: int | None, end: int | None) -> dict[str, str]:
        params: dict[str, str] = {}
        if start is not None:
            params["start"] = format_rfc3339(start)
        if end is not None:
            params["end"] = format_rfc3339(end)
        if self._page_size is not None:
            params["limit"] = str(self._page_size)
        return params


def _next_start(response: requests.Response, start: int | None) -> int | None:
    """The page's ``RStream-Next-Start`` (None: the last page); ProtocolError if bad."""
    raw = response.headers.get("RStream-Next-Start")
    try:
        next_start = None if not raw else parse_rfc3339(raw)
    except InvalidTimestamp as exc:
        raise ProtocolError(f"malformed RStream-Next-Start header {raw!r}: {exc}") from None
    if next_start is not None and start is not None and next_start <= start:
        raise ProtocolError(f"RStream-Next-Start {raw!r} does not move forward")
    return next_start


def _abort(response: requests.Response) -> None:
    """Shut down the socket under a response another thread may be reading."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        shutdown(sock)
    response.close()
