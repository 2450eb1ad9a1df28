"""The exceptions rstream raises on purpose.

Everything derives from :class:`RStreamError`, so ``except rstream.RStreamError``
catches every error the library raises deliberately. Where a builtin fits, an
error also derives from it (``OutOfRange`` is a ``LookupError``, malformed input
is a ``ValueError``), so generic handlers keep working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "ClientClosed",
    "ConfigError",
    "EntryFormatError",
    "Gap",
    "InvalidStreamId",
    "InvalidTimestamp",
    "MutationError",
    "OutOfOrder",
    "OutOfRange",
    "ProtocolError",
    "RStreamError",
    "ServerError",
    "StorageError",
    "StorageUnavailable",
    "StreamNotFound",
    "Timeout",
    "TransportError",
]


class RStreamError(Exception):
    """Base class of every error rstream raises on purpose."""


# -- core -------------------------------------------------------------------


class InvalidTimestamp(RStreamError, ValueError):
    """A timestamp was naive, of the wrong type, or not valid RFC 3339."""


class EntryFormatError(RStreamError, ValueError):
    """A JSON entry is malformed; the message says what is wrong and where."""


class MutationError(RStreamError, ValueError):
    """A mutation cannot be applied; ``path`` is the JSON path of the problem."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(f"{message} (at {path})")
        self.path = path
        self.reason = message


class OutOfOrder(RStreamError, ValueError):
    """An entry or write is not strictly after the newest entry of the log."""

    def __init__(self, message: str, *, last: Any = None, given: Any = None) -> None:
        super().__init__(message)
        self.last = last
        self.given = given


class OutOfRange(RStreamError, LookupError):
    """No snapshot at or before the requested time: the stream has no state then."""

    def __init__(self, message: str, *, when: Any = None) -> None:
        super().__init__(message)
        self.when = when


class ConfigError(RStreamError, ValueError):
    """An option or configuration value is invalid (a rate, a URL, a limit)."""


class InvalidStreamId(RStreamError, ValueError):
    """A stream id is empty, too long, or has characters outside ``A-Za-z0-9._~-``."""


# -- storage ------------------------------------------------------------------


class StorageError(RStreamError):
    """The storage backend failed (a database error that is not the caller's fault)."""


class StorageUnavailable(StorageError):
    """The database cannot be reached right now; retrying later may succeed."""


# -- client -------------------------------------------------------------------


class StreamNotFound(RStreamError, LookupError):
    """The server does not know the stream."""

    def __init__(self, message: str, *, stream_id: str | None = None) -> None:
        super().__init__(message)
        self.stream_id = stream_id


class AuthError(RStreamError):
    """The server refused the credentials (HTTP 401 or 403)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerError(RStreamError):
    """The server answered with an error that has no more specific class."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.url = url


class TransportError(RStreamError, ConnectionError):
    """The server could not be reached, or the connection broke, after retrying."""


class ProtocolError(RStreamError, ValueError):
    """A response or event did not follow the rstream protocol."""


class Gap(RStreamError):
    """Changes between two revisions could not be seen live.

    Reported to ``on_error`` when the server answered ``reset`` to a resume: the
    client re-anchored on the live window. The history of that time can still be
    fetched with ``state_at`` or ``history``.
    """

    def __init__(self, message: str, *, after_rev: int | None, resumed_rev: int | None) -> None:
        super().__init__(message)
        self.after_rev = after_rev
        self.resumed_rev = resumed_rev


class Timeout(RStreamError, TimeoutError):
    """A blocking call with a ``timeout`` got nothing in time (also a ``TimeoutError``)."""


class ClientClosed(RStreamError, RuntimeError):
    """The client (or stream, subscription, queue) was closed; make a new one."""
