"""gzip for pages of history (``GET .../entries``, ``GET .../window``), and the
choice of a page's form (NDJSON, or the columns form a client asks for).

A page is sent gzip-compressed when the request's ``Accept-Encoding`` accepts
gzip (``requests`` does by default) and the body is large enough to gain from
it. The compressed body is another representation of the resource, so it gets
its own strong validator: the identity page's ``ETag`` with ``-gzip`` added
inside the quotes. ``If-None-Match`` is compared with the validator of the
representation chosen for this request, so a 304 names the one the client
holds; ``Cache-Control`` (``immutable`` included) is the same for both, and
``Vary: Accept-Encoding`` tells caches the body depends on that header.

A page is sent in the columns form (:data:`~rstream.core.wire.COLUMNS`) only
to a request whose ``Accept`` names that media type (:func:`accepts_columns`);
its body differs, so its ``ETag`` does too, and pages say ``Vary: Accept``.

The live event stream is never compressed: its events are small and must be
sent the moment they happen, which a compressor's buffering works against.
"""

from __future__ import annotations

import zlib

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from rstream.core.wire import COLUMNS, STORE_ID_HEADER

__all__ = [
    "GZIP_MIN_BYTES",
    "accepts_columns",
    "accepts_gzip",
    "etag_matches",
    "gzip_bytes",
    "negotiated",
]

# Below this a gzip header and trailer (18 bytes) and the lost chance of
# sending the body in the headers' packet outweigh what is saved.
GZIP_MIN_BYTES = 1024
# Level 1: NDJSON pages shrink to about 12% of their size at the fastest
# level (11% at the default 6, for more CPU on the server for every reader).
_LEVEL = 1
_GZIP_WBITS = 31  # zlib's gzip container; no file name, mtime 0: same bytes each time
# Headers of the 200 that a 304 repeats (RFC 9110 15.4.5), besides ETag and Vary.
_KEPT_ON_304 = ("cache-control", "rstream-next-start", "link", STORE_ID_HEADER.lower())


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (``q=0`` refuses it)."""
    return _accepts(header, ("gzip", "x-gzip", "*"))


def accepts_columns(header: str | None) -> bool:
    """Whether an ``Accept`` value asks for the columns form of a page by name
    (``q=0`` refuses it; ``*/*`` does not ask for it)."""
    return _accepts(header, (COLUMNS,))


def _accepts(header: str | None, names: tuple[str, ...]) -> bool:
    """Whether a header's list (``Accept``, ``Accept-Encoding``) holds one of
    ``names`` with a ``q`` above 0."""
    if not header:
        return False
    for item in header.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in names:
            continue
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def gzip_bytes(body: bytes) -> bytes:
    """``body`` in a gzip container; the same bytes for the same body."""
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(body) + compressor.flush()


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match: header`` matches ``etag`` (weak comparison)."""
    if header is None:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


async def negotiated(request: Request, response: Response) -> Response:
    """``response`` (a complete 200 of a page) as this request should get it.

    gzip-compressed (in a worker thread, off the event loop) when the request
    accepts it and the body has at least :data:`GZIP_MIN_BYTES`, with its own
    ``ETag``; a 304 when ``If-None-Match`` matches the chosen representation's
    ``ETag``. A response without ``ETag`` is never answered 304.
    """
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    vary = "Accept-Encoding" if "vary" not in headers else f"{headers['vary']}, Accept-Encoding"
    headers["vary"] = vary
    body = bytes(response.body)
    if len(body) >= GZIP_MIN_BYTES and accepts_gzip(request.headers.get("accept-encoding")):
        body = await anyio.to_thread.run_sync(gzip_bytes, body)
        headers["content-encoding"] = "gzip"
        if "etag" in headers:
            headers["etag"] = headers["etag"][:-1] + '-gzip"'
    etag = headers.get("etag")
    if etag is not None and etag_matches(request.headers.get("if-none-match"), etag):
        kept = {k: v for k, v in headers.items() if k in _KEPT_ON_304}
        return Response(status_code=304, headers={**kept, "etag": etag, "vary": vary})
    return Response(body, status_code=response.status_code, headers=headers)
