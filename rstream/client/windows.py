"""The window store: the windows of one stream the client has fetched, in time order.

A *window* runs from one snapshot up to (not including) the next. Every window
but the newest is immutable, so once fetched it never needs fetching again. The
store keeps them sorted by start (bisect on epoch microseconds), shares one fetch
between concurrent requests for the same window, and evicts the least recently
used complete windows past a budget of entries.

A committed window also caches its *states*: the ``(datetime, state)`` pair
of every entry, computed once (by the history pass that fetched it, or lazily
by :meth:`WindowStore.states`), so a second pass over the window does no work
per entry. The pairs then replace the entries, which they make redundant:
consecutive states share structure (``apply_mutation`` copies only the changed
path), so a window's states take about the memory of its entries, and the
budget weighs them (:func:`states_weight`).

A window's life is the transition table of :mod:`rstream.client.window`; every
move goes through its checked :func:`~rstream.client.window.move`. The windows
themselves sit in a :class:`~rstream.client.windowindex.WindowIndex`.

This module does no I/O: it calls the ``fetch_bounds`` and ``fetch_entries``
functions it is given (the remote stream passes HTTP ones; tests pass fakes),
on the thread that first asked for the window. Other threads asking for the
same window wait for that fetch (a future per window) instead of repeating it.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rstream.client.window import (
    Bounds,
    Pair,
    Window,
    WindowState,
    check_bounds,
    check_window_entries,
    check_window_states,
    fail,
    move,
    replay,
    resolve,
    states_weight,
)
from rstream.client.windowindex import WindowIndex
from rstream.core.entry import Entry
from rstream.errors import ClientClosed, ConfigError, OutOfRange

if TYPE_CHECKING:
    from rstream.client.storecache import StreamCache

__all__ = ["DEFAULT_MAX_CACHED_ENTRIES", "StoreStats", "WindowStore"]

DEFAULT_MAX_CACHED_ENTRIES = 1_000_000
DISK_RUN_ENTRIES = 100_000  # the most entries one read-ahead from the disk cache loads


@dataclass(slots=True)
class StoreStats:
    """Counters, for tests and tuning."""

    hits: int = 0  # requests answered from a committed window
    bounds_fetches: int = 0
    entries_fetches: int = 0
    evictions: int = 0
    errors: int = 0
    disk_hits: int = 0  # committed windows read from the disk cache


class WindowStore:
    """The windows of one stream, sorted by start, with one fetch per window.

    ``fetch_bounds(at)`` returns the :class:`Bounds` of the window around ``at``
    (raising :class:`~rstream.OutOfRange` before the first snapshot);
    ``fetch_entries(start, end)`` returns the entries of ``[start, end)``.
    Committed windows are kept while their :attr:`Window.weight` adds up to at
    most ``max_cached_entries``: one per entry or, once a window's states are
    computed, :func:`states_weight` of them. Thread-safe; the fetch functions
    are called without the lock held.
    """

    def __init__(
        self,
        fetch_bounds: Callable[[int], Bounds],
        fetch_entries: Callable[[int, int], list[Entry]],
        *,
        max_cached_entries: int = DEFAULT_MAX_CACHED_ENTRIES,
        disk: StreamCache | None = None,
    ) -> None:
        if max_cached_entries < 0:
            raise ConfigError("max_cached_entries must be >= 0")
        self._fetch_bounds = fetch_bounds
        self._fetch_entries = fetch_entries
        self._lock = threading.Lock()
        self._index = WindowIndex(max_cached_entries)  # guarded by _lock
        self._pending: Window | None = None
        self._closed = False
        self._disk = disk  # committed windows on disk: read through on a miss, written through
        self.stats = StoreStats()
        if disk is not None:
            disk.on_store_change = self.forget_store

    @property
    def max_cached_entries(self) -> int:
        """The budget of the committed windows (see :attr:`cached_weight`)."""
        return self._index.max_weight

    # -- looking up ----------------------------------------------------------------

    def get(self, at: int) -> Window:
        """The window covering ``at``: COMMITTED (with entries) or LIVE (without).

        Fetches what is missing: first the bounds (one pending request at a
        time), then the entries. Raises what the fetch raised, to every thread
        that waited for it. With a disk cache, a window it holds costs no request.
        """
        if self._disk is not None:
            found = self._from_disk(at, None, run=False)
            if found:
                return found[0]
        while True:
            with self._lock:
                self._check_open()
                window = self._index.covering(at)
                if window is not None and window.state is WindowState.COMMITTED:
                    self._index.touch(window)
                    self.stats.hits += 1
                    return window
                if window is not None and window.state is WindowState.LIVE:
                    return window
                pending = self._pending
                lead = window is None and pending is None
                if lead:
                    pending = self._pending = Window(WindowState.PENDING, asked_at=at)
            if window is not None:  # PULLING: another thread fetches it
                window._done_future.result()
                # Return it even if already evicted: its entries stay valid.
                return window
            assert pending is not None
            if lead:
                self._lead(pending, at)
                if pending.state in (WindowState.COMMITTED, WindowState.LIVE):
                    return pending
                continue  # merged into a window learned meanwhile
            # Someone else is asking for bounds: theirs may cover our time too.
            try:
                pending._bounds_future.result()
            except OutOfRange:
                # Out of range for their time says nothing about a later one.
                assert pending.asked_at is not None
                if at <= pending.asked_at:
                    raise
            # Loop: re-check coverage with what is now known.

    def cached_run(self, at: int, stop: int | None = None) -> list[Window]:
        """The COMMITTED window covering ``at``, then the committed windows that follow
        it without a gap (each starting where the one before ends) and start before
        ``stop``; ``[]`` when ``at`` is not cached. Each is a hit, as for :meth:`get`.

        One lock round for a run of windows: a pass over a cached range costs per
        run, not per window. With a disk cache, the windows it holds from ``at``
        on are read into memory first.
        """
        if self._disk is not None:
            self._from_disk(at, stop, run=True)
        with self._lock:
            self._check_open()
            run = self._index.run(at, stop)
            self.stats.hits += len(run)
            return run

    def covering(self, at: int) -> Window | None:
        """The known window covering ``at`` (any state but PENDING), without fetching."""
        with self._lock:
            return self._index.covering(at)

    def windows(self) -> list[Window]:
        """The windows in the store, by start (a copy of the list)."""
        with self._lock:
            return self._index.windows()

    def next_start_after(self, at: int) -> int | None:
        """The start of the first committed window starting after ``at`` (in memory
        or on disk)."""
        with self._lock:
            found = self._index.next_committed_after(at)
        on_disk = None if self._disk is None else self._disk.next_start_after(at)
        return min((s for s in (found, on_disk) if s is not None), default=None)

    @property
    def cached_entries(self) -> int:
        """The number of entries held by committed windows."""
        return self._index.entries

    @property
    def cached_weight(self) -> int:
        """The weight of the committed windows, held under ``max_cached_entries``."""
        return self._index.weight

    def states(self, window: Window) -> list[Pair]:
        """The ``(datetime, state)`` of every entry of a COMMITTED ``window``.

        Computed once (outside the lock), then kept with the window in place of
        its entries. The states are shared: never modify them.
        """
        pairs = window.pairs
        if pairs is not None:
            return pairs
        entries = window.entries
        if entries is None:
            if window.pairs is not None:  # computed meanwhile
                return window.pairs
            raise ValueError(f"{window!r} has no entries to compute states from")
        pairs = replay(entries)
        weight = states_weight(map(_STATE, pairs))
        with self._lock:
            if window.pairs is not None:  # another thread was first: keep one copy
                return window.pairs
            before = window.weight
            window.pairs, window.states_weight = pairs, weight
            window.entries = None
            self.stats.evictions += self._index.reweigh(window, before)
        return pairs

    @property
    def pending(self) -> Window | None:
        """The window whose bounds are being asked for, if any."""
        return self._pending

    # -- learning windows from elsewhere ----------------------------------------------

    def commit(
        self,
        entries: Sequence[Entry],
        end: int | None,
        pairs: Sequence[Pair] | None = None,
    ) -> Window:
        """Record a complete window learned elsewhere (a history pass, the live tail).

        ``entries`` run from the window's snapshot up to ``end``, the next
        snapshot's time; ``end=None`` means "not known yet": the window then ends
        provisionally just after its last entry until the server confirms it.
        ``pairs``, when the caller computed them, are what :func:`replay`
        returns for ``entries``; the window then keeps them in place of the
        entries. A window already committed is kept as is (and returned).
        """
        entries = list(entries)
        check_window_entries(entries, entries[0].micros if entries else 0, end)
        if pairs is not None:
            pairs = list(pairs)
            if len(pairs) != len(entries):
                raise ValueError(f"{len(pairs)} states for {len(entries)} entries")
        micros = [e.micros for e in entries]
        return self._record(micros, entries if pairs is None else None, pairs, end)

    def commit_states(
        self, micros: Sequence[int], pairs: Sequence[Pair], end: int | None
    ) -> Window:
        """Record a complete window from its entries' times and states alone (a history pass).

        ``micros`` are the times of the window's entries, its snapshot first,
        and ``pairs`` their ``(datetime, state)`` as :func:`replay` makes them
        (the caller read the entries' kinds: only it knows the first is the
        snapshot); ``end`` is as for :meth:`commit`. The times must be
        ascending and before ``end`` (:class:`~rstream.ProtocolError`). The
        window keeps copies of both lists, never the entries: they need not be
        built at all. A window already committed is kept as is (and returned).
        """
        micros = list(micros)
        pairs = list(pairs)
        check_window_states(micros, pairs, end)
        return self._record(micros, None, pairs, end)

    def commit_live_window(self, entries: list[Entry]) -> None:
        """``on_commit`` of the live tail: the previous live window, now complete."""
        if entries and not self._closed:
            self.commit(entries, None)

    def observe_live(self, start: int) -> Window:
        """Record that the live window starts at ``start``; returns it (LIVE)."""
        with self._lock:
            self._check_open()
            return self._index.observe_live(start)

    def hold_live(self, micros: Sequence[int], pairs: Sequence[Pair]) -> Window:
        """Record the live window (it starts at ``micros[0]``) with what a history pass
        read of it: its entries' times and states, snapshot first.

        The next pass then fetches only what follows (see :meth:`live_prefix`).
        They are kept while the window is LIVE, if no larger than
        ``max_cached_entries`` (a live window is never evicted, so that bounds what
        it holds), and unless another pass already holds a longer read.
        """
        if len(micros) != len(pairs) or not micros:
            raise ValueError(f"{len(pairs)} states for {len(micros)} entries")
        with self._lock:
            self._check_open()
            return self._index.hold_live(micros, pairs)

    def live_prefix(self, start: int) -> tuple[list[int], list[Pair]] | None:
        """What :meth:`hold_live` holds of the LIVE window starting at ``start``, or None.

        Treat both lists as read-only. The newest entry of a live window may
        still be amended on the server (replaced at the same time): a reader
        fetches again from that entry's time on.
        """
        with self._lock:
            return self._index.live_prefix(start)

    def forget_store(self) -> None:
        """The URLs now serve another store (the disk cache or the client saw a new
        id): every window read from the old one goes (those being fetched stay)."""
        with self._lock:
            self.stats.evictions += self._index.drop_read()

    # -- shutdown ----------------------------------------------------------------------

    def close(self) -> None:
        """Drop every window and wake waiters with :class:`~rstream.ClientClosed`. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting = self._index.clear()
            if self._pending is not None:
                waiting.append(self._pending)
            self._pending = None
        closed = ClientClosed("the client is closed; create a new rstream.Client")
        for window in waiting:
            fail(window._bounds_future, closed)
            fail(window._done_future, closed)

    # -- internals (the caller holds the lock unless said otherwise) --------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the client is closed; create a new rstream.Client")

    def _commit(
        self,
        window: Window,
        micros: list[int],
        entries: list[Entry] | None,
        pairs: list[Pair] | None = None,
    ) -> None:
        # The window is COMMITTED (born so, or moved by the caller).
        window.hold(micros, entries, pairs)
        self.stats.evictions += self._index.count(window)

    def _fail_window(self, window: Window, exc: BaseException) -> None:
        move(window, WindowState.ERROR)
        window.error = exc
        self._index.remove(window)
        self.stats.errors += 1

    def _record(
        self,
        micros: list[int],
        entries: list[Entry] | None,
        pairs: list[Pair] | None,
        end: int | None,
        *,
        save: bool = True,
    ) -> Window:
        """Commit a validated window (its entries or its states) unless already known,
        and write it to the disk cache (``save``: it does not come from there).

        Lock NOT held; returns the window committed, or the one already known.
        """
        start = micros[0]
        with self._lock:
            self._check_open()
            existing = self._index.find(start)
            if existing is not None and existing.state is WindowState.COMMITTED:
                if not existing.end_known and end is not None:
                    existing.end, existing.end_known = end, True
                    if self._disk is not None:
                        self._disk.confirm_end(start, end)
                return existing
            if existing is not None and existing.state is WindowState.LIVE:
                window = existing
                move(window, WindowState.COMMITTED)
            elif existing is not None:
                # PULLING: its own fetch will commit it; nothing to add.
                return existing
            else:
                window = Window(WindowState.COMMITTED)
                window.start = start
                self._index.insert(window)
            window.end = end if end is not None else micros[-1] + 1
            window.end_known = end is not None
            self._commit(window, micros, entries, pairs)
        resolve(window._done_future, None)
        if save:
            self._to_disk(window)
        return window

    def _from_disk(self, at: int, stop: int | None, *, run: bool) -> list[Window]:
        """Commit the windows the disk cache holds from ``at`` on (lock NOT held): the
        one covering ``at``, then (``run``) those following it that start before
        ``stop`` (None: no limit), within half the memory budget. Returns them, the
        one covering ``at`` first; [] when ``at`` is not on disk or already in memory."""
        assert self._disk is not None
        with self._lock:
            self._check_open()
            known = self._index.covering(at)
            if known is not None and known.state is WindowState.COMMITTED:
                return []
        budget = max(1, min(self.max_cached_entries // 2, DISK_RUN_ENTRIES)) if run else 0
        found = self._disk.read(at, stop, budget)
        windows = [self._record(w.micros, None, w.pairs, w.end, save=False) for w in found]
        if not windows or windows[0].state is not WindowState.COMMITTED:
            return []
        self.stats.disk_hits += len(windows)  # a counter: a lost update is harmless
        return windows if windows[0].covers(at) else []

    def _to_disk(self, window: Window) -> None:
        """Write a committed window through to the disk cache (lock NOT held)."""
        if self._disk is None or window.micros is None:
            return
        pairs = window.pairs if window.pairs is not None else self.states(window)
        self._disk.put(window.micros, pairs, window.end if window.end_known else None)

    def _lead(self, window: Window, at: int) -> None:
        """Fetch the bounds, then the entries, of ``window`` (lock NOT held)."""
        try:
            bounds = self._fetch_bounds(at)
            check_bounds(bounds, at)
        except BaseException as exc:
            with self._lock:
                if self._pending is window:
                    self._pending = None
                if window.state is WindowState.PENDING:
                    self._fail_window(window, exc)
            fail(window._bounds_future, exc)
            fail(window._done_future, exc)
            raise
        with self._lock:
            self.stats.bounds_fetches += 1
            if self._pending is window:
                self._pending = None
            fetch = not self._closed and self._place(window, bounds)
        resolve(window._bounds_future, window)
        if fetch:
            self._pull(window)

    def _place(self, window: Window, bounds: Bounds) -> bool:
        """Give the PENDING ``window`` its ``bounds``; whether to fetch its entries.

        The lock is held. A window learned meanwhile (a history pass, the live
        tail) makes this one unneeded: it never joins the store.
        """
        existing = self._index.find(bounds.start)
        if existing is not None and existing.state is not WindowState.LIVE:
            if not existing.end_known and bounds.end is not None:
                existing.end, existing.end_known = bounds.end, True
                if self._disk is not None:
                    self._disk.confirm_end(bounds.start, bounds.end)
            return False
        if existing is not None:  # a LIVE window that has since closed
            self._index.remove(existing)
        window.start, window.end = bounds.start, bounds.end
        window.revision = bounds.revision
        if bounds.end is None:
            move(window, WindowState.LIVE)
            self._index.drop_stale_live(bounds.start)
        else:
            move(window, WindowState.PULLING)
        self._index.insert(window)
        return window.state is WindowState.PULLING

    def _pull(self, window: Window) -> None:
        """Fetch the entries of the PULLING ``window`` and commit them (lock NOT held)."""
        assert window.start is not None
        assert window.end is not None
        try:
            entries = list(self._fetch_entries(window.start, window.end))
            check_window_entries(entries, window.start, window.end)
        except BaseException as exc:
            with self._lock:
                if window.state is WindowState.PULLING:
                    self._fail_window(window, exc)
            fail(window._done_future, exc)
            raise
        with self._lock:
            self.stats.entries_fetches += 1
            committed = window.state is WindowState.PULLING and not self._closed
            if committed:
                move(window, WindowState.COMMITTED)
                self._commit(window, [e.micros for e in entries], entries)
        resolve(window._done_future, None)
        if committed:
            self._to_disk(window)


_STATE = operator.itemgetter(1)  # the state of a (datetime, state) pair
