"""The connection options a client is given, checked and normalised.

Server URLs, stream ids, bearer tokens and timeouts: each is checked where it
enters, so a mistake raises :class:`~rstream.ConfigError` (or
:class:`~rstream.InvalidStreamId`, a ``TypeError`` for a wrong type) at once,
naming what to pass instead, and never shows a token. Pure functions.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Sequence

from rstream.errors import ConfigError, InvalidStreamId

__all__ = [
    "Timeout",
    "Token",
    "clean_token",
    "normalise_timeout",
    "normalise_urls",
    "quote_stream_id",
]

Token = str | Callable[[], str] | None
Timeout = float | tuple[float, float]

_STREAM_ID = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,127}\Z")


def quote_stream_id(stream_id: str) -> str:
    """``stream_id`` as a URL path segment, after checking the protocol's rules.

    Raises :class:`~rstream.InvalidStreamId` (a ``ValueError``) for an id the
    server would refuse (1 to 128 characters of ``A-Z a-z 0-9 . _ ~ -``, not
    starting with ``.``).
    """
    if not isinstance(stream_id, str):
        raise TypeError(f"stream id must be a str, not {type(stream_id).__name__}")
    if not _STREAM_ID.match(stream_id):
        raise InvalidStreamId(
            f"invalid stream id {stream_id[:140]!r}: use 1 to 128 characters from "
            "A-Z a-z 0-9 . _ ~ -, not starting with '.'"
        )
    # Unreserved characters need no quoting; quote anyway so the invariant
    # "a path segment is quoted" does not depend on the regex above.
    return urllib.parse.quote(stream_id, safe="")


def normalise_urls(urls: str | Sequence[str]) -> tuple[str, ...]:
    """The base URLs of ``urls`` (one or several), without query or trailing ``/``."""
    items = [urls] if isinstance(urls, str) else list(urls)
    if not items:
        raise ConfigError("no server URL given; pass e.g. 'http://127.0.0.1:8080'")
    out = []
    for url in items:
        if not isinstance(url, str):
            raise TypeError(f"server URL must be a str, not {type(url).__name__}")
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"server URL {url!r} is not an http(s) URL; pass e.g. 'http://127.0.0.1:8080'"
            )
        if parts.query or parts.fragment:
            raise ConfigError(f"server URL {url!r} must not have a query or fragment")
        out.append(urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
    return tuple(u.rstrip("/") for u in out)


def normalise_timeout(timeout: Timeout) -> tuple[float, float]:
    """``(connect, read)`` seconds; one number sets both."""
    if isinstance(timeout, tuple):
        connect, read = timeout
        return (float(connect), float(read))
    return (float(timeout), float(timeout))


def clean_token(token: str) -> str:
    """``token`` without surrounding whitespace (a token file ends in a newline).

    Raises :class:`~rstream.ConfigError` without showing the token if what is
    left cannot be sent in a header.
    """
    token = token.strip()
    if not all(" " < c < "\x7f" for c in token):
        raise ConfigError(
            "the token has a space, a control or a non-ASCII character inside it, "
            "which cannot be sent in an Authorization header; check where it comes from"
        )
    return token
