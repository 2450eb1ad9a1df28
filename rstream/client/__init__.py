"""The rstream client SDK: read state streams at any time, or follow them live.

``Client`` holds the connections, the worker pool and the streams;
``RemoteStream`` is one stream; ``connect(url, stream_id)`` is the short way to
one stream. See ``docs/client.rst``.
"""

from __future__ import annotations

from rstream.client.client import Client, connect
from rstream.client.stream import RemoteStream, StreamMetadata

__all__ = ["Client", "RemoteStream", "StreamMetadata", "connect"]
