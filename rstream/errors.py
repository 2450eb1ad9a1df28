"""The exceptions rstream raises on purpose.

Everything derives from :class:`RStreamError`, so ``except rstream.RStreamError``
catches every error the library raises deliberately. Where a builtin fits, an
error also derives from it (``OutOfRange`` is a ``LookupError``, malformed input
is a ``ValueError``), so generic handlers keep working.
"""

from __future__ import annotations

import queue
from typing import Any

__all__ = [
    "AuthError",
    "ClientClosed",
    "ConfigError",
    "Disconnected",
    "Empty",
    "EntryFormatError",
    "Gap",
    "InvalidJSON",
    "InvalidJSONType",
    "InvalidStreamId",
    "InvalidTimestamp",
    "MutationError",
    "OutOfOrder",
    "OutOfRange",
    "ProtocolError",
    "RStreamError",
    "Reconnected",
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


class InvalidJSON(RStreamError, ValueError):
    """A value is not JSON rstream can store (NaN, too deep, a lone surrogate).

    ``path`` is the JSON path of the problem.
    """

    def __init__(self, message: str, *, path: str = "$") -> None:
        super().__init__(f"{message} (at {path})")
        self.path = path
        self.reason = message


class InvalidJSONType(InvalidJSON, TypeError):
    """A value is of a Python type that has no JSON form (also a ``TypeError``)."""


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


class Empty(RStreamError, queue.Empty):
    """A queue's ``get`` found nothing in time (also a :class:`queue.Empty`).

    Not an ``OSError``: a network handler does not swallow it.
    """


class Disconnected(RStreamError):
    """Notice (not fatal): the live tail lost its connection and is reconnecting.

    Given to ``on_error``; the subscription goes on and resumes without a gap.
    ``url`` is the server it lost, ``cause`` what broke.
    """

    def __init__(
        self, message: str, *, url: str | None = None, cause: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.cause = cause


class Reconnected(RStreamError):
    """Notice (not fatal): the live tail is connected again after a :class:`Disconnected`.

    ``downtime`` is how long it was down, in seconds.
    """

    def __init__(self, message: str, *, url: str | None = None, downtime: float = 0.0) -> None:
        super().__init__(message)
        self.url = url
        self.downtime = downtime
