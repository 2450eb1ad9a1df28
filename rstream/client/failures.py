"""What a failed request means: error responses mapped to :mod:`rstream.errors`,
and connection failures described in plain words. No I/O of its own (a
response's body is read if it was not yet).
"""

from __future__ import annotations

import json as jsonlib
import re
import socket
from collections.abc import Iterator
from typing import Any

import requests
import urllib3.exceptions

from rstream.errors import (
    AuthError,
    OutOfOrder,
    OutOfRange,
    ProtocolError,
    ServerError,
    StreamNotFound,
)

__all__ = [
    "describe_failure",
    "is_connect_error",
    "is_name_error",
    "is_transient",
    "json_body",
    "raise_for_response",
]

_SNIPPET = 200


def _snippet(response: requests.Response) -> str:
    try:
        text = response.content[:_SNIPPET].decode("utf-8", "replace")
    except (requests.RequestException, RuntimeError):
        return "<body unreadable>"
    return text


def _error_body(response: requests.Response) -> tuple[str | None, str | None]:
    """``(code, message)`` of a protocol error body, or ``(None, None)``."""
    try:
        body = jsonlib.loads(response.content)
    except (ValueError, requests.RequestException, RuntimeError):
        return None, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return None, None
    message = error.get("message")
    return error["code"], message if isinstance(message, str) else ""


def raise_for_response(response: requests.Response, *, stream_id: str | None = None) -> None:
    """Raise the :mod:`rstream.errors` exception for an error response (status >= 400).

    The protocol's ``{"error": {"code", "message"}}`` picks the class:
    ``stream_not_found`` -> :class:`~rstream.StreamNotFound`, ``out_of_range`` ->
    :class:`~rstream.OutOfRange`, ``out_of_order`` -> :class:`~rstream.OutOfOrder`,
    401/403 -> :class:`~rstream.AuthError`, any other code, a 5xx or a 429 ->
    :class:`~rstream.ServerError`. Any other error status without a protocol
    body (for example a proxy's HTML page) -> :class:`~rstream.ProtocolError`.
    """
    status = response.status_code
    if status < 400:
        return
    code, message = _error_body(response)
    method = response.request.method if response.request is not None else "request"
    where = f"{method} {response.url}"
    detail = message or _snippet(response).strip() or response.reason or ""
    what = f"{status} {code}" if code else str(status)
    if status in (401, 403):
        hint = (
            "the token is not allowed to write; use the write token"
            if status == 403
            else "pass a valid token= (the server's read or write token)"
        )
        raise AuthError(f"{where} was refused ({what}: {detail}); {hint}", status=status)
    if code == "stream_not_found":
        raise StreamNotFound(
            f"stream {stream_id!r} does not exist on the server ({detail}); "
            "check the id, or create it with write_state()",
            stream_id=stream_id,
        )
    if code == "out_of_range":
        raise OutOfRange(
            f"no state at that time: {detail or 'no snapshot at or before it'}; "
            "ask for a time at or after the stream's first entry"
        )
    if code == "out_of_order":
        raise OutOfOrder(
            f"the server refused the write ({detail}); "
            "a timestamp must be after the stream's newest entry"
        )
    if code is not None or status >= 500 or status == 429:
        hint = {
            "not_found": "; is this an rstream v1 server? check the URL (no path prefix)",
            "too_large": "; send smaller states or batches",
            "unavailable": "; the server's storage is unreachable, try again later",
            "too_many_subscribers": "; too many live subscribers, try again later",
        }.get(code or "", "")
        raise ServerError(
            f"{where} failed ({what}: {detail}){hint}", status=status, code=code, url=response.url
        )
    raise ProtocolError(
        f"{where} answered {status} without an rstream error body ({detail[:_SNIPPET]!r}); "
        "is the URL an rstream v1 server?"
    )


def json_body(response: requests.Response) -> Any:
    """The parsed JSON of a successful response; :class:`~rstream.ProtocolError` if it is not."""
    try:
        return jsonlib.loads(response.content)
    except ValueError as exc:
        raise ProtocolError(
            f"{response.request.method} {response.url} answered {response.status_code} with "
            f"a body that is not JSON ({exc}): {_snippet(response)!r}"
        ) from None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (``reason``, ``__cause__``, ``__context__``, an
    exception among its ``args``), outermost first, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        inner = [getattr(err, "reason", None), err.__cause__, err.__context__, *err.args]
        todo += [e for e in inner if isinstance(e, BaseException)]


def is_name_error(exc: BaseException) -> bool:
    """Whether the server's host name could not be resolved (not worth retrying)."""
    return any(isinstance(e, socket.gaierror) for e in _causes(exc))


# urllib3 names its own objects in its messages: "HTTPConnectionPool(host='x',
# port=1): " and "<...HTTPConnection object at 0x7f...>: ". The caller knows the URL.
_INTERNALS = re.compile(r"\w*ConnectionPool\([^)]*\): |<[\w.]+ object at 0x[0-9a-fA-F]+>:? ?")


def describe_failure(exc: BaseException, timeout: tuple[float, float] | None = None) -> str:
    """What went wrong with a request, in plain words, without urllib3's internals.

    ``timeout``, the request's ``(connect, read)`` seconds, is named in a timeout's
    description.
    """
    causes = list(_causes(exc))
    for err in causes:
        if isinstance(err, socket.gaierror):
            return f"the host name could not be resolved ({err.strerror or err})"
    for err in causes:
        if isinstance(err, ConnectionRefusedError):
            return "the connection was refused (no server listens there)"
    if isinstance(exc, requests.ConnectTimeout):
        seconds = f" ({timeout[0]:g} s)" if timeout else ""
        return f"no connection within the connect timeout{seconds}"
    if isinstance(exc, requests.ReadTimeout):
        seconds = f" ({timeout[1]:g} s)" if timeout else ""
        return f"no answer within the read timeout{seconds}"
    for err in reversed(causes):  # the innermost system error says it best
        if isinstance(err, OSError) and err.strerror:
            return str(err.strerror)
    return _INTERNALS.sub("", str(causes[-1]) or type(causes[-1]).__name__)


def is_connect_error(exc: BaseException) -> bool:
    """Whether the request certainly never reached the server (safe to resend a POST)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


def is_transient(exc: requests.RequestException) -> bool:
    # A TLS failure is configuration (verify=, cert=), not bad luck.
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    return isinstance(
        exc,
        requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError,
    )
