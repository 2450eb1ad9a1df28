"""The reference server: the routes of ``docs/protocol.rst`` over a :class:`Storage`.

This module puts the app together: its routes (the read routes in
:mod:`rstream.server.reads`, the write routes in :mod:`rstream.server.writes`,
sharing a :class:`~rstream.server.context.AppContext`), its lifespan and its
outermost layer. Storage calls are synchronous (sqlite3, psycopg), so every
handler runs them on the context's worker threads and keeps the event loop
free for the live tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from urllib.parse import unquote

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from rstream.core.stream import Clock
from rstream.errors import ConfigError
from rstream.server.auth import Tokens
from rstream.server.compaction import Compactor
from rstream.server.connections import reset
from rstream.server.context import ABORT_KEY, AppContext, bad_id_message, decodable, raw_path
from rstream.server.cors import CORSMiddleware, normalize_origin
from rstream.server.errors import error_response, exception_handlers, fail, unexpected_response
from rstream.server.limits import Limits
from rstream.server.live import Hub
from rstream.server.metrics import install_metrics
from rstream.server.openapi import openapi_document
from rstream.server.params import MAX_HEARTBEAT, MIN_HEARTBEAT
from rstream.server.reads import ReadRoutes
from rstream.server.security import BrowserGuard
from rstream.server.storage import Storage, is_valid_stream_id
from rstream.server.ui import ui_routes
from rstream.server.writes import WriteRoutes

__all__ = ["create_app"]

logger = logging.getLogger("rstream.server")

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
        self.ctx = ctx = AppContext(
            storage=storage,
            tokens=tokens,
            limits=limits,
            hub=Hub(limits),
            compactor=compactor,
            heartbeat=heartbeat,
            retry_ms=retry_ms,
            clock=clock,
        )
        self.storage = storage
        self.compactor = compactor
        self.tokens = tokens
        self.hub = ctx.hub
        reads, writes = ReadRoutes(ctx), WriteRoutes(ctx)
        stream = "/v1/streams/{stream_id}"
        routes = [
            # First: the router tries routes in order, and devices post states
            # far more often than anything else is asked (no other route
            # matches its path, so the order changes no answer).
            Route(stream + "/state", writes.post_state, methods=["POST"]),
            Route("/v1/health", _health, methods=["GET"]),
            Route("/v1/openapi.json", _openapi, methods=["GET"]),
            Route("/v1/streams", reads.list_streams, methods=["GET"]),
            # One route per path, so that a 405 lists every method of it in Allow.
            _route(stream, {"GET": reads.get_stream, "PUT": writes.put_stream}),
            Route(stream + "/window", reads.window, methods=["GET"]),
            _route(stream + "/entries", {"GET": reads.get_entries, "POST": writes.post_entries}),
            Route(stream + "/live", reads.live, methods=["GET"]),
            # Ids with a "/" (decoded %2F, "../x") match no route above.
            Route(
                "/v1/streams/{rest:path}",
                _bad_path,
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
            await anyio.to_thread.run_sync(self.ctx.close)


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def _bad_path(request: Request) -> Response:
    # Split the raw path: a %2F inside the id must not look like a route.
    raw = raw_path(request).removeprefix("/v1/streams/")
    first, _, rest = raw.partition("/")
    stream_id = unquote(first, errors="strict") if decodable(first) else "\ufffd"
    if not is_valid_stream_id(stream_id):
        fail(400, "invalid_stream_id", bad_id_message(stream_id))
    allowed = _ALLOWED.get("/" + rest if rest else "")
    if allowed is not None:  # a known route, another method
        return error_response(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed here",
            {"Allow": ", ".join(allowed)},
        )
    fail(404, "not_found", f"no route for {request.url.path[:200]!r}")


def _route(path: str, handlers: Mapping[str, Callable[[Request], Awaitable[Response]]]) -> Route:
    """One route for several methods of one path, so that its 405 answers list
    them all in ``Allow`` (HEAD is served by the GET handler)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers))


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

        scope[ABORT_KEY] = _aborter(send)
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
