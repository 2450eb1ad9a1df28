import json
import pickle
import re
from datetime import UTC, datetime
from types import MappingProxyType

import pytest

import rstream
from rstream import Entry, EntryKind


def test_entry_json_round_trip_in_go_form() -> None:
    entry = Entry(
        datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC), EntryKind.SNAPSHOT, {"battery": 0.9}
    )
    obj = entry.to_json()
    assert obj == {"timestamp": "2024-05-01T12:00:00.25Z", "type": 0, "data": {"battery": 0.9}}
    assert Entry.from_json(json.loads(json.dumps(obj))) == entry


def test_reader_accepts_names_offsets_and_nanoseconds() -> None:
    entry = Entry.from_json(
        {"timestamp": "2024-05-01T14:00:00.123456789+02:00", "type": "mutation", "data": {}}
    )
    assert entry.kind is EntryKind.MUTATION
    assert entry.timestamp == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ([], "expected a JSON object"),
        ({"type": 0, "data": {}}, "missing field 'timestamp'"),
        ({"timestamp": "x", "type": 0, "data": {}}, "field 'timestamp'"),
        ({"timestamp": "2024-05-01T12:00:00Z", "type": 2, "data": {}}, "field 'type'"),
        ({"timestamp": "2024-05-01T12:00:00Z", "type": True, "data": {}}, "field 'type'"),
        ({"timestamp": "2024-05-01T12:00:00Z", "type": 0, "data": []}, "field 'data'"),
        ({"timestamp": "2024-05-01T12:00:00Z", "type": 0, "data": {}, "rev": -1}, "'rev'"),
    ],
)
def test_malformed_entries_say_what_and_where(obj: object, fragment: str) -> None:
    with pytest.raises(rstream.EntryFormatError, match=fragment) as info:
        Entry.from_json(obj, where="line 7")
    assert "line 7" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_entries_are_immutable_and_rev_is_not_part_of_equality() -> None:
    entry = Entry(10, EntryKind.MUTATION, {"a": 1}, rev=3)
    with pytest.raises(AttributeError):
        entry.rev = 4
    assert entry == entry.replace(rev=9)
    assert entry != entry.replace(data={"a": 2})
    assert entry != entry.replace(data={"a": True})  # equal as JSON, type for type
    assert entry != entry.replace(data={"a": 1.0})
    assert entry == Entry(10, EntryKind.MUTATION, {"a": 1})
    assert pickle.loads(pickle.dumps(entry)).rev == 3
    assert entry.to_json(with_rev=True)["rev"] == 3


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        Entry(datetime(2024, 5, 1), EntryKind.SNAPSHOT, {})


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (0, EntryKind.SNAPSHOT),
        (1, EntryKind.MUTATION),
        ("snapshot", EntryKind.SNAPSHOT),
        ("Mutation", EntryKind.MUTATION),
        (EntryKind.MUTATION, EntryKind.MUTATION),
    ],
)
def test_kinds_are_read_from_go_numbers_names_and_kinds(value: object, kind: EntryKind) -> None:
    assert EntryKind.parse(value) is kind
    assert Entry(0, value, {}).kind is kind  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [2, -1, True, 1.0, "snap", "", None])
def test_other_kinds_are_refused_with_the_allowed_forms(value: object) -> None:
    with pytest.raises(
        rstream.EntryFormatError,
        match="^" + re.escape(f"entry type must be 0, 1, 'snapshot' or 'mutation', not {value!r}"),
    ):
        EntryKind.parse(value)


def test_entry_data_is_kept_as_given_or_copied_into_a_dict() -> None:
    data = {"a": [1]}
    assert Entry(0, EntryKind.SNAPSHOT, data).data is data
    proxy = MappingProxyType({"a": 1})
    copied = Entry(0, EntryKind.SNAPSHOT, proxy).data
    assert type(copied) is dict
    assert copied == {"a": 1}
    with pytest.raises(TypeError, match=r"^entry data must be a JSON object \(dict\), not list$"):
        Entry(0, EntryKind.SNAPSHOT, [1])  # type: ignore[arg-type]


def test_entries_cannot_lose_a_part() -> None:
    entry = Entry(0, EntryKind.SNAPSHOT, {})
    with pytest.raises(AttributeError, match=r"^Entry is immutable$"):
        del entry.rev
    assert entry.rev is None


def test_replace_changes_only_the_parts_named() -> None:
    entry = Entry.from_micros(10, EntryKind.MUTATION, {"a": 1}, rev=3)
    for copy, expected in [
        (entry.replace(), (10, EntryKind.MUTATION, {"a": 1}, 3)),
        (entry.replace(micros=20), (20, EntryKind.MUTATION, {"a": 1}, 3)),
        (entry.replace(kind=EntryKind.SNAPSHOT), (10, EntryKind.SNAPSHOT, {"a": 1}, 3)),
        (entry.replace(data={"b": 2}), (10, EntryKind.MUTATION, {"b": 2}, 3)),
        (entry.replace(rev=4), (10, EntryKind.MUTATION, {"a": 1}, 4)),
    ]:
        assert (copy.micros, copy.kind, copy.data, copy.rev) == expected


def test_repr_shows_time_kind_data_and_rev_when_stored() -> None:
    assert repr(Entry(1.5, EntryKind.MUTATION, {"a": 1}, rev=3)) == (
        "Entry('1970-01-01T00:00:01.5Z', MUTATION, {'a': 1}, rev=3)"
    )
    assert repr(Entry(0, EntryKind.SNAPSHOT, {})) == "Entry('1970-01-01T00:00:00Z', SNAPSHOT, {})"


def test_the_json_form_has_a_rev_only_when_asked() -> None:
    entry = Entry(0, EntryKind.SNAPSHOT, {}, rev=3)
    assert "rev" not in entry.to_json()
    with pytest.raises(rstream.EntryFormatError, match=r"^malformed entry \(entry\): expected"):
        Entry.from_json([])
