"""The core against the reference model in ``tests/refmodel.py``.

Inputs include what ``build_mutation`` never emits (``{}``, operators under
missing or null parents, index keys of every shape, unknown operators), type-only
changes, amends, several writers, and clocks behind, ahead and frozen. Each
``@example`` is a bug that a weaker test let through (issue 17).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

import rstream
from rstream import Entry, EntryKind
from rstream.core.cursor import Cursor, CursorKind
from rstream.core.jsontype import json_equal
from rstream.core.log import MemoryLog
from rstream.core.mutation import (
    apply_mutation,
    apply_mutation_with_inverse,
    build_mutation,
    copy_json,
)
from rstream.core.stream import RateConfig, Stream, WriteAction
from rstream.core.timestamps import from_micros
from tests import refmodel
from tests.refmodel import json_values, reference_settings

SECOND = 1_000_000
INVALID: Any = object()

# -- generated JSON: few keys (so paths meet), every type Python confuses -----------

FIELD_KEYS = st.sampled_from(["a", "b", "c", "$x"])
SCALARS = st.sampled_from([None, True, False, 0, 1, 2, -1, 0.0, -0.0, 1.0, 2.5, "", "a"])
VALUES = json_values(FIELD_KEYS, SCALARS)
STATES = st.dictionaries(FIELD_KEYS, VALUES, max_size=4)

JSON_INDEX_KEYS = st.sampled_from(
    [
        "0",
        "1",
        "2",
        "3",
        "00",
        "01",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1.0",
        "1e0",
        "",
        "x",
        "\u0663",  # ARABIC-INDIC DIGIT THREE: str.isdigit() says yes
        "\u00b2",  # SUPERSCRIPT TWO: isdigit() yes, int() no
        "1" + "0" * 17,
        "1" + "0" * 18,  # 19 digits
        "1" + "0" * 18 + "1",  # 20 digits
        "9" * 40,
    ]
)
INDEX_KEYS = JSON_INDEX_KEYS | st.sampled_from([0, 1, -1])  # Python callers may pass ints
ARGUMENTS = st.one_of(
    SCALARS,
    st.lists(st.one_of(st.integers(-1, 4), st.booleans(), SCALARS), max_size=3),
)


def mutations(index_keys: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Mutations, valid or not, with ``$mutateIdx`` keys from ``index_keys``."""

    def values(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        operators = st.fixed_dictionaries(
            {},
            optional={
                "$set": VALUES,
                "$push": st.lists(VALUES, max_size=2) | ARGUMENTS,
                "$pull": st.lists(st.integers(-1, 3) | st.booleans(), max_size=3) | ARGUMENTS,
                "$truncate": st.integers(-1, 4) | ARGUMENTS,
                "$mutateIdx": st.dictionaries(index_keys, inner, max_size=3) | ARGUMENTS,
                "$unset": st.sampled_from([True, False, None, 0, 1, "true"]),
                "$bogus": VALUES,
            },
        )
        fields = st.dictionaries(st.sampled_from(["a", "b", "c", "$set", "$x"]), inner, max_size=3)
        return operators | fields

    return st.dictionaries(FIELD_KEYS, st.recursive(VALUES, values, max_leaves=12), max_size=4)


MUTATIONS = mutations(INDEX_KEYS)
JSON_MUTATIONS = mutations(JSON_INDEX_KEYS)


def ref_apply(state: Any, mutation: Any) -> Any:
    try:
        return refmodel.apply(state, mutation)
    except refmodel.Invalid:
        return INVALID


# -- apply ------------------------------------------------------------------------


@reference_settings()
@given(STATES, MUTATIONS)
@example({}, {"a": {}, "c": 1})  # `continue` turned `break` after an empty change
@example({"a": None}, {"a": {}, "b": {"c": {}}, "c": 1})
@example({"a": [0, 0]}, {"a": {"$mutateIdx": {"1" + "0" * 18 + "1": 5}}})  # 20 digits
@example({"a": [0, 0]}, {"a": {"$mutateIdx": {"1" + "0" * 18: 5}}})  # 19 digits
@example({"a": [0, 0]}, {"a": {"$mutateIdx": {"\u0663": 5}}})
@example({"a": {"b": [1]}}, {"a": {"b": {"$unset": None}}})
@example({}, {"a": {"b": {"$push": [1]}}, "b": {"$pull": [0]}, "c": {"$truncate": 0}})
def test_apply_matches_the_reference(state: dict[str, Any], mutation: dict[str, Any]) -> None:
    state_before, mutation_before = copy_json(state), copy_json(mutation)
    expected = ref_apply(state, mutation)
    event("invalid" if expected is INVALID else "valid")
    if expected is INVALID:
        with pytest.raises(rstream.MutationError):
            apply_mutation(state, mutation)
        with pytest.raises(rstream.MutationError):
            apply_mutation_with_inverse(state, mutation)
    else:
        got = apply_mutation(state, mutation)
        assert json_equal(got, expected)
        again, inverse = apply_mutation_with_inverse(state, mutation)
        assert json_equal(again, expected)
        assert json_equal(ref_apply(got, inverse), state)
    assert json_equal(state, state_before)
    assert json_equal(mutation, mutation_before)


# -- build ------------------------------------------------------------------------


def retype(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with some scalars swapped for ones Python finds equal (1, True, 1.0)."""
    if type(value) is dict:
        return {key: retype(draw, item) for key, item in value.items()}
    if type(value) is list:
        return [retype(draw, item) for item in value]
    if type(value) not in (bool, int, float):
        return value
    return draw(
        st.sampled_from([x for x in (True, 1, 1.0, False, 0, 0.0, -0.0) if x == value] or [value])
    )


@st.composite
def state_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two states: unrelated, or the same but for types Python finds equal."""
    old = draw(STATES)
    return old, retype(draw, old) if draw(st.booleans()) else draw(STATES)


@reference_settings()
@given(state_pairs())
@example(({"a": 0.0}, {"a": -0.0}))
@example(({"a": [1, 0]}, {"a": [True, False]}))
def test_build_matches_the_reference(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    old, new = pair
    mutation = build_mutation(old, new)
    plain = refmodel.build(old, new)
    assert json_equal(refmodel.apply(old, plain), new)  # the model agrees with itself
    assert json_equal(refmodel.apply(old, mutation), new)
    assert mutation.keys() == plain.keys()  # exactly the fields that changed
    assert (mutation == {}) is json_equal(old, new)


# -- the writer and the cursors ------------------------------------------------------

RATES = st.tuples(
    st.sampled_from([0, SECOND, 3 * SECOND, 10 * SECOND, 10 * SECOND]),  # keyframe frequency
    st.sampled_from([0, 1, SECOND, 2 * SECOND, 2 * SECOND]),  # change frequency
)
TICKS = st.sampled_from([-10 * SECOND, -1, 0, 0, 1, SECOND // 2, SECOND, 2 * SECOND, 11 * SECOND])
OFFSETS = st.sampled_from([-1, 0, 1, SECOND // 4, 2 * SECOND])
WRITER = st.integers(0, 1)
# Writes of a few small states, so that unchanged and type-only writes are common.
WRITTEN = st.one_of(
    st.dictionaries(st.just("a"), st.sampled_from([0, 1, True, 1.0, -0.0]), max_size=1), STATES
)
TICK = st.tuples(st.just("tick"), TICKS)
# a write at the clock's time (None), or at an offset from the writer's last
# change or from the newest entry
WRITE = st.tuples(
    st.just("write"), WRITER, WRITTEN, st.sampled_from([None, None, "change", "entry"]), OFFSETS
)
ENTRY = st.tuples(
    st.just("entry"),
    WRITER,
    st.sampled_from(["snapshot", "mutation"]),
    JSON_MUTATIONS,
    st.sampled_from(["change", "entry"]),
    OFFSETS,
)
RESTART = st.tuples(st.just("restart"), WRITER)  # a new Stream over the same log
OP_KINDS = {"write": WRITE, "tick": TICK, "entry": ENTRY, "restart": RESTART}
OPS = st.lists(
    st.sampled_from([*["write"] * 5, *["tick"] * 3, "entry", "restart"]).flatmap(
        OP_KINDS.__getitem__
    ),
    min_size=3,
    max_size=16,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * SECOND

    def __call__(self) -> int:
        return self.now


class Run:
    """Two writers on one log, the model beside them, and cursors that stay open."""

    def __init__(self, keyframe_us: int, change_us: int) -> None:
        self.rate = RateConfig(
            keyframe_frequency=timedelta(microseconds=keyframe_us),
            change_frequency=timedelta(microseconds=change_us),
        )
        self.clock = Clock()
        self.log = MemoryLog()
        self.streams = [self.new_stream(), self.new_stream()]
        self.model = refmodel.Writer(keyframe_us, change_us)
        self.last_change: list[int | None] = [None, None]
        self.readers = [
            Cursor(self.log, kind) for kind in CursorKind if kind is not CursorKind.WRITE
        ]
        self.write_cursor = Cursor(self.log, CursorKind.WRITE)

    def new_stream(self) -> Stream:
        return Stream(self.log, self.rate, clock=self.clock)

    def given(self, who: int, base: str | None, offset: int) -> int | None:
        if base is None:
            return None
        if base == "change":
            anchor = self.model.last(self.last_change[who])
        else:
            anchor = self.model.log[-1].micros if self.model.log else None
        return (self.clock.now if anchor is None else anchor) + offset

    def write(self, who: int, state: dict[str, Any], base: str | None, offset: int) -> None:
        given = self.given(who, base, offset)
        stream = self.streams[who]
        try:
            when = self.model.when(given, self.clock.now, self.last_change[who])
        except refmodel.OutOfOrder:
            event("write_state: out of order")

            with pytest.raises(rstream.OutOfOrder):
                stream.write_state(state, None if given is None else from_micros(given))
            return
        action = self.model.write_state(state, when)
        event(f"write_state: {action}")
        entry = stream.write_state(state, None if given is None else from_micros(given))
        assert stream.last_action is WriteAction(action)
        if action == "none":
            assert entry is None
            return
        self.last_change[who] = when
        assert entry is not None
        assert entry.micros == self.model.log[-1].micros
        assert entry.kind is (EntryKind.SNAPSHOT if action == "snapshot" else EntryKind.MUTATION)

    def write_entry(
        self, who: int, kind: str, data: dict[str, Any], base: str, offset: int
    ) -> None:
        given = self.given(who, base, offset)
        assert given is not None
        entry = Entry.from_micros(
            given, EntryKind.SNAPSHOT if kind == "snapshot" else EntryKind.MUTATION, data
        )
        stream = self.streams[who]
        try:
            when = self.model.when(given, self.clock.now, self.last_change[who])
            self.model.write_entry(kind, data, when)
        except refmodel.OutOfOrder:
            with pytest.raises(rstream.OutOfOrder):
                stream.write_entry(entry)
            return
        except refmodel.NoState:
            with pytest.raises(rstream.MutationError):
                stream.write_entry(entry)
            return
        stored = stream.write_entry(entry)
        self.last_change[who] = when
        assert stored.micros == when
        assert stream.last_action is WriteAction(kind)

    def check(self) -> None:
        """The log, the writers and every cursor agree with the model."""
        entries = list(self.log)
        model = self.model.log
        assert [(e.micros, e.kind.name.lower()) for e in entries] == [
            (step.micros, step.kind) for step in model
        ]
        state: dict[str, Any] | None = None
        for entry, step in zip(entries, model, strict=True):
            state = entry.data if entry.is_snapshot else refmodel.apply(state or {}, entry.data)
            assert json_equal(state, step.state)
        newest = model[-1].state if model else None
        for stream in self.streams:
            assert json_equal(stream.state, newest)
        assert json_equal(self.write_cursor.advance(), newest)
        if not model:
            return
        last = model[-1].micros
        assert json_equal(self.write_cursor.state_at(from_micros(last + 5)), newest)
        with pytest.raises(rstream.OutOfRange):
            self.write_cursor.state_at(from_micros(last - 1))
        times = sorted({t for step in model for t in (step.micros - 1, step.micros)})
        for micros in [*times, *reversed(times)]:
            expected = self.model.state_at(micros)
            fresh = [Cursor(self.log, reader.kind) for reader in self.readers]
            for cursor in [*self.readers, *fresh]:
                if expected is None:
                    with pytest.raises(rstream.OutOfRange):
                        cursor.state_at(from_micros(micros))
                else:
                    assert json_equal(cursor.state_at(from_micros(micros)), expected)


@reference_settings()
@given(RATES, OPS)
@example(  # `Cursor.wrote` with `or` for `and`: the amend was built on the wrong base
    (10 * SECOND, SECOND),
    [
        ("write", 0, {"a": 0}, None, 0),
        ("tick", 2 * SECOND),
        ("write", 0, {"a": 1}, None, 0),
        ("tick", 2 * SECOND),
        ("write", 0, {"a": 0}, None, 0),
        ("tick", SECOND // 2),
        ("write", 0, {"a": 0, "c": 1}, None, 0),
    ],
)
@example(  # a new Stream over the log, its clock behind the log
    (10 * SECOND, SECOND),
    [
        ("write", 0, {"a": 0}, None, 0),
        ("tick", -10 * SECOND),
        ("restart", 0),
        ("write", 0, {"a": 1}, None, 0),
        ("write", 0, {"a": 2}, None, 0),
    ],
)
@example(  # a frozen clock: every write one microsecond after the last change
    (3 * SECOND, SECOND),
    [
        ("write", 0, {"a": 0}, None, 0),
        ("write", 0, {"a": 1}, None, 0),
        ("write", 0, {"a": 2}, None, 0),
        ("write", 1, {"a": 3}, None, 0),
        ("write", 0, {"a": 3}, None, 0),
    ],
)
@example(  # a write exactly at the last amend's time, then just after it
    (10 * SECOND, SECOND),
    [
        ("write", 0, {"a": 0}, None, 0),
        ("write", 0, {"a": 1}, "change", 2 * SECOND),
        ("write", 0, {"a": 2}, "change", SECOND // 4),
        ("write", 0, {"a": 3}, "change", 0),
        ("write", 0, {"a": 3}, "change", 1),
    ],
)
@example(  # write_entry between an amended mutation and its amend time
    (10 * SECOND, SECOND),
    [
        ("write", 0, {"a": 0}, None, 0),
        ("write", 0, {"a": 1}, "change", 2 * SECOND),
        ("write", 0, {"a": 2}, "change", SECOND // 4),
        ("entry", 0, "mutation", {"b": 1}, "entry", 1),
        ("entry", 1, "mutation", {"b": 1}, "entry", 1),
    ],
)
def test_the_writer_and_cursors_match_the_reference(
    rate: tuple[int, int], ops: list[tuple[Any, ...]]
) -> None:
    run = Run(*rate)
    for op in ops:
        if op[0] == "tick":
            run.clock.now += op[1]
        elif op[0] == "write":
            run.write(*op[1:])
        elif op[0] == "entry":
            run.write_entry(*op[1:])
        else:
            run.streams[op[1]] = run.new_stream()
            run.last_change[op[1]] = None
        run.check()


# -- RateConfig --------------------------------------------------------------------

DURATIONS = st.one_of(st.integers(0, 10**12), st.integers(0, 10**9).map(lambda ms: ms * 1000)).map(
    lambda us: timedelta(microseconds=us)
)


@reference_settings()
@given(DURATIONS, DURATIONS)
@example(timedelta(seconds=60), timedelta(seconds=1))  # whole ms are ints, not 60000.0
@example(timedelta(microseconds=1500), timedelta(0))
def test_rate_json_matches_the_reference(keyframe: timedelta, change: timedelta) -> None:
    rate = RateConfig(keyframe_frequency=keyframe, change_frequency=change)
    assert json_equal(rate.to_json(), refmodel.rate_json(keyframe, change))
    assert RateConfig.from_json(rate.to_json()) == rate
