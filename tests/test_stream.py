import copy
import threading
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

import rstream
from rstream import Entry, EntryKind
from rstream.core.cursor import Cursor, CursorKind
from rstream.core.jsontype import MAX_DEPTH, json_equal
from rstream.core.log import MemoryLog
from rstream.core.mutation import apply_mutation
from rstream.core.stream import MAX_RATE_MS, RateConfig, Stream, WriteAction, decide
from rstream.core.timestamps import from_micros, to_micros
from tests.refmodel import json_values

S, M = EntryKind.SNAPSHOT, EntryKind.MUTATION
SECOND = 1_000_000
RATE = RateConfig(keyframe_frequency=timedelta(seconds=10), change_frequency=timedelta(seconds=1))


class Clock:
    """A clock the test sets: epoch microseconds."""

    def __init__(self, now: int = 1_000 * SECOND) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)


def replay(log: MemoryLog, micros: int) -> dict[str, Any] | None:
    state: dict[str, Any] | None = None
    for entry in log:
        if entry.micros > micros:
            break
        state = (
            copy.deepcopy(entry.data)
            if entry.is_snapshot
            else apply_mutation(state or {}, entry.data)
        )
    return state


def make(rate: RateConfig = RATE) -> tuple[MemoryLog, Stream, Clock]:
    log, clock = MemoryLog(), Clock()
    return log, Stream(log, rate, clock=clock), clock


def last_action(stream: Stream) -> WriteAction:
    """``stream.last_action``, read afresh: after ``assert stream.last_action is X``
    mypy takes the attribute to stay X, though a write changes it."""
    return stream.last_action


# -- RateConfig ---------------------------------------------------------------------


def test_rate_config_defaults_and_json() -> None:
    rate = RateConfig()
    assert rate.keyframe_frequency == timedelta(seconds=60)
    assert rate.change_frequency == timedelta(seconds=1)
    # json_equal: 60000.0 would be == 60000, but it is another JSON number.
    assert json_equal(rate.to_json(), {"keyframe_frequency": 60_000, "change_frequency": 1_000})
    assert RateConfig.from_json(rate.to_json()) == rate
    assert RateConfig.from_json({}) == rate
    odd = RateConfig(timedelta(microseconds=1500), timedelta(0))
    assert json_equal(odd.to_json(), {"keyframe_frequency": 1.5, "change_frequency": 0})
    assert RateConfig.from_json(odd.to_json()) == odd
    assert RateConfig.from_json({"change_frequency": 250}).change_frequency == timedelta(
        milliseconds=250
    )
    with pytest.raises(AttributeError):
        rate.change_frequency = timedelta(0)  # type: ignore[misc]


@pytest.mark.parametrize(
    "obj",
    [
        {"keyframe_frequency": -1},
        {"change_frequency": "1000"},
        {"change_frequency": True},
        {"change_frequency": float("nan")},
        {"keyframe_frequency": float("inf")},
        [],
    ],
)
def test_rate_config_from_json_rejects_garbage(obj: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        RateConfig.from_json(obj)


def test_rate_config_validates() -> None:
    with pytest.raises(ValueError, match="negative"):
        RateConfig(change_frequency=timedelta(seconds=-1))
    with pytest.raises(TypeError):
        RateConfig(keyframe_frequency=60)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["keyframe_frequency", "change_frequency"])
def test_rate_config_bounds_are_zero_and_max_rate_ms_inclusive(name: str) -> None:
    longest = timedelta(milliseconds=MAX_RATE_MS)
    assert getattr(RateConfig(**{name: longest}), name) == longest
    assert getattr(RateConfig(**{name: timedelta(0)}), name) == timedelta(0)
    assert getattr(RateConfig.from_json({name: MAX_RATE_MS}), name) == longest
    assert getattr(RateConfig.from_json({name: 0}), name) == timedelta(0)
    for bad in (longest + timedelta(microseconds=1), timedelta(microseconds=-1)):
        with pytest.raises(rstream.ConfigError, match=name):
            RateConfig(**{name: bad})
    for bad_ms in (MAX_RATE_MS + 1, MAX_RATE_MS + 0.5, -0.001):
        with pytest.raises(rstream.ConfigError, match=name):
            RateConfig.from_json({name: bad_ms})
    with pytest.raises(TypeError, match=f"{name} must be a timedelta, not int"):
        RateConfig(**{name: 1})  # type: ignore[arg-type]
    with pytest.raises(rstream.ConfigError, match=f"{name} must be a number"):
        RateConfig.from_json({name: None})


def test_rate_config_micros_and_json_are_exact() -> None:
    rate = RateConfig(timedelta(seconds=2, microseconds=7), timedelta(milliseconds=3))
    assert rate.keyframe_micros == 2_000_007
    assert rate.change_micros == 3_000
    json = rate.to_json()
    assert json == {"keyframe_frequency": 2000.007, "change_frequency": 3}
    assert type(json["change_frequency"]) is int
    assert type(json["keyframe_frequency"]) is float
    assert RateConfig.from_json(json) == rate
    with pytest.raises(rstream.ConfigError, match="rate config must be a JSON object, not list"):
        RateConfig.from_json([])  # type: ignore[arg-type]


def test_retention_is_optional_milliseconds_in_the_rates_range() -> None:
    assert RateConfig().retention is None
    assert RateConfig().retention_json() is None
    assert RateConfig().retention_micros is None
    day = RateConfig(retention=timedelta(days=1))
    assert json_equal(day.retention_json(), 86_400_000)
    assert day.retention_micros == 86_400 * SECOND
    assert json_equal(RateConfig(retention=timedelta(microseconds=1500)).retention_json(), 1.5)
    assert RateConfig.retention_from_json(None) is None
    assert RateConfig.retention_from_json(1500) == timedelta(seconds=1.5)
    assert RateConfig.retention_from_json(MAX_RATE_MS) == timedelta(milliseconds=MAX_RATE_MS)
    with pytest.raises(
        rstream.ConfigError,
        match=f"^retention must be a number of milliseconds from 0 to {MAX_RATE_MS}, not -1$",
    ):
        RateConfig.retention_from_json(-1)
    with pytest.raises(rstream.ConfigError, match=r"^retention must not be negative, got -1 day"):
        RateConfig(retention=timedelta(days=-1))
    with pytest.raises(TypeError, match=r"^retention must be a timedelta, not int$"):
        RateConfig(retention=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^change_frequency must be a timedelta, not NoneType$"):
        RateConfig(change_frequency=None)  # type: ignore[arg-type]


def test_decide_is_the_rule_table() -> None:
    def run(when: int, changed: bool = True, **kw: Any) -> WriteAction:
        args: dict[str, Any] = {
            "last_micros": 5 * SECOND,
            "last_is_mutation": True,
            "snapshot_micros": 0,
        }
        args.update(kw)
        return decide(RATE, when=when, changed=lambda: changed, **args)

    assert run(1, last_micros=None, snapshot_micros=None) is WriteAction.SNAPSHOT
    # a log that begins with mutations has no snapshot to count from yet
    assert run(5 * SECOND + 1, snapshot_micros=None) is WriteAction.SNAPSHOT
    assert run(10 * SECOND + 1, changed=False) is WriteAction.SNAPSHOT
    # not *more* than the keyframe frequency after the snapshot
    assert run(10 * SECOND, last_micros=10 * SECOND - 1) is WriteAction.AMEND
    assert run(6 * SECOND - 1) is WriteAction.AMEND
    assert run(6 * SECOND) is WriteAction.MUTATION
    assert run(5 * SECOND + 1, last_is_mutation=False) is WriteAction.MUTATION
    assert run(5 * SECOND + 1, changed=False) is WriteAction.NONE


# -- the write rules --------------------------------------------------------------


def test_first_write_is_a_snapshot_then_mutations_amends_and_nothing() -> None:
    log, stream, clock = make()
    assert stream.state is None
    assert stream.timestamp is None
    state = {"battery": 0.9, "pos": {"x": 0, "y": 0}}
    first = stream.write_state(state)
    assert first is not None
    assert last_action(stream) is WriteAction.SNAPSHOT
    assert stream.last_write == first
    assert first.kind is S
    assert first.rev == 1
    assert first.micros == clock.now
    assert stream.timestamp == from_micros(clock.now)

    clock.tick(0.5)
    assert stream.write_state(state) is None  # unchanged
    assert last_action(stream) is WriteAction.NONE
    assert stream.last_write is None

    state["pos"]["x"] = 1  # the Stream copied the state, so this is a change
    clock.tick(1)
    mutation = stream.write_state(state)
    assert last_action(stream) is WriteAction.MUTATION
    assert mutation is not None
    assert mutation.kind is M
    mutation_time = clock.now

    state["pos"]["y"] = 2
    clock.tick(0.5)
    amended = stream.write_state(state)
    assert last_action(stream) is WriteAction.AMEND
    assert amended is not None
    assert amended.micros == mutation_time  # an amend keeps the mutation's timestamp
    assert amended.rev == 3
    assert len(log) == 2
    assert replay(log, clock.now) == state
    assert stream.state == state

    state["battery"] = 0.8
    clock.tick(0.6)  # 1.1 s after the mutation: a new one
    assert stream.write_state(state) is not None
    assert last_action(stream) is WriteAction.MUTATION
    assert len(log) == 3

    clock.tick(10)
    assert stream.write_state(state) is not None  # unchanged, but a keyframe is due
    assert last_action(stream) is WriteAction.SNAPSHOT
    assert replay(log, clock.now) == state


def test_an_amend_back_to_the_old_state_is_an_empty_mutation() -> None:
    log, stream, clock = make()
    stream.write_state({"a": 1})
    clock.tick(2)
    stream.write_state({"a": 2})
    clock.tick(0.1)
    entry = stream.write_state({"a": 1})
    assert stream.last_action is WriteAction.AMEND
    assert entry is not None
    assert apply_mutation({"a": 1}, entry.data) == {"a": 1}
    assert replay(log, clock.now) == {"a": 1}


def test_an_amend_is_built_against_the_state_before_the_mutation() -> None:
    log, stream, clock = make()
    stream.write_state({"a": 1, "b": 1, "c": [1, 2, 3]})
    clock.tick(2)
    stream.write_state({"a": 2, "b": 1, "c": [1, 2, 3]})
    for i in range(5):
        clock.tick(0.1)
        stream.write_state({"a": 2, "b": 10 + i, "c": [1, 2, 3, i]})
        assert stream.last_action is WriteAction.AMEND
    assert len(log) == 2
    assert replay(log, clock.now) == {"a": 2, "b": 14, "c": [1, 2, 3, 4]}


def test_change_frequency_zero_never_amends() -> None:
    log, stream, clock = make(RateConfig(change_frequency=timedelta(0)))
    for i in range(5):
        stream.write_state({"i": i})
        clock.tick(0.000001)
    assert len(log) == 5
    assert [e.kind for e in log] == [S, M, M, M, M]


def test_keyframe_frequency_zero_writes_only_snapshots() -> None:
    log, stream, clock = make(RateConfig(keyframe_frequency=timedelta(0)))
    for i in range(3):
        stream.write_state({"i": i})
        clock.tick(1)
    assert [e.kind for e in log] == [S, S, S]


def test_writes_must_be_after_the_last_change() -> None:
    log, stream, _clock = make()
    stream.write_state({"a": 1}, timestamp=100)
    with pytest.raises(rstream.OutOfOrder) as info:
        stream.write_state({"a": 2}, timestamp=100)
    assert info.value.last == from_micros(100 * SECOND)
    assert info.value.given == from_micros(100 * SECOND)
    with pytest.raises(rstream.OutOfOrder):
        stream.write_state({"a": 2}, timestamp=99.5)
    stream.write_state({"a": 2}, timestamp=102)
    stream.write_state({"a": 3}, timestamp=102.5)  # an amend, kept at 102
    assert stream.last_action is WriteAction.AMEND
    with pytest.raises(rstream.OutOfOrder):  # after the entry, but before the last change
        stream.write_state({"a": 4}, timestamp=102.25)
    assert replay(log, 200 * SECOND) == {"a": 3}
    assert log.revision == 3


def test_a_clock_behind_the_log_never_makes_an_error() -> None:
    _log, stream, _clock = make()
    stream.write_state({"a": 1}, timestamp=datetime(2030, 1, 1, tzinfo=UTC))
    first = stream.write_state({"a": 2})  # the clock says 1970
    assert first is not None
    assert first.micros == to_micros(datetime(2030, 1, 1, tzinfo=UTC)) + 1
    second = stream.write_state({"a": 3})
    assert second is not None
    assert stream.last_action is WriteAction.AMEND
    third = stream.write_state({"a": 3}, timestamp=datetime(2030, 1, 1, 0, 0, 2, tzinfo=UTC))
    assert third is None


def test_the_clock_may_return_a_datetime() -> None:
    log = MemoryLog()
    when = datetime(2024, 5, 1, tzinfo=UTC)
    stream = Stream(log, clock=lambda: when)
    entry = stream.write_state({"a": 1})
    assert entry is not None
    assert entry.timestamp == when
    bad = Stream(MemoryLog(), clock=lambda: 1.5)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="clock"):
        bad.write_state({})


def test_the_default_clock_is_the_wall_clock() -> None:
    stream = Stream(MemoryLog())
    before = datetime.now(UTC)
    entry = stream.write_state({"a": 1})
    assert entry is not None
    assert before - timedelta(seconds=1) <= entry.timestamp <= datetime.now(UTC)
    assert repr(Stream(MemoryLog(), RATE)) == (
        "<Stream at None rate=RateConfig(keyframe_frequency=datetime.timedelta(seconds=10), "
        "change_frequency=datetime.timedelta(seconds=1), retention=None)>"
    )
    assert repr(stream).startswith(f"<Stream at {entry.timestamp} rate=RateConfig(")


def test_states_must_be_objects() -> None:
    _, stream, _ = make()
    with pytest.raises(TypeError):
        stream.write_state([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Stream(MemoryLog(), rate=60)  # type: ignore[arg-type]


def test_the_state_property_is_a_copy() -> None:
    log, stream, clock = make()
    stream.write_state({"a": {"b": 1}})
    state = stream.state
    assert state is not None
    state["a"]["b"] = 2  # the natural read-modify-write must still be seen as a change
    clock.tick(5)
    assert stream.write_state(state) is not None
    assert replay(log, clock.now) == {"a": {"b": 2}}


# -- write_entry -------------------------------------------------------------------


def test_write_entry_appends_raw_entries() -> None:
    log, stream, _ = make()
    with pytest.raises(rstream.MutationError):
        stream.write_entry(Entry(1, M, {"a": 1}))
    snap = stream.write_entry(Entry(1, S, {"a": [1]}))
    assert snap.rev == 1
    assert last_action(stream) is WriteAction.SNAPSHOT
    mut = stream.write_entry(Entry(2, M, {"a": {"$push": [2]}}))
    assert last_action(stream) is WriteAction.MUTATION
    assert stream.last_write == mut
    assert stream.state == {"a": [1, 2]}
    with pytest.raises(rstream.MutationError):
        stream.write_entry(Entry(3, M, {"a": {"b": 1}}))
    with pytest.raises(rstream.OutOfOrder):
        stream.write_entry(Entry(2, M, {"a": 1}))
    assert log.revision == 2
    assert stream.state == {"a": [1, 2]}
    with pytest.raises(TypeError):
        stream.write_entry({"a": 1})  # type: ignore[arg-type]


def test_a_new_stream_has_written_nothing() -> None:
    _, stream, _ = make()
    assert stream.last_action is WriteAction.NONE
    assert stream.last_write is None
    with pytest.raises(TypeError, match="rate must be a RateConfig, not int"):
        Stream(MemoryLog(), rate=60)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match="epoch microseconds \\(int\\) or an aware datetime, not float"
    ):
        Stream(MemoryLog(), clock=lambda: 1.5).write_state({})  # type: ignore[arg-type,return-value]
    stream.write_state({"a": 1}, timestamp=5)
    with pytest.raises(rstream.OutOfOrder, match=r"a write at .* is not after the last change"):
        stream.write_state({"a": 2}, timestamp=5)


def test_write_entry_and_write_state_name_what_they_were_given() -> None:
    _, stream, _ = make()
    with pytest.raises(rstream.MutationError, match="first entry of a stream must be a snapshot"):
        stream.write_entry(Entry(1, M, {"a": 1}))
    with pytest.raises(TypeError, match="write_entry takes an Entry, not dict"):
        stream.write_entry({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"a state must be a JSON object \(dict\), not list"):
        stream.write_state([1, 2])  # type: ignore[arg-type]


def test_write_state_takes_any_mapping() -> None:
    log, stream, _ = make()
    entry = stream.write_state(MappingProxyType({"a": {"b": 1}}))
    assert entry is not None
    assert type(entry.data) is dict
    assert stream.state == {"a": {"b": 1}}
    assert replay(log, entry.micros) == {"a": {"b": 1}}


def test_write_entry_takes_mutations_nested_deeper_than_a_state() -> None:
    # Each array level of the state costs a mutation two ({"$mutateIdx": {"0": ...}}).
    levels = 40
    state: Any = 0
    expected: Any = 1
    change: Any = 1
    for _ in range(levels):
        state, expected, change = [state], [expected], {"$mutateIdx": {"0": change}}
    _, stream, _ = make()
    stream.write_entry(Entry(1, S, {"a": state}))
    stream.write_entry(Entry(2, M, {"a": change}))  # nested 2 * 40 + 1 deep
    assert stream.state == {"a": expected}


def test_write_entry_data_is_copied() -> None:
    log, stream, clock = make()
    data = {"a": {"b": 1}}
    stream.write_entry(Entry(1, S, data))
    data["a"]["b"] = 2
    assert stream.state == {"a": {"b": 1}}
    clock.now = 5 * SECOND
    assert stream.write_state({"a": {"b": 2}}) is not None
    assert replay(log, clock.now) == {"a": {"b": 2}}


# -- restarts, other writers, threads ----------------------------------------------


def test_a_new_stream_over_a_log_recovers_the_newest_state() -> None:
    log, stream, clock = make()
    for i in range(40):
        clock.tick(0.7)
        stream.write_state({"i": i, "half": i // 2})
    again = Stream(log, RATE, clock=clock)
    assert again.state == {"i": 39, "half": 19}
    assert again.timestamp == stream.timestamp
    clock.tick(0.1)
    again.write_state({"i": 40, "half": 20})
    assert again.last_action is WriteAction.AMEND  # the base was recovered too
    assert replay(log, clock.now) == {"i": 40, "half": 20}


def test_a_stream_notices_another_writer() -> None:
    log, one, clock = make()
    two = Stream(log, RATE, clock=clock)
    for i in range(30):
        clock.tick(0.4)
        writer = one if i % 3 else two
        writer.write_state({"i": i, "by": "one" if i % 3 else "two"})
        assert replay(log, clock.now) == {"i": i, "by": "one" if i % 3 else "two"}
    assert one.state == two.state


def test_threads_share_a_stream() -> None:
    log = MemoryLog()
    stream = Stream(log, RateConfig(change_frequency=timedelta(microseconds=50)))
    per_thread = 200

    def writer(name: str) -> None:
        for i in range(per_thread):
            state = stream.state or {}
            state[name] = i
            stream.write_state(state)

    threads = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    last = log.last()
    assert last is not None
    assert replay(log, last.micros) == stream.state
    assert Cursor(log, CursorKind.READ_FORWARD).advance() == stream.state


# -- property: the log says what was written ----------------------------------------

keys = st.sampled_from(["a", "b", "c", "list", "obj"])
scalars = st.none() | st.booleans() | st.integers(-50, 50) | st.sampled_from(["x", ""])
values = json_values(keys, scalars, max_leaves=8)
writes = st.lists(
    st.tuples(st.dictionaries(keys, values, max_size=4), st.integers(1, 1_500_000)),
    min_size=1,
    max_size=30,
)
rates = st.builds(
    RateConfig,
    keyframe_frequency=st.integers(0, 4_000_000).map(lambda us: timedelta(microseconds=us)),
    change_frequency=st.integers(0, 1_000_000).map(lambda us: timedelta(microseconds=us)),
)


@settings(max_examples=150, deadline=None)
@given(writes, rates, st.booleans())
def test_the_log_says_what_was_written(
    history: list[tuple[dict[str, Any], int]], rate: RateConfig, restart: bool
) -> None:
    log, clock = MemoryLog(), Clock()
    stream = Stream(log, rate, clock=clock)
    written: list[tuple[int, int, dict[str, Any]]] = []  # (write time, entry time, state)
    for n, (state, gap) in enumerate(history):
        clock.tick(gap / SECOND)
        entry = stream.write_state(state)
        if entry is not None:
            written.append((clock.now, entry.micros, copy.deepcopy(state)))
        else:
            assert written
            assert written[-1][2] == state
        if restart and n % 4 == 3:
            stream = Stream(log, rate, clock=clock)
    assert stream.state == history[-1][0]
    cursor = Cursor(log, CursorKind.READ_BIDIRECTIONAL)
    for write_time, entry_time, _ in written:
        # The state at a time is the last state written whose entry is at or
        # before it: amends replace what their mutation said, from its time on.
        expected = [s for _, t, s in written if t <= write_time][-1]
        assert cursor.state_at(from_micros(write_time)) == expected
        expected_at_entry = [s for _, t, s in written if t <= entry_time][-1]
        assert cursor.state_at(from_micros(entry_time)) == expected_at_entry
    # Windows never need more than keyframe_frequency of mutations.
    last_snapshot = None
    for entry in log:
        if entry.is_snapshot:
            last_snapshot = entry.micros
        else:
            assert last_snapshot is not None
            assert entry.micros - last_snapshot <= rate.keyframe_micros


# -- type-strict changes (a change of JSON type alone is a change) ------------------

TYPE_ONLY = [
    ({"a": 1}, {"a": True}),
    ({"a": True}, {"a": 1}),
    ({"a": 1}, {"a": 1.0}),
    ({"a": 0}, {"a": False}),
    ({"a": 0}, {"a": -0.0}),
    ({"a": 0.0}, {"a": -0.0}),
    ({"a": [1, 0]}, {"a": [True, False]}),
    ({"a": {"b": [{"c": 1}]}}, {"a": {"b": [{"c": 1.0}]}}),
]


@pytest.mark.parametrize(("old", "new"), TYPE_ONLY)
@pytest.mark.parametrize("gap", [0.5, 2.0])  # an amend, a new mutation
def test_a_change_of_type_alone_is_written(
    old: dict[str, Any], new: dict[str, Any], gap: float
) -> None:
    log, stream, clock = make()
    stream.write_state({"x": 0})
    clock.tick(2)
    stream.write_state(old)
    clock.tick(gap)
    assert stream.write_state(new) is not None
    assert stream.last_action is (WriteAction.AMEND if gap < 1 else WriteAction.MUTATION)
    assert json_equal(replay(log, clock.now), new)
    assert json_equal(stream.state, new)
    assert json_equal(Stream(log, RATE, clock=clock).state, new)
    clock.tick(gap)
    assert stream.write_state(copy.deepcopy(new)) is None


tricky = st.sampled_from([True, False, 1, 0, -1, 1.0, 0.0, -0.0, None, "1", ""])
tricky_values = json_values(keys, tricky, max_leaves=8)


def retype(data: st.DataObject, value: Any) -> Any:
    """``value`` with some scalars swapped for others that Python finds equal."""
    if type(value) is dict:
        return {k: retype(data, v) for k, v in value.items()}
    if type(value) is list:
        return [retype(data, v) for v in value]
    if data.draw(st.booleans()):
        return data.draw(st.sampled_from([x for x in [True, 1, 1.0] if x == value] or [value]))
    return value


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, tricky_values, max_size=4), st.data(), st.booleans())
def test_every_change_as_json_is_written_and_read_back_type_for_type(
    old: dict[str, Any], data: st.DataObject, amend: bool
) -> None:
    new = data.draw(st.dictionaries(keys, tricky_values, max_size=4) | st.just(retype(data, old)))
    log, stream, clock = make()
    stream.write_state({"first": 1})
    clock.tick(2)
    stream.write_state(old)
    clock.tick(0.5 if amend else 2)
    entry = stream.write_state(new)
    assert (entry is None) is json_equal(old, new)
    for state in (replay(log, clock.now), stream.state, Stream(log, RATE, clock=clock).state):
        assert json_equal(state, new)


def test_a_change_of_type_alone_is_stored_by_the_server(url: str) -> None:
    with rstream.Client(url) as client:
        robot = client.stream("types")
        first = robot.write_state({"a": 1, "b": [1, 0]}, timestamp=at(0))
        assert first is not None
        second = robot.write_state({"a": True, "b": [True, False]}, timestamp=at(5))
        assert second is not None
        assert json_equal(second.data, {"a": True, "b": [True, False]})
        _ts, state = robot.latest()
        assert type(state["a"]) is bool
        assert json_equal(state, {"a": True, "b": [True, False]})
        assert json_equal(robot.state_at(at(5)), {"a": True, "b": [True, False]})
        assert json_equal(robot.state_at(at(4)), {"a": 1, "b": [1, 0]})
        assert robot.write_state({"a": True, "b": [True, False]}, timestamp=at(6)) is None


def test_the_server_refuses_what_the_writer_refuses(url: str) -> None:
    for body in [
        '{"state": ' + '{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1) + "}",
        '{"state": {"a": "\\ud800"}}',
    ]:
        response = requests.post(
            f"{url}/v1/streams/bad/state",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_json"
    with rstream.Client(url) as client, pytest.raises(rstream.StreamNotFound):
        list(client.stream("bad").entries())  # nothing was stored, not even the stream


def at(seconds: float) -> datetime:
    return datetime(2024, 5, 1, tzinfo=UTC) + timedelta(seconds=seconds)


# -- what a state may hold ------------------------------------------------------------


def nest(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500, 950, 10_000])
def test_states_deeper_than_the_limit_are_refused(levels: int) -> None:
    log, stream, clock = make()
    stream.write_state({"b": 1})
    clock.tick(2)
    too_deep = "$" + ".a" * MAX_DEPTH
    with pytest.raises(rstream.InvalidJSON, match="deeper than 64") as info:
        stream.write_state(nest(levels))
    assert info.value.path == too_deep
    with pytest.raises(rstream.InvalidJSON) as info:
        stream.write_entry(Entry(at(100), S, nest(levels)))
    assert info.value.path == too_deep
    # A mutation that would make the state too deep, or is itself too deep.
    with pytest.raises((rstream.InvalidJSON, rstream.MutationError)) as failed:
        stream.write_entry(Entry(at(100), M, nest(levels)))
    assert isinstance(failed.value, (rstream.InvalidJSON, rstream.MutationError))
    assert failed.value.path.startswith("$.a.a")
    with pytest.raises(rstream.InvalidJSON) as info:
        stream.write_entry(Entry(at(100), M, {"c": {"$set": nest(levels)}}))
    assert info.value.path.startswith("$.c")
    assert log.revision == 1
    assert stream.state == {"b": 1}


def test_the_deepest_state_is_written() -> None:
    log, stream, clock = make()
    stream.write_state(nest(MAX_DEPTH))
    clock.tick(2)
    assert stream.write_state(nest(MAX_DEPTH, 2)) is not None
    stream.write_entry(Entry.from_micros(clock.now + 5, M, nest(MAX_DEPTH, 3)))
    assert json_equal(stream.state, nest(MAX_DEPTH, 3))
    assert log.revision == 3


@pytest.mark.parametrize(
    ("state", "error", "path"),
    [
        ({"a": float("nan")}, rstream.InvalidJSON, "$.a"),
        ({"a": [1, float("inf")]}, rstream.InvalidJSON, "$.a[1]"),
        ({"a": {"b": object()}}, rstream.InvalidJSONType, "$.a.b"),
        ({"a": {1: 2}}, rstream.InvalidJSONType, "$.a"),
        ({"a": (1, 2)}, rstream.InvalidJSONType, "$.a"),
        ({"a": "\ud800"}, rstream.InvalidJSON, "$.a"),
    ],
)
def test_states_that_are_not_json_are_refused(
    state: dict[str, Any], error: type[Exception], path: str
) -> None:
    log, stream, _clock = make()
    with pytest.raises(error) as info:
        stream.write_state(state)
    assert getattr(info.value, "path", None) == path
    with pytest.raises(error):
        stream.write_entry(Entry(at(1), S, state))
    stream.write_entry(Entry(at(1), S, {}))
    with pytest.raises(error):
        stream.write_entry(Entry(at(2), M, state))
    assert log.revision == 1
