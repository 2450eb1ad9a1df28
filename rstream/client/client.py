"""Client: the entry point of the SDK, holding what its streams share.

One :class:`Client` owns one :class:`~rstream.client.transport.Transport` (a
pooled ``requests`` session to one store, possibly served by several replica
URLs), one worker pool for fetching history pages, and one
:class:`~rstream.client.stream.RemoteStream` per stream id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tenacity

from rstream.client.diskcache import DEFAULT_MAX_BYTES, DiskCache, default_cache_dir
from rstream.client.sse import DEFAULT_MAX_EVENT_BYTES
from rstream.client.storecache import StoreCache, StreamCache
from rstream.client.stream import RemoteStream, StreamMetadata
from rstream.client.transport import Timeout, Token, Transport, json_body, quote_stream_id
from rstream.client.windows import DEFAULT_MAX_CACHED_ENTRIES
from rstream.errors import (
    ClientClosed,
    ConfigError,
    ProtocolError,
    RStreamError,
    ServerError,
    TransportError,
)

__all__ = ["Client", "connect"]

logger = logging.getLogger("rstream.client")


class Client:
    """A client of one rstream store: ``with rstream.Client(url) as client: ...``.

    ``urls``: one base URL or a list of replicas of one store (requests fail
    over between them). ``token``: a string, or a callable asked again for every
    request (and once more after a 401). ``timeout``: ``(connect, read)``
    seconds. ``max_workers``: threads fetching history pages (also the number
    of pages requested ahead). ``retry``: a :class:`tenacity.Retrying` used as
    a template. ``heartbeat_timeout``, ``max_event_bytes``: for the live tail.
    ``max_cached_entries``: budget of the window cache of each stream.
    ``page_size``: entries per page asked of the server (default: the server's).
    ``sleep``: what waits between retries (inject one in tests).
    ``cache``: where committed windows are kept across processes: None (the
    default: in memory only), a directory, or True for the user's cache
    directory (see :func:`~rstream.client.diskcache.default_cache_dir`);
    ``cache_max_bytes`` bounds it (least recently used windows go first).

    Thread-safe. ``close()`` (or leaving the ``with`` block) stops every live
    tail, the worker pool and the connections; later calls raise
    :class:`~rstream.ClientClosed`.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        token: Token = None,
        timeout: Timeout = (3.05, 30.0),
        max_workers: int = 4,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        retry: tenacity.Retrying | None = None,
        heartbeat_timeout: float | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_cached_entries: int = DEFAULT_MAX_CACHED_ENTRIES,
        page_size: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        cache: str | os.PathLike[str] | bool | None = None,
        cache_max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_workers < 1:
            raise ConfigError("max_workers must be at least 1")
        if page_size is not None and page_size < 1:
            raise ConfigError("page_size must be at least 1")
        if cache_max_bytes < 0:
            raise ConfigError("cache_max_bytes must be >= 0")
        self.transport = Transport(
            urls,
            token=token,
            timeout=timeout,
            verify=verify,
            cert=cert,
            retry=retry,
            # A connection per worker, plus live tails and the caller's own.
            pool_maxsize=max_workers + 4,
            sleep=sleep,
        )
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="rstream-fetch")
        self._stream_options: dict[str, Any] = {
            "max_cached_entries": max_cached_entries,
            "prefetch": max_workers,
            "page_size": page_size,
            "heartbeat_timeout": heartbeat_timeout,
            "max_event_bytes": max_event_bytes,
            "sleep": sleep,
        }
        self._lock = threading.Lock()
        self._streams: dict[str, RemoteStream] = {}
        self._closed = False
        self._store_id: str | None = None  # memory only: the store the URLs serve
        self.cache: StoreCache | None = None
        """The disk cache of this client's store (None: memory only)."""
        if cache is not None and cache is not False:
            directory = default_cache_dir() if cache is True else cache
            self.cache = StoreCache(
                DiskCache(directory, max_bytes=cache_max_bytes), self.urls, self._ask_store_id
            )
            self.transport.on_store_id = self.cache.observe
        else:
            self.transport.on_store_id = self._observe_store

    @property
    def urls(self) -> tuple[str, ...]:
        return self.transport.urls

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<rstream.Client {', '.join(self.urls)}{' (closed)' if self._closed else ''}>"

    def stream(self, stream_id: str) -> RemoteStream:
        """The :class:`RemoteStream` for ``stream_id`` (the same object for the same id)."""
        with self._lock:
            self._check_open()
            stream = self._streams.get(stream_id)
            if stream is None:
                stream = RemoteStream(
                    self.transport,
                    stream_id,
                    executor=self._pool,
                    on_close=self._forget,
                    disk=self._disk(stream_id),
                    **self._stream_options,
                )
                self._streams[stream_id] = stream
            return stream

    def streams(self) -> list[StreamMetadata]:
        """Every stream of the store, ordered by id (``GET /v1/streams``)."""
        self._check_open()
        body = self.transport.get_json("/v1/streams")
        items = body.get("streams") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ProtocolError(f"malformed stream list {body!r:.200}")
        return [StreamMetadata.from_json(item) for item in items]

    def ping(self) -> bool:
        """Whether a server answers ``GET /v1/health`` with ``{"status": "ok"}`` now.

        One attempt (each URL once), never retried; an unreachable server, an
        error answer or a malformed one is ``False``. Raises only
        :class:`~rstream.ClientClosed` (after :meth:`close`).
        """
        self._check_open()
        try:
            response = self.transport.request("GET", "/v1/health", retry=self.transport.probe_retry)
            with contextlib.closing(response):
                body = json_body(response)
        except (TransportError, ServerError, ProtocolError) as exc:
            logger.info("ping: %s", exc)
            return False
        return isinstance(body, dict) and body.get("status") == "ok"

    def close(self) -> None:
        """Close every stream, the worker pool and the connections. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            streams = list(self._streams.values())
            self._streams.clear()
        # The transport first: its close wakes backoff waits and makes every
        # request in flight fail fast, so the joins below are quick.
        self.transport.close()
        for stream in streams:
            stream.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.cache is not None:
            self.cache.disk.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the client is closed; create a new rstream.Client")

    def _disk(self, stream_id: str) -> StreamCache | None:
        return None if self.cache is None else self.cache.stream(stream_id)

    def _ask_store_id(self, stream_id: str) -> str | None:
        """The store id the server reports (``GET /v1/streams/{id}``); None when
        the request failed, ``""`` when the server reports none."""
        try:
            body = self.transport.get_json(
                f"/v1/streams/{quote_stream_id(stream_id)}", stream_id=stream_id
            )
        except RStreamError as exc:
            logger.info("no store id for the disk cache: %s", exc)
            return None
        store_id = body.get("store_id") if isinstance(body, dict) else None
        if not (isinstance(store_id, str) and store_id):
            logger.info("%s reports no store id: the disk cache is not used", self.urls[0])
            return ""
        return store_id

    def _observe_store(self, store: str) -> None:
        """Memory only: the URLs answered with ``store``. If they served another
        store before, the windows read from it are wrong now: every stream drops
        them (one warning). Called by the transport, from the requesting thread."""
        with self._lock:
            previous, self._store_id = self._store_id, store
            if previous is None or previous == store:
                return
            streams = list(self._streams.values())
        logger.warning(
            "%s now serves another store (id %s, was %s): what was read from the old "
            "store is dropped",
            ", ".join(self.urls),
            store,
            previous,
        )
        for stream in streams:
            stream.windows.forget_store()

    def _forget(self, stream: RemoteStream) -> None:
        with self._lock:
            if self._streams.get(stream.id) is stream:
                del self._streams[stream.id]


class _OwnedStream(RemoteStream):
    """A RemoteStream that owns its Client (from :func:`connect`)."""

    _client: Client

    def close(self) -> None:
        super().close()
        self._client.close()


def connect(url: str | Sequence[str], stream_id: str, **client_options: Any) -> RemoteStream:
    """A :class:`RemoteStream` with a client of its own; ``robot.close()`` closes both.

    ``client_options`` are those of :class:`Client`.
    """
    client = Client(url, **client_options)
    try:
        with client._lock:
            stream = _OwnedStream(
                client.transport,
                stream_id,
                executor=client._pool,
                on_close=client._forget,
                disk=client._disk(stream_id),
                **client._stream_options,
            )
            stream._client = client
            client._streams[stream_id] = stream
    except BaseException:
        client.close()
        raise
    return stream
