"""The server's resource limits."""

from __future__ import annotations

from dataclasses import dataclass

from rstream.errors import ConfigError

__all__ = ["Limits"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request, response or subscriber may cost the server.

    - ``max_body_bytes``: a request body (counted while it arrives; 413 past it).
    - ``max_state_bytes``: one state or entry ``data``, as compact JSON (413).
    - ``page_size``: entries per ``GET .../entries`` page (the cap of ``limit``).
    - ``page_bytes``: a page also ends once its body passes this many bytes, so
      a page is never bigger than this plus one entry (``RStream-Next-Start``
      says where to continue).
    - ``max_subscribers``: live subscribers per stream (429 past it).
    - ``subscriber_events`` / ``subscriber_bytes``: how far a live subscriber
      may fall behind (events written but not yet handed to its connection)
      before the server disconnects it; it resumes by revision.
    - ``tail_cache_events`` / ``tail_cache_bytes``: recent changes per stream
      kept encoded in memory, so that one storage read serves every subscriber.

    What a connection may cost (how many, how long idle or sending) is set on
    the :class:`~rstream.server.ServerThread` serving the app, with
    :class:`~rstream.server.connections.ConnectionLimits`.
    """

    max_body_bytes: int = 8 * MiB
    max_state_bytes: int = 1 * MiB
    page_size: int = 10_000
    page_bytes: int = 4 * MiB
    max_subscribers: int = 1_000
    subscriber_events: int = 1_000
    subscriber_bytes: int = 16 * MiB
    tail_cache_events: int = 1_024
    tail_cache_bytes: int = 8 * MiB

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"Limits.{name} must be a positive int, not {value!r}")
