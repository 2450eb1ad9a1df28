"""Prometheus metrics of one server: ``GET /metrics`` and the middleware that counts.

Off unless ``create_app(..., metrics=True)`` (``rstream serve --metrics``);
``/metrics`` needs the read token when the server has one. Each app has its
own :class:`~prometheus_client.CollectorRegistry`: nothing is registered in
the process-wide default registry, so several apps in one process (tests, an
application that embeds the server) each report their own numbers.

Every label has a bounded set of values: requests are labelled by route
template (``/v1/streams/{stream_id}/live``, never the raw path), method (the
HTTP methods, anything else as ``other``) and status. There is no per-stream
label: stream ids are chosen by clients, so their number has no bound, and
one time series per stream would grow the scrape (and Prometheus) without
limit. Per-stream figures are read from the API (``GET /v1/streams``).

Names and meanings are listed in ``docs/server.rst`` (*Metrics*).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rstream.errors import RStreamError, StorageUnavailable
from rstream.server.auth import Tokens
from rstream.server.compaction import Compactor
from rstream.server.errors import unexpected_response
from rstream.server.live import Hub
from rstream.server.storage import SQLiteStorage, Storage

__all__ = ["Metrics", "install_metrics"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_UNMATCHED = "none"  # the route label of a request no route matched
# The write routes whose answers say what was written (docs/protocol.rst).
_STATE_ROUTE = "/v1/streams/{stream_id}/state"
_ENTRIES_ROUTE = "/v1/streams/{stream_id}/entries"
_ACTIONS = frozenset({"snapshot", "mutation", "amend", "none"})
_APPENDING_ACTIONS = frozenset({"snapshot", "mutation"})


class Metrics:
    """The metrics of one app, in their own registry.

    Counters are updated on the app's event loop; the live and compaction
    figures are read from the hub and the compactor at scrape time.
    """

    def __init__(self, hub: Hub, storage: Storage, compactor: Compactor) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "rstream_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "rstream_http_request_duration_seconds",
            "Time from a request's arrival to its response's headers (for a live "
            "tail: until the event stream starts), by method and route template.",
            ("method", "route"),
            registry=registry,
        )
        self.writes = Counter(
            "rstream_writes",
            "Accepted writes: POST .../state by the action it answered (snapshot, "
            "mutation, amend, none), POST .../entries as 'batch'.",
            ("action",),
            registry=registry,
        )
        self.appended = Counter(
            "rstream_entries_appended",
            "Entries added to stream logs (an amend replaces one and is not counted).",
            registry=registry,
        )
        self.database_errors = Counter(
            "rstream_database_errors",
            "Requests that failed on a storage error (SQLite error, PostgreSQL unavailable).",
            registry=registry,
        )
        registry.register(_LiveCollector(hub, storage))
        registry.register(_CompactionCollector(compactor))

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format; call on the app's event loop."""
        return generate_latest(self.registry)

    def count_response(self, scope: Scope, status: int, seconds: float) -> tuple[str, str]:
        """Count a response whose headers are being sent; returns its (method, route) labels."""
        method = scope.get("method", "")
        method = method if method in _METHODS else "other"
        route = getattr(scope.get("route"), "path", None) or _UNMATCHED
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        return method, route

    def count_write(self, route: str, body: bytes) -> None:
        """Count an accepted write from its answer (``{"action"}`` or ``{"count"}``)."""
        try:
            answer = json.loads(body)
        except ValueError:
            return
        if not isinstance(answer, dict):
            return
        if route == _STATE_ROUTE and answer.get("action") in _ACTIONS:
            action = answer["action"]
            self.writes.labels(action).inc()
            if action in _APPENDING_ACTIONS:
                self.appended.inc()
        elif route == _ENTRIES_ROUTE and isinstance(answer.get("count"), int):
            self.writes.labels("batch").inc()
            self.appended.inc(answer["count"])

    def count_error(self, exc: BaseException) -> None:
        """Count ``exc`` if it is an error of the storage."""
        if is_database_error(exc):
            self.database_errors.inc()


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the database (not from the request)."""
    if isinstance(exc, (sqlite3.Error, StorageUnavailable)):
        return True
    # psycopg is an optional extra: only a loaded psycopg can have raised.
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error)


class _LiveCollector:
    """Reads the hub's counters and the storage size at scrape time."""

    def __init__(self, hub: Hub, storage: Storage) -> None:
        self._hub = hub
        self._storage = storage

    def collect(self) -> Iterable[Metric]:
        hub = self._hub
        current = sum(hub.subscriber_count(s) for s in hub.streams())
        yield GaugeMetricFamily(
            "rstream_live_subscribers", "Live subscribers connected now.", value=current
        )
        yield CounterMetricFamily(
            "rstream_live_subscriptions", "Live subscribers accepted.", value=hub.subscribed
        )
        yield CounterMetricFamily(
            "rstream_live_slow_disconnects",
            "Live subscribers disconnected for falling too far behind.",
            value=hub.overflows,
        )
        yield CounterMetricFamily(
            "rstream_live_events_sent",
            "Entry and amend events handed to live connections.",
            value=hub.events_sent,
        )
        size = storage_size(self._storage)
        if size is not None:
            yield GaugeMetricFamily(
                "rstream_storage_size_bytes",
                "Bytes the SQLite store takes on disk (database and write-ahead log).",
                value=size,
            )


class _CompactionCollector:
    """Reads the compactor's counters at scrape time."""

    def __init__(self, compactor: Compactor) -> None:
        self._compactor = compactor

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "rstream_compaction_runs", "Compaction runs finished.", value=self._compactor.runs
        )
        yield CounterMetricFamily(
            "rstream_compaction_entries_deleted",
            "Entries deleted by compaction (retention).",
            value=self._compactor.entries_deleted,
        )


def storage_size(storage: Storage) -> int | None:
    """The bytes a SQLite store takes on disk (its file and WAL); None for other storages.

    PostgreSQL's size belongs to the database server's own metrics (see
    ``docs/deploy.rst``); a memory store has no size worth reporting.
    """
    if not isinstance(storage, SQLiteStorage):
        return None
    total = 0
    for path in (storage.path, storage.path + "-wal"):
        with contextlib.suppress(FileNotFoundError):  # no WAL right after a checkpoint
            total += os.stat(path).st_size
    return total


class MetricsMiddleware:
    """Counts every HTTP request: status, latency and, for writes, what was written.

    Installed outside the app's other middleware, so refused requests are
    counted too. An exception that escapes the app (a storage error) is
    answered here, as the app would (:func:`~rstream.server.errors.unexpected_response`),
    so its status is counted.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        arrived = time.perf_counter()
        started = False
        write_route: str | None = None
        body: list[bytes] = []

        async def counting_send(message: Message) -> None:
            nonlocal started, write_route
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                method, route = metrics.count_response(scope, status, time.perf_counter() - arrived)
                if method == "POST" and status in (200, 201):
                    write_route = route
            elif message["type"] == "http.response.body" and write_route is not None:
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    metrics.count_write(write_route, b"".join(body))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception as exc:
            metrics.count_error(exc)
            if started:
                raise
            response = unexpected_response(scope.get("method", ""), scope.get("path", ""), exc)
            await response(scope, receive, counting_send)


def install_metrics(
    app: Starlette, *, tokens: Tokens, hub: Hub, storage: Storage, compactor: Compactor
) -> Metrics:
    """Add ``GET /metrics`` and the counting middleware to ``app`` (before it starts).

    ``app.state.metrics`` is the :class:`Metrics`.
    """
    metrics = Metrics(hub, storage, compactor)

    async def endpoint(request: Request) -> Response:
        tokens.check_read(request)
        return Response(
            metrics.exposition(),
            media_type=CONTENT_TYPE_LATEST,
            headers={"Cache-Control": "no-store"},
        )

    app.router.routes.append(Route("/metrics", endpoint, methods=["GET"]))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # Errors the app answers itself (StorageUnavailable is a 503 of the protocol)
    # never reach the middleware as exceptions: count them where they are handled.
    handler = app.exception_handlers[RStreamError]
    app.exception_handlers[RStreamError] = _counting(handler, metrics)
    app.state.metrics = metrics
    return metrics


def _counting(
    handler: Callable[[Request, Exception], Awaitable[Response]], metrics: Metrics
) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def counted(request: Request, exc: Exception) -> Response:
        metrics.count_error(exc)
        return await handler(request, exc)

    return counted
