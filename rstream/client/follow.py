"""Following one stream live: its live tail, started on first use and started
again after it ended by itself, and the windows it completes handed to the cache."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from rstream.client.windows import WindowStore
from rstream.core.entry import Entry
from rstream.errors import ClientClosed, ProtocolError

if TYPE_CHECKING:
    from rstream.client.live import LiveTail

__all__ = ["Follow"]

logger = logging.getLogger("rstream.client")


class Follow:
    """The live tail of one stream, made by ``new_tail(on_commit)`` when first needed.

    Thread-safe. ``check_open`` raises when the stream is closed; after
    :meth:`close`, :meth:`tail` raises what it raises.
    """

    def __init__(
        self,
        stream_id: str,
        windows: WindowStore,
        new_tail: Callable[[Callable[[list[Entry]], None]], LiveTail],
        check_open: Callable[[], None],
    ) -> None:
        self._stream_id = stream_id
        self._windows = windows
        self._new_tail = new_tail
        self._check_open = check_open
        self._lock = threading.Lock()
        self._tail: LiveTail | None = None
        self._retired: list[LiveTail] = []  # tails that ended by themselves (see tail())

    @property
    def current(self) -> LiveTail | None:
        """The tail running (or ended by itself), if one was started."""
        return self._tail

    def tail(self) -> LiveTail:
        """The running tail, started if there is none (or it ended by itself)."""
        with self._lock:
            self._check_open()
            tail = self._tail
            if tail is not None and tail.ended:
                # It stopped by itself (a 204, a 404 before the stream existed, a
                # refused token), and its subscribers were told. Following again
                # starts a new tail; the old one's dispatchers still deliver what
                # they hold, so it is closed (joined) with this stream, not now.
                self._retired.append(tail)
                self._tail = None
            if self._tail is None:
                self._tail = self._new_tail(self._on_commit)
                self._tail.start()
            return self._tail

    def _on_commit(self, entries: list[Entry]) -> None:
        # The tail tells us the window's entries; its end is the new live
        # window's snapshot, which the tail holds by now.
        end = None
        tail = self._tail
        window = tail.live_window() if tail is not None else None
        if window and entries and window[0].micros > entries[-1].micros:
            end = window[0].micros
        try:
            self._windows.commit(entries, end)
        except (ProtocolError, ClientClosed) as exc:
            logger.debug("live window of %s not cached: %s", self._stream_id, exc)

    def close(self) -> None:
        """Stop every tail started (joining their threads). Idempotent."""
        with self._lock:
            tails = [*self._retired, self._tail] if self._tail is not None else self._retired
            self._tail, self._retired = None, []
        for tail in tails:
            tail.close()
