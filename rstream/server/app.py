"""The reference server: the routes of ``docs/protocol.rst`` over a :class:`Storage`.

Storage calls are synchronous (sqlite3), so every handler runs them in the
thread pool and keeps the event loop free for the live tail. Writes go through
one :class:`~rstream.core.stream.Stream` per stream id (created lazily), under a
per-stream lock so the answer's ``action`` is the one of this write, and then
notify the :class:`~rstream.server.live.Hub`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlencode

import anyio
import anyio.to_thread
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import apply_mutation
from rstream.core.stream import Clock, RateConfig, Stream
from rstream.core.timestamps import format_rfc3339, from_micros
from rstream.core.wire import (
    COLUMNS,
    ROW_BYTES,
    STORE_ID_HEADER,
    encode_entry,
    encode_page,
    encode_row,
)
from rstream.errors import ConfigError, MutationError, OutOfRange, StreamNotFound
from rstream.server.auth import Tokens
from rstream.server.compaction import Compactor
from rstream.server.compression import accepts_columns, negotiated
from rstream.server.connections import reset
from rstream.server.cors import CORSMiddleware, normalize_origin
from rstream.server.errors import error_response, exception_handlers, fail, unexpected_response
from rstream.server.limits import Limits
from rstream.server.live import Change, Hub, Subscriber, live_events
from rstream.server.metrics import install_metrics
from rstream.server.openapi import openapi_document
from rstream.server.params import (
    MAX_HEARTBEAT,
    MIN_HEARTBEAT,
    check_state_depth,
    heartbeat_param,
    limit_param,
    parse_entries,
    parse_json,
    parse_rate_body,
    parse_state_write,
    resume_point,
    state_size,
    time_param,
)
from rstream.server.security import BrowserGuard
from rstream.server.storage import Storage, StreamInfo, StreamLog, is_valid_stream_id
from rstream.server.storage.base import check_batch_order, check_entry_time, clamp_us
from rstream.server.ui import ui_routes

__all__ = ["create_app"]

logger = logging.getLogger("rstream.server")

NDJSON = "application/x-ndjson"
IMMUTABLE = "public, max-age=31536000, immutable"
_ABORT_KEY = "rstream.abort_connection"
# The methods of each route under /v1/streams/{id}, by path suffix.
_ALLOWED = {
    "": ("GET", "HEAD", "PUT"),
    "/window": ("GET", "HEAD"),
    "/entries": ("GET", "HEAD", "POST"),
    "/live": ("GET", "HEAD"),
    "/state": ("POST",),
}


def create_app(
    storage: Storage,
    *,
    read_token: str | None = None,
    write_token: str | None = None,
    heartbeat: float = 15.0,
    retry_ms: int = 1000,
    limits: Limits | None = None,
    clock: Clock | None = None,
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
    cors_origins: Sequence[str] = (),
    metrics: bool = False,
    compactor: Compactor | None = None,
) -> Starlette:
    """The ASGI application of the rstream protocol over ``storage``.

    ``heartbeat``: seconds between ``: ping`` comments on live responses (a
    request may ask for another with ``?heartbeat=``). ``retry_ms``: the SSE
    ``retry:`` sent first. ``clock``: the writers' clock (epoch micros or an
    aware datetime), for tests. ``cors_origins``: origins whose pages may read
    (:mod:`rstream.server.cors`). The app does not close ``storage``.

    ``allowed_hosts`` / ``allowed_origins``: what ``Host`` may name besides
    loopback, IP addresses and this machine's name (``"*"``: anything), and
    which web pages may write (:mod:`rstream.server.security`).

    ``metrics``: serve ``GET /metrics`` (Prometheus; :mod:`rstream.server.metrics`).
    ``compactor``: applies the streams' retention while the app runs (its
    thread starts with the app's lifespan and is closed at its end); default:
    ``Compactor(storage)``, every 60 s, no default retention. It is
    ``app.state.compactor`` (its counters: :mod:`rstream.server.compaction`).

    ``app.state.hub`` is the live :class:`~rstream.server.live.Hub`; a storage
    with an external change feed calls ``app.state.hub.notify(stream_id, rev)``.
    """
    if not MIN_HEARTBEAT <= heartbeat <= MAX_HEARTBEAT:
        raise ConfigError(f"heartbeat must be between {MIN_HEARTBEAT} and {MAX_HEARTBEAT} s")
    if type(retry_ms) is not int or retry_ms < 0:
        raise ConfigError(f"retry_ms must be a non-negative int, not {retry_ms!r}")
    server = _Server(
        storage,
        Tokens(read_token, write_token),
        heartbeat=heartbeat,
        retry_ms=retry_ms,
        limits=limits or Limits(),
        clock=clock,
        compactor=compactor or Compactor(storage),
        middleware=[
            Middleware(
                BrowserGuard,
                allowed_hosts=tuple(allowed_hosts),
                allowed_origins=tuple(allowed_origins),
            )
        ],
    )
    if metrics:
        install_metrics(
            server.app,
            tokens=server.tokens,
            hub=server.hub,
            storage=storage,
            compactor=server.compactor,
        )
    if cors_origins:
        origins = [normalize_origin(o) for o in cors_origins]  # ConfigError now, not later
        # Outermost: a preflight (no data) is answered before the other checks.
        server.app.add_middleware(CORSMiddleware, origins=origins)
    return server.app


class _JSONResponse(JSONResponse):
    """A JSON response whose states may hold lone surrogates (``"\\ud800"``,
    which JSON text may carry but UTF-8 cannot): those are sent in the escaped
    ASCII form, as storage keeps them, instead of failing."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
            return text.encode("ascii")


@dataclass
class _StreamLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0  # holding or waiting; under _Server._locks_lock


@dataclass
class _Page:
    body: bytes
    count: int
    next_start: int | None
    immutable: bool


class _Server:
    def __init__(
        self,
        storage: Storage,
        tokens: Tokens,
        *,
        heartbeat: float,
        retry_ms: int,
        limits: Limits,
        clock: Clock | None,
        compactor: Compactor,
        middleware: list[Middleware],
    ) -> None:
        self.storage = storage
        self.compactor = compactor
        # Read once: a store's id never changes (clients tell stores apart by it).
        self.store_id = storage.store_id
        self.tokens = tokens
        self.heartbeat = heartbeat
        self.retry_ms = retry_ms
        self.limits = limits
        self.clock = clock
        self.hub = Hub(limits)
        self._writers: dict[str, Stream] = {}
        # Only the streams being written have a lock (see _lock).
        self._locks: dict[str, _StreamLock] = {}
        self._locks_lock = threading.Lock()
        stream = "/v1/streams/{stream_id}"
        routes = [
            Route("/v1/health", self.health, methods=["GET"]),
            Route("/v1/openapi.json", self.openapi, methods=["GET"]),
            Route("/v1/streams", self.list_streams, methods=["GET"]),
            # One route per path, so that a 405 lists every method of it in Allow.
            _route(stream, {"GET": self.get_stream, "PUT": self.put_stream}),
            Route(stream + "/window", self.window, methods=["GET"]),
            _route(stream + "/entries", {"GET": self.get_entries, "POST": self.post_entries}),
            Route(stream + "/live", self.live, methods=["GET"]),
            Route(stream + "/state", self.post_state, methods=["POST"]),
            # Ids with a "/" (decoded %2F, "../x") match no route above.
            Route(
                "/v1/streams/{rest:path}",
                self.bad_path,
                methods=["GET", "PUT", "POST", "DELETE", "PATCH"],
            ),
            *ui_routes(),
        ]
        starlette = _App(
            routes=routes,
            exception_handlers=exception_handlers(),
            lifespan=self._lifespan,
            middleware=middleware,
        )
        starlette.state.hub = self.hub
        starlette.state.storage = storage
        starlette.state.compactor = compactor
        self.app = starlette

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.hub.bind(asyncio.get_running_loop())
        # A storage shared by replicas (PostgreSQL) feeds the hub the writes of
        # the other replicas; see docs/deploy.rst.
        listen = getattr(self.storage, "listen", None)
        listener = listen(self.hub.notify, self.hub.streams) if callable(listen) else None
        self.compactor.start()
        try:
            yield
        finally:
            self.hub.close()
            await anyio.to_thread.run_sync(self.compactor.close)
            if listener is not None:
                await anyio.to_thread.run_sync(listener.close)

    # -- helpers -------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, stream_id: str) -> Iterator[None]:
        """Hold the stream's lock. The lock exists while someone holds or waits
        for it, so ids that were only refused leave nothing behind."""
        with self._locks_lock:
            lock = self._locks.get(stream_id)
            if lock is None:
                lock = self._locks[stream_id] = _StreamLock()
            lock.users += 1
        try:
            with lock.lock:
                yield
        finally:
            with self._locks_lock:
                lock.users -= 1
                if not lock.users:
                    del self._locks[stream_id]

    def _writer(self, stream_id: str, rate: RateConfig) -> Stream:
        # Called under the stream's lock.
        writer = self._writers.get(stream_id)
        if writer is None:
            writer = Stream(self.storage.log(stream_id), rate, clock=self.clock)
            self._writers[stream_id] = writer
        return writer

    def _retains(self, info: StreamInfo) -> bool:
        """Whether compaction may delete some of the stream's entries."""
        return info.rate.retention is not None or self.compactor.default_retention is not None

    def _info(self, stream_id: str) -> StreamInfo:
        info = self.storage.info(stream_id)
        if info is None:
            raise StreamNotFound(f"no stream {stream_id!r}", stream_id=stream_id)
        return info

    async def _read_body(self, request: Request) -> bytes:
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

    def _check_state_size(self, data: Mapping[str, Any], where: str, raw_len: int) -> None:
        state_size(data, where, raw_len, self.limits.max_state_bytes)

    # -- routes --------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def bad_path(self, request: Request) -> Response:
        # Split the raw path: a %2F inside the id must not look like a route.
        raw = _raw_path(request).removeprefix("/v1/streams/")
        first, _, rest = raw.partition("/")
        stream_id = unquote(first, errors="strict") if _decodable(first) else "\ufffd"
        if not is_valid_stream_id(stream_id):
            fail(400, "invalid_stream_id", _bad_id_message(stream_id))
        allowed = _ALLOWED.get("/" + rest if rest else "")
        if allowed is not None:  # a known route, another method
            return error_response(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here",
                {"Allow": ", ".join(allowed)},
            )
        fail(404, "not_found", f"no route for {request.url.path[:200]!r}")

    async def list_streams(self, request: Request) -> Response:
        self.tokens.check_read(request)
        infos = await anyio.to_thread.run_sync(self.storage.list_streams)
        return JSONResponse(
            {
                "streams": [
                    {
                        "id": i.id,
                        "first": _time(i.first),
                        "last": _time(i.last),
                        "revision": i.revision,
                    }
                    for i in infos
                ],
                "store_id": self.store_id,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def get_stream(self, request: Request) -> Response:
        self.tokens.check_read(request)
        stream_id = _stream_id(request)
        info = await anyio.to_thread.run_sync(self._info, stream_id)
        return _metadata(info, self.store_id)

    async def put_stream(self, request: Request) -> Response:
        self.tokens.check_write(request)
        stream_id = _stream_id(request)
        update = parse_rate_body(await self._read_body(request))

        def put() -> tuple[bool, StreamInfo]:
            with self._lock(stream_id):
                rate = None
                if update is not None:  # what the body leaves out stays as it is
                    current = self.storage.info(stream_id)
                    rate = update.apply(None if current is None else current.rate)
                created = self.storage.create_stream(stream_id, rate)
                writer = self._writers.get(stream_id)
                if writer is not None and rate is not None:
                    writer.rate = rate
                return created, self._info(stream_id)

        created, info = await anyio.to_thread.run_sync(put)
        return _metadata(info, self.store_id, status=201 if created else 200)

    async def window(self, request: Request) -> Response:
        self.tokens.check_read(request)
        stream_id = _stream_id(request)
        at = time_param(request.query_params, "at")

        def window() -> dict[str, Any]:
            info = self._info(stream_id)
            if at is not None:
                _check_kept(info, at)
            log = self.storage.log(stream_id)
            revision = log.revision
            if at is None:
                start = log.latest_snapshot()
                if start is None:
                    raise OutOfRange(f"stream {stream_id!r} has no entries yet")
                return {"start": _time(start.micros), "end": None, "revision": revision}
            start = log.snapshot_before_us(at)
            if start is None:
                # Clamped: format_rfc3339 overflows past the years it can write.
                shown = format_rfc3339(clamp_us(at))
                raise OutOfRange(f"no snapshot at or before {shown}", when=at)
            after = log.snapshot_after_us(at)
            return {
                "start": _time(start.micros),
                "end": None if after is None else _time(after.micros),
                "revision": revision,
            }

        body = await anyio.to_thread.run_sync(window)
        response = _JSONResponse(
            body, headers={"Cache-Control": "no-store", STORE_ID_HEADER: self.store_id}
        )
        return await negotiated(request, response)

    async def get_entries(self, request: Request) -> Response:
        self.tokens.check_read(request)
        stream_id = _stream_id(request)
        start = time_param(request.query_params, "start")
        end = time_param(request.query_params, "end")
        limit = limit_param(request.query_params, self.limits.page_size)

        columns = accepts_columns(request.headers.get("accept"))
        page = await anyio.to_thread.run_sync(self._page, stream_id, start, end, limit, columns)
        media_type = COLUMNS if columns else NDJSON
        headers = {"Content-Type": media_type, STORE_ID_HEADER: self.store_id, "Vary": "Accept"}
        if page.next_start is not None:
            next_start = format_rfc3339(page.next_start)
            query = {k: v for k, v in request.query_params.items() if k != "start"}
            query["start"] = next_start
            headers["RStream-Next-Start"] = next_start
            headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
        if not page.immutable:
            headers["Cache-Control"] = "no-store"
            response = Response(page.body, headers=headers, media_type=media_type)
            return await negotiated(request, response)
        digest = hashlib.blake2b(page.body, digest_size=16)
        digest.update(b"|%d" % (page.next_start if page.next_start is not None else -1))
        etag = f'"{digest.hexdigest()}"'
        headers["ETag"] = etag
        headers["Cache-Control"] = IMMUTABLE
        return await negotiated(
            request, Response(page.body, headers=headers, media_type=media_type)
        )

    def _page(
        self, stream_id: str, start: int | None, end: int | None, limit: int, columns: bool
    ) -> _Page:
        info = self._info(stream_id)
        if start is not None:
            _check_kept(info, start)
        log = self.storage.log(stream_id)
        immutable = (
            end is not None
            and info.latest_snapshot is not None
            and end <= info.latest_snapshot
            # Without a start, compaction may still take entries off the front.
            and (start is not None or not self._retains(info))
        )
        rows: list[tuple[int, int, str, int]] = []
        size = 0
        next_start: int | None = None
        budget = self.limits.page_bytes
        # Rows, not entries: the stored JSON text goes into the page as it is.
        with contextlib.closing(log.iter_range_raw(start, end, limit + 1)) as stored:
            for row in stored:
                if len(rows) >= limit or size >= budget:
                    next_start = row[0]
                    break
                rows.append(row)
                size += len(row[2]) + ROW_BYTES
        return _Page(encode_page(rows, columns), len(rows), next_start, immutable)

    async def post_state(self, request: Request) -> Response:
        self.tokens.check_write(request)
        stream_id = _stream_id(request)
        body = await self._read_body(request)
        state, when = parse_state_write(parse_json(body, "request body"))
        self._check_state_size(state, "the state", len(body))

        def write() -> tuple[bool, str, Entry | None, int]:
            with self._lock(stream_id):
                info = self.storage.info(stream_id)
                created = False
                if info is None:
                    created = self.storage.create_stream(stream_id)
                    info = self._info(stream_id)
                writer = self._writer(stream_id, info.rate)
                writer.rate = info.rate  # another replica may have changed it
                with self.storage.log(stream_id).write_lock():
                    entry = writer.write_state(state, None if when is None else from_micros(when))
                    action = writer.last_action.value
                    revision = entry.rev if entry is not None and entry.rev else writer.log.revision
                return created, action, entry, revision

        created, action, entry, revision = await anyio.to_thread.run_sync(write)
        payload: Any = None
        if entry is not None:
            encoded = encode_entry(entry)
            self.hub.notify(stream_id, revision, len(encoded))
            payload = entry.to_json(with_rev=True)
        return _JSONResponse(
            {"action": action, "entry": payload, "revision": revision},
            status_code=201 if created else 200,
            headers={"Cache-Control": "no-store"},
        )

    async def post_entries(self, request: Request) -> Response:
        self.tokens.check_write(request)
        stream_id = _stream_id(request)
        body = await self._read_body(request)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        batch = parse_entries(body, ndjson=content_type == NDJSON)
        entries = batch.entries
        for i, entry in enumerate(entries):
            self._check_state_size(entry.data, f"entry {i} of the batch", len(body))

        def append() -> tuple[bool, list[Entry], int]:
            with self._lock(stream_id):
                created = False
                info = self.storage.info(stream_id)
                if info is None:
                    if not entries:
                        raise StreamNotFound(f"no stream {stream_id!r}", stream_id=stream_id)
                    _check_first_batch(entries, batch.deep)
                    created = self.storage.create_stream(stream_id)
                    info = self._info(stream_id)
                writer = self._writer(stream_id, info.rate)
                if not entries:
                    return created, [], writer.log.revision
                log = self.storage.log(stream_id)
                with log.write_lock():
                    _check_mutations(writer.state, entries, batch.deep)
                    stored = log.append_many(entries)
                return created, stored, stored[-1].rev or 0

        created, stored, revision = await anyio.to_thread.run_sync(append)
        if stored:
            self.hub.notify(stream_id, revision, sum(len(encode_entry(e)) for e in stored))
        return JSONResponse(
            {"count": len(stored), "revision": revision},
            status_code=201 if created else 200,
            headers={"Cache-Control": "no-store"},
        )

    async def live(self, request: Request) -> Response:
        self.tokens.check_read(request)
        stream_id = _stream_id(request)
        query = request.query_params
        since, reset_reason = resume_point(request.headers.get("last-event-id"), query)
        heartbeat = heartbeat_param(query, self.heartbeat)
        info = await anyio.to_thread.run_sync(self._info, stream_id)
        if since is not None and info.compacted_rev is not None and since < info.compacted_rev:
            # Changes after the resume point were deleted: start again from the live window.
            since, reset_reason = (
                None,
                (
                    f"resume point {since} is older than the stream's retention keeps "
                    f"(changes up to revision {info.compacted_rev} were deleted)"
                ),
            )
        # In the thread pool: a SQL storage reads the database for a log it has not cached.
        log = await anyio.to_thread.run_sync(self.storage.log, stream_id)
        subscriber = self.hub.subscribe(stream_id)
        try:
            content = live_events(
                self.hub,
                subscriber,
                log,
                _window_reader(log),
                since=since,
                reset_reason=reset_reason,
                retry_ms=self.retry_ms,
            )
            return _LiveResponse(
                content,
                hub=self.hub,
                subscriber=subscriber,
                ping=heartbeat,
                sep="\n",
                ping_message_factory=_ping,
                headers={"RStream-Heartbeat": f"{heartbeat:g}", "Cache-Control": "no-store"},
            )
        except BaseException:
            self.hub.unsubscribe(subscriber)
            raise


def _route(path: str, handlers: Mapping[str, Callable[[Request], Awaitable[Response]]]) -> Route:
    """One route for several methods of one path, so that its 405 answers list
    them all in ``Allow`` (HEAD is served by the GET handler)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers))


# -- the live response ------------------------------------------------------------


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep="\n")


def _window_reader(log: StreamLog) -> Callable[[int | None, int], list[Change]]:
    def read(after_us: int | None, limit: int) -> list[Change]:
        if after_us is None:
            start = log.latest_snapshot() or log.first()
            if start is None:
                return []
            first_us = start.micros
        else:
            first_us = after_us + 1
        with contextlib.closing(log.iter_range_raw(first_us, None, limit)) as rows:
            return [
                Change(rev, micros, encode_row(micros, kind, data, rev))
                for micros, kind, data, rev in rows
            ]

    return read


class _LiveResponse(EventSourceResponse):
    """An SSE response the hub can cut off (a subscriber too far behind)."""

    def __init__(
        self, content: AsyncIterator[bytes], *, hub: Hub, subscriber: Subscriber, **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._hub = hub
        self._subscriber = subscriber

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscriber = self._subscriber
        try:
            with anyio.CancelScope() as cancel:
                subscriber.on_overflow = cancel.cancel
                if subscriber.overflowed:
                    cancel.cancel()
                await super().__call__(scope, receive, send)
            if cancel.cancelled_caught:
                # The response cannot be finished (the client is not reading), so
                # the connection is dropped; the client resumes by revision.
                abort = scope.get(_ABORT_KEY)
                if abort is not None:
                    abort()
                    # Let the server see the connection lost before we return,
                    # so it does not report an unfinished response.
                    for _ in range(3):
                        await asyncio.sleep(0)
        finally:
            subscriber.on_overflow = None
            self._hub.unsubscribe(subscriber)


# -- the outermost layer: no traceback ever leaves -----------------------------------


class _App(Starlette):
    """Starlette, plus: anything that escaped is answered with a JSON 500 (logged
    once, never shown), and the live tail may drop a connection it cannot finish."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        scope[_ABORT_KEY] = _aborter(send)
        try:
            await super().__call__(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                # Starlette's handler for Exception already logged and answered.
                logger.debug("error after the response started", exc_info=exc)
                return
            response = unexpected_response(scope.get("method", ""), scope.get("path", ""), exc)
            await response(scope, receive, send)


def _aborter(send: Callable[[Message], Awaitable[None]]) -> Callable[[], None] | None:
    """A function that resets the request's connection, or None if the server hides it.

    uvicorn's ``send`` is a bound method of the request cycle, which holds the
    transport; other servers get no abort and close the connection themselves.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if not isinstance(transport, asyncio.Transport):
        return None

    return functools.partial(reset, transport)


# -- request parsing ---------------------------------------------------------------


def _stream_id(request: Request) -> str:
    stream_id: str = request.path_params["stream_id"]
    # Routing matches the decoded path, so "a%2Fwindow" arrives as id "a": check
    # that the raw path has no encoded "/" (no valid id contains one).
    if not is_valid_stream_id(stream_id) or "%2f" in _raw_path(request).lower():
        fail(400, "invalid_stream_id", _bad_id_message(stream_id))
    return stream_id


def _raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("latin-1").partition("?")[0]
    return quote(request.url.path)


def _decodable(text: str) -> bool:
    try:
        unquote(text, errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def _bad_id_message(stream_id: str) -> str:
    shown = stream_id if len(stream_id) <= 40 else stream_id[:40] + "..."
    return (
        f"invalid stream id {shown!r}: use 1 to 128 characters from A-Z a-z 0-9 . _ ~ -, "
        "not starting with '.'"
    )


def _check_mutations(
    state: dict[str, Any] | None, entries: list[Entry], deep: frozenset[int]
) -> None:
    """Raise MutationError unless every mutation applies to the state before it;
    400 if a mutation of ``deep`` makes a state nested too deep."""
    for i, entry in enumerate(entries):
        if entry.kind is EntryKind.SNAPSHOT:
            state = entry.data
            continue
        if state is None:
            raise MutationError(
                f"entry {i} of the batch is a mutation, but the stream has no snapshot before it"
            )
        try:
            state = apply_mutation(state, entry.data)
        except MutationError as exc:
            raise MutationError(f"entry {i} of the batch: {exc.reason}", exc.path) from None
        if i in deep:
            check_state_depth(state, f"entry {i} of the batch")


def _check_first_batch(entries: list[Entry], deep: frozenset[int]) -> None:
    """Raise what appending ``entries`` to a new stream would, before the stream
    is created: a refused batch leaves no empty stream behind."""
    _check_mutations(None, entries, deep)
    check_batch_order(None, entries)
    for i, entry in enumerate(entries):
        check_entry_time(entry.micros, f"entry {i} of the batch")


# -- responses ---------------------------------------------------------------------


def _time(micros: int | None) -> str | None:
    return None if micros is None else format_rfc3339(micros)


def _check_kept(info: StreamInfo, when: int) -> None:
    """Raise :class:`~rstream.OutOfRange` when retention deleted what lies at ``when``."""
    if info.compacted is not None and when < info.compacted:
        raise OutOfRange(
            f"{format_rfc3339(clamp_us(when))} is before the oldest entry stream "
            f"{info.id!r} keeps ({format_rfc3339(info.compacted)}): older windows were "
            "deleted by its retention; read from its 'first' on",
            when=when,
        )


def _metadata(info: StreamInfo, store_id: str, status: int = 200) -> Response:
    return JSONResponse(
        {
            "id": info.id,
            "record_rate": info.rate.to_json(),
            "retention": info.rate.retention_json(),
            "first": _time(info.first),
            "last": _time(info.last),
            "revision": info.revision,
            "latest_snapshot": _time(info.latest_snapshot),
            "store_id": store_id,
        },
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )
