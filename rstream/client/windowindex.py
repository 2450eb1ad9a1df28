"""The windows of one stream in time order, and the budget of the committed ones.

A :class:`WindowIndex` is the container behind a
:class:`~rstream.client.windows.WindowStore`: the windows sorted by start
(bisect on epoch microseconds), and the committed ones in least-recently-used
order, weighed against a budget (:attr:`Window.weight`). It knows nothing of
fetching, and it is not thread-safe: the store's lock guards every call.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence

from rstream.client.window import Pair, Window, WindowState

__all__ = ["WindowIndex"]


class WindowIndex:
    """Windows by start; committed ones also in LRU order, held to ``max_weight``."""

    def __init__(self, max_weight: int) -> None:
        self.max_weight = max_weight
        self._starts: list[int] = []  # sorted; parallel to _windows
        self._windows: list[Window] = []
        self._lru: OrderedDict[int, Window] = OrderedDict()  # committed, by start
        self.entries = 0
        """The number of entries held by committed windows."""
        self.weight = 0
        """The weight of the committed windows, held under ``max_weight``."""

    # -- looking up ----------------------------------------------------------------

    def covering(self, at: int) -> Window | None:
        """The window covering ``at``, if known."""
        i = bisect.bisect_right(self._starts, at) - 1
        if i < 0:
            return None
        window = self._windows[i]
        return window if window.covers(at) else None

    def find(self, start: int) -> Window | None:
        """The window starting at ``start``, if known."""
        i = bisect.bisect_left(self._starts, start)
        if i < len(self._starts) and self._starts[i] == start:
            return self._windows[i]
        return None

    def windows(self) -> list[Window]:
        """The windows by start (a copy of the list)."""
        return list(self._windows)

    def run(self, at: int, stop: int | None) -> list[Window]:
        """The COMMITTED window covering ``at``, then the committed windows following
        it without a gap that start before ``stop``, each marked as used; ``[]``
        when ``at`` is not in a committed window."""
        i = bisect.bisect_right(self._starts, at) - 1
        run: list[Window] = []
        if i < 0:
            return run
        windows = self._windows
        window = windows[i]
        if window.state is not WindowState.COMMITTED or not window.covers(at):
            return run
        touch = self._lru.move_to_end
        while True:
            assert window.start is not None  # committed windows have their bounds
            run.append(window)
            touch(window.start)
            end = window.end
            i += 1
            if end is None or i == len(windows) or (stop is not None and end >= stop):
                return run
            window = windows[i]
            if window.start != end or window.state is not WindowState.COMMITTED:
                return run

    def next_committed_after(self, at: int) -> int | None:
        """The start of the first committed window starting after ``at``."""
        i = bisect.bisect_right(self._starts, at)
        for window in self._windows[i:]:
            if window.state is WindowState.COMMITTED:
                return window.start
        return None

    def live_prefix(self, start: int) -> tuple[list[int], list[Pair]] | None:
        """What :meth:`hold_live` holds of the LIVE window starting at ``start``, or None."""
        window = self.find(start)
        if window is None or window.state is not WindowState.LIVE:
            return None
        if window.live_micros is None or window.live_pairs is None:
            return None
        return window.live_micros, window.live_pairs

    # -- changing ------------------------------------------------------------------

    def observe_live(self, start: int) -> Window:
        """The window starting at ``start``: the one known, else a new LIVE one
        (dropping older LIVE windows, which have closed)."""
        existing = self.find(start)
        if existing is not None:
            return existing
        window = Window(WindowState.LIVE)
        window.start = start
        self.drop_stale_live(start)
        self.insert(window)
        return window

    def hold_live(self, micros: Sequence[int], pairs: Sequence[Pair]) -> Window:
        """Keep what a history pass read of the live window (starting at ``micros[0]``)
        while it is LIVE: if within ``max_weight`` entries, and unless a longer read
        is held already. Returns the window."""
        window = self.observe_live(micros[0])
        if window.state is not WindowState.LIVE:
            return window
        held = window.live_micros
        if len(micros) > self.max_weight:
            window.live_micros = window.live_pairs = None
        elif held is None or held[-1] <= micros[-1]:
            window.live_micros, window.live_pairs = list(micros), list(pairs)
        return window

    def insert(self, window: Window) -> None:
        """Add a window with its start (not yet counted in the budget)."""
        assert window.start is not None
        i = bisect.bisect_left(self._starts, window.start)
        self._starts.insert(i, window.start)
        self._windows.insert(i, window)

    def remove(self, window: Window) -> None:
        """Take a window out (and out of the budget, if it counted)."""
        if window.start is None:
            return
        self._unlink(window)
        if self._lru.pop(window.start, None) is not None:
            self.entries -= window.size
            self.weight -= window.weight

    def touch(self, window: Window) -> None:
        """Mark a committed window as just used."""
        assert window.start is not None
        self._lru.move_to_end(window.start)

    def count(self, window: Window) -> int:
        """Count a window just COMMITTED in the budget; returns how many were evicted."""
        assert window.start is not None
        self._lru[window.start] = window
        self.entries += window.size
        self.weight += window.weight
        return self.evict()

    def reweigh(self, window: Window, before: int) -> int:
        """A counted window's weight changed from ``before``; returns how many were evicted."""
        assert window.start is not None
        if self._lru.get(window.start) is not window:
            return 0
        self.weight += window.weight - before
        return self.evict()

    def evict(self) -> int:
        """Drop the least recently used committed windows past the budget; how many."""
        # Only committed windows are in the LRU, so the live one is never evicted.
        evicted = 0
        while self.weight > self.max_weight and self._lru:
            _, window = self._lru.popitem(last=False)
            self.entries -= window.size
            self.weight -= window.weight
            self._unlink(window)
            evicted += 1
        return evicted

    def drop_stale_live(self, newer_start: int) -> None:
        """Drop LIVE windows older than the live one now starting at ``newer_start``."""
        # A live window older than the live one now known has closed; its
        # entries were never cached, so it simply leaves the store (the next
        # request for a time in it asks for its bounds).
        for window in [w for w in self._windows if w.state is WindowState.LIVE]:
            assert window.start is not None
            if window.start < newer_start:
                self.remove(window)

    def drop_read(self) -> int:
        """Drop every COMMITTED and LIVE window (what was read from a store); how many.
        Windows being fetched stay: their fetches commit them."""
        doomed = [w for w in self._windows if w.state in _READ]
        for window in doomed:
            self.remove(window)
        return len(doomed)

    def clear(self) -> list[Window]:
        """Drop every window; returns them."""
        windows = self._windows
        self._windows, self._starts = [], []
        self._lru.clear()
        self.entries = self.weight = 0
        return windows

    def _unlink(self, window: Window) -> None:
        assert window.start is not None
        i = bisect.bisect_left(self._starts, window.start)
        if i < len(self._windows) and self._windows[i] is window:
            del self._starts[i]
            del self._windows[i]


_READ = frozenset({WindowState.COMMITTED, WindowState.LIVE})
