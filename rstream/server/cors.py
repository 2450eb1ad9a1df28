"""CORS for the read and live endpoints, for web apps served from other origins.

Off unless origins are given (``rstream serve --cors-origin ORIGIN``). Only
``GET``/``HEAD`` of the read routes (health, the stream list, a stream's
metadata, window, entries and live tail) get CORS headers, so a page elsewhere
can read, and follow a stream with a plain ``EventSource`` (which resumes with
``Last-Event-ID``, allowed in the preflight); writes stay same-origin.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rstream.errors import ConfigError

__all__ = ["CORSMiddleware", "normalize_origin"]

_READ_PATH = re.compile(
    r"/v1/(?:health|openapi\.json|streams(?:/[^/]+(?:/(?:window|entries|live))?)?)"
)
_METHODS = "GET, HEAD"
_REQUEST_HEADERS = "Authorization, Last-Event-ID, Cache-Control, Accept"
_EXPOSED = (
    "RStream-Next-Start, RStream-Store-Id, RStream-Heartbeat, Link, ETag, Retry-After, "
    "WWW-Authenticate"
)
_MAX_AGE = "600"


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, or ``*``; ConfigError for anything else."""
    if origin == "*":
        return origin
    parts = urlsplit(origin.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ConfigError(
            f"CORS origin {origin!r} is not an origin: give scheme://host[:port], "
            "as a browser sends it in the Origin header (or * for any)"
        )
    return f"{parts.scheme}://{parts.netloc.lower()}"


class CORSMiddleware:
    """Adds CORS headers to read responses for allowed origins, and answers their preflights."""

    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(normalize_origin(o) for o in origins)

    def _allowed(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or None."""
        if origin is None:
            return None
        if "*" in self.origins:
            return "*"
        return origin if origin.lower() in self.origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _READ_PATH.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        allow = self._allowed(headers.get("origin"))
        method = scope["method"]
        if allow is None or method not in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if method == "OPTIONS":
            wanted = headers.get("access-control-request-method")
            if wanted not in ("GET", "HEAD"):
                await self.app(scope, receive, send)
                return
            await _preflight(allow, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out["Access-Control-Allow-Origin"] = allow
                out["Access-Control-Expose-Headers"] = _EXPOSED
                out.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, with_cors)


async def _preflight(allow: str, send: Send) -> None:
    headers = [
        (b"access-control-allow-origin", allow.encode("latin-1")),
        (b"access-control-allow-methods", _METHODS.encode()),
        (b"access-control-allow-headers", _REQUEST_HEADERS.encode()),
        (b"access-control-max-age", _MAX_AGE.encode()),
        (b"vary", b"Origin"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
