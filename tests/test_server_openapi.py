"""The server against its own OpenAPI document, with schemathesis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks

from tests.serverutil import running_server

# The checks that hold for every answer, whatever the state of the store.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


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


def test_schemathesis(server_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{server_url}/v1/openapi.json")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        # The live tail never ends a response: covered by test_server_live.py.
        if not result.ok().path.endswith("/live")
    ]
    assert len(operations) == 8
    strategy = st.one_of([op.as_strategy() for op in operations])
    session = requests.Session()

    @given(case=strategy)
    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=server_url, session=session, checks=CHECKS,
                               timeout=10)  # fmt: skip

    try:
        run()
    finally:
        session.close()
