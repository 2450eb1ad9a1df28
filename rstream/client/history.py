"""The history walk: the changes of a time range, from cached windows and fetched pages.

A :class:`Walk` is one pass over ``[start, end)``. It yields *runs*: consecutive
changes as a :class:`Run` (their timestamps in microseconds, and their
``(datetime, state)`` pairs), a list of runs at a time. Cached windows are
passed as they are (their own lists, sliced only at the ends of the range), so a
pass over the cache costs a few operations per run of windows, not per entry.
The gaps between cached windows are fetched as ranges of pages
(:class:`~rstream.client.pages.PageFetcher`), replayed a window at a time
(:class:`_Replay`), and every complete window seen is committed to the
:class:`~rstream.client.windows.WindowStore` with its states, so a second pass
makes no request at all. The first item is the state in effect at ``start``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from rstream.client.pages import Body
from rstream.client.window import Pair, Window
from rstream.client.windows import WindowStore
from rstream.core.mutation import apply_mutation, copy_json
from rstream.core.timestamps import from_micros
from rstream.core.wire import Page, check_order
from rstream.errors import ConfigError, OutOfRange

__all__ = ["Run", "Walk", "first_pair", "history_pairs", "last_pair", "step_micros"]

State = dict[str, Any]


class Run(NamedTuple):
    """Consecutive changes: their times and their ``(datetime, state)``."""

    times: Sequence[int]
    pairs: Sequence[Pair]


_PAIRS = operator.attrgetter("pairs")


class Walk:
    """One pass over ``[start, end)`` (``end`` None: to the newest entry), led by the
    state at ``start``: iterate it for lists of :class:`Run`.

    A ``start`` before the stream's first snapshot begins at that snapshot.
    Used by one thread; the store and the fetcher it uses are thread-safe.
    """

    def __init__(
        self,
        store: WindowStore,
        bodies: Callable[[int | None, int | None], Iterator[Body]],
        start: int,
        end: int | None,
    ) -> None:
        self.store = store
        self.bodies = bodies
        self.start = start
        self.end = end
        self.started = False
        """The first change at or after ``start`` was passed."""
        self.done = False
        """``end`` was reached."""
        self.before: State | None = None
        """The state in effect just before ``start`` (once seen)."""

    def __iter__(self) -> Iterator[list[Run]]:
        end = self.end
        if end is not None and end <= self.start:
            return
        for batch in self._windows():
            if self.started and (end is None or _before(_last_time(batch), end)):
                yield batch  # neither end of the range is in it: passed whole
                continue
            out = self._cut(batch)
            if out:
                yield out
            if self.done:
                return
        if not self.started and self.before is not None:
            yield [Run([self.start], [(from_micros(self.start), self.before)])]

    # -- the windows of the range ---------------------------------------------------

    def _windows(self) -> Iterator[list[Run]]:
        """Runs from the window around ``start`` to ``end``, uncut.

        The first and the last window are asked for through the store, so they
        are complete and a second pass over the same range makes no request.
        """
        store, start, end = self.store, self.start, self.end
        try:
            first: Window | None = store.get(start)
        except OutOfRange:
            first = None  # the range begins before the stream: start at its first snapshot
        pos = start if first is None or first.start is None else first.start
        last: Window | None = None
        if end is not None and end - 1 > pos:
            try:
                last = store.get(end - 1)
            except OutOfRange:
                return  # nothing at all before end
        stop = None if last is None else last.end
        if end is not None and last is None and first is not None:
            stop = first.end
        while stop is None or pos < stop:
            run = store.cached_run(pos, end)
            if run:
                yield [Run(w.micros or [], w.pairs or store.states(w)) for w in run]
                if run[-1].end is None or (end is not None and run[-1].end >= end):
                    return
                pos = run[-1].end
                continue
            upto = store.next_start_after(pos)
            if stop is not None and (upto is None or upto > stop):
                upto = stop
            if upto is None and (held := store.live_prefix(pos)) is not None and len(held[0]) > 1:
                yield from self._resume_live(*held)
                return
            done = yield from self._fetch(pos, upto)
            if done or upto is None:
                return
            pos = upto

    def _resume_live(self, times: list[int], pairs: list[Pair]) -> Iterator[list[Run]]:
        """The live window as an earlier pass read it, then what followed."""
        # All but its newest entry are final; that one may have been amended
        # since, so the fetch starts at it.
        seed = Run(times[:-1], pairs[:-1])
        yield [seed]
        if self.end is None or self.end > times[-1]:
            yield from self._fetch(times[-1], None, seed)

    def _fetch(
        self, start: int, upto: int | None, seed: Run | None = None
    ) -> Generator[list[Run], None, bool]:
        """Fetch ``[start, upto)``, a run per page, committing its complete windows.

        ``upto`` is a window boundary (or None: to the newest entry, whose
        window is live: held in the store, not committed). ``seed``: the window
        before ``start`` from its snapshot on, already passed. Returns True
        when ``end`` was passed.
        """
        replay = _Replay(self.store, self.end, seed)
        for body in self.bodies(start, upto):
            run = replay.page(body.page(), body.url)
            if run is not None:
                yield [run]
            if replay.passed_end:
                return True
        replay.finish(upto)
        return False

    # -- the ends of the range ---------------------------------------------------------

    def _cut(self, batch: list[Run]) -> list[Run]:
        """The part of ``batch`` in the range: only the runs holding ``start`` or
        ``end`` are cut, the ones between are passed as they are."""
        out: list[Run] = []
        i, count = 0, len(batch)
        while i < count and not self.started:
            out += self._cut_run(batch[i])
            i += 1
            if self.done:
                return out
        end = self.end
        j = count
        if end is not None:
            # Backwards from the last run (end is usually in it, or past it): the
            # runs entirely at or after end, then the one holding it.
            batch = [run for run in batch[i:] if run.times]
            i, j = 0, len(batch)
            while j > 0 and batch[j - 1].times[-1] >= end:
                j -= 1
        out += batch[i:j]
        if j < len(batch):
            out += self._cut_run(batch[j])  # it holds end, or begins after it
        return out

    def _cut_run(self, run: Run) -> list[Run]:
        times, pairs = run
        if not times:
            return []
        out: list[Run] = []
        lo = 0
        if not self.started:
            lo = bisect.bisect_left(times, self.start)
            if lo:
                self.before = pairs[lo - 1][1]
            if lo == len(times):
                return out
            self.started = True
            if times[lo] > self.start and self.before is not None:
                out.append(Run([self.start], [(from_micros(self.start), self.before)]))
        hi = len(times)
        if self.end is not None and times[-1] >= self.end:
            hi = bisect.bisect_left(times, self.end, lo)
            self.done = True
        if lo == 0 and hi == len(times):
            out.append(run)
        elif lo < hi:
            out.append(Run(times[lo:hi], pairs[lo:hi]))
        return out


def _last_time(batch: list[Run]) -> int | None:
    """The time of the last entry of a batch (None: its runs are empty)."""
    for run in reversed(batch):
        if run.times:
            return run.times[-1]
    return None


def _before(micros: int | None, end: int) -> bool:
    return micros is None or micros < end


class _Replay:
    """Replays the pages of one fetched range into states, a window at a time,
    committing each window the pages complete (as slices of the page's lists)."""

    def __init__(self, store: WindowStore, end: int | None, seed: Run | None) -> None:
        self.store = store
        self.end = end
        self.times: list[int] = []  # the open window, as far as earlier pages hold it
        self.pairs: list[Pair] = []
        self.state: State | None = None  # the state after the last entry read
        self.last: int | None = None  # the last entry's time
        self.passed_end = False
        if seed is not None:
            self.times, self.pairs = list(seed.times), list(seed.pairs)
            self.state, self.last = self.pairs[-1][1], self.times[-1]

    def page(self, page: Page, where: str) -> Run | None:
        """The page's changes before ``end`` (None if there are none)."""
        times = page.times
        if not times:
            return None
        check_order(times, page.lines, self.last, where)
        self.last = times[-1]
        count = cut = len(times)
        if self.end is not None and times[-1] >= self.end:
            cut = bisect.bisect_left(times, self.end)
            self.passed_end = True
        snaps = _snapshots(page.kinds, cut)
        lo = 0
        if self.state is None:  # a mutation before any snapshot has no state: skipped
            lo = snaps[0] if snaps else cut
        states = _replay_page(page.datas, snaps, self.state, lo, cut)
        if states:
            self.state = states[-1]
        pairs = list(zip(page.dates[lo:cut], states, strict=True))
        ends = snaps
        if cut < count:
            if page.kinds[cut] == 0:
                ends = [*snaps, cut]  # the entry just past end completes a window
            elif self.state is not None:
                # Applied as when entries were read one by one: an invalid
                # mutation just past the end still raises.
                apply_mutation(self.state, page.datas[cut])
        self._commit(times, pairs, lo, cut, ends)
        page_times = times if lo == 0 and cut == count else times[lo:cut]
        return Run(page_times, pairs) if page_times else None

    def _commit(
        self, times: list[int], pairs: list[Pair], lo: int, cut: int, ends: list[int]
    ) -> None:
        """Commit the windows ending at each of ``ends``; keep the open one's start."""
        opened: int | None = None  # the index of the open window's snapshot on this page
        for b in ends:
            if opened is not None:
                self.store.commit_states(times[opened:b], pairs[opened - lo : b - lo], times[b])
            elif self.times or lo < b:
                self.store.commit_states(
                    self.times + times[lo:b], self.pairs + pairs[: b - lo], times[b]
                )
            opened = b
        if opened is None:
            self.times += times[lo:cut]
            self.pairs += pairs
        else:
            self.times, self.pairs = times[opened:cut], pairs[opened - lo :]

    def finish(self, upto: int | None) -> None:
        """The range was read to ``upto``: commit the open window, or hold it if live."""
        if not self.times:
            return
        if upto is not None:
            self.store.commit_states(self.times, self.pairs, upto)
        else:
            self.store.hold_live(self.times, self.pairs)


def _replay_page(
    datas: list[State], snaps: list[int], state: State | None, lo: int, cut: int
) -> list[State]:
    """The state after each entry of a page's ``[lo, cut)``.

    ``snaps`` are the indices of the snapshots in that range; the entries
    before the first of them go on from ``state``, the state before the page
    (None only if ``lo`` is a snapshot).
    """
    states: list[State] = []
    head = snaps[0] if snaps else cut
    if lo < head:
        assert state is not None
        carried = itertools.accumulate(datas[lo:head], apply_mutation, initial=state)
        states += itertools.islice(carried, 1, None)  # the first is ``state`` itself
    for a, b in itertools.pairwise([*snaps, cut]):
        states += itertools.accumulate(datas[a + 1 : b], apply_mutation, initial=datas[a])
    return states


def _snapshots(kinds: list[int], stop: int) -> list[int]:
    """The indices of the snapshots among ``kinds[:stop]``."""
    return [i for i in range(stop) if kinds[i] == 0]


# -- what history() yields -------------------------------------------------------------


def first_pair(walk: Iterable[list[Run]]) -> Pair | None:
    """The first ``(timestamp, state)`` of a walk (None: it has none)."""
    for batch in walk:
        for run in batch:
            if run.pairs:
                return run.pairs[0]
    return None


def last_pair(walk: Iterable[list[Run]]) -> Pair | None:
    """The last ``(timestamp, state)`` of a walk (None: it has none)."""
    newest = None
    for batch in walk:
        for run in batch:
            if run.pairs:
                newest = run.pairs[-1]
    return newest


def history_pairs(
    walk: Iterable[list[Run]], start: int | None, end: int | None, step: int | None, copy: bool
) -> Iterator[tuple[datetime, State]]:
    """The ``(timestamp, state)`` pairs of a walk over ``[start, end)``: every change,
    or sampled every ``step`` microseconds from ``start`` (None: from the first
    change); private copies of the states with ``copy``."""
    pairs: Iterator[tuple[datetime, State]]
    if step is None:
        # The runs' own lists, chained: no Python code per pair.
        runs = itertools.chain.from_iterable(walk)
        pairs = itertools.chain.from_iterable(map(_PAIRS, runs))
    else:
        changes = (
            (micros, pair[1])
            for batch in walk
            for times, run_pairs in batch
            for micros, pair in zip(times, run_pairs, strict=True)
        )
        sampled = _sample(changes, start, end, step)
        pairs = ((from_micros(micros), state) for micros, state in sampled)
    if copy:
        return ((ts, copy_json(state)) for ts, state in pairs)
    return pairs


def _sample(
    changes: Iterator[tuple[int, State]], start: int | None, end: int | None, step: int
) -> Iterator[tuple[int, State]]:
    """The state at ``start``, ``start + step``, ... before ``end`` from a run of changes."""
    current: State | None = None
    t = start
    for micros, state in changes:
        if t is None:
            t = micros
        while current is not None and t < micros and (end is None or t < end):
            yield t, current
            t += step
        if current is None and t < micros:
            # Before the first state: skip the sample times that have none.
            t += -(-(micros - t) // step) * step
        current = state
        if t == micros and (end is None or t < end):
            yield t, current
            t += step
    if current is not None and t is not None and end is not None:
        while t < end:
            yield t, current
            t += step


def step_micros(step: timedelta | float) -> int:
    """``step`` (a timedelta or seconds) in microseconds; ConfigError unless positive."""
    if isinstance(step, timedelta):
        micros = step // timedelta(microseconds=1)
    elif isinstance(step, int | float) and not isinstance(step, bool):
        if not math.isfinite(step):
            raise ConfigError(f"step must be a finite number of seconds, not {step!r}")
        micros = round(step * 1_000_000)
    else:
        raise TypeError(f"step must be a timedelta or seconds, not {type(step).__name__}")
    if micros <= 0:
        raise ConfigError(f"step must be positive (at least a microsecond), not {step!r}")
    return micros
