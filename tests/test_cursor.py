import copy
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import rstream
from rstream import Entry, EntryKind
from rstream.core.cursor import TRANSITIONS, Cursor, CursorKind, Move, Where, plan
from rstream.core.log import Log, MemoryLog
from rstream.core.mutation import apply_mutation, build_mutation
from rstream.core.timestamps import TimeLike, from_micros, to_micros
from tests.refmodel import json_values

S, M = EntryKind.SNAPSHOT, EntryKind.MUTATION
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
READ_KINDS = [CursorKind.READ_FORWARD, CursorKind.READ_BIDIRECTIONAL]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class CountingLog(MemoryLog):
    """A real MemoryLog that counts the entries its range() hands out."""

    __slots__ = ("fetched",)

    def __init__(self, entries: Sequence[Entry] = ()) -> None:
        self.fetched = 0
        super().__init__(entries)

    def range_micros(self, start: int, end: int) -> list[Entry]:  # range() calls it too
        entries = super().range_micros(start, end)
        self.fetched += len(entries)
        return entries


class PlainLog:
    """A Log with only the Protocol's methods (no micros fast paths)."""

    def __init__(self, log: MemoryLog) -> None:
        self.inner = log

    @property
    def revision(self) -> int:
        return self.inner.revision

    def snapshot_before(self, ts: TimeLike) -> Entry | None:
        return self.inner.snapshot_before(ts)

    def entry_after(self, ts: TimeLike, kind: EntryKind | None = None) -> Entry | None:
        return self.inner.entry_after(ts, kind)

    def range(self, start: TimeLike, end: TimeLike) -> list[Entry]:
        return self.inner.range(start, end)

    def append(self, entry: Entry) -> Entry:
        return self.inner.append(entry)

    def amend(self, entry: Entry) -> Entry:
        return self.inner.amend(entry)

    def last(self) -> Entry | None:
        return self.inner.last()

    def changes_since(self, rev: int) -> list[Entry]:
        return self.inner.changes_since(rev)


def naive_state_at(entries: Sequence[Entry], micros: int) -> dict[str, Any] | None:
    """Replay from the first entry: the answer every cursor must agree with."""
    state: dict[str, Any] | None = None
    for entry in entries:
        if entry.micros > micros:
            break
        if entry.is_snapshot:
            state = copy.deepcopy(entry.data)
        elif state is not None:
            state = apply_mutation(state, entry.data)
    return state


def build_log(states: Sequence[dict[str, Any]], snapshot_every: int, log: MemoryLog) -> None:
    """One entry per second from T0: a snapshot every ``snapshot_every`` entries."""
    prev: dict[str, Any] | None = None
    for i, state in enumerate(states):
        if prev is None or i % snapshot_every == 0:
            log.append(Entry(at(i), S, state))
        else:
            log.append(Entry(at(i), M, build_mutation(prev, state)))
        prev = state


def counter_log(n: int = 30, snapshot_every: int = 10) -> CountingLog:
    log = CountingLog()
    build_log(
        [{"i": i, "fixed": {"deep": [1, 2, {"x": "y"}]}} for i in range(n)], snapshot_every, log
    )
    return log


# -- the transition table ----------------------------------------------------------


def test_every_kind_has_a_move_for_every_place() -> None:
    assert set(TRANSITIONS) == set(itertools.product(CursorKind, Where))
    assert plan(CursorKind.READ_FORWARD, Where.BEHIND) is Move.REANCHOR
    assert plan(CursorKind.READ_BIDIRECTIONAL, Where.BEHIND) is Move.BACKWARD
    assert plan(CursorKind.WRITE, Where.BEHIND) is Move.REFUSE


def test_kind_must_be_a_cursor_kind() -> None:
    with pytest.raises(TypeError, match=r"^kind must be a CursorKind, not 'write'$"):
        Cursor(MemoryLog(), "write")  # type: ignore[arg-type]


# -- read cursors ----------------------------------------------------------------


@pytest.mark.parametrize("kind", READ_KINDS)
def test_unplaced_cursor(kind: CursorKind) -> None:
    cursor = Cursor(counter_log(), kind)
    assert cursor.state is None
    assert cursor.timestamp is None
    assert cursor.micros is None
    assert cursor.rev is None
    assert cursor.snapshot_micros is None
    assert not cursor.at_mutation
    assert cursor.base is None
    assert "unplaced" in repr(cursor)


@pytest.mark.parametrize("kind", READ_KINDS)
def test_out_of_range_before_the_first_snapshot(kind: CursorKind) -> None:
    with pytest.raises(rstream.OutOfRange) as info:
        Cursor(MemoryLog(), kind).state_at(at(0))
    assert info.value.when == at(0)
    log = MemoryLog([Entry(at(5), S, {})])
    with pytest.raises(
        rstream.OutOfRange,
        match=r"^no snapshot at or before 2024-05-01T12:00:04\.5Z: the stream has no state then$",
    ) as info:
        Cursor(log, kind).state_at(at(4.5))
    assert isinstance(info.value, LookupError)
    assert info.value.when == at(4.5)


@pytest.mark.parametrize("kind", READ_KINDS)
def test_state_at_exact_between_and_after(kind: CursorKind) -> None:
    cursor = Cursor(counter_log(), kind)
    assert cursor.state_at(at(3))["i"] == 3
    assert cursor.timestamp == at(3)
    assert cursor.micros == to_micros(at(3))
    assert cursor.rev == 4
    assert cursor.at_mutation
    assert cursor.snapshot_micros == to_micros(at(0))
    assert cursor.state_at(at(3.5))["i"] == 3
    assert cursor.timestamp == at(3)
    assert cursor.state_at(at(10))["i"] == 10
    assert not cursor.at_mutation
    assert cursor.state_at(at(500))["i"] == 29
    assert cursor.timestamp == at(29)
    assert cursor.state_at(to_micros(at(7)) // 1_000_000)["i"] == 7  # epoch seconds
    assert cursor.state_at(at(2)) == {"i": 2, "fixed": {"deep": [1, 2, {"x": "y"}]}}


@pytest.mark.parametrize("kind", READ_KINDS)
def test_returned_states_and_the_log_are_never_modified(kind: CursorKind) -> None:
    log = counter_log()
    before = copy.deepcopy(list(log))
    cursor = Cursor(log, kind)
    kept = [(t, cursor.state_at(at(t))) for t in [0, 5, 3, 9, 1, 12, 11, 25, 0, 29, 20]]
    for t, state in kept:
        assert state["i"] == t
    assert list(log) == before


def test_forward_moves_fetch_only_the_entries_in_between() -> None:
    log = counter_log()
    cursor = Cursor(log, CursorKind.READ_FORWARD)
    cursor.state_at(at(2))
    assert log.fetched == 2  # mutations 1 and 2; the snapshot comes from snapshot_before
    log.fetched = 0
    for t in range(3, 10):
        cursor.state_at(at(t))
    assert log.fetched == 7
    log.fetched = 0
    cursor.state_at(at(14))  # a snapshot in between: re-anchor at 10
    assert log.fetched == 4
    log.fetched = 0
    cursor.state_at(at(12))  # backward: a forward cursor re-anchors
    assert log.fetched == 2
    log.fetched = 0
    cursor.state_at(at(12))  # where it is: nothing to fetch
    assert log.fetched == 0


@pytest.mark.parametrize("kind", READ_KINDS)
def test_a_cursor_checks_its_newest_entry_once_the_log_moved_on(kind: CursorKind) -> None:
    t0 = to_micros(at(0))
    log = CountingLog([Entry.from_micros(t0, S, {"a": 0})])
    cursor = Cursor(log, kind)
    assert cursor.state_at(at(0)) == {"a": 0}  # the newest entry: it could be amended
    log.fetched = 0
    assert cursor.state_at(at(0)) == {"a": 0}
    assert log.fetched == 0  # the log did not change: nothing to check
    log.append(Entry.from_micros(t0 + 1, M, {"a": 1}))
    log.fetched = 0
    assert cursor.state_at(at(1)) == {"a": 1}
    assert log.fetched == 2  # its own entry (unchanged), then the one after it
    log.append(Entry.from_micros(t0 + 2, M, {"a": 2}))
    log.fetched = 0
    assert cursor.state_at(at(1)) == {"a": 2}
    assert log.fetched == 2
    # Checked once: an entry followed it, so it can no longer be amended.
    log.append(Entry.from_micros(t0 + 3, M, {"a": 3}))
    log.fetched = 0
    assert cursor.state_at(from_micros(t0 + 2)) == {"a": 2}
    assert log.fetched == 1  # its own entry
    log.append(Entry.from_micros(t0 + 4, M, {"a": 4}))
    log.fetched = 0
    assert cursor.state_at(from_micros(t0 + 2)) == {"a": 2}
    assert log.fetched == 0


@pytest.mark.parametrize("kind", READ_KINDS)
def test_a_cursor_that_moves_onto_the_newest_entry_sees_it_amended(kind: CursorKind) -> None:
    log = MemoryLog(
        [Entry(at(0), S, {"a": 0}), Entry(at(1), M, {"a": 1}), Entry(at(2), M, {"a": 2})]
    )
    cursor = Cursor(log, kind)
    assert cursor.state_at(at(1)) == {"a": 1}  # followed by another entry: settled
    assert cursor.state_at(at(2)) == {"a": 2}  # the newest: it can still be amended
    log.amend(Entry(at(2), M, {"a": 20}))
    assert cursor.state_at(at(2)) == {"a": 20}


def test_a_bidirectional_cursor_moves_back_without_the_log() -> None:
    log = counter_log()
    cursor = Cursor(log, CursorKind.READ_BIDIRECTIONAL)
    assert cursor.state_at(at(18))["i"] == 18
    log.fetched = 0
    for t in [17, 15, 16, 11, 10, 13]:
        assert cursor.state_at(at(t))["i"] == t
        assert cursor.timestamp == at(t)
    assert log.fetched == 1 + 3  # only the moves forward: 15 to 16, 10 to 13
    assert cursor.state_at(at(5))["i"] == 5  # another window: re-anchor
    assert cursor.state_at(at(1))["i"] == 1
    assert cursor.rev == 2


@pytest.mark.parametrize("kind", READ_KINDS)
def test_a_cursor_notices_its_entry_was_amended(kind: CursorKind) -> None:
    log = counter_log(n=5)
    cursor = Cursor(log, kind)
    assert cursor.state_at(at(10))["i"] == 4
    log.amend(Entry(at(4), M, {"i": 40}))
    assert cursor.state_at(at(10))["i"] == 40
    log.amend(Entry(at(4), M, {"i": 41}))
    log.append(Entry(at(5), M, {"i": 5}))
    assert cursor.state_at(at(4))["i"] == 41
    assert cursor.state_at(at(5))["i"] == 5


@pytest.mark.parametrize("kind", READ_KINDS)
def test_a_cursor_follows_entries_appended_after_it(kind: CursorKind) -> None:
    log = counter_log(n=5)
    cursor = Cursor(log, kind)
    assert cursor.state_at(at(100))["i"] == 4
    log.append(Entry(at(5), M, {"i": 5}))
    log.append(Entry(at(6), S, {"i": 6, "new": True}))
    log.append(Entry(at(7), M, {"i": 7}))
    assert cursor.state_at(at(100)) == {"i": 7, "new": True}
    assert cursor.snapshot_micros == to_micros(at(6))
    assert cursor.state_at(at(6.5)) == {"i": 6, "new": True}


@pytest.mark.parametrize("kind", READ_KINDS)
def test_advance_moves_a_read_cursor_to_the_newest_entry(kind: CursorKind) -> None:
    assert Cursor(MemoryLog(), kind).advance() is None
    log = counter_log()
    cursor = Cursor(log, kind)
    state = cursor.advance()
    assert state is not None
    assert state["i"] == 29


def test_a_bad_mutation_leaves_the_cursor_where_it_was() -> None:
    log = MemoryLog([Entry(at(0), S, {"a": 1}), Entry(at(1), M, {"a": {"$truncate": 0}})])
    for kind in READ_KINDS:
        cursor = Cursor(log, kind)
        assert cursor.state_at(at(0.5)) == {"a": 1}
        with pytest.raises(rstream.MutationError):
            cursor.state_at(at(1))
        assert cursor.timestamp == at(0)
        assert cursor.state == {"a": 1}


def test_cursors_work_over_any_log() -> None:
    inner = counter_log()
    log = PlainLog(inner)
    assert isinstance(log, Log)
    for kind in READ_KINDS:
        cursor = Cursor(log, kind)
        for t in [3, 1, 15, 29, 12]:
            assert cursor.state_at(at(t))["i"] == t
    writer = Cursor(log, CursorKind.WRITE)
    assert writer.state is not None
    assert writer.state["i"] == 29
    log.append(Entry(at(30), M, {"i": 30}))
    assert writer.state_at(at(30))["i"] == 30


# -- WRITE cursors -------------------------------------------------------------------


def test_a_write_cursor_sits_at_the_newest_state() -> None:
    empty = MemoryLog()
    cursor = Cursor(empty, CursorKind.WRITE)
    assert cursor.state is None
    assert cursor.advance() is None
    with pytest.raises(rstream.OutOfRange, match="the log is empty") as info:
        cursor.state_at(at(0))
    assert info.value.when == at(0)

    log = counter_log(n=15)
    cursor = Cursor(log, CursorKind.WRITE)
    assert log.fetched == 4  # recovered from the snapshot at 10, not from the start
    assert cursor.state is not None
    assert cursor.state["i"] == 14
    assert cursor.base is not None
    assert cursor.base["i"] == 13
    assert cursor.state_at(at(14))["i"] == 14
    assert cursor.state_at(at(99))["i"] == 14
    with pytest.raises(rstream.OutOfRange, match="WRITE cursor") as info:
        cursor.state_at(at(13))
    assert info.value.when == at(13)


def test_a_write_cursor_over_a_log_ending_in_a_snapshot_has_its_rev() -> None:
    log = CountingLog([Entry(at(0), S, {"a": 0}), Entry(at(1), M, {"a": 1})])
    log.append(Entry(at(2), S, {"b": 2}))
    cursor = Cursor(log, CursorKind.WRITE)
    assert cursor.rev == 3
    assert cursor.state == {"b": 2}
    log.fetched = 0
    assert cursor.advance() == {"b": 2}  # nothing new: no recovery from the log
    assert log.fetched == 0


def test_a_write_cursor_catches_up_with_appends_and_amends() -> None:
    log = counter_log(n=15)
    cursor = Cursor(log, CursorKind.WRITE)
    log.amend(Entry(at(14), M, {"i": 140}))
    assert cursor.advance() == {"i": 140, "fixed": {"deep": [1, 2, {"x": "y"}]}}
    log.append(Entry(at(15), M, {"i": 15}))
    log.amend(Entry(at(15), M, {"i": 150}))
    log.append(Entry(at(16), M, {"i": 16}))
    assert cursor.state_at(at(16))["i"] == 16
    assert cursor.base is not None
    assert cursor.base["i"] == 150
    log.append(Entry(at(17), S, {"i": 17}))
    assert cursor.advance() == {"i": 17}
    assert cursor.base is None
    assert cursor.snapshot_micros == to_micros(at(17))


def test_a_write_cursor_applies_an_amend_of_its_mutation_without_the_log() -> None:
    log = CountingLog([Entry(at(0), S, {"a": 0}), Entry(at(1), M, {"a": 1})])
    cursor = Cursor(log, CursorKind.WRITE)
    log.amend(Entry(at(1), M, {"b": 1}))
    log.fetched = 0
    assert cursor.advance() == {"a": 0, "b": 1}
    assert cursor.base == {"a": 0}
    assert log.fetched == 0  # from changes_since alone: no recovery


def test_a_write_cursor_places_itself_on_a_mutation_one_microsecond_after_its_snapshot() -> None:
    t0 = to_micros(at(0))
    log = CountingLog([Entry.from_micros(t0, S, {"a": 0}), Entry.from_micros(t0 + 1, M, {"a": 1})])
    log.fetched = 0
    cursor = Cursor(log, CursorKind.WRITE)
    assert log.fetched == 1  # placed from the log, not caught up from changes_since
    assert cursor.state == {"a": 1}
    assert cursor.micros == t0 + 1


def test_a_write_cursor_far_behind_catches_up() -> None:
    log = counter_log(n=5)
    cursor = Cursor(log, CursorKind.WRITE)
    for i in range(5, 200):
        log.append(Entry(at(i), S if i % 10 == 0 else M, {"i": i}))
    assert cursor.advance() == {"i": 199}
    assert cursor.base == {"i": 198}


@pytest.mark.parametrize("after", [[], [Entry(at(7), M, {"c": {"$push": [2]}})]])
def test_a_write_cursor_catches_up_from_the_newest_snapshot_only(after: list[Entry]) -> None:
    # Moving costs the nearest snapshot and the mutations after it: what came
    # before the newest snapshot is never applied, not even mutations that do not
    # apply (at 1 and at 5), and the log is not read again.
    log = CountingLog([Entry(at(0), S, {"a": 0})])
    cursor = Cursor(log, CursorKind.WRITE)
    for entry in [
        Entry(at(1), M, {"a": {"$truncate": 0}}),
        Entry(at(2), M, {"b": 1}),
        Entry(at(3), S, {"c": [0]}),
        Entry(at(4), M, {"c": {"$push": [1]}}),
        Entry(at(5), M, {"c": {"x": 1}}),  # a field mutation of an array
        Entry(at(6), S, {"c": [1]}),
        *after,
    ]:
        log.append(entry)
    log.fetched = 0
    expected = {"c": [1, 2]} if after else {"c": [1]}
    assert cursor.advance() == expected
    assert log.fetched == 0  # all from changes_since: no recovery from the log
    assert cursor.snapshot_micros == to_micros(at(6))
    assert cursor.rev == len(log)
    assert cursor.base == ({"c": [1]} if after else None)


def test_a_write_cursor_skips_what_came_before_a_snapshot_early_in_the_changes() -> None:
    log = MemoryLog([Entry(at(0), S, {"a": 0})])
    cursor = Cursor(log, CursorKind.WRITE)
    log.append(Entry(at(1), M, {"a": {"$pull": [0]}}))  # does not apply to a number
    log.append(Entry(at(2), S, {"a": [0]}))
    log.append(Entry(at(3), M, {"a": {"$push": [1]}}))
    log.append(Entry(at(4), M, {"b": 1}))
    assert cursor.advance() == {"a": [0, 1], "b": 1}
    assert cursor.snapshot_micros == to_micros(at(2))


def test_wrote_records_the_owners_entries() -> None:
    log = MemoryLog()
    cursor = Cursor(log, CursorKind.WRITE)
    stored = log.append(Entry(at(0), S, {"a": 1}))
    cursor.wrote(stored, {"a": 1})
    assert cursor.state == {"a": 1}
    stored = log.append(Entry(at(1), M, {"a": 2}))
    cursor.wrote(stored, {"a": 2})
    assert cursor.base == {"a": 1}
    stored = log.amend(Entry(at(1), M, {"a": 3}))
    cursor.wrote(stored, {"a": 3})
    assert cursor.base == {"a": 1}
    assert cursor.state == {"a": 3}
    # Someone else wrote in between: the cursor trusts the log, not the caller.
    log.append(Entry(at(2), M, {"b": 1}))
    stored = log.append(Entry(at(3), M, {"c": 1}))
    cursor.wrote(stored, {"wrong": True})
    assert cursor.state == {"a": 3, "b": 1, "c": 1}
    with pytest.raises(TypeError, match=r"^wrote\(\) is for WRITE cursors$"):
        Cursor(log).wrote(stored, {})


def test_wrote_keeps_the_owners_state_without_reading_the_log() -> None:
    log = CountingLog([Entry(at(0), S, {"a": 0})])
    cursor = Cursor(log, CursorKind.WRITE)
    for i, kind in enumerate([M, M, S, M], 1):
        state = {"a": i}
        stored = log.append(Entry(at(i), kind, state if kind is S else {"a": i}))
        log.fetched = 0
        cursor.wrote(stored, state)
        assert cursor.state is state  # the owner's state itself: nothing replayed
        assert log.fetched == 0
        assert cursor.rev == stored.rev
        assert cursor.micros == to_micros(at(i))
        assert cursor.at_mutation is (kind is M)
    stored = log.amend(Entry(at(4), M, {"a": 40}))
    amended = {"a": 40}
    cursor.wrote(stored, amended)
    assert cursor.state is amended
    assert cursor.base == {"a": 3}
    assert log.fetched == 0


def test_repr_names_the_kind_and_the_entry_time() -> None:
    log = MemoryLog([Entry(at(0), S, {}), Entry(at(1.5), M, {"a": 1})])
    cursor = Cursor(log, CursorKind.READ_BIDIRECTIONAL)
    assert repr(cursor) == "<Cursor READ_BIDIRECTIONAL at unplaced>"
    cursor.state_at(at(1))
    assert repr(cursor) == "<Cursor READ_BIDIRECTIONAL at 2024-05-01T12:00:00Z>"
    assert repr(Cursor(log, CursorKind.WRITE)) == "<Cursor WRITE at 2024-05-01T12:00:01.5Z>"


class RacingLog(MemoryLog):
    """A MemoryLog to which another writer appends ``racing`` entries, one each time
    a cursor has just looked up its snapshot (before it fetches the entries after)."""

    __slots__ = ("racing",)

    def __init__(self, entries: Sequence[Entry], racing: Sequence[Entry]) -> None:
        self.racing = list(racing)
        super().__init__(entries)

    def snapshot_before_micros(self, micros: int) -> Entry | None:
        found = super().snapshot_before_micros(micros)
        if self.racing:
            self.append(self.racing.pop(0))
        return found


@pytest.mark.parametrize("kind", READ_KINDS)
def test_a_snapshot_appended_while_a_cursor_moves_restarts_its_window(kind: CursorKind) -> None:
    racing = [Entry(at(3), S, {"b": 5}), Entry(at(4), M, {"b": 6})]
    log = RacingLog([Entry(at(1), S, {"a": 0}), Entry(at(2), M, {"a": 1})], racing)
    cursor = Cursor(log, kind)
    assert cursor.state_at(at(10)) == {"b": 5}  # the snapshot at 3 came in meanwhile
    assert cursor.snapshot_micros == to_micros(at(3))
    assert cursor.state_at(at(10)) == {"b": 6}
    entries = list(log)
    for t in [3.5, 3, 2, 1, 4, 2.5]:  # back within the new window, then out of it
        assert cursor.state_at(at(t)) == naive_state_at(entries, to_micros(at(t)))


def test_a_write_cursor_rebuilds_when_the_log_changed_its_past() -> None:
    log = PlainLog(MemoryLog([Entry(at(0), S, {"a": 0}), Entry(at(1), M, {"a": 1})]))
    cursor = Cursor(log, CursorKind.WRITE)
    assert cursor.state == {"a": 1}
    assert cursor.rev == 2
    # The store is replaced under the cursor (restored from another copy): older
    # entries with newer revisions, and a snapshot where the cursor's mutation was.
    # Catching up cannot apply that to a base, so the cursor rebuilds from the log.
    log.inner = MemoryLog(
        [
            Entry(at(0), S, {"a": 0}),
            Entry(at(0.5), M, {"x": 1}),
            Entry(at(0.7), M, {"x": 2}),  # rev 3: after the cursor's rev, before its time
            Entry(at(1), S, {"z": 9}),
            Entry(at(2), M, {"y": 1}),
        ]
    )
    assert cursor.advance() == {"z": 9, "y": 1}
    assert cursor.snapshot_micros == to_micros(at(1))
    assert cursor.base == {"z": 9}
    assert cursor.rev == 5


def test_a_write_cursor_rebuilds_when_entries_appear_before_its_own() -> None:
    log = PlainLog(MemoryLog([Entry(at(0), S, {"a": 0}), Entry(at(1), M, {"a": 1})]))
    cursor = Cursor(log, CursorKind.WRITE)
    # Restored from another copy: revisions 3 and 4 sit before and at the cursor's
    # entry. Only a rebuild from the log gives the state there.
    log.inner = MemoryLog(
        [
            Entry(at(0), S, {"a": 0}),
            Entry(at(0.5), M, {"y": 1}),
            Entry(at(0.7), M, {"x": 2}),
            Entry(at(1), M, {"a": 5}),
        ]
    )
    assert cursor.advance() == {"a": 5, "x": 2, "y": 1}
    assert cursor.rev == 4
    assert cursor.base == {"a": 0, "x": 2, "y": 1}


class RevlessLog(PlainLog):
    """A broken Log: its entries come without the rev they were written at."""

    @staticmethod
    def strip(entry: Entry | None) -> Entry | None:
        return None if entry is None else Entry.from_micros(entry.micros, entry.kind, entry.data)

    def snapshot_before(self, ts: TimeLike) -> Entry | None:
        return self.strip(self.inner.snapshot_before(ts))

    def last(self) -> Entry | None:
        return self.strip(self.inner.last())


@pytest.mark.parametrize("kind", list(CursorKind))
def test_a_log_that_returns_entries_without_revs_is_a_storage_error(kind: CursorKind) -> None:
    log = RevlessLog(MemoryLog([Entry(at(0), S, {"a": 0})]))
    with pytest.raises(
        rstream.StorageError,
        match=r"^the log returned the entry at 2024-05-01T12:00:00Z without its rev; "
        "a Log must return entries with the revision it wrote them at$",
    ):
        Cursor(log, kind).state_at(at(1))


def test_a_write_cursor_over_a_log_without_a_snapshot_says_so() -> None:
    log = MemoryLog([Entry(at(1), M, {"a": 1})])  # a log may begin with a mutation
    with pytest.raises(
        rstream.OutOfRange, match="no snapshot at or before its newest entry"
    ) as info:
        Cursor(log, CursorKind.WRITE)
    assert info.value.when == at(1)
    with pytest.raises(rstream.OutOfRange):
        rstream.core.stream.Stream(log)


# -- properties: every cursor agrees with a replay from the start -----------------

keys = st.sampled_from(["a", "b", "c", "d", "list", "obj"])
scalars = st.none() | st.booleans() | st.integers(-50, 50) | st.sampled_from(["x", "yy", ""])
values = json_values(keys, scalars, max_size=4)
states = st.dictionaries(keys, values, max_size=5)
logs = st.tuples(
    st.lists(states, min_size=1, max_size=25),
    st.lists(st.integers(1, 3), min_size=25, max_size=25),  # gaps between entries, µs
    st.integers(1, 6),  # a snapshot every this many entries
)


def make_log(spec: tuple[list[dict[str, Any]], list[int], int]) -> MemoryLog:
    history, gaps, every = spec
    log = MemoryLog()
    micros, prev = 1_000, None
    for i, state in enumerate(history):
        micros += gaps[i]
        if prev is None or i % every == 0:
            log.append(Entry.from_micros(micros, S, state))
        else:
            log.append(Entry.from_micros(micros, M, build_mutation(prev, state)))
        prev = state
    return log


@settings(max_examples=120, deadline=None)
@given(
    logs, st.lists(st.integers(990, 1_080), min_size=1, max_size=25), st.sampled_from(READ_KINDS)
)
def test_state_at_equals_a_replay(
    spec: tuple[list[dict[str, Any]], list[int], int], times: list[int], kind: CursorKind
) -> None:
    log = make_log(spec)
    entries = list(log)
    cursor = Cursor(log, kind)
    fresh_results = []
    for micros in times:
        expected = naive_state_at(entries, micros)
        if expected is None:
            with pytest.raises(rstream.OutOfRange):
                cursor.state_at(from_micros(micros))
            continue
        got = cursor.state_at(from_micros(micros))
        assert got == expected
        fresh_results.append((got, copy.deepcopy(got)))
        placed = [e for e in entries if e.micros <= micros][-1]
        assert cursor.micros == placed.micros
        assert Cursor(log, kind).state_at(from_micros(micros)) == expected
    for got, snapshot in fresh_results:  # nothing returned was changed later
        assert got == snapshot


@settings(max_examples=120, deadline=None)
@given(logs, st.lists(st.integers(-12, 12), min_size=1, max_size=40))
def test_a_bidirectional_random_walk_equals_a_replay(
    spec: tuple[list[dict[str, Any]], list[int], int], steps: list[int]
) -> None:
    log = make_log(spec)
    entries = list(log)
    cursor = Cursor(log, CursorKind.READ_BIDIRECTIONAL)
    position = 0
    for step in steps:
        position = max(0, min(len(entries) - 1, position + step))
        micros = entries[position].micros
        assert cursor.state_at(from_micros(micros)) == naive_state_at(entries, micros)
        assert cursor.micros == micros


live_ops = st.lists(
    st.tuples(
        st.sampled_from(["append", "snapshot", "amend", "query", "query"]),
        states,
        st.sampled_from([0, 0, 0, 1, 3, 40]),  # how far back from the newest entry to look
    ),
    min_size=8,
    max_size=40,
)


@settings(max_examples=120, deadline=None)
@given(live_ops)
@example([("append", {"a": 1}, 0), ("query", {}, 0), ("amend", {"a": 2}, 0), ("query", {}, 0)])
@example(  # a cursor that moves on to the newest entry must watch it for amends again
    [
        ("append", {}, 0),
        ("query", {}, 0),
        ("append", {"a": 1}, 0),
        ("query", {}, 0),
        ("amend", {"a": 2}, 0),
        ("query", {}, 0),
    ]
)
def test_cursors_stay_exact_on_a_live_log(ops: list[tuple[str, dict[str, Any], int]]) -> None:
    """Appends and amends between moves: every cursor still agrees with a replay."""
    log = MemoryLog([Entry.from_micros(0, S, {})])
    state: dict[str, Any] = {}
    before_last: dict[str, Any] = {}  # the state before the newest entry, for amends
    readers = [Cursor(log, kind) for kind in READ_KINDS]
    writer = Cursor(log, CursorKind.WRITE)
    micros = 0
    for op, new, back in ops:
        last = log.last()
        assert last is not None
        if op == "append":
            micros += 1
            log.append(Entry.from_micros(micros, M, build_mutation(state, new)))
            before_last, state = state, new
        elif op == "snapshot":
            micros += 1
            log.append(Entry.from_micros(micros, S, new))
            before_last, state = state, new
        elif op == "amend" and last.kind is M:
            log.amend(Entry.from_micros(micros, M, build_mutation(before_last, new)))
            state = new
        else:
            entries = list(log)
            t = max(0, micros - back)
            for reader in readers:
                assert reader.state_at(from_micros(t)) == naive_state_at(entries, t)
        assert writer.advance() == state
