"""rstream: follow remote state streams.

A state stream is a time-ordered log of one thing's JSON state, made of
snapshots (the whole state) and mutations (what changed). rstream reads them
back live or at any past moment::

    import rstream

    with rstream.Client("http://127.0.0.1:8080") as client:
        robot = client.stream("robot-1")
        ts, state = robot.latest()
"""

from __future__ import annotations

from rstream.client.client import Client, connect
from rstream.client.remote import RemoteStream, StreamMetadata
from rstream.core.cursor import Cursor, CursorKind
from rstream.core.entry import Entry, EntryKind
from rstream.core.log import Log, MemoryLog
from rstream.core.stream import RateConfig, Stream, WriteAction
from rstream.errors import (
    AuthError,
    ClientClosed,
    ConfigError,
    EntryFormatError,
    Gap,
    InvalidStreamId,
    InvalidTimestamp,
    MutationError,
    OutOfOrder,
    OutOfRange,
    ProtocolError,
    RStreamError,
    ServerError,
    StorageError,
    StorageUnavailable,
    StreamNotFound,
    Timeout,
    TransportError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "Client",
    "ClientClosed",
    "ConfigError",
    "Cursor",
    "CursorKind",
    "Entry",
    "EntryFormatError",
    "EntryKind",
    "Gap",
    "InvalidStreamId",
    "InvalidTimestamp",
    "Log",
    "MemoryLog",
    "MutationError",
    "OutOfOrder",
    "OutOfRange",
    "ProtocolError",
    "RStreamError",
    "RateConfig",
    "RemoteStream",
    "ServerError",
    "StorageError",
    "StorageUnavailable",
    "Stream",
    "StreamMetadata",
    "StreamNotFound",
    "Timeout",
    "TransportError",
    "WriteAction",
    "__version__",
    "connect",
]
