import itertools
import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rstream
from rstream import Entry, EntryKind
from rstream.core.log import Log, MemoryLog
from rstream.core.timestamps import format_rfc3339, from_micros, to_micros

S, M = EntryKind.SNAPSHOT, EntryKind.MUTATION
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sample_log() -> MemoryLog:
    """Snapshot at 0 and 10, mutations at 1, 2 and 11."""
    return MemoryLog(
        [
            Entry(at(0), S, {"n": 0}),
            Entry(at(1), M, {"n": 1}),
            Entry(at(2), M, {"n": 2}),
            Entry(at(10), S, {"n": 10}),
            Entry(at(11), M, {"n": 11}),
        ]
    )


def test_empty_log() -> None:
    log = MemoryLog()
    assert isinstance(log, Log)
    assert log.revision == 0
    assert len(log) == 0
    assert list(log) == []
    assert log.first() is None
    assert log.last() is None
    assert log.snapshot_before(at(5)) is None
    assert log.snapshot_after(at(5)) is None
    assert log.entry_after(at(5)) is None
    assert log.entry_after(at(5), M) is None
    assert log.range(at(0), at(100)) == []
    assert log.changes_since(0) == []
    assert repr(log) == "<MemoryLog entries=0 revision=0>"
    log.append(Entry(at(0), S, {}))
    assert repr(log) == "<MemoryLog entries=1 revision=1>"


def test_append_stores_a_copy_with_the_next_revision() -> None:
    log = MemoryLog()
    data = {"a": {"b": [1, 2]}}
    stored = log.append(Entry(at(0), S, data, rev=99))
    assert stored.rev == 1
    assert log.revision == 1
    assert stored == Entry(at(0), S, {"a": {"b": [1, 2]}})
    data["a"]["b"].append(3)  # the caller keeps its dict; the log is unaffected
    last = log.last()
    assert last is not None
    assert last.data == {"a": {"b": [1, 2]}}
    assert log.append(Entry(at(1), M, {"a": 1})).rev == 2
    assert log.revision == 2
    assert len(log) == 2


@pytest.mark.parametrize("when", [at(0), at(-1)])
def test_append_not_after_the_last_raises_and_changes_nothing(when: datetime) -> None:
    log = MemoryLog([Entry(at(0), S, {})])
    with pytest.raises(rstream.OutOfOrder) as info:
        log.append(Entry(when, M, {"x": 1}))
    assert isinstance(info.value, ValueError)
    assert str(info.value) == (
        f"entry at {format_rfc3339(to_micros(when))} is not after the last entry "
        "(2024-05-01T12:00:00Z)"
    )
    assert info.value.last == at(0)
    assert info.value.given == when
    assert log.revision == 1
    assert len(log) == 1


def test_snapshot_before_is_at_or_before() -> None:
    log = sample_log()
    assert log.snapshot_before(at(-1)) is None
    for t, n in [(0, 0), (1, 0), (9.999999, 0), (10, 10), (10.5, 10), (1000, 10)]:
        snap = log.snapshot_before(at(t))
        assert snap is not None
        assert snap.data == {"n": n}, t


def test_entry_after_is_strictly_after_and_filters_by_kind() -> None:
    log = sample_log()
    nxt = log.entry_after(at(0))
    assert nxt is not None
    assert nxt.data == {"n": 1}
    nxt = log.entry_after(at(-5))
    assert nxt is not None
    assert nxt.data == {"n": 0}
    assert log.entry_after(at(11)) is None
    snap = log.entry_after(at(0), S)
    assert snap == log.snapshot_after(at(0))
    assert snap is not None
    assert snap.data == {"n": 10}
    assert log.entry_after(at(10), S) is None
    mut = log.entry_after(at(2), M)
    assert mut is not None
    assert mut.data == {"n": 11}
    mut = log.entry_after(at(-1), M)
    assert mut is not None
    assert mut.data == {"n": 1}
    assert log.entry_after(at(11), M) is None


def test_range_is_half_open() -> None:
    log = sample_log()
    assert [e.data["n"] for e in log.range(at(1), at(10))] == [1, 2]
    assert [e.data["n"] for e in log.range(at(0), at(10.000001))] == [0, 1, 2, 10]
    assert log.range(at(3), at(9)) == []
    assert log.range(at(5), at(1)) == []


def test_times_may_be_epoch_seconds() -> None:
    log = MemoryLog([Entry(100, S, {}), Entry(100.5, M, {"a": 1})])
    snap = log.snapshot_before(100.25)
    assert snap is not None
    assert snap.micros == 100_000_000
    assert len(log.range(100, 101)) == 2
    nxt = log.entry_after(100)
    assert nxt is not None
    assert nxt.micros == 100_500_000
    with pytest.raises(rstream.InvalidTimestamp):
        log.snapshot_before(datetime(2024, 1, 1))  # naive


def test_first_last_len_iter() -> None:
    log = sample_log()
    first, last = log.first(), log.last()
    assert first is not None
    assert last is not None
    assert first.data == {"n": 0}
    assert last.data == {"n": 11}
    assert len(log) == 5
    assert [e.rev for e in log] == [1, 2, 3, 4, 5]


def test_amend_replaces_the_last_mutation() -> None:
    log = sample_log()
    amended = log.amend(Entry(at(11), M, {"n": 12}))
    assert amended.rev == 6
    assert log.revision == 6
    assert len(log) == 5
    assert log.last() == Entry(at(11), M, {"n": 12})
    assert log.changes_since(4) == [amended]
    assert [e.rev for e in log.changes_since(0)] == [1, 2, 3, 4, 6]
    assert log.changes_since(6) == []


def test_amend_stores_a_copy() -> None:
    log = sample_log()
    data = {"n": [1]}
    log.amend(Entry(at(11), M, data))
    data["n"].append(2)
    last = log.last()
    assert last is not None
    assert last.data == {"n": [1]}


@pytest.mark.parametrize(
    ("entries", "amend", "fragment"),
    [
        ([], Entry(at(0), M, {}), "^cannot amend an empty log$"),
        (
            [Entry(at(0), S, {})],
            Entry(at(0), M, {}),
            r"^cannot amend the last entry: it is a snapshot \(only a mutation can be amended\)$",
        ),
        (
            [Entry(at(0), S, {}), Entry(at(1), M, {})],
            Entry(at(1), S, {}),
            "^cannot amend with a snapshot: an amend replaces a mutation by a mutation$",
        ),
        ([Entry(at(0), S, {}), Entry(at(1), M, {})], Entry(at(2), M, {}), "another time"),
        ([Entry(at(0), S, {}), Entry(at(1), M, {})], Entry(at(0), M, {}), "another time"),
    ],
)
def test_bad_amends_raise_out_of_order_and_change_nothing(
    entries: list[Entry], amend: Entry, fragment: str
) -> None:
    log = MemoryLog(entries)
    before = list(log)
    with pytest.raises(rstream.OutOfOrder, match=fragment) as info:
        log.amend(amend)
    assert info.value.last == (entries[-1].timestamp if entries else None)
    assert info.value.given == amend.timestamp
    assert log.revision == len(entries)
    assert list(log) == before
    assert [e.rev for e in log] == [e.rev for e in before]


def test_drop_before_forgets_the_oldest_entries_and_keeps_the_rest_findable() -> None:
    log = sample_log()
    dropped = log.drop_before(to_micros(at(10)))
    assert [e.data["n"] for e in dropped] == [0, 1, 2]
    assert log.drop_before(0) == []
    assert [e.rev for e in log] == [4, 5]
    assert log.revision == 5
    assert log.snapshot_before(at(99)) == Entry(at(10), S, {"n": 10})
    assert log.snapshot_before(at(9)) is None
    assert log.entry_after(at(0), M) == Entry(at(11), M, {"n": 11})
    assert log.range(at(0), at(99)) == list(log)
    assert log.changes_since(0) == list(log)


def test_changes_since_after_appends() -> None:
    log = sample_log()
    assert [e.rev for e in log.changes_since(3)] == [4, 5]
    assert log.changes_since(5) == []
    assert len(log.changes_since(-1)) == 5


def test_concurrent_appends_keep_the_log_ordered() -> None:
    log = MemoryLog([Entry(0, S, {})])
    per_thread = 300

    def writer(name: str) -> None:
        done = 0
        while done < per_thread:
            last = log.last()
            assert last is not None
            try:
                log.append(Entry.from_micros(last.micros + 1, M, {name: done}))
            except rstream.OutOfOrder:
                continue
            done += 1

    threads = [threading.Thread(target=writer, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    entries = list(log)
    assert len(entries) == 1 + 4 * per_thread
    assert [e.rev for e in entries] == list(range(1, len(entries) + 1))
    assert all(a.micros < b.micros for a, b in itertools.pairwise(entries))


# -- a model check ---------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 3), st.booleans(), st.integers(0, 9)),
        st.tuples(st.just("amend"), st.integers(-1, 1), st.booleans(), st.integers(0, 9)),
        # drop_before(last - value): retention forgets the entries before that time
        st.tuples(st.just("drop"), st.just(0), st.just(False), st.integers(0, 9)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops, st.lists(st.integers(-2, 130), min_size=1, max_size=10))
def test_log_matches_a_list_model(
    steps: list[tuple[str, int, bool, int]], probes: list[int]
) -> None:
    log = MemoryLog()
    model: list[Entry] = []  # the entries, with the rev each should have
    revision = 0
    for op, shift, snapshot, value in steps:
        if op == "drop":
            cutoff = (model[-1].micros if model else 0) - value
            assert log.drop_before(cutoff) == [e for e in model if e.micros < cutoff]
            model = [e for e in model if e.micros >= cutoff]
            assert log.revision == revision
            continue
        kind = S if snapshot else M
        last = model[-1].micros if model else 0
        if op == "append":
            entry = Entry.from_micros(last + shift, kind, {"v": value})
            ok = not model or shift > 0
        else:
            entry = Entry.from_micros(last + shift, kind, {"v": value})
            ok = bool(model) and model[-1].kind is M and kind is M and shift == 0
        try:
            stored = log.append(entry) if op == "append" else log.amend(entry)
        except rstream.OutOfOrder:
            assert not ok
        else:
            assert ok
            revision += 1
            assert stored.rev == revision
            if op == "append":
                model.append(stored)
            else:
                model[-1] = stored
        assert log.revision == revision
        last_entry = log.last()
        assert last_entry == (model[-1] if model else None)
        assert (last_entry.rev if last_entry else None) == (model[-1].rev if model else None)

    assert list(log) == model
    assert [e.rev for e in log] == [e.rev for e in model]
    for rev in range(-1, revision + 2):
        expected = sorted(
            (e for e in model if e.rev is not None and e.rev > rev), key=lambda e: e.rev or 0
        )
        assert log.changes_since(rev) == expected
    for probe in probes:
        snaps = [e for e in model if e.kind is S and e.micros <= probe]
        assert log.snapshot_before(from_micros(probe)) == (snaps[-1] if snaps else None)
        after = [e for e in model if e.micros > probe]
        assert log.entry_after(from_micros(probe)) == (after[0] if after else None)
        for kind in (S, M):
            of_kind = [e for e in after if e.kind is kind]
            assert log.entry_after(from_micros(probe), kind) == (of_kind[0] if of_kind else None)
        for end in (probe + 1, probe + 10):
            assert log.range(from_micros(probe), from_micros(end)) == [
                e for e in model if probe <= e.micros < end
            ]
