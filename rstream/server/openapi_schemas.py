"""The schemas of the OpenAPI document (``components/schemas``): every body of
``docs/protocol.rst``, and the fragments the paths share (:mod:`rstream.server.openapi`).
"""

from __future__ import annotations

from typing import Any

from rstream.core.stream import MAX_RATE_MS
from rstream.server.params import (
    MAX_EPOCH_SECONDS,
    MIN_EPOCH_SECONDS,
    NUMBER_PATTERN,
    TIME_PATTERN,
)

__all__ = ["RETENTION", "SCHEMAS", "STORE_ID", "TIME_PARAM"]

# The patterns and bounds are the ones rstream.server.params enforces.
_TIME = {
    "type": "string",
    "format": "date-time",
    "pattern": TIME_PATTERN,
    "description": "RFC 3339 in years 0001 to 9999 (e.g. 2024-05-01T12:00:00.25Z); "
    "the server writes UTC with the fraction trimmed",
}
_NULLABLE_TIME = {**_TIME, "nullable": True}
STORE_ID = {
    "type": "string",
    "description": "the store's random id, the same on every replica of one store",
}
TIME_PARAM = {
    "description": "RFC 3339 (URL-encoded: + as %2B) or epoch seconds (1714564800.25)",
    "anyOf": [
        {"type": "string", "format": "date-time", "pattern": TIME_PATTERN},
        {"type": "string", "pattern": NUMBER_PATTERN},
    ],
}
_RATE_MS = {"type": "number", "minimum": 0, "maximum": MAX_RATE_MS, "description": "ms"}
RETENTION = {
    **_RATE_MS,
    "nullable": True,
    "description": "ms: whole windows that ended longer ago are deleted; null keeps everything",
}


def _event(names: list[str], data: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["event", "data", "id"],
        "properties": {
            "event": {"type": "string", "enum": names},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{data}"},
            },
            # A revision; empty on a reset, which clears a browser's last event ID.
            "id": {"type": "string", "pattern": "^[0-9]+$" if "reset" not in names else "^$"},
            "retry": {"type": "integer", "minimum": 0},
        },
    }


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "string",
                        "enum": [
                            "bad_request",
                            "invalid_host",
                            "invalid_json",
                            "invalid_stream_id",
                            "invalid_entry",
                            "invalid_time",
                            "unauthorized",
                            "forbidden",
                            "forbidden_origin",
                            "stream_not_found",
                            "out_of_range",
                            "not_found",
                            "method_not_allowed",
                            "request_timeout",
                            "out_of_order",
                            "too_large",
                            "unsupported_media_type",
                            "invalid_mutation",
                            "too_many_subscribers",
                            "unavailable",
                            "internal",
                        ],
                    },
                    "message": {"type": "string"},
                },
            }
        },
    },
    "Entry": {
        "type": "object",
        "required": ["timestamp", "type", "data"],
        "additionalProperties": False,
        "properties": {
            "timestamp": _TIME,
            "type": {
                "description": "0 (or 'snapshot'): data is the state; 1 ('mutation'): a mutation",
                "oneOf": [
                    {"type": "integer", "enum": [0, 1]},
                    {"type": "string", "enum": ["snapshot", "mutation"]},
                ],
            },
            "data": {"type": "object"},
            "rev": {"type": "integer", "minimum": 0},
        },
    },
    "EntryColumns": {
        "description": (
            "A page in the columns form: times[0] is the first entry's time in epoch"
            " microseconds, each later item the distance from the entry before"
        ),
        "type": "object",
        "required": ["times", "types", "revs", "data"],
        "additionalProperties": False,
        "properties": {
            "times": {"type": "array", "items": {"type": "integer"}},
            "types": {"type": "array", "items": {"type": "integer", "enum": [0, 1]}},
            "revs": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "data": {"type": "array", "items": {"type": "object"}},
        },
    },
    "RecordRate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "keyframe_frequency": _RATE_MS,
            "change_frequency": _RATE_MS,
        },
    },
    "StreamSummary": {
        "type": "object",
        "required": ["id", "first", "last", "revision"],
        "properties": {
            "id": {"type": "string"},
            "first": _NULLABLE_TIME,
            "last": _NULLABLE_TIME,
            "revision": {"type": "integer", "minimum": 0},
        },
    },
    "StreamMetadata": {
        "type": "object",
        "required": [
            "id",
            "record_rate",
            "retention",
            "first",
            "last",
            "revision",
            "latest_snapshot",
        ],
        "properties": {
            "id": {"type": "string"},
            "record_rate": {"$ref": "#/components/schemas/RecordRate"},
            "retention": RETENTION,
            "first": _NULLABLE_TIME,
            "last": _NULLABLE_TIME,
            "revision": {"type": "integer", "minimum": 0},
            "latest_snapshot": _NULLABLE_TIME,
            "store_id": STORE_ID,
        },
    },
    "Window": {
        "type": "object",
        "required": ["start", "end", "revision"],
        "properties": {
            "start": _TIME,
            "end": _NULLABLE_TIME,
            "revision": {"type": "integer", "minimum": 0},
        },
    },
    "StateWrite": {
        "type": "object",
        "required": ["state"],
        "additionalProperties": False,
        "properties": {
            "state": {"type": "object"},
            "timestamp": {
                "description": "RFC 3339 or epoch seconds; default (absent, never null): "
                "the server's clock",
                "oneOf": [
                    _TIME,
                    {
                        "type": "number",
                        "minimum": MIN_EPOCH_SECONDS,
                        "maximum": MAX_EPOCH_SECONDS,
                    },
                ],
            },
        },
    },
    "StateWritten": {
        "type": "object",
        "required": ["action", "entry", "revision"],
        "properties": {
            "action": {"type": "string", "enum": ["snapshot", "mutation", "amend", "none"]},
            "entry": {"allOf": [{"$ref": "#/components/schemas/Entry"}], "nullable": True},
            "revision": {"type": "integer", "minimum": 0},
        },
    },
    "Reset": {
        "type": "object",
        "required": ["reason", "revision"],
        "properties": {
            "reason": {"type": "string"},
            "revision": {"type": "integer", "minimum": 0},
        },
    },
    # One event of the live tail, as an SSE reader sees it: the schema of the
    # stream's items (what OpenAPI 3.2 calls itemSchema).
    "LiveEvent": {
        "oneOf": [
            _event(["entry", "amend"], "Entry"),
            _event(["reset"], "Reset"),
        ],
    },
    "EntriesWritten": {
        "type": "object",
        "required": ["count", "revision"],
        "properties": {
            "count": {"type": "integer", "minimum": 0},
            "revision": {"type": "integer", "minimum": 0},
        },
    },
}
