"""HTTP error mapping: every error leaves the server as ``{"error": {"code", "message"}}``.

Handlers raise rstream's own exceptions; :data:`STATUS_OF` maps each class to
its status and stable code (``docs/protocol.rst``). Errors that only exist on the
wire (``bad_request``, ``too_large``, ...) are raised as
:class:`~rstream.errors.ServerError` with ``status`` and ``code`` set, so there is
one exception tree and one place that turns it into a response.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, NoReturn

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rstream.errors import (
    ClientClosed,
    EntryFormatError,
    InvalidJSON,
    InvalidTimestamp,
    MutationError,
    OutOfOrder,
    OutOfRange,
    RStreamError,
    ServerError,
    StorageUnavailable,
    StreamNotFound,
)

__all__ = [
    "STATUS_OF",
    "error_response",
    "exception_handlers",
    "fail",
    "unexpected_response",
]

logger = logging.getLogger("rstream.server")

# Most specific first: the first class an exception is an instance of wins.
STATUS_OF: tuple[tuple[type[RStreamError], int, str], ...] = (
    (InvalidTimestamp, 400, "invalid_time"),
    (MutationError, 422, "invalid_mutation"),
    (EntryFormatError, 400, "invalid_entry"),
    (InvalidJSON, 400, "invalid_json"),  # a state the writer refuses (check_json)
    (OutOfOrder, 409, "out_of_order"),
    (OutOfRange, 404, "out_of_range"),
    (StreamNotFound, 404, "stream_not_found"),
    (ClientClosed, 503, "unavailable"),  # the storage was closed under us
    (StorageUnavailable, 503, "unavailable"),  # the database is out of reach (PostgreSQL)
)

# Starlette's own HTTPExceptions (routing) and what they mean in the protocol.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "too_large"}

# Extra headers some statuses always carry.
_RETRY_AFTER = "1"


def fail(status: int, code: str, message: str) -> NoReturn:
    """Abort the request with an error of the protocol (``bad_request``, ``too_large``, ...)."""
    raise ServerError(message, status=status, code=code)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error body of the protocol, with the headers its status needs."""
    extra = dict(headers or {})
    if status == 401:
        extra.setdefault("WWW-Authenticate", "Bearer")
    if status in (429, 503):
        extra.setdefault("Retry-After", _RETRY_AFTER)
    extra.setdefault("Cache-Control", "no-store")
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=extra
    )


def _status_of(exc: RStreamError) -> tuple[int, str]:
    if isinstance(exc, ServerError) and exc.status is not None and exc.code is not None:
        return exc.status, exc.code
    for cls, status, code in STATUS_OF:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal"


async def _rstream_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RStreamError)
    status, code = _status_of(exc)
    if status == 503 and not isinstance(exc, ServerError):
        logger.warning("%s %s: storage unavailable: %s", request.method, request.url.path, exc)
        return error_response(status, code, "storage unavailable; retry later")
    if status >= 500 and not isinstance(exc, ServerError):
        logger.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return error_response(status, code, "internal server error")
    return error_response(status, code, _clip(str(exc)))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
    message = {
        "not_found": f"no route for {request.url.path[:200]!r}",
        "method_not_allowed": f"{request.method} is not allowed here",
    }.get(code, exc.detail)
    headers = dict(exc.headers or {})
    return error_response(exc.status_code, code, message, headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    return unexpected_response(request.method, request.url.path, exc)


def unexpected_response(method: str, path: str, exc: BaseException) -> Response:
    """The answer to an exception nothing else handled: logged, never shown."""
    # A bug or an unreachable backend: log it with its traceback, answer without one.
    logger.error("unexpected error in %s %s", method, path[:200], exc_info=exc)
    if isinstance(exc, (OSError, TimeoutError, sqlite3.OperationalError)):
        return error_response(503, "unavailable", "storage unavailable; retry later")
    return error_response(500, "internal", "internal server error")


def _clip(message: str, limit: int = 500) -> str:
    # Messages may quote input; never echo a huge body back.
    return message if len(message) <= limit else message[: limit - 3] + "..."


def exception_handlers() -> dict[Any, Any]:
    """Starlette ``exception_handlers`` mapping for :func:`~rstream.server.create_app`."""
    return {
        RStreamError: _rstream_error,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
