"""The OpenAPI document: what it declares, and the live events it describes
(the schemathesis run over every operation is tests/test_schema_fuzz.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import requests

from rstream.core.wire import COLUMNS
from rstream.server.openapi import openapi_document
from rstream.server.params import TIME_PATTERN
from tests.serverutil import SSEReader, running_server


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with running_server() as url:
        with requests.Session() as http:
            http.post(f"{url}/v1/streams/a/state", json={"state": {"x": 1}, "timestamp": 1})
            http.post(f"{url}/v1/streams/a/state", json={"state": {"x": 2}, "timestamp": 2})
        yield url


def test_document_lists_every_route(server_url: str) -> None:
    doc = requests.get(f"{server_url}/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    operations = {(path, method) for path, item in doc["paths"].items()
                  for method in item if method != "parameters"}  # fmt: skip
    assert operations == {
        ("/v1/health", "get"),
        ("/v1/openapi.json", "get"),
        ("/v1/streams", "get"),
        ("/v1/streams/{stream_id}", "get"),
        ("/v1/streams/{stream_id}", "put"),
        ("/v1/streams/{stream_id}/window", "get"),
        ("/v1/streams/{stream_id}/entries", "get"),
        ("/v1/streams/{stream_id}/entries", "post"),
        ("/v1/streams/{stream_id}/live", "get"),
        ("/v1/streams/{stream_id}/state", "post"),
    }


def _validator(doc: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    # OpenAPI 3.0 schemas are JSON Schema (Draft 4 family) plus "nullable",
    # which Entry, Reset and LiveEvent do not use.
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema_rs.Draft4Validator(schema, validate_formats=True)


def test_live_events_are_the_documented_events(server_url: str) -> None:
    doc = requests.get(f"{server_url}/v1/openapi.json").json()
    live = doc["paths"]["/v1/streams/{stream_id}/live"]["get"]["responses"]["200"]
    assert live["content"]["text/event-stream"]["schema"] == {
        "$ref": "#/components/schemas/LiveEvent"
    }
    event_schema, entry_schema = _validator(doc, "LiveEvent"), _validator(doc, "Entry")
    reset_schema = _validator(doc, "Reset")
    url = f"{server_url}/v1/streams/a/live"
    seen: set[str] = set()
    with requests.Session() as http:
        # An amend while the tail is open: "a" holds a snapshot and a mutation.
        with SSEReader(url) as reader:
            events = reader.take(2)
            http.post(
                f"{server_url}/v1/streams/a/state", json={"state": {"x": 3}, "timestamp": 2.5}
            )
            events += reader.take(1)
        with SSEReader(url, headers={"Last-Event-ID": "not-a-revision"}) as reader:
            events += reader.take(1)
    for event in events:
        instance = {"event": event.event, "data": event.data, "id": event.id}
        assert event_schema.is_valid(instance), instance
        data = json.loads(event.data)
        assert (reset_schema if event.event == "reset" else entry_schema).is_valid(data), data
        seen.add(event.event)
    assert seen == {"entry", "amend", "reset"}


def test_a_columns_page_is_the_documented_schema(server_url: str) -> None:
    doc = requests.get(f"{server_url}/v1/openapi.json").json()
    entries = doc["paths"]["/v1/streams/{stream_id}/entries"]["get"]["responses"]["200"]
    assert set(entries["content"]) == {"application/x-ndjson", COLUMNS}
    response = requests.get(f"{server_url}/v1/streams/a/entries", headers={"Accept": COLUMNS})
    assert response.headers["Content-Type"].startswith(COLUMNS)
    page = response.json()
    assert len(page["times"]) >= 2
    assert _validator(doc, "EntryColumns").is_valid(page), page
    assert not _validator(doc, "EntryColumns").is_valid({**page, "types": [2]})


def test_times_are_date_times_and_never_null_where_the_server_refuses_null() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    for name, field in [("Entry", "timestamp"), ("Window", "start"), ("Window", "end"),
                        ("StreamMetadata", "first"), ("StreamSummary", "last")]:  # fmt: skip
        assert schemas[name]["properties"][field]["format"] == "date-time", (name, field)
    timestamp = schemas["StateWrite"]["properties"]["timestamp"]
    assert all(not option.get("nullable") for option in timestamp["oneOf"])
    entries = doc["paths"]["/v1/streams/{stream_id}/entries"]["get"]["parameters"]
    start = next(p for p in entries if p["name"] == "start")
    assert {"type": "string", "format": "date-time", "pattern": TIME_PATTERN} in start["schema"][
        "anyOf"
    ]
    validator = jsonschema_rs.Draft4Validator(
        {"$ref": "#/components/schemas/StateWrite", "components": doc["components"]},
        validate_formats=True,
    )
    assert not validator.is_valid({"state": {}, "timestamp": None})
    assert not validator.is_valid({"state": {}, "timestamp": "2024-05-01 12:00:00Z"})
    assert validator.is_valid({"state": {}, "timestamp": "2024-05-01T12:00:00.5Z"})
