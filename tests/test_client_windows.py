"""The window store, fed fake fetch functions: no sockets."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from rstream.client import windows as windows_module
from rstream.client.window import (
    INITIAL_STATES,
    TRANSITIONS,
    Bounds,
    Window,
    WindowState,
    move,
    replay,
    state_in,
    states_weight,
)
from rstream.client.windows import DEFAULT_MAX_CACHED_ENTRIES, WindowStore
from rstream.core.entry import Entry, EntryKind
from rstream.core.timestamps import from_micros
from rstream.errors import ClientClosed, ConfigError, OutOfRange, ProtocolError, TransportError

S = WindowState
SEC = 1_000_000


def state_of(window: Window) -> WindowState:
    """The window's state, read anew (mypy narrows ``window.state`` after a check)."""
    return window.state


def make_log(windows: int, per_window: int) -> list[Entry]:
    """``windows`` windows of ``per_window`` entries, one per second from t=100 s."""
    entries = []
    t = 100 * SEC
    for w in range(windows):
        entries.append(Entry.from_micros(t, EntryKind.SNAPSHOT, {"w": w, "i": 0}))
        t += SEC
        for i in range(1, per_window):
            entries.append(Entry.from_micros(t, EntryKind.MUTATION, {"i": i}))
            t += SEC
    return entries


class FakeServer:
    """Answers bounds and entries from a list, counting calls; can be told to wait or fail."""

    def __init__(self, entries: list[Entry], *, live: bool = True) -> None:
        self.entries = entries
        self.live = live
        self.bounds_calls: list[int] = []
        self.entries_calls: list[tuple[int, int]] = []
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None  # fetches wait on it when set
        self.entered = threading.Event()  # set when a fetch started
        self.fail: BaseException | None = None

    def snapshots(self) -> list[int]:
        return [e.micros for e in self.entries if e.kind is EntryKind.SNAPSHOT]

    def fetch_bounds(self, at: int) -> Bounds:
        with self.lock:
            self.bounds_calls.append(at)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.fail is not None:
            raise self.fail
        snaps = self.snapshots()
        before = [s for s in snaps if s <= at]
        if not before:
            raise OutOfRange("no snapshot at or before")
        after = [s for s in snaps if s > at]
        end = after[0] if after else None
        if end is None and not self.live:
            end = self.entries[-1].micros + 1
        return Bounds(before[-1], end, len(self.entries))

    def fetch_entries(self, start: int, end: int) -> list[Entry]:
        with self.lock:
            self.entries_calls.append((start, end))
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.fail is not None:
            raise self.fail
        return [e for e in self.entries if start <= e.micros < end]

    def store(self, max_cached_entries: int = DEFAULT_MAX_CACHED_ENTRIES) -> WindowStore:
        return WindowStore(
            self.fetch_bounds, self.fetch_entries, max_cached_entries=max_cached_entries
        )


def run_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()


# -- the transition table -----------------------------------------------------------


def test_transition_table_covers_every_state_and_finals_are_final() -> None:
    assert set(TRANSITIONS) == set(WindowState)
    assert TRANSITIONS[S.COMMITTED] == frozenset()
    assert TRANSITIONS[S.ERROR] == frozenset()
    assert {S.PENDING, S.LIVE, S.COMMITTED} == INITIAL_STATES
    # Every state but the born-final ones is reached by some move, or is a birth.
    reached = set().union(*TRANSITIONS.values()) | INITIAL_STATES
    assert reached == set(WindowState)


def test_a_window_read_whole_is_born_committed_never_live(monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log(3, 10)
    store = FakeServer(log).store()
    moves: list[tuple[S, S]] = []

    def record(window: Window, new: S) -> None:
        moves.append((window.state, new))
        move(window, new)

    monkeypatch.setattr(windows_module, "move", record)
    window = store.commit(log[10:20], log[20].micros)
    assert window.state is S.COMMITTED
    assert moves == []
    store.get(log[0].micros)  # fetched: PENDING, then PULLING, then COMMITTED
    assert moves == [(S.PENDING, S.PULLING), (S.PULLING, S.COMMITTED)]


@pytest.mark.parametrize("old", list(WindowState))
@pytest.mark.parametrize("new", list(WindowState))
def test_transition_refuses_every_move_not_in_the_table(old: S, new: S) -> None:
    window = Window(S.PENDING)
    window.state = old
    if new in TRANSITIONS[old]:
        move(window, new)
        assert window.state is new
    else:
        with pytest.raises(RuntimeError, match="illegal transition"):
            move(window, new)
        assert window.state is old


def test_a_negative_cache_budget_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="max_cached_entries"):  # also a ValueError
        WindowStore(lambda at: Bounds(at, None, 1), lambda start, end: [], max_cached_entries=-1)


def test_a_window_cannot_be_born_pulling_or_failed() -> None:
    for state in (S.PULLING, S.ERROR):
        with pytest.raises(ValueError, match="cannot start"):
            Window(state)


# -- lookups ----------------------------------------------------------------------------


def test_get_fetches_bounds_then_entries_once_and_then_hits_the_cache() -> None:
    server = FakeServer(make_log(3, 10))
    store = server.store()
    window = store.get(105 * SEC)
    assert window.state is S.COMMITTED
    assert (window.start, window.end) == (100 * SEC, 110 * SEC)
    assert len(window.entries or []) == 10
    for at in (100 * SEC, 109 * SEC, 109 * SEC + 999_999):
        assert store.get(at) is window
    assert server.bounds_calls == [105 * SEC]
    assert server.entries_calls == [(100 * SEC, 110 * SEC)]
    assert store.stats.hits == 3


def test_live_window_is_returned_without_entries_and_never_cached() -> None:
    server = FakeServer(make_log(2, 5))
    store = server.store()
    window = store.get(107 * SEC)
    assert window.state is S.LIVE
    assert window.entries is None
    assert (window.start, window.end) == (105 * SEC, None)
    assert server.entries_calls == []
    assert store.cached_entries == 0
    assert store.get(200 * SEC) is window  # the live window covers every later time


def test_out_of_range_is_raised_and_nothing_is_kept() -> None:
    server = FakeServer(make_log(1, 3))
    store = server.store()
    with pytest.raises(OutOfRange):
        store.get(50 * SEC)
    assert store.windows() == []
    assert store.pending is None
    assert store.stats.errors == 1


def test_concurrent_requests_in_one_window_make_exactly_one_fetch() -> None:
    server = FakeServer(make_log(3, 10))
    server.gate = threading.Event()
    store = server.store()
    results: list[Window] = []

    def ask(i: int) -> None:
        results.append(store.get((100 + i) * SEC))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    assert server.entered.wait(5)
    server.gate.set()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    assert len(results) == 8
    assert all(w is results[0] for w in results)
    assert len(server.bounds_calls) == 1
    assert server.entries_calls == [(100 * SEC, 110 * SEC)]


def test_at_most_one_pending_window_then_each_window_once() -> None:
    server = FakeServer(make_log(4, 10), live=False)
    server.gate = threading.Event()
    store = server.store()
    seen_pending: list[int] = []
    done = threading.Barrier(9)

    def ask(i: int) -> None:
        store.get((100 + 5 * i) * SEC)  # two requests per window, 4 windows
        done.wait(5)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    assert server.entered.wait(5)
    # While the first bounds request is blocked, nobody may start another.
    seen_pending.append(len(server.bounds_calls))
    assert store.pending is not None
    server.gate.set()
    done.wait(5)
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    assert seen_pending == [1]
    assert len(server.bounds_calls) <= 8
    starts = sorted(s for s, _ in server.entries_calls)
    assert starts == [100 * SEC, 110 * SEC, 120 * SEC, 130 * SEC]  # each window fetched once
    assert [w.state for w in store.windows()] == [S.COMMITTED] * 4


def test_error_reaches_every_waiter_and_the_window_is_retried_later() -> None:
    server = FakeServer(make_log(2, 10))
    server.gate = threading.Event()
    server.fail = TransportError("server down")
    store = server.store()
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            store.get((101 + i) * SEC)
        except TransportError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    assert server.entered.wait(5)
    server.gate.set()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    assert len(errors) == 5
    assert all(e is server.fail for e in errors)
    assert len(server.bounds_calls) == 1
    assert store.windows() == []
    server.fail = None
    server.gate = None
    window = store.get(101 * SEC)
    assert window.state is S.COMMITTED
    assert len(server.bounds_calls) == 2


def test_entries_error_drops_the_window() -> None:
    server = FakeServer(make_log(2, 10))
    store = server.store()
    original = server.fetch_entries
    calls = 0

    def flaky(start: int, end: int) -> list[Entry]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TransportError("broken read")
        return original(start, end)

    store._fetch_entries = flaky
    with pytest.raises(TransportError):
        store.get(103 * SEC)
    assert store.windows() == []
    assert store.get(103 * SEC).state is S.COMMITTED


def test_out_of_range_for_an_earlier_pending_time_does_not_fail_a_later_one() -> None:
    server = FakeServer(make_log(2, 10))
    server.gate = threading.Event()
    store = server.store()
    outcome: dict[str, object] = {}

    def early() -> None:
        try:
            store.get(10 * SEC)
        except OutOfRange as exc:
            outcome["early"] = exc

    def late() -> None:
        outcome["late"] = store.get(103 * SEC)

    first = threading.Thread(target=early)
    first.start()
    assert server.entered.wait(5)
    second = threading.Thread(target=late)
    second.start()
    server.gate.set()
    for thread in (first, second):
        thread.join(5)
        assert not thread.is_alive()
    assert isinstance(outcome["early"], OutOfRange)
    assert isinstance(outcome["late"], Window)


# -- cache budget -------------------------------------------------------------------------


def test_lru_eviction_by_entries_never_evicts_the_live_window() -> None:
    server = FakeServer(make_log(5, 10))
    store = server.store(max_cached_entries=25)
    store.get(100 * SEC)
    store.get(110 * SEC)
    store.get(100 * SEC)  # refresh: 110 is now least recently used
    live = store.get(145 * SEC)
    assert live.state is S.LIVE
    store.get(120 * SEC)  # 30 entries > 25: evict the LRU one (110)
    starts = [w.start for w in store.windows()]
    assert starts == [100 * SEC, 120 * SEC, 140 * SEC]
    assert store.cached_entries == 20
    assert store.stats.evictions == 1
    assert live in store.windows()
    fetched = len(server.entries_calls)
    store.get(112 * SEC)  # evicted: fetched again
    assert len(server.entries_calls) == fetched + 1


def test_a_window_bigger_than_the_budget_is_still_returned() -> None:
    server = FakeServer(make_log(2, 10))
    store = server.store(max_cached_entries=5)
    window = store.get(103 * SEC)
    assert window.state is S.COMMITTED
    assert len(window.entries or []) == 10
    assert store.cached_entries == 0


# -- cached states ---------------------------------------------------------------------------


def test_states_are_computed_once_and_replace_the_entries() -> None:
    log = make_log(2, 10)
    store = FakeServer(log).store()
    window = store.get(105 * SEC)
    assert window.entries is not None
    assert window.weight == 10
    pairs = store.states(window)
    assert pairs == replay(log[:10])
    assert [ts for ts, _ in pairs] == [from_micros(e.micros) for e in log[:10]]
    assert pairs[-1][1] == {"w": 0, "i": 9}
    assert window.entries is None  # the states hold all a reader needs
    assert store.states(window) is pairs  # no second replay
    assert window.weight == states_weight(s for _, s in pairs) == 10 + 20 // 16
    assert store.cached_weight == window.weight
    assert store.cached_entries == 10


def test_states_count_in_the_budget_and_big_states_weigh_more() -> None:
    log = make_log(1, 10)
    wide = [log[0].replace(data={f"f{k}": k for k in range(160)}), *log[1:]]
    store = FakeServer(wide + make_log(2, 10)[10:], live=False).store(max_cached_entries=25)
    first = store.get(100 * SEC)
    store.states(first)  # 10 states of 160 fields: 10 + 1600 // 16 = 110 > 25
    assert first.weight == 110
    assert store.windows() == []  # evicted at once, but the caller keeps its window
    assert store.stats.evictions == 1
    assert store.cached_weight == 0
    assert first.pairs is not None
    assert first.pairs[-1][1]["i"] == 9


def test_commit_with_pairs_keeps_them_and_checks_their_count() -> None:
    log = make_log(2, 10)
    store = FakeServer(log).store()
    pairs = replay(log[:10])
    window = store.commit(log[:10], 110 * SEC, pairs)
    assert window.pairs == pairs
    assert window.entries is None
    assert store.get(104 * SEC) is window
    with pytest.raises(ValueError, match="9 states for 10 entries"):
        store.commit(log[10:20], None, pairs[:9])


def test_concurrent_states_replay_into_one_list() -> None:
    store = FakeServer(make_log(2, 10)).store()
    window = store.get(100 * SEC)
    results: list[object] = [None] * 6

    def compute(i: int) -> None:
        results[i] = store.states(window)

    run_threads(6, compute)
    assert all(r is window.pairs for r in results)
    assert store.cached_weight == window.weight


# -- windows learned elsewhere ---------------------------------------------------------------


def test_commit_from_history_then_get_makes_no_fetch() -> None:
    log = make_log(3, 10)
    server = FakeServer(log)
    store = server.store()
    store.commit(log[10:20], 120 * SEC)
    window = store.get(115 * SEC)
    assert window.state is S.COMMITTED
    assert server.bounds_calls == []
    assert server.entries_calls == []


def test_live_commit_without_end_is_provisional_until_bounds_confirm_it() -> None:
    log = make_log(3, 10)
    server = FakeServer(log)
    store = server.store()
    live = store.observe_live(110 * SEC)
    assert live.state is S.LIVE
    store.commit_live_window(log[10:20])  # the tail saw the snapshot at 120
    assert state_of(live) is S.COMMITTED
    assert (live.end, live.end_known) == (119 * SEC + 1, False)
    store.get(119 * SEC + 500_000)  # in the gap: bounds fetched, entries not
    assert server.entries_calls == []
    assert (live.end, live.end_known) == (120 * SEC, True)


def test_commit_refuses_a_window_that_is_not_one() -> None:
    log = make_log(2, 5)
    store = FakeServer(log).store()
    with pytest.raises(ProtocolError, match="snapshot"):
        store.commit(log[1:5], 105 * SEC)
    with pytest.raises(ProtocolError, match="second snapshot"):
        store.commit(log[0:6], 106 * SEC)
    with pytest.raises(ProtocolError, match="at or after its end"):
        store.commit(log[0:5], 103 * SEC)


def test_commit_states_keeps_times_and_states_without_entries() -> None:
    log = make_log(3, 10)
    server = FakeServer(log)
    store = server.store()
    micros = [e.micros for e in log[10:20]]
    pairs = replay(log[10:20])
    window = store.commit_states(micros, pairs, 120 * SEC)
    assert (window.state, window.start, window.end, window.end_known) == (
        S.COMMITTED,
        110 * SEC,
        120 * SEC,
        True,
    )
    assert window.entries is None
    assert window.micros == micros
    assert window.pairs == pairs
    assert window.micros is not micros  # the store keeps its own lists
    assert window.pairs is not pairs
    assert store.states(window) is window.pairs
    assert window.weight == states_weight(s for _, s in pairs)
    assert store.cached_entries == 10
    assert store.cached_weight == window.weight
    assert store.get(115 * SEC) is window
    assert server.bounds_calls == []
    assert server.entries_calls == []
    # Already committed: kept as it is.
    assert store.commit_states(micros, replay(log[10:20]), 120 * SEC) is window
    assert window.pairs == pairs


def test_commit_states_without_end_is_provisional() -> None:
    log = make_log(3, 10)
    store = FakeServer(log).store()
    live = store.observe_live(120 * SEC)
    window = store.commit_states([e.micros for e in log[20:]], replay(log[20:]), None)
    assert window is live
    assert (window.state, window.end, window.end_known) == (S.COMMITTED, 129 * SEC + 1, False)


def test_commit_states_refuses_a_window_that_is_not_one() -> None:
    log = make_log(2, 5)
    store = FakeServer(log).store()
    micros = [e.micros for e in log[:5]]
    pairs = replay(log[:5])
    with pytest.raises(ProtocolError, match="empty"):
        store.commit_states([], [], 105 * SEC)
    swapped = [micros[0], micros[2], micros[1], *micros[3:]]
    with pytest.raises(ProtocolError, match="out of order"):
        store.commit_states(swapped, pairs, 105 * SEC)
    with pytest.raises(ProtocolError, match="out of order"):
        store.commit_states([micros[0], micros[0]], pairs[:2], 105 * SEC)
    with pytest.raises(ProtocolError, match="at or after its end"):
        store.commit_states(micros, pairs, 104 * SEC)
    with pytest.raises(ValueError, match="4 states for 5 entries"):
        store.commit_states(micros, pairs[:4], 105 * SEC)
    with pytest.raises(ValueError, match="not the entries' times"):
        store.commit_states(micros, replay(log[5:10]), 105 * SEC)
    assert store.windows() == []


def test_server_answering_wrong_bounds_is_a_protocol_error() -> None:
    server = FakeServer(make_log(2, 5))
    store = WindowStore(lambda at: Bounds(at + 1, None, 1), server.fetch_entries)
    with pytest.raises(ProtocolError, match="does not contain"):
        store.get(101 * SEC)


def test_close_wakes_waiters_with_client_closed() -> None:
    server = FakeServer(make_log(2, 5))
    server.gate = threading.Event()
    store = server.store()
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            store.get((101 + i) * SEC)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    assert server.entered.wait(5)
    store.close()
    store.close()
    server.gate.set()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    assert len(errors) == 3
    assert all(isinstance(e, ClientClosed) for e in errors)
    with pytest.raises(ClientClosed):
        store.get(101 * SEC)


# -- pure helpers ------------------------------------------------------------------------


def test_state_in_replays_the_window() -> None:
    log = make_log(1, 5)
    micros = [e.micros for e in log]
    assert state_in(log, micros, 100 * SEC) == (0, {"w": 0, "i": 0})
    assert state_in(log, micros, 102 * SEC + 5) == (2, {"w": 0, "i": 2})
    assert state_in(log, micros, 10_000 * SEC) == (4, {"w": 0, "i": 4})
    with pytest.raises(OutOfRange):
        state_in(log, micros, 99 * SEC)


def test_cached_run_is_the_committed_windows_that_follow_each_other() -> None:
    log = make_log(6, 10)  # windows at 100, 110, ..., 150 s
    server = FakeServer(log)
    store = server.store()
    for w in (0, 1, 2, 4):  # not 3: a gap; 5 is the live one
        store.commit(log[w * 10 : w * 10 + 10], (110 + 10 * w) * SEC)
    store.observe_live(150 * SEC)
    starts = [w.start for w in store.cached_run(105 * SEC)]
    assert starts == [100 * SEC, 110 * SEC, 120 * SEC]  # up to the gap
    assert [w.start for w in store.cached_run(119 * SEC)] == [110 * SEC, 120 * SEC]
    assert [w.start for w in store.cached_run(105 * SEC, 115 * SEC)] == [100 * SEC, 110 * SEC]
    assert [w.start for w in store.cached_run(105 * SEC, 110 * SEC)] == [100 * SEC]
    assert store.cached_run(135 * SEC) == []  # in the gap
    assert [w.start for w in store.cached_run(140 * SEC)] == [140 * SEC]  # not into the live one
    assert store.cached_run(155 * SEC) == []  # the live window is not cached
    assert store.cached_run(50 * SEC) == []  # before the stream
    assert store.stats.hits == 3 + 2 + 2 + 1 + 1
    assert server.bounds_calls == []
    assert server.entries_calls == []


def test_cached_run_counts_as_use_for_the_lru() -> None:
    log = make_log(3, 10)
    store = FakeServer(log).store(max_cached_entries=30)
    for w in range(3):
        store.commit(log[w * 10 : w * 10 + 10], (110 + 10 * w) * SEC)
    store.cached_run(100 * SEC, 110 * SEC)  # window 0 is now the most recently used
    store.commit(make_log(4, 10)[30:], None)  # a fourth window: one must go
    assert [w.start for w in store.windows()] == [100 * SEC, 120 * SEC, 130 * SEC]


def test_hold_live_keeps_the_longest_read_of_the_live_window_until_it_is_committed() -> None:
    log = make_log(3, 10)  # the live window starts at 120 s
    store = FakeServer(log).store()
    live = log[20:]
    times = [e.micros for e in live]
    window = store.hold_live(times[:5], replay(live[:5]))
    assert window.state is S.LIVE
    assert store.live_prefix(120 * SEC) == (times[:5], replay(live[:5]))
    store.hold_live(times[:3], replay(live[:3]))  # a pass that read less: not kept
    assert store.live_prefix(120 * SEC) == (times[:5], replay(live[:5]))
    store.hold_live(times, replay(live))
    assert store.live_prefix(120 * SEC) == (times, replay(live))
    assert store.live_prefix(110 * SEC) is None  # not the start of a live window
    assert store.cached_entries == 0  # held, not cached
    store.commit(live, 130 * SEC)  # the live tail saw the next snapshot
    assert state_of(window) is S.COMMITTED
    assert window.live_micros is None
    assert store.live_prefix(120 * SEC) is None


def test_hold_live_keeps_nothing_larger_than_the_cache() -> None:
    log = make_log(3, 10)
    store = FakeServer(log).store(max_cached_entries=4)
    live = log[20:]
    store.hold_live([e.micros for e in live[:3]], replay(live[:3]))
    assert store.live_prefix(120 * SEC) is not None
    store.hold_live([e.micros for e in live], replay(live))
    assert store.live_prefix(120 * SEC) is None
    with pytest.raises(ValueError, match="states for"):
        store.hold_live([], [])
