"""rstream: follow remote state streams.

A state stream is a time-ordered log of one thing's JSON state, made of
snapshots (the whole state) and mutations (what changed).
"""

from __future__ import annotations

from rstream.core.entry import Entry, EntryKind
from rstream.core.log import Log
from rstream.errors import (
    AuthError,
    ClientClosed,
    EntryFormatError,
    Gap,
    InvalidTimestamp,
    MutationError,
    OutOfOrder,
    OutOfRange,
    ProtocolError,
    RStreamError,
    ServerError,
    StreamNotFound,
    TransportError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "ClientClosed",
    "Entry",
    "EntryFormatError",
    "EntryKind",
    "Gap",
    "InvalidTimestamp",
    "Log",
    "MutationError",
    "OutOfOrder",
    "OutOfRange",
    "ProtocolError",
    "RStreamError",
    "ServerError",
    "StreamNotFound",
    "TransportError",
    "__version__",
]
