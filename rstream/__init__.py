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

import importlib
from typing import TYPE_CHECKING, Any

from rstream._version import __version__
from rstream.core.cursor import Cursor, CursorKind
from rstream.core.entry import Entry, EntryKind
from rstream.core.log import Log, MemoryLog
from rstream.core.stream import RateConfig, Stream, WriteAction
from rstream.errors import (
    AuthError,
    ClientClosed,
    ConfigError,
    Disconnected,
    Empty,
    EntryFormatError,
    Gap,
    InvalidJSON,
    InvalidJSONType,
    InvalidStreamId,
    InvalidTimestamp,
    MutationError,
    OutOfOrder,
    OutOfRange,
    ProtocolError,
    Reconnected,
    RStreamError,
    ServerError,
    StorageError,
    StorageUnavailable,
    StreamNotFound,
    Timeout,
    TransportError,
)

if TYPE_CHECKING:
    from rstream.client.client import Client, connect
    from rstream.client.health import Health
    from rstream.client.queues import StateQueue
    from rstream.client.stream import RemoteStream, StreamMetadata
    from rstream.client.subscription import Subscription

# The client (requests, urllib3, tenacity) loads on first use, so the core and
# the server import without it (PEP 562).
_LAZY = {
    "Client": "rstream.client.client",
    "connect": "rstream.client.client",
    "Health": "rstream.client.health",
    "StateQueue": "rstream.client.queues",
    "RemoteStream": "rstream.client.stream",
    "StreamMetadata": "rstream.client.stream",
    "Subscription": "rstream.client.subscription",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AuthError",
    "Client",
    "ClientClosed",
    "ConfigError",
    "Cursor",
    "CursorKind",
    "Disconnected",
    "Empty",
    "Entry",
    "EntryFormatError",
    "EntryKind",
    "Gap",
    "Health",
    "InvalidJSON",
    "InvalidJSONType",
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
    "Reconnected",
    "RemoteStream",
    "ServerError",
    "StateQueue",
    "StorageError",
    "StorageUnavailable",
    "Stream",
    "StreamMetadata",
    "StreamNotFound",
    "Subscription",
    "Timeout",
    "TransportError",
    "WriteAction",
    "__version__",
    "connect",
]
