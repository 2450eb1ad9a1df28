import json
import pickle
from datetime import UTC, datetime

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
