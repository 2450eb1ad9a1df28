"""The OpenAPI 3 document of the protocol, served at ``GET /v1/openapi.json``.

Written by hand from ``docs/protocol.rst`` (the contract): the paths here, the
schemas of the bodies in :mod:`rstream.server.openapi_schemas`.
``tests/test_server_openapi.py`` and ``tests/test_schema_fuzz.py`` check the
server against it.
"""

from __future__ import annotations

import copy
from typing import Any

from rstream.core.wire import COLUMNS
from rstream.server.openapi_schemas import RETENTION, SCHEMAS, STORE_ID, TIME_PARAM
from rstream.server.params import MAX_HEARTBEAT, MAX_REVISION, MIN_HEARTBEAT

__all__ = ["openapi_document"]


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_REF = {name: {"$ref": f"#/components/schemas/{name}"} for name in SCHEMAS}
_STRING = {"schema": {"type": "string"}}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}}}
_READ_ERRORS = {
    "400": _error("bad_request, invalid_host, invalid_stream_id or invalid_time"),
    "401": _error("unauthorized", {"WWW-Authenticate": _STRING}),
    "404": _error("stream_not_found, out_of_range or not_found"),
    "503": _error("unavailable", _RETRY_AFTER),
}
_WRITE_ERRORS = {
    **_READ_ERRORS,
    "400": _error(
        "bad_request, invalid_host, invalid_json, invalid_stream_id, invalid_entry or invalid_time"
    ),
    "403": _error("forbidden (a read token on a write endpoint) or forbidden_origin"),
    "409": _error("out_of_order"),
    "413": _error("too_large"),
    "415": _error("unsupported_media_type: a write whose Content-Type is not JSON or NDJSON"),
    "422": _error("invalid_mutation"),
}
_STREAM_ID = {
    "name": "stream_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,127}$"},
}


def _time_query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": TIME_PARAM,
    }


_PATHS: dict[str, Any] = {
    "/v1/health": {
        "get": {
            "summary": "Liveness; never needs a token",
            "security": [],
            "responses": {
                "200": _json(
                    "ok",
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"type": "string", "enum": ["ok"]}},
                    },
                )
            },
        }
    },
    "/v1/streams": {
        "get": {
            "summary": "Every stream, ordered by id",
            "responses": {
                "200": _json(
                    "the streams",
                    {
                        "type": "object",
                        "required": ["streams"],
                        "properties": {
                            "streams": {"type": "array", "items": _REF["StreamSummary"]},
                            "store_id": STORE_ID,
                        },
                    },
                ),
                "401": _READ_ERRORS["401"],
                "503": _READ_ERRORS["503"],
            },
        }
    },
    "/v1/streams/{stream_id}": {
        "parameters": [_STREAM_ID],
        "get": {
            "summary": "A stream's metadata",
            "responses": {"200": _json("metadata", _REF["StreamMetadata"]), **_READ_ERRORS},
        },
        "put": {
            "summary": "Create a stream (201) or set its rate config (200)",
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "record_rate": _REF["RecordRate"],
                                "retention": RETENTION,
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json("updated", _REF["StreamMetadata"]),
                "201": _json("created", _REF["StreamMetadata"]),
                **_WRITE_ERRORS,
            },
        },
    },
    "/v1/streams/{stream_id}/window": {
        "parameters": [_STREAM_ID],
        "get": {
            "summary": "The window (snapshot to next snapshot) holding a time",
            "parameters": [_time_query("at", "default: the live window")],
            "responses": {
                "200": {
                    **_json("the window", _REF["Window"]),
                    "headers": {"RStream-Store-Id": _STRING},
                },
                **_READ_ERRORS,
            },
        },
    },
    "/v1/streams/{stream_id}/entries": {
        "parameters": [_STREAM_ID],
        "get": {
            "summary": "Entries with start <= timestamp < end, as NDJSON, paginated",
            "parameters": [
                _time_query("start", "default: the beginning"),
                _time_query("end", "default: after the newest entry"),
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1},
                },
            ],
            "responses": {
                "200": {
                    "description": "one entry per line",
                    "headers": {
                        "RStream-Next-Start": _STRING,
                        "RStream-Store-Id": _STRING,
                        "Link": _STRING,
                        "ETag": _STRING,
                        "Cache-Control": _STRING,
                    },
                    "content": {
                        "application/x-ndjson": {"schema": {"type": "string"}},
                        # Sent only when Accept names it (docs/protocol.rst).
                        COLUMNS: {"schema": _REF["EntryColumns"]},
                    },
                },
                "304": {"description": "not modified (If-None-Match on an immutable range)"},
                **_READ_ERRORS,
            },
        },
        "post": {
            "summary": "Append raw entries, all or nothing",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                _REF["Entry"],
                                {"type": "array", "items": _REF["Entry"]},
                            ]
                        }
                    },
                    "application/x-ndjson": {
                        "schema": {
                            "type": "string",
                            "format": "ndjson",
                            "description": "one Entry per line",
                        },
                        "x-item-schema": _REF["Entry"],
                    },
                },
            },
            "responses": {
                "200": _json("appended", _REF["EntriesWritten"]),
                "201": _json("appended to a new stream", _REF["EntriesWritten"]),
                **_WRITE_ERRORS,
            },
        },
    },
    "/v1/streams/{stream_id}/live": {
        "parameters": [_STREAM_ID],
        "get": {
            "summary": "The live tail (Server-Sent Events)",
            "parameters": [
                {
                    "name": "since",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_REVISION},
                },
                {
                    "name": "heartbeat",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "number",
                        "minimum": MIN_HEARTBEAT,
                        "maximum": MAX_HEARTBEAT,
                    },
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {
                    "description": "Server-Sent Events, first a retry: line. Events: "
                    "entry (data: an Entry, id: its rev), amend (the same; it replaces the "
                    "newest mutation), reset (data: a Reset, id: the stream's revision); "
                    "': ping' comments every heartbeat seconds",
                    "headers": {"RStream-Heartbeat": {"schema": {"type": "number"}}},
                    "content": {"text/event-stream": {"schema": _REF["LiveEvent"]}},
                },
                **_READ_ERRORS,
                "429": _error("too_many_subscribers", _RETRY_AFTER),
            },
        },
    },
    "/v1/streams/{stream_id}/state": {
        "parameters": [_STREAM_ID],
        "post": {
            "summary": "Write a state through the stream's writer",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _REF["StateWrite"]}},
            },
            "responses": {
                "200": _json("written", _REF["StateWritten"]),
                "201": _json("written to a new stream", _REF["StateWritten"]),
                **_WRITE_ERRORS,
            },
        },
    },
    "/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": _json("OpenAPI 3", {"type": "object"})},
        }
    },
}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "rstream",
        "version": "1",
        "description": "Remote state streams: history over HTTP, live tail over SSE. "
        "The contract is docs/protocol.rst.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}, {}],
    "paths": _PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 description of every endpoint of ``docs/protocol.rst``."""
    return copy.deepcopy(_DOCUMENT)
