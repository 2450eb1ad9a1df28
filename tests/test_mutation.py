import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rstream
from rstream.core.jsontype import MAX_DEPTH, check_json, copy_walk, json_equal, json_type
from rstream.core.mutation import MAX_MUTATION_DEPTH
from rstream.mutation import (
    MutationError,
    apply_mutation,
    apply_mutation_with_inverse,
    build_mutation,
    copy_json,
)
from tests.refmodel import json_values

same = json_equal  # equal and of the same JSON types all the way down


def nest(levels: int, leaf: Any = 1, key: str = "a") -> Any:
    """``{"a": {"a": ... leaf}}`` with ``levels`` objects (the outer one is level 1)."""
    value = leaf
    for _ in range(levels):
        value = {key: value}
    return value


def nest_lists(levels: int, leaf: Any = 1) -> Any:
    """``[[... [leaf]]]`` with ``levels`` arrays."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def mutate_items(levels: int, leaf: Any) -> Any:
    """The mutation of item 0 of ``levels`` nested arrays down to ``leaf``."""
    value = leaf
    for _ in range(levels):
        value = {"$mutateIdx": {"0": value}}
    return value


DEEP = [65, 500, 950, 10_000]  # one past the limit, around the old crash, far past


def check_apply(state: dict[str, Any], mutation: dict[str, Any]) -> dict[str, Any]:
    """Apply both ways, checking inputs stay unchanged and the inverse undoes it."""
    state_before = copy_json(state)
    mutation_before = copy_json(mutation)
    new = apply_mutation(state, mutation)
    new2, inverse = apply_mutation_with_inverse(state, mutation)
    assert same(new, new2)
    assert same(state, state_before)
    assert same(mutation, mutation_before)
    new_before = copy_json(new)
    assert same(apply_mutation(new, inverse), state)
    assert same(new, new_before)
    return new


# -- operators -------------------------------------------------------------------

REMOVED = object()  # in "changed" tables: the key is gone
STATE: dict[str, Any] = {
    "n": 1,
    "s": "x",
    "z": None,
    "arr": [10, 11, 12, 13],
    "obj": {"a": 1, "b": {"c": 2}},
}


@pytest.mark.parametrize(
    ("mutation", "changed"),
    [
        ({"n": 2}, {"n": 2}),
        ({"n": None}, {"n": None}),
        ({"n": [1, 2]}, {"n": [1, 2]}),
        ({"new": "v"}, {"new": "v"}),
        ({"n": {"$set": {"deep": {}}}}, {"n": {"deep": {}}}),
        ({"new": {"$set": 3}}, {"new": 3}),
        ({"arr": {"$push": [14]}}, {"arr": [10, 11, 12, 13, 14]}),
        ({"n": {"$push": [1]}}, {"n": [1]}),
        ({"new": {"$push": [1]}}, {"new": [1]}),
        ({"arr": {"$pull": [0, 2]}}, {"arr": [11, 13]}),
        ({"arr": {"$pull": [3, 3]}}, {"arr": [10, 11, 12]}),
        ({"arr": {"$pull": []}}, {}),
        ({"z": {"$pull": [5]}}, {}),
        ({"z": {"$truncate": 0}}, {}),
        ({"arr": {"$truncate": 2}}, {"arr": [10, 11]}),
        ({"arr": {"$truncate": 9}}, {}),
        ({"arr": {"$mutateIdx": {"1": 0, "3": {"$set": [1]}}}}, {"arr": [10, 0, 12, [1]]}),
        ({"obj": {"$unset": True}}, {"obj": REMOVED}),
        ({"obj": {"$unset": None}}, {"obj": REMOVED}),
        ({"missing": {"$unset": None}}, {}),
        ({"obj": {"$unset": False}}, {}),
        ({"missing": {"$unset": True}}, {}),
        ({"obj": {"b": {"c": {"$unset": True}}}}, {"obj": {"a": 1, "b": {}}}),
        ({"obj": {"a": 5, "b": {"d": True}}}, {"obj": {"a": 5, "b": {"c": 2, "d": True}}}),
        ({"z": {"x": 1}}, {"z": {"x": 1}}),
        ({"new": {"x": {"y": 1}}}, {"new": {"x": {"y": 1}}}),
        ({"obj": {}}, {}),
        ({"new": {}}, {}),
        ({"n": {"$frobnicate": 1}}, {}),
        ({"new": {"$frobnicate": 1}}, {}),
        ({}, {}),
    ],
)
def test_operator_table(mutation: dict[str, Any], changed: dict[str, Any]) -> None:
    expected = dict(STATE)
    for key, value in changed.items():
        if value is REMOVED:
            del expected[key]
        else:
            expected[key] = value
    assert same(check_apply(STATE, mutation), expected)


@pytest.mark.parametrize(
    ("mutation", "result"),
    [
        # $set, then $push, $pull (indexes into what is there then), $truncate, $mutateIdx
        (
            {
                "$mutateIdx": {"0": "first"},
                "$truncate": 3,
                "$pull": [1],
                "$push": [4],
                "$set": [0, 1, 2, 3],
            },
            ["first", 2, 3],
        ),
        ({"$push": [3], "$pull": [0]}, [2, 3]),
        ({"$truncate": 1, "$push": [3]}, [1]),
        ({"$mutateIdx": {"1": "x"}, "$unset": True}, REMOVED),
        ({"$set": 7, "$unset": True}, REMOVED),
        ({"$unset": True, "$set": 7}, REMOVED),
    ],
)
def test_operators_apply_in_fixed_order(mutation: dict[str, Any], result: Any) -> None:
    new = check_apply({"a": [1, 2]}, {"a": mutation})
    assert same(new, {} if result is REMOVED else {"a": result})


def test_mutate_idx_recurses_into_items() -> None:
    state = {"tasks": [{"id": 1, "p": 0}, None, {"id": 3, "p": 0.5}]}
    mutation = {"tasks": {"$mutateIdx": {"0": {"p": 1}, "1": {"id": 2}, "2": {"$set": {}}}}}
    assert same(check_apply(state, mutation), {"tasks": [{"id": 1, "p": 1}, {"id": 2}, {}]})


def test_an_empty_mutate_idx_changes_nothing_whatever_the_value() -> None:
    state: dict[str, Any] = {"n": 1, "s": "x", "z": None, "o": {"k": 1}}
    mutation: dict[str, Any] = {key: {"$mutateIdx": {}} for key in [*state, "missing"]}
    assert same(check_apply(state, mutation), state)


def test_mutate_idx_applies_every_key_plain_values_and_empty_changes_alike() -> None:
    state = {"a": [0, 1, 2, 3]}
    mutation: dict[str, Any] = {"a": {"$mutateIdx": {"0": "x", "1": {}, "2": [2], "3": None}}}
    assert same(check_apply(state, mutation), {"a": ["x", 1, [2], None]})


def test_mutate_idx_takes_int_keys_from_python() -> None:
    # A mutation built in Python, not read from JSON, may index with ints.
    assert same(check_apply({"a": [0, 1]}, {"a": {"$mutateIdx": {1: 5}}}), {"a": [0, 5]})
    with pytest.raises(MutationError, match="out of range"):
        apply_mutation({"a": [0, 1]}, {"a": {"$mutateIdx": {2: 5}}})


def test_an_index_key_of_any_length_is_a_mutation_error() -> None:
    # int() refuses strings of more than 4,300 digits with a ValueError: a huge
    # key must still be a MutationError like any index out of range.
    for digits in (19, 20, 5_000):
        with pytest.raises(MutationError, match="out of range") as info:
            apply_mutation({"a": [0]}, {"a": {"$mutateIdx": {"1" * digits: 5}}})
        assert info.value.path == "$.a"


def test_top_level_keys_are_always_fields() -> None:
    assert same(check_apply({"$a": 1}, {"$a": 2, "$set": {"x": 1}}), {"$a": 2, "$set": {"x": 1}})


def test_bool_int_and_float_are_distinct() -> None:
    for old, new in [(1, True), (True, 1), (0, False), (1, 1.0), (1.0, 1), (False, 0.0)]:
        mutation = build_mutation(
            {"a": old, "b": [old], "c": {"d": old}}, {"a": new, "b": [new], "c": {"d": new}}
        )
        assert same(
            apply_mutation({"a": old, "b": [old], "c": {"d": old}}, mutation),
            {"a": new, "b": [new], "c": {"d": new}},
        )


def test_apply_shares_untouched_subtrees() -> None:
    state: dict[str, Any] = {"a": {"x": [1]}, "b": {"c": {"d": 1}, "e": [{"f": 1}, {"g": 2}]}}
    new = apply_mutation(state, {"b": {"c": {"d": 2}, "e": {"$mutateIdx": {"1": {"g": 3}}}}})
    assert new["a"] is state["a"]
    assert new["b"]["e"][0] is state["b"]["e"][0]
    assert new["b"] is not state["b"]
    assert state == {"a": {"x": [1]}, "b": {"c": {"d": 1}, "e": [{"f": 1}, {"g": 2}]}}


def test_inverse_is_small_and_shares_old_values() -> None:
    big = {"k": list(range(1000))}
    state = {"big": big, "small": {"x": 1, "y": 2}, "gone": None}
    _new, inverse = apply_mutation_with_inverse(
        state, {"small": {"x": 5, "z": 1}, "big": {"$push": [1]}, "added": 1}
    )
    assert inverse == {
        "small": {"x": {"$set": 1}, "z": {"$unset": True}},
        "big": {"$set": big},
        "added": {"$unset": True},
    }
    assert inverse["big"]["$set"] is big


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "mutation", "path", "fragment"),
    [
        ({"a": 1}, {"a": {"b": 1}}, "$.a", "field mutation to a number"),
        ({"a": "s"}, {"a": {"b": 1}}, "$.a", "to a string"),
        ({"a": [1]}, {"a": {"b": 1}}, "$.a", "to an array"),
        ({"a": {"b": 1}}, {"a": {"b": 1, "$set": 2}}, "$.a", "mixes"),
        ({"a": {"b": 1}}, {"a": {"$set": 2, "b": 1}}, "$.a", "mixes"),
        ({"a": [1]}, {"a": {"$push": 1}}, "$.a", "$push takes an array"),
        ({"a": [1]}, {"a": {"$pull": 0}}, "$.a", "$pull takes an array"),
        ({"a": [1]}, {"a": {"$pull": [True]}}, "$.a", "$pull index True"),
        ({"a": [1]}, {"a": {"$pull": [-1]}}, "$.a", "$pull index -1"),
        ({"a": [1]}, {"a": {"$pull": [1]}}, "$.a", "out of range"),
        ({"a": 3}, {"a": {"$pull": [0]}}, "$.a", "$pull needs an array"),
        ({"a": [1]}, {"a": {"$truncate": -1}}, "$.a", "$truncate"),
        ({"a": [1]}, {"a": {"$truncate": 1.0}}, "$.a", "$truncate"),
        ({"a": [1]}, {"a": {"$truncate": False}}, "$.a", "$truncate"),
        ({"a": {}}, {"a": {"$truncate": 1}}, "$.a", "$truncate needs an array"),
        ({"a": [1]}, {"a": {"$mutateIdx": [1]}}, "$.a", "$mutateIdx takes an object"),
        ({"a": [1]}, {"a": {"$mutateIdx": {"1": 0}}}, "$.a", "out of range"),
        ({"a": [1]}, {"a": {"$mutateIdx": {"-1": 0}}}, "$.a", "not a decimal"),
        ({"a": [1]}, {"a": {"$mutateIdx": {"01": 0}}}, "$.a", "not a decimal"),
        ({"a": [1]}, {"a": {"$mutateIdx": {"x": 0}}}, "$.a", "not a decimal"),
        ({"a": [1]}, {"a": {"$mutateIdx": {"9" * 40: 0}}}, "$.a", "out of range"),
        (
            {"a": [1]},
            {"a": {"$mutateIdx": {"0": {"$unset": True}}}},
            "$.a[0]",
            "cannot remove an array item",
        ),
        (
            {"tasks": [{}, {}, {}, {"name": 1}]},
            {"tasks": {"$mutateIdx": {"3": {"name": {"first": "x"}}}}},
            "$.tasks[3].name",
            "number",
        ),
        ({"a": None}, {"a": {"$mutateIdx": {"0": 1}}}, "$.a", "found null"),
        ({"a": "s"}, {"a": {"$mutateIdx": {"0": 1}}}, "$.a", "array, found a string"),
        ({"a": [1]}, {"a": {"$push": 1}}, "$.a", "$push takes an array, not a number"),
        ({"a": [1]}, {"a": {"$pull": "0"}}, "$.a", "$pull takes an array of indexes, not a string"),
        ({"a": [1]}, {"a": {"$mutateIdx": "0"}}, "$.a", "index to mutation, not a string"),
        ({"a": [1]}, {"a": {"$unset": [True]}}, "$.a", "(false does nothing), not an array"),
        ({}, {"a": {"$mutateIdx": {"0": 1}}}, "$.a", "array, found a missing value"),
        ({"a": {}}, {"a": {"$pull": [0]}}, "$.a", "array, found an object"),
        ({"a": {}}, {"a": {"$truncate": 0}}, "$.a", "array, found an object"),
        ({"a": [1]}, {"a": {"$unset": 1}}, "$.a", "$unset takes true or null"),
        ({"a": [1]}, {"a": {"$unset": 0}}, "$.a", "$unset takes true or null"),
        ({"a": [1]}, {"a": {"$unset": "true"}}, "$.a", "$unset takes true or null"),
        (
            {"a": [1]},
            {"a": {"$mutateIdx": {"0": {"$unset": None}}}},
            "$.a[0]",
            "cannot remove an array item",
        ),
        ({"x y": {"é": 1}}, {"x y": {"é": {"k": 1}}}, '$["x y"]["é"]', "number"),
    ],
)
def test_invalid_mutations_name_the_path(
    state: dict[str, Any], mutation: dict[str, Any], path: str, fragment: str
) -> None:
    before = copy.deepcopy(state)
    with pytest.raises(rstream.MutationError) as info:
        apply_mutation(state, mutation)
    assert info.value.path == path
    assert fragment in info.value.reason
    assert path in str(info.value)
    with pytest.raises(MutationError):
        apply_mutation_with_inverse(state, mutation)
    assert same(state, before)


def test_non_objects_are_named_in_the_error() -> None:
    with pytest.raises(MutationError, match="the state must be a JSON object, not an array"):
        apply_mutation([], {})  # type: ignore[arg-type]
    with pytest.raises(
        MutationError, match="a mutation must be a JSON object, not an array"
    ) as info:
        apply_mutation_with_inverse({}, [])  # type: ignore[arg-type]
    assert info.value.path == "$"


@pytest.mark.parametrize(("state", "mutation"), [({}, []), ({}, None), ([], {}), ("x", {})])
def test_non_objects_are_rejected(state: Any, mutation: Any) -> None:
    with pytest.raises(MutationError) as info:
        apply_mutation(state, mutation)
    assert info.value.path == "$"


def test_unset_null_deletes_as_in_the_go_test_suite() -> None:
    # The mutate format's own Go test: entries written by Go or JS must apply.
    state = {"test": {"test2": [1, 2]}}
    assert same(check_apply(state, {"test": {"test2": {"$unset": None}}}), {"test": {}})
    assert same(check_apply(state, {"test": {"test2": {"$unset": False}}}), state)


# -- depth -------------------------------------------------------------------------


@pytest.mark.parametrize("levels", DEEP)
def test_a_mutation_too_deep_is_a_mutation_error(levels: int) -> None:
    too_deep = "$" + ".a" * MAX_DEPTH  # the object at level 65
    state: dict[str, Any]
    for state in ({}, nest(levels)):
        for fn in (apply_mutation, apply_mutation_with_inverse):
            with pytest.raises(MutationError, match="nested too deeply") as info:
                fn(state, nest(levels, 2))
            assert info.value.path == too_deep
    lists = {"a": nest_lists(levels)}
    with pytest.raises(MutationError, match="nested too deeply") as info:
        apply_mutation(lists, {"a": mutate_items(levels, 2)})
    assert info.value.path == "$.a" + "[0]" * (MAX_DEPTH - 1)  # the array at level 65


@pytest.mark.parametrize("levels", DEEP)
def test_a_deep_state_takes_mutations_within_the_limit(levels: int) -> None:
    state = nest(levels)
    new = check_apply(state, {"b": {"$set": nest(levels)}, "a": {"c": 1}})
    assert new["b"] is not state  # $set values are taken as they are
    assert same(new["a"]["a"], state["a"]["a"])
    assert new["a"]["c"] == 1


def test_the_deepest_state_takes_every_mutation() -> None:
    assert same(check_apply(nest(MAX_DEPTH), nest(MAX_DEPTH, 2)), nest(MAX_DEPTH, 2))
    assert same(check_apply({}, nest(MAX_DEPTH, 2)), nest(MAX_DEPTH, 2))
    lists = {"a": nest_lists(MAX_DEPTH - 1)}
    new = check_apply(lists, {"a": mutate_items(MAX_DEPTH - 1, 2)})
    assert same(new, {"a": nest_lists(MAX_DEPTH - 1, 2)})
    inner = nest(MAX_DEPTH - 2, [5])  # the array is at level 64
    assert same(
        check_apply({"a": inner}, {"a": nest(MAX_DEPTH - 2, {"$mutateIdx": {"0": 6}})}),
        {"a": nest(MAX_DEPTH - 2, [6])},
    )
    with pytest.raises(MutationError, match="nested too deeply"):  # an array at level 65
        apply_mutation({"a": {"b": inner}}, {"a": {"b": nest(62, {"$mutateIdx": {"0": 6}})}})


@pytest.mark.parametrize("levels", [MAX_DEPTH - 1, MAX_DEPTH, *DEEP])
def test_build_holds_at_any_depth(levels: int) -> None:
    old, new = nest(levels), nest(levels, 2)
    mutation = build_mutation(old, new)
    assert same(apply_mutation(old, mutation), new)
    assert same(apply_mutation(new, build_mutation(new, old)), old)
    assert build_mutation(old, nest(levels)) == {}
    if levels <= MAX_DEPTH:
        assert same(mutation, nest(levels, 2))  # diffed all the way down
    else:
        # Below the deepest level a state can have, the object is replaced whole.
        assert same(mutation, nest(MAX_DEPTH, {"$set": nest(levels - MAX_DEPTH, 2)}))
    lists_old, lists_new = {"a": nest_lists(levels)}, {"a": nest_lists(levels, 2)}
    mutation = build_mutation(lists_old, lists_new)
    assert same(apply_mutation(lists_old, mutation), lists_new)
    assert build_mutation(lists_old, {"a": nest_lists(levels)}) == {}


def test_arrays_within_the_depth_limit_are_diffed_item_by_item() -> None:
    # The innermost array is at depth MAX_DEPTH (the state is depth 1, "a" depth 2).
    levels = MAX_DEPTH - 2
    old = {"a": nest_lists(levels, [1, 2, 3])}
    new = {"a": nest_lists(levels, [1, 2, 4])}
    built = build_mutation(old, new)
    assert same(built, {"a": mutate_items(levels, {"$mutateIdx": {"2": 4}})})
    assert same(check_apply(old, built), new)


def test_built_mutations_fit_the_mutation_depth() -> None:
    # The deepest states of arrays and objects, changed at the bottom.
    for old, new in [
        ({"a": nest_lists(MAX_DEPTH - 1)}, {"a": nest_lists(MAX_DEPTH - 1, 2)}),
        ({"a": nest_lists(MAX_DEPTH - 2, {})}, {"a": nest_lists(MAX_DEPTH - 2, {"b": 1})}),
        ({"a": nest_lists(MAX_DEPTH - 2, 1)}, {"a": nest_lists(MAX_DEPTH - 2, {"b": 1})}),
        (nest(MAX_DEPTH), nest(MAX_DEPTH, 2)),
    ]:
        check_json(old)
        check_json(new)
        mutation = build_mutation(old, new)
        check_json(mutation, max_depth=MAX_MUTATION_DEPTH)
        assert same(apply_mutation(old, mutation), new)


@pytest.mark.parametrize("levels", DEEP)
def test_copy_json_copies_any_depth(levels: int) -> None:
    value = nest(levels, [nest_lists(levels, {"x": 1.5})])
    copied = copy_json(value)
    assert same(copied, value)
    a, b = copied, value
    while type(a) is dict:
        assert a is not b
        a, b = a["a"], b["a"]
    assert a is not b


# -- check_json ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error", "path", "fragment"),
    [
        (float("nan"), rstream.InvalidJSON, "$", "nan is not a JSON number"),
        ({"a": [1, {"b": float("-inf")}]}, rstream.InvalidJSON, "$.a[1].b", "-inf"),
        ({"a": {1: 2}}, rstream.InvalidJSONType, "$.a", "object keys must be strings, not int"),
        (
            {"a": {"\ud800": 1}},
            rstream.InvalidJSON,
            "$.a.'\\ud800'",
            "key holds a lone surrogate (at",
        ),
        (
            {"a": ["é", "\udc00"]},
            rstream.InvalidJSON,
            "$.a[1]",
            "string holds a lone surrogate (not valid UTF-8) (at",
        ),
        (
            {"a": [{"b": {1, 2}}]},
            rstream.InvalidJSONType,
            "$.a[0].b",
            "set is not a JSON value (use dict, list, str, int, float, bool or None) (at",
        ),
        ([[[]]], rstream.InvalidJSON, "$[0][0]", "nested deeper than 2 levels"),
        ({"a": {"b": {}}}, rstream.InvalidJSON, "$.a.b", "nested deeper than 2 levels"),
        (nest(10_000), rstream.InvalidJSON, "$" + ".a" * 2, "nested deeper"),
    ],
)
def test_check_json_names_the_path(
    value: Any, error: type[Exception], path: str, fragment: str
) -> None:
    with pytest.raises(error) as info:
        check_json(value, max_depth=2 if "nested" in fragment else MAX_DEPTH)
    assert info.value.path == path  # type: ignore[attr-defined]
    assert str(info.value).startswith(fragment)
    with pytest.raises(error) as info:
        check_json({"top": value}, max_depth=3 if "nested" in fragment else MAX_DEPTH, path="state")
    assert info.value.path == "state.top" + path[1:]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "a boolean"),
        (False, "a boolean"),
        (0, "a number"),
        (-0.5, "a number"),
        ("", "a string"),
        ([], "an array"),
        ({}, "an object"),
        ((1,), "tuple"),
        ({1}, "set"),
        (b"x", "bytes"),
    ],
)
def test_json_type_names_the_json_type_or_else_the_python_type(value: Any, name: str) -> None:
    assert json_type(value) == name


def test_check_json_takes_plain_json() -> None:
    check_json({"a": [None, True, 1, 2.5, -0.0, "é\U0001f916", {"b": []}], "": {}})
    check_json(nest(MAX_DEPTH))
    check_json([nest_lists(MAX_DEPTH - 1)])
    for scalar in (None, 1, "x", 1.5):
        check_json(scalar)


# -- json_equal --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, True),
        (0, False),
        (1, 1.0),
        (0, -0.0),
        (0.0, -0.0),
        (None, 0),
        ("1", 1),
        ([1, 0], [True, False]),
        ({"a": 1}, {"a": True}),
        ({"a": {"b": [1]}}, {"a": {"b": [1.0]}}),
        ({"a": 1}, {"a": 1, "b": 1}),
        ({"a": 1}, {"b": 1}),
        ([1], [1, 1]),
        ([], {}),
        (nest(10_000), nest(10_000, True)),
        (nest(10_000, 1), nest(10_000, 2)),  # too deep for ==: the walk compares values
        (nest(10_000, [1]), nest(10_000, [1, 2])),
        (nest(10_000, {"a": 1}), nest(10_000, {"b": 1})),
        (nest(10_000, 0.0), nest(10_000, -0.0)),
    ],
)
def test_json_equal_is_type_strict(a: Any, b: Any) -> None:
    assert not json_equal(a, b)
    assert not json_equal(b, a)
    assert json_equal(a, copy_json(a))
    mutation = build_mutation({"v": a}, {"v": b})
    assert mutation != {}
    assert json_equal(apply_mutation({"v": a}, mutation), {"v": b})


def test_json_equal_ignores_key_order() -> None:
    assert json_equal({"a": 1, "b": [2.5, None]}, {"b": [2.5, None], "a": 1})
    assert json_equal(nest(10_000), nest(10_000))


def test_build_of_equal_states_is_empty_whatever_the_objects() -> None:
    # Two parses of one text: equal values, but no scalar (beyond the cached
    # small ones) is the same object, so nothing is skipped by identity.
    text = '{"f": 1.5, "z": 0.0, "n": -0.0, "i": 123456789, "s": "text", '
    text += '"a": [2.5, 0.0, -0.0, 987654321, "x y", {"g": 0.0}], "o": {"h": -0.0}}'
    old, new = json.loads(text), json.loads(text)
    assert old["f"] is not new["f"]
    assert build_mutation(old, new) == {}


def test_build_names_what_it_was_given_instead_of_objects() -> None:
    with pytest.raises(TypeError, match=r"two JSON objects \(dicts\), not list and dict"):
        build_mutation([], {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"not dict and NoneType"):
        build_mutation({}, None)  # type: ignore[arg-type]


def test_build_rejects_non_objects() -> None:
    with pytest.raises(TypeError):
        build_mutation([], {})  # type: ignore[arg-type]


# -- build -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "mutation"),
    [
        ({"a": 1}, {"a": 1}, {}),
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": 1}, {}, {"a": {"$unset": True}}),
        ({}, {"a": {"b": 1}}, {"a": {"$set": {"b": 1}}}),
        ({"a": 1}, {"a": {}}, {"a": {"$set": {}}}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, {"a": {"c": 3}}),
        ({"a": {"$b": 1}}, {"a": {"$b": 2}}, {"a": {"$set": {"$b": 2}}}),
        ({"$a": {"b": 1}}, {"$a": {"b": 2}}, {"$a": {"b": 2}}),
        ({"a": [1, 2]}, {"a": [1, 2, 3]}, {"a": {"$push": [3]}}),
        ({"a": [1, 2, 3]}, {"a": [1]}, {"a": {"$truncate": 1}}),
        ({"a": [1, 2, 3]}, {"a": []}, {"a": []}),
        ({"a": []}, {"a": [1]}, {"a": [1]}),
        ({"a": [1, 2, 3]}, {"a": [4, 5, 6]}, {"a": [4, 5, 6]}),
        (
            {"a": [{"p": 1}, {"p": 2}, {"p": 3}]},
            {"a": [{"p": 1}, {"p": 5}]},
            {"a": {"$truncate": 2, "$mutateIdx": {"1": {"p": 5}}}},
        ),
        # Sent whole when more than half of the common items are replaced outright:
        # exactly half is not more than half.
        ({"a": [1, 2, 3, 4]}, {"a": [9, 2, 9, 4]}, {"a": {"$mutateIdx": {"0": 9, "2": 9}}}),
        ({"a": [1, 2, 3]}, {"a": [9, 9, 3]}, {"a": [9, 9, 3]}),
        ({"a": [1, 2, 3, 4]}, {"a": [9, 9, 9, 4, 5]}, {"a": [9, 9, 9, 4, 5]}),
        # retyped to objects ($set) counts as replaced; objects diffed in place do not
        ({"a": [1, 2, 3]}, {"a": [{"x": 1}, {"x": 2}, 3]}, {"a": [{"x": 1}, {"x": 2}, 3]}),
        (
            {"a": [{"p": 1}, {"p": 2}, {"p": 3}]},
            {"a": [{"p": 9}, {"p": 9}, {"p": 3}]},
            {"a": {"$mutateIdx": {"0": {"p": 9}, "1": {"p": 9}}}},
        ),
    ],
)
def test_build_table(old: dict[str, Any], new: dict[str, Any], mutation: dict[str, Any]) -> None:
    built = build_mutation(old, new)
    assert same(built, mutation)
    assert same(check_apply(old, built), new)


# -- copy_json -------------------------------------------------------------------


def test_copy_json_copies_containers_only() -> None:
    value: dict[str, Any] = {"a": [{"b": [1, 2.5, "s", None, True]}], "c": {}}
    copied = copy_json(value)
    assert same(copied, value)
    assert copied is not value
    assert copied["a"] is not value["a"]
    assert copied["a"][0]["b"] is not value["a"][0]["b"]
    assert copy_json(5) == 5
    assert copy_json([[1]]) == [[1]]


def _containers(value: Any) -> list[Any]:
    """Every dict and list in ``value``, ``value`` included (depth first)."""
    found, todo = [], [value]
    while todo:
        item = todo.pop()
        if type(item) is dict or type(item) is list:
            found.append(item)
            todo.extend(item.values() if type(item) is dict else item)
    return found


def _leaves(value: Any) -> list[Any]:
    """Every scalar of ``value``, in a fixed order."""
    if type(value) is dict:
        return [leaf for key in value for leaf in _leaves(value[key])]
    if type(value) is list:
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


FLAT = st.dictionaries(
    KEYS_SMALL := st.text(max_size=3), st.integers() | st.booleans(), max_size=12
)
WIDE = st.one_of(
    st.lists(
        st.integers() | st.floats(allow_nan=False) | st.none() | st.text(max_size=2), max_size=14
    ),
    FLAT,
    st.lists(FLAT, max_size=12),
    st.dictionaries(KEYS_SMALL, FLAT, max_size=12),
    st.dictionaries(KEYS_SMALL, st.lists(FLAT, max_size=10) | FLAT | st.integers(), max_size=12),
)


@pytest.mark.parametrize("copier", [copy_json, copy_walk])
@given(value=WIDE)
def test_a_copy_is_exact_and_shares_no_container(copier: Any, value: Any) -> None:
    copied = copier(value)
    assert json_equal(copied, value)
    assert not {id(c) for c in _containers(copied)} & {id(c) for c in _containers(value)}
    assert all(a is b for a, b in zip(_leaves(copied), _leaves(value), strict=True))


@pytest.mark.parametrize("copier", [copy_json, copy_walk])
def test_a_copy_shares_scalars_and_other_types(copier: Any) -> None:
    class Mine(dict[str, int]):
        pass

    mine, big = Mine(a=1), 10**30
    for value in ({"m": mine, "b": big}, {str(i): mine for i in range(12)}, [mine] * 12):
        copied = copier(value)
        assert all(
            item is mine
            for item in (copied.values() if type(copied) is dict else copied)
            if item is not big
        )
    assert copier(7) == 7
    assert copier("s") == "s"
    assert copier(mine) is mine
    deep: Any = 1
    for _ in range(MAX_DEPTH * 3):
        deep = [deep, {"k": list(range(10))}]
    copied = copier(deep)
    assert json_equal(copied, deep)
    assert not {id(c) for c in _containers(copied)} & {id(c) for c in _containers(deep)}


# -- properties ------------------------------------------------------------------

KEYS = st.one_of(
    st.sampled_from(["a", "b", "c", "$set", "$x", "", "0"]),
    st.text(max_size=4),
    st.text(max_size=3).map(lambda s: "$" + s),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
JSON = json_values(KEYS, SCALARS, max_size=5, max_leaves=40)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=6)


def perturb(data: st.DataObject, value: Any, depth: int = 0) -> Any:
    """A random edit of ``value``: most of it kept, some changed, added or removed."""
    choice = data.draw(st.integers(0, 9))
    if choice == 0:
        return data.draw(JSON)
    if choice == 1 and type(value) in (int, float, bool):
        return data.draw(st.sampled_from([True, False, 1, 0, 1.0, 0.0, -1]))
    if type(value) is dict:
        out = {}
        for key, item in value.items():
            if data.draw(st.integers(0, 5)) == 0:
                continue
            out[key] = perturb(data, item, depth + 1)
        for key in data.draw(st.lists(KEYS, max_size=2)):
            out[key] = data.draw(JSON)
        return out
    if type(value) is list:
        items = [perturb(data, item, depth + 1) for item in value]
        cut = data.draw(st.integers(0, len(items)))
        if data.draw(st.booleans()):
            items = items[:cut]
        return items + data.draw(st.lists(JSON, max_size=2))
    return value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OBJECTS, st.data())
def test_law_build_then_apply_gives_new(old: dict[str, Any], data: st.DataObject) -> None:
    new = perturb(data, old) if data.draw(st.booleans()) else data.draw(OBJECTS)
    if type(new) is not dict:
        new = {"v": new}
    old_before = copy.deepcopy(old)
    new_before = copy.deepcopy(new)
    mutation = build_mutation(old, new)
    assert same(old, old_before)
    assert same(new, new_before)
    assert same(check_apply(old, mutation), new)
    assert same(check_apply(new, build_mutation(new, old)), old)
    if same(old, new):
        assert mutation == {}


GARBAGE_KEYS = st.sampled_from(
    [
        "a",
        "b",
        "c",
        "$set",
        "$push",
        "$pull",
        "$truncate",
        "$mutateIdx",
        "$unset",
        "$bogus",
        "0",
        "1",
        "2",
        "-1",
        "01",
        "x",
    ]
)
GARBAGE = st.recursive(
    st.one_of(
        SCALARS,
        st.integers(min_value=-2, max_value=4),
        st.lists(st.one_of(st.integers(-1, 4), st.booleans(), st.none()), max_size=3),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(GARBAGE_KEYS, children, max_size=4)
    ),
    max_leaves=25,
)
SMALL_STATES = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.recursive(
        st.one_of(st.none(), st.integers(0, 2), st.booleans()),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.sampled_from(["a", "b", "c"]), children, max_size=3)
        ),
        max_leaves=15,
    ),
)


@settings(max_examples=1200, deadline=None)
@given(SMALL_STATES, st.one_of(st.dictionaries(GARBAGE_KEYS, GARBAGE, max_size=4), GARBAGE))
def test_fuzz_only_mutation_errors_escape(state: dict[str, Any], mutation: Any) -> None:
    state_before = copy.deepcopy(state)
    mutation_before = copy.deepcopy(mutation)
    try:
        new, inverse = apply_mutation_with_inverse(state, mutation)
    except MutationError:
        with pytest.raises(MutationError) as info:
            apply_mutation(state, mutation)
        assert info.value.path.startswith("$")
    else:
        assert same(apply_mutation(state, mutation), new)
        assert same(apply_mutation(new, inverse), state)
    assert same(state, state_before)
    assert same(mutation, mutation_before)
