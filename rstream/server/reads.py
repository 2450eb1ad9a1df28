"""The read routes: the stream list, a stream's metadata, its windows, its pages
of entries and its live tail (``docs/protocol.rst``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from rstream.core.timestamps import format_rfc3339
from rstream.core.wire import COLUMNS, ROW_BYTES, STORE_ID_HEADER, encode_page, encode_row
from rstream.errors import OutOfRange
from rstream.server.compression import accepts_columns, negotiated
from rstream.server.context import ABORT_KEY, AppContext, SafeJSONResponse, stream_id_of
from rstream.server.live import Change, Hub, Subscriber, live_events
from rstream.server.params import heartbeat_param, limit_param, resume_point, time_param
from rstream.server.storage import StreamInfo, StreamLog
from rstream.server.storage.base import clamp_us

__all__ = ["NDJSON", "ReadRoutes", "metadata_response"]

NDJSON = "application/x-ndjson"
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass
class _Page:
    body: bytes
    count: int
    next_start: int | None
    immutable: bool


class ReadRoutes:
    """The handlers of the read routes of one app."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def list_streams(self, request: Request) -> Response:
        ctx = self.ctx
        ctx.tokens.check_read(request)
        infos = await ctx.blocking(ctx.storage.list_streams)
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
                "store_id": ctx.store_id,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def get_stream(self, request: Request) -> Response:
        self.ctx.tokens.check_read(request)
        stream_id = stream_id_of(request)
        info = await self.ctx.blocking(self.ctx.info, stream_id)
        return metadata_response(info, self.ctx.store_id)

    async def window(self, request: Request) -> Response:
        self.ctx.tokens.check_read(request)
        stream_id = stream_id_of(request)
        at = time_param(request.query_params, "at")
        body = await self.ctx.blocking(self._window, stream_id, at)
        response = SafeJSONResponse(
            body, headers={"Cache-Control": "no-store", STORE_ID_HEADER: self.ctx.store_id}
        )
        return await negotiated(request, response)

    def _window(self, stream_id: str, at: int | None) -> dict[str, Any]:
        info = self.ctx.info(stream_id)
        if at is not None:
            _check_kept(info, at)
        log = self.ctx.storage.log(stream_id)
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

    async def get_entries(self, request: Request) -> Response:
        self.ctx.tokens.check_read(request)
        stream_id = stream_id_of(request)
        query = request.query_params
        start = time_param(query, "start")
        end = time_param(query, "end")
        limit = limit_param(query, self.ctx.limits.page_size)

        columns = accepts_columns(request.headers.get("accept"))
        page = await self.ctx.blocking(self._page, stream_id, start, end, limit, columns)
        media_type = COLUMNS if columns else NDJSON
        headers = {"Content-Type": media_type, STORE_ID_HEADER: self.ctx.store_id, "Vary": "Accept"}
        if page.next_start is not None:
            next_start = format_rfc3339(page.next_start)
            params = {k: v for k, v in query.items() if k != "start"}
            params["start"] = next_start
            headers["RStream-Next-Start"] = next_start
            headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
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
        info = self.ctx.info(stream_id)
        if start is not None:
            _check_kept(info, start)
        log = self.ctx.storage.log(stream_id)
        immutable = (
            end is not None
            and info.latest_snapshot is not None
            and end <= info.latest_snapshot
            # Without a start, compaction may still take entries off the front.
            and (start is not None or not self.ctx.retains(info))
        )
        rows: list[tuple[int, int, str, int]] = []
        size = 0
        next_start: int | None = None
        budget = self.ctx.limits.page_bytes
        # Rows, not entries: the stored JSON text goes into the page as it is.
        with contextlib.closing(log.iter_range_raw(start, end, limit + 1)) as stored:
            for row in stored:
                if len(rows) >= limit or size >= budget:
                    next_start = row[0]
                    break
                rows.append(row)
                size += len(row[2]) + ROW_BYTES
        return _Page(encode_page(rows, columns), len(rows), next_start, immutable)

    async def live(self, request: Request) -> Response:
        ctx = self.ctx
        ctx.tokens.check_read(request)
        stream_id = stream_id_of(request)
        query = request.query_params
        since, reset_reason = resume_point(request.headers.get("last-event-id"), query)
        heartbeat = heartbeat_param(query, ctx.heartbeat)
        info = await ctx.blocking(ctx.info, stream_id)
        if since is not None and info.compacted_rev is not None and since < info.compacted_rev:
            # Changes after the resume point were deleted: start again from the live window.
            since, reset_reason = (
                None,
                (
                    f"resume point {since} is older than the stream's retention keeps "
                    f"(changes up to revision {info.compacted_rev} were deleted)"
                ),
            )
        # On a worker: a SQL storage reads the database for a log it has not cached.
        log = await ctx.blocking(ctx.storage.log, stream_id)
        subscriber = ctx.hub.subscribe(stream_id)
        try:
            content = live_events(
                ctx.hub,
                subscriber,
                log,
                _window_reader(log),
                since=since,
                reset_reason=reset_reason,
                retry_ms=ctx.retry_ms,
            )
            return _LiveResponse(
                content,
                hub=ctx.hub,
                subscriber=subscriber,
                ping=heartbeat,
                sep="\n",
                ping_message_factory=_ping,
                headers={"RStream-Heartbeat": f"{heartbeat:g}", "Cache-Control": "no-store"},
            )
        except BaseException:
            ctx.hub.unsubscribe(subscriber)
            raise


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
                abort = scope.get(ABORT_KEY)
                if abort is not None:
                    abort()
                    # Let the server see the connection lost before we return,
                    # so it does not report an unfinished response.
                    for _ in range(3):
                        await asyncio.sleep(0)
        finally:
            subscriber.on_overflow = None
            self._hub.unsubscribe(subscriber)


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


def metadata_response(info: StreamInfo, store_id: str, status: int = 200) -> Response:
    """The answer of ``GET /v1/streams/{id}`` (and of ``PUT``) for ``info``."""
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
