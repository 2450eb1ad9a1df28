"""What every route of one app shares: its storage and settings, the worker
threads that run storage calls, and the reading of a request's stream id and body.

The routes themselves live by concept: :mod:`rstream.server.reads` (metadata,
windows, pages, the live tail) and :mod:`rstream.server.writes` (states,
entries, rate); :mod:`rstream.server.app` puts them together.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import quote, unquote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from rstream.core.stream import Clock
from rstream.errors import StreamNotFound
from rstream.server.auth import Tokens
from rstream.server.compaction import Compactor
from rstream.server.errors import fail
from rstream.server.limits import Limits
from rstream.server.live import Hub
from rstream.server.storage import Storage, StreamInfo, is_valid_stream_id

__all__ = [
    "ABORT_KEY",
    "READ_WORKERS",
    "WRITE_WORKERS",
    "AppContext",
    "SafeJSONResponse",
    "bad_id_message",
    "decodable",
    "raw_path",
    "stream_id_of",
]

_T = TypeVar("_T")

#: The scope key of a function that resets the request's connection (see
#: ``rstream.server.app``); the live tail drops a connection it cannot finish.
ABORT_KEY = "rstream.abort_connection"
#: Worker threads for storage reads (anyio's default for to_thread, which this replaces).
READ_WORKERS = 40
#: Worker threads for writes (see :meth:`AppContext.writing`).
WRITE_WORKERS = 8


@dataclass
class AppContext:
    """One app's shared state. Storage calls block (sqlite3, psycopg): routes
    run them with :meth:`blocking` or :meth:`writing`, never on the event loop."""

    storage: Storage
    tokens: Tokens
    limits: Limits
    hub: Hub
    compactor: Compactor
    heartbeat: float
    retry_ms: int
    clock: Clock | None
    store_id: str = ""
    _pools: dict[str, concurrent.futures.ThreadPoolExecutor] = field(
        default_factory=dict, repr=False
    )
    _pools_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        # Read once: a store's id never changes (clients tell stores apart by it).
        self.store_id = self.storage.store_id

    async def blocking(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on a worker thread, awaited on the event loop.

        The call runs to its end even if the request is cancelled meanwhile,
        so whatever must follow a write (the live notification) belongs inside
        ``fn``.
        """
        # A plain pool: about 0.1 ms less CPU per request than
        # anyio.to_thread.run_sync (python -m bench ingest).
        return await self._run("read", READ_WORKERS, fn, *args)

    async def writing(self, fn: Callable[..., _T], *args: Any) -> _T:
        """:meth:`blocking` for a write, on a pool of its own of :data:`WRITE_WORKERS`
        threads (writes beyond them wait in its queue, holding no thread)."""
        # Few write threads: at 64 connections, 8 rather than 40 buy 1.5x the
        # writes/s and a third less CPU per write (less contention for the GIL).
        return await self._run("write", WRITE_WORKERS, fn, *args)

    async def _run(self, pool: str, workers: int, fn: Callable[..., _T], *args: Any) -> _T:
        executor = self._pools.get(pool) or self._pool(pool, workers)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Outcome] = loop.create_future()
        executor.submit(_settle, loop, future, fn, args)
        # The exception comes back as a value: asyncio would replace a
        # TimeoutError by a copy without its traceback.
        result, error = await future
        if error is not None:
            raise error
        return cast(_T, result)

    def _pool(self, pool: str, workers: int) -> concurrent.futures.ThreadPoolExecutor:
        with self._pools_lock:
            executor = self._pools.get(pool)
            if executor is None:
                executor = self._pools[pool] = concurrent.futures.ThreadPoolExecutor(
                    workers, thread_name_prefix=f"rstream-server-{pool}"
                )
            return executor

    def close(self) -> None:
        """Wait for the storage calls running and stop the worker threads
        (idempotent; a later call starts new ones)."""
        with self._pools_lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for executor in pools:
            executor.shutdown(wait=True)

    def info(self, stream_id: str) -> StreamInfo:
        """The stream's metadata; :class:`~rstream.StreamNotFound` when there is none."""
        info = self.storage.info(stream_id)
        if info is None:
            raise StreamNotFound(f"no stream {stream_id!r}", stream_id=stream_id)
        return info

    def retains(self, info: StreamInfo) -> bool:
        """Whether compaction may delete some of the stream's entries."""
        return info.rate.retention is not None or self.compactor.default_retention is not None

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it is known to be too large."""
        limit = self.limits.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                fail(400, "bad_request", "Content-Length is not a number")
            if int(length) > limit:
                fail(413, "too_large", f"request body of {int(length)} bytes is over {limit}")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    fail(413, "too_large", f"request body is over {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            fail(400, "bad_request", "the request body was cut short")
        return b"".join(chunks)


_Outcome = tuple[Any, BaseException | None]


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[_Outcome],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    """On a worker: run ``fn(*args)`` and hand its outcome to ``future`` on the loop."""
    # Not run_in_executor: its second future, chained to this one, costs the loop more.
    try:
        outcome: _Outcome = (fn(*args), None)
    except BaseException as exc:  # delivered to the awaiting request
        outcome = (None, exc)
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        loop.call_soon_threadsafe(_set_outcome, future, outcome)


def _set_outcome(future: asyncio.Future[_Outcome], outcome: _Outcome) -> None:
    if not future.cancelled():  # the request was cancelled; the call ran anyway
        future.set_result(outcome)


class SafeJSONResponse(JSONResponse):
    """A JSON response whose states may hold lone surrogates (``"\\ud800"``,
    which JSON text may carry but UTF-8 cannot): those are sent in the escaped
    ASCII form, as storage keeps them, instead of failing."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
            return text.encode("ascii")


def stream_id_of(request: Request) -> str:
    """The request's stream id; 400 ``invalid_stream_id`` unless the protocol allows it."""
    stream_id: str = request.path_params["stream_id"]
    # Routing matches the decoded path, so "a%2Fwindow" arrives as id "a": check
    # that the raw path has no encoded "/" (no valid id contains one).
    if not is_valid_stream_id(stream_id) or "%2f" in raw_path(request).lower():
        fail(400, "invalid_stream_id", bad_id_message(stream_id))
    return stream_id


def raw_path(request: Request) -> str:
    """The request's path as sent (percent-escapes kept), without the query."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("latin-1").partition("?")[0]
    return quote(request.url.path)


def decodable(text: str) -> bool:
    """Whether ``text``'s percent-escapes decode as UTF-8."""
    try:
        unquote(text, errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def bad_id_message(stream_id: str) -> str:
    """What a 400 ``invalid_stream_id`` says."""
    shown = stream_id if len(stream_id) <= 40 else stream_id[:40] + "..."
    return (
        f"invalid stream id {shown!r}: use 1 to 128 characters from A-Z a-z 0-9 . _ ~ -, "
        "not starting with '.'"
    )
