"""The disk cache as one client sees it: the windows of the store its URLs serve.

A :class:`~rstream.client.diskcache.DiskCache` holds the windows of every
store any client met; :class:`StoreCache` binds it to one client's URLs and
the store id they answer with (checked once, then compared with every
``RStream-Store-Id`` the transport sees), and :class:`StreamCache` to one
stream: the object a :class:`~rstream.client.windows.WindowStore` reads
through and writes through. When the URLs turn out to serve another store,
the old store's windows are purged from disk, and every stream's
``on_store_change`` callback drops what it holds in memory.
"""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from rstream.client.cachefile import DiskWindow, without_credentials
from rstream.client.diskcache import DiskCache

__all__ = ["StoreCache", "StreamCache"]

_STATE = operator.itemgetter(1)  # the state of a (datetime, state) pair


class StoreCache:
    """A :class:`DiskCache` as one client sees it: only the windows of the store its
    URLs serve, once that store's id is known.

    ``ask_store_id(stream_id)`` asks the server for the store id (one request,
    the first time a stream reads from the cache): None when it could not be
    asked (asked again next time), ``""`` when the server has none (an older
    server: the cache stays unused); :meth:`observe` takes every id the
    transport sees after that (``RStream-Store-Id``). A new id rebinds the
    URLs (purging the old store's windows, one warning) and calls every
    stream's ``on_store_change``. Thread-safe.
    """

    def __init__(
        self, disk: DiskCache, urls: Sequence[str], ask_store_id: Callable[[str], str | None]
    ) -> None:
        self.disk = disk
        self.urls = tuple(map(without_credentials, urls))  # the cache file keeps them
        self._ask = ask_store_id
        self._lock = threading.Lock()
        self._store: str | None = None
        self._no_id = False  # the server sends no store id: nothing is cached
        self._streams: weakref.WeakSet[StreamCache] = weakref.WeakSet()

    def store(self, stream_id: str) -> str | None:
        """The verified store id (asking the server the first time), or None: the
        server gave none, or the cache is off."""
        if self.disk.broken is not None or self._no_id:
            return None
        store = self._store
        if store is None:
            asked = self._ask(stream_id)
            if not asked:
                self._no_id = asked == ""
                return None
            self.observe(asked)
            store = self._store
        return store

    def observe(self, store: str) -> None:
        """The server said it serves ``store``: if that is news, bind the URLs to it,
        and if it replaces another, tell every stream (from the calling thread)."""
        with self._lock:
            previous = self._store
            if store == previous:
                return
            self._store = store
            streams = list(self._streams) if previous is not None else []
        self.disk.bind(self.urls, store)
        for stream in streams:
            if stream.on_store_change is not None:
                stream.on_store_change()

    def stream(self, stream_id: str) -> StreamCache:
        """The cache of one stream."""
        stream = StreamCache(self, stream_id)
        with self._lock:
            self._streams.add(stream)
        return stream


class StreamCache:
    """The disk cache of one stream: what a :class:`~rstream.client.windows.WindowStore`
    reads through on a miss and writes through on a commit. Errors never escape.

    ``on_store_change``, when set, is called (without arguments, on the thread
    that saw the new id) when the URLs turn out to serve another store: what
    was read from the old one must be dropped.
    """

    def __init__(self, store: StoreCache, stream_id: str) -> None:
        self._store = store
        self._disk = store.disk
        self.stream_id = stream_id
        self.on_store_change: Callable[[], None] | None = None

    def find(self, at: int) -> DiskWindow | None:
        store = self._store.store(self.stream_id)
        return None if store is None else self._disk.find(store, self.stream_id, at)

    def run(self, at: int, stop: int | None, max_entries: int) -> list[DiskWindow]:
        store = self._store.store(self.stream_id)
        if store is None:
            return []
        return self._disk.run(store, self.stream_id, at, stop, max_entries)

    def read(self, at: int, stop: int | None, max_entries: int) -> list[DiskWindow]:
        """The window covering ``at`` (``max_entries`` 0), or :meth:`run`."""
        if max_entries > 0:
            return self.run(at, stop, max_entries)
        one = self.find(at)
        return [] if one is None else [one]

    def next_start_after(self, at: int) -> int | None:
        store = self._store.store(self.stream_id)
        return None if store is None else self._disk.next_start_after(store, self.stream_id, at)

    def put(self, micros: Sequence[int], pairs: Sequence[tuple[Any, Any]], end: int | None) -> None:
        store = self._store.store(self.stream_id)
        if store is not None:
            # The states are taken out of the pairs by the writer thread.
            self._disk.put(store, self.stream_id, micros, map(_STATE, pairs), end)

    def confirm_end(self, start: int, end: int) -> None:
        store = self._store.store(self.stream_id)
        if store is not None:
            self._disk.confirm_end(store, self.stream_id, start, end)
