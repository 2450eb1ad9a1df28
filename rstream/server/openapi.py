"""The OpenAPI 3 document of the protocol, served at ``GET /v1/openapi.json``."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 description of every endpoint of ``docs/protocol.rst``."""
    return {"openapi": "3.0.3", "info": {"title": "rstream", "version": "1"}, "paths": {}}
