"""Transport unit tests with ``responses``: request shapes, auth, retry, failover, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
import responses
import tenacity
from responses import matchers

from rstream.client.retry import (
    DEFAULT_MAX_ATTEMPTS,
    MAX_RETRY_AFTER,
    blocking_policy,
    parse_retry_after,
    reconnect_policy,
    reconnect_wait,
    retry_floor,
)
from rstream.client.transport import Transport, quote_stream_id, raise_for_response
from rstream.errors import (
    AuthError,
    ClientClosed,
    ConfigError,
    InvalidStreamId,
    OutOfOrder,
    OutOfRange,
    ProtocolError,
    RStreamError,
    ServerError,
    StreamNotFound,
    TransportError,
)

A = "http://a.example:8080"
B = "http://b.example:8080"


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def waits() -> list[float]:
    return []


def transport(waits: list[float], urls: str | list[str] = A, **kwargs: object) -> Transport:
    return Transport(urls, sleep=waits.append, **kwargs)  # type: ignore[arg-type]


def error(status: int, code: str, message: str = "nope", **headers: str) -> dict[str, object]:
    return {
        "status": status,
        "json": {"error": {"code": code, "message": message}},
        "headers": headers,
    }


# -- pure helpers --------------------------------------------------------------------


def test_urls_are_normalised_and_checked() -> None:
    with Transport([A + "/", B]) as t:
        assert t.urls == (A, B)
        assert t.url_for(0, "/v1/health") == A + "/v1/health"
        assert t.url_for(3, "v1/health") == B + "/v1/health"
    for bad in ([], ["ftp://x"], ["localhost:8080"], [A + "?q=1"]):
        with pytest.raises(ConfigError, match="URL"):  # also a ValueError
            Transport(bad)


def test_timeout_accepts_one_number_or_a_pair() -> None:
    with Transport(A, timeout=5) as t:
        assert t.timeout == (5.0, 5.0)
    with Transport(A, timeout=(1, 2)) as t:
        assert t.timeout == (1.0, 2.0)


@pytest.mark.parametrize("good", ["robot-1", "a", "A.b_c~d-9", "x" * 128, "_x"])
def test_quote_stream_id_accepts_the_unreserved_set(good: str) -> None:
    assert quote_stream_id(good) == good


@pytest.mark.parametrize("bad", ["", ".hidden", "x" * 129, "a/b", "a b", "é", "a%2F", "a?b"])
def test_quote_stream_id_refuses_what_the_server_would(bad: str) -> None:
    with pytest.raises(InvalidStreamId, match="invalid stream id"):  # also a ValueError
        quote_stream_id(bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 0 ", 0.0),
        ("99999", MAX_RETRY_AFTER),
        ("soon", None),
        (None, None),
        ("", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=lambda: now) == 10.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now=lambda: now) == 0.0


# -- request shapes ---------------------------------------------------------------------


def test_request_shape_path_params_headers(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(
        A + "/v1/streams/robot-1/window",
        json={"start": "2024-05-01T12:00:00Z", "end": None, "revision": 3},
        match=[
            matchers.query_param_matcher({"at": "2024-05-01T12:00:01.5Z"}),
            matchers.header_matcher({"Authorization": "Bearer s3cret"}),
        ],
    )
    with transport(waits, token="s3cret") as t:
        body = t.get_json("/v1/streams/robot-1/window", params={"at": "2024-05-01T12:00:01.5Z"})
    assert body["revision"] == 3
    sent = mocked.calls[0].request
    assert sent.headers["User-Agent"].startswith("rstream/")
    assert waits == []


def test_no_token_sends_no_authorization(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(A + "/v1/health", json={"status": "ok"})
    with transport(waits) as t:
        t.get_json("/v1/health")
    assert "Authorization" not in mocked.calls[0].request.headers


def test_token_callable_is_asked_on_every_request(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(A + "/v1/health", json={"status": "ok"})
    tokens = iter(["t1", "t2"])
    with transport(waits, token=lambda: next(tokens)) as t:
        t.get_json("/v1/health")
        t.get_json("/v1/health")
    assert [c.request.headers["Authorization"] for c in mocked.calls] == ["Bearer t1", "Bearer t2"]


def test_401_asks_the_token_callable_once_more_then_succeeds(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(
        A + "/v1/streams",
        **error(401, "unauthorized"),
        match=[matchers.header_matcher({"Authorization": "Bearer old"})],
    )
    mocked.get(
        A + "/v1/streams",
        json={"streams": []},
        match=[matchers.header_matcher({"Authorization": "Bearer new"})],
    )
    tokens = iter(["old", "new"])
    with transport(waits, token=lambda: next(tokens)) as t:
        assert t.get_json("/v1/streams") == {"streams": []}
    assert len(mocked.calls) == 2
    assert waits == []


def test_401_twice_raises_auth_error_without_retrying(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(A + "/v1/streams", **error(401, "unauthorized"))
    asked = []

    def token() -> str:
        asked.append(1)
        return "bad"

    with transport(waits, token=token) as t, pytest.raises(AuthError) as info:
        t.get_json("/v1/streams")
    assert info.value.status == 401
    assert "token" in str(info.value)
    assert len(asked) == 2
    assert len(mocked.calls) == 2
    assert waits == []


def test_401_with_a_fixed_token_is_not_repeated(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(A + "/v1/streams", **error(401, "unauthorized"))
    with transport(waits, token="bad") as t, pytest.raises(AuthError):
        t.get_json("/v1/streams")
    assert len(mocked.calls) == 1


# -- error mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "bad_request", ServerError),
        (400, "invalid_json", ServerError),
        (400, "invalid_stream_id", ServerError),
        (400, "invalid_entry", ServerError),
        (400, "invalid_time", ServerError),
        (401, "unauthorized", AuthError),
        (403, "forbidden", AuthError),
        (404, "stream_not_found", StreamNotFound),
        (404, "out_of_range", OutOfRange),
        (404, "not_found", ServerError),
        (405, "method_not_allowed", ServerError),
        (409, "out_of_order", OutOfOrder),
        (413, "too_large", ServerError),
        (422, "invalid_mutation", ServerError),
        (429, "too_many_subscribers", ServerError),
        (503, "unavailable", ServerError),
    ],
)
def test_every_protocol_error_maps_to_its_class(
    mocked: responses.RequestsMock, waits: list[float], status: int, code: str, cls: type
) -> None:
    mocked.get(A + "/v1/streams/robot-1", **error(status, code, "the detail"))
    with transport(waits) as t, pytest.raises(cls) as info:
        t.request("GET", "/v1/streams/robot-1", stream_id="robot-1")
    assert isinstance(info.value, RStreamError)
    assert "the detail" in str(info.value)
    if isinstance(info.value, ServerError):
        assert (info.value.status, info.value.code) == (status, code)
    if isinstance(info.value, StreamNotFound):
        assert info.value.stream_id == "robot-1"
    if isinstance(info.value, AuthError):
        assert info.value.status == status
    retried = status in (429, 503)
    assert len(mocked.calls) == (DEFAULT_MAX_ATTEMPTS if retried else 1)


def test_a_4xx_without_protocol_body_is_a_protocol_error(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(A + "/v1/streams", status=404, body="<html>Not Found</html>")
    with transport(waits) as t, pytest.raises(ProtocolError, match="rstream v1 server"):
        t.get_json("/v1/streams")


def test_a_5xx_html_page_is_a_server_error_after_retries(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(A + "/v1/streams", status=502, body="<html>Bad Gateway</html>")
    with transport(waits) as t, pytest.raises(ServerError, match="Bad Gateway") as info:
        t.get_json("/v1/streams")
    assert info.value.status == 502
    assert "5 attempt" in str(info.value)


@pytest.mark.parametrize("body", ["not json", "[1, 2", ""])
def test_a_success_that_is_not_json_is_a_protocol_error(
    mocked: responses.RequestsMock, waits: list[float], body: str
) -> None:
    mocked.get(A + "/v1/streams", body=body)
    with transport(waits) as t, pytest.raises(ProtocolError, match="not JSON"):
        t.get_json("/v1/streams")


def test_raise_for_response_leaves_successes_alone() -> None:
    response = requests.Response()
    response.status_code = 304
    raise_for_response(response)


# -- retry policy -----------------------------------------------------------------------------


def test_waits_grow_and_are_capped(mocked: responses.RequestsMock, waits: list[float]) -> None:
    mocked.get(A + "/v1/health", status=503, json={"error": {"code": "unavailable"}})
    policy = tenacity.Retrying(
        wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=4, jitter=0),
        stop=tenacity.stop_after_attempt(8),
    )
    with transport(waits, retry=policy) as t, pytest.raises(ServerError):
        t.get_json("/v1/health")
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert len(mocked.calls) == 8


def test_default_policy_jitters_within_bounds(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(A + "/v1/health", body=requests.ConnectionError("refused"))
    with transport(waits) as t, pytest.raises(TransportError, match="5 attempt"):
        t.get_json("/v1/health")
    assert len(waits) == DEFAULT_MAX_ATTEMPTS - 1
    for i, wait in enumerate(waits):
        base = 0.5 * 2**i
        assert base <= wait <= base + 0.5


def test_retry_after_is_a_floor_under_the_backoff(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(A + "/v1/health", **error(429, "too_many_subscribers", **{"Retry-After": "7"}))
    mocked.get(A + "/v1/health", json={"status": "ok"})
    with transport(waits) as t:
        assert t.get_json("/v1/health") == {"status": "ok"}
    assert waits == [7.0]


def test_4xx_is_never_retried_even_with_a_permissive_template(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(A + "/v1/streams/x", **error(404, "stream_not_found"))
    policy = tenacity.Retrying(stop=tenacity.stop_after_attempt(10))
    with transport(waits, retry=policy) as t, pytest.raises(StreamNotFound):
        t.request("GET", "/v1/streams/x", stream_id="x")
    assert len(mocked.calls) == 1
    assert waits == []


def test_a_user_template_is_copied_never_changed() -> None:
    template = tenacity.Retrying(stop=tenacity.stop_after_attempt(2))
    before = (template.sleep, template.stop, template.wait, template.retry, template.reraise)
    blocking_policy(template, sleep=lambda s: None)
    reconnect_policy(template, retry_on=OSError, wait=reconnect_wait(), sleep=lambda s: None)
    assert (template.sleep, template.stop, template.wait, template.retry, template.reraise) == (
        before
    )


def test_the_reconnect_policy_never_stops_whatever_the_template() -> None:
    template = tenacity.Retrying(stop=tenacity.stop_after_attempt(2))
    policy = reconnect_policy(
        template, retry_on=OSError, wait=reconnect_wait(), sleep=lambda s: None
    )
    assert isinstance(policy.stop, tenacity.stop._stop_never)


def test_one_retry_after_rule_the_longest_asked_capped() -> None:
    assert retry_floor() == 0.0
    assert retry_floor(None, 7.0, 5.0) == 7.0
    assert retry_floor(-3.0) == 0.0
    assert retry_floor(5.0, 10_000.0) == MAX_RETRY_AFTER
    assert parse_retry_after("99999") == retry_floor(99999.0)


def test_post_is_not_repeated_after_it_may_have_taken_effect(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.post(A + "/v1/streams/x/state", status=500, json={"error": {"code": "internal"}})
    with transport(waits) as t, pytest.raises(ServerError):
        t.request("POST", "/v1/streams/x/state", json={"state": {}})
    assert len(mocked.calls) == 1


def test_post_is_repeated_after_503(mocked: responses.RequestsMock, waits: list[float]) -> None:
    mocked.post(A + "/v1/streams/x/state", **error(503, "unavailable"))
    mocked.post(A + "/v1/streams/x/state", json={"action": "none", "entry": None, "revision": 1})
    with transport(waits) as t:
        response = t.request("POST", "/v1/streams/x/state", json={"state": {"a": 1}})
        response.close()
    assert len(mocked.calls) == 2
    body = mocked.calls[0].request.body
    assert body is not None
    assert json.loads(body) == {"state": {"a": 1}}


# -- failover ------------------------------------------------------------------------------------


def test_failover_to_the_second_url_without_waiting_and_remember_it(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(A + "/v1/health", body=requests.ConnectionError("refused"))
    mocked.get(B + "/v1/health", json={"status": "ok"})
    with transport(waits, [A, B]) as t:
        assert t.get_json("/v1/health") == {"status": "ok"}
        assert t.current_index == 1
        assert t.get_json("/v1/health") == {"status": "ok"}
    assert [c.request.url for c in mocked.calls] == [
        A + "/v1/health",
        B + "/v1/health",
        B + "/v1/health",  # remembered: A is not tried again
    ]
    assert waits == []


def test_failover_on_5xx_and_429(mocked: responses.RequestsMock, waits: list[float]) -> None:
    mocked.get(A + "/v1/health", **error(429, "too_many_subscribers"))
    mocked.get(B + "/v1/health", **error(503, "unavailable"))
    with transport(waits, [A, B]) as t, pytest.raises(ServerError):
        t.get_json("/v1/health")
    urls = [str(c.request.url).split("/v1")[0] for c in mocked.calls]
    assert urls[:4] == [A, B, B, A]  # each round starts after the URL that failed first
    assert len(urls) == 2 * DEFAULT_MAX_ATTEMPTS
    assert len(waits) == DEFAULT_MAX_ATTEMPTS - 1  # one wait per round, not per URL


def test_a_4xx_does_not_fail_over(mocked: responses.RequestsMock, waits: list[float]) -> None:
    mocked.get(A + "/v1/streams/x", **error(404, "stream_not_found"))
    with transport(waits, [A, B]) as t, pytest.raises(StreamNotFound):
        t.request("GET", "/v1/streams/x", stream_id="x")
    assert len(mocked.calls) == 1


# -- close --------------------------------------------------------------------------------------


def test_close_is_idempotent_and_later_requests_raise_client_closed(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    t = transport(waits)
    t.close()
    t.close()
    assert t.closed
    with pytest.raises(ClientClosed):
        t.get_json("/v1/health")
    assert len(mocked.calls) == 0


def test_close_during_backoff_ends_the_retry(mocked: responses.RequestsMock) -> None:
    mocked.get(A + "/v1/health", body=requests.ConnectionError("refused"))
    t: Transport

    def sleep(seconds: float) -> None:
        t.close()

    t = Transport(A, sleep=sleep)
    with pytest.raises(ClientClosed):
        t.get_json("/v1/health")
    assert len(mocked.calls) == 1


def test_tls_errors_are_not_retried(mocked: responses.RequestsMock, waits: list[float]) -> None:
    mocked.get(A + "/v1/health", body=requests.exceptions.SSLError("certificate verify failed"))
    with transport(waits) as t, pytest.raises(TransportError, match="verify"):
        t.get_json("/v1/health")
    assert len(mocked.calls) == 1


# -- tokens ---------------------------------------------------------------------------------------


def test_a_token_is_stripped_of_surrounding_whitespace(
    mocked: responses.RequestsMock, waits: list[float]
) -> None:
    mocked.get(A + "/v1/health", json={"status": "ok"})
    with transport(waits, token=" s3cret\n") as t:
        t.get_json("/v1/health")
    with transport(waits, token=lambda: "s3cret\r\n") as t:
        t.get_json("/v1/health")
    assert [c.request.headers["Authorization"] for c in mocked.calls] == ["Bearer s3cret"] * 2


@pytest.mark.parametrize("token", ["s3cret\nmore", "s3 cret", "s3cr\x00et", "s3crét"])
def test_a_token_that_cannot_be_a_header_is_refused_without_showing_it(token: str) -> None:
    with pytest.raises(ConfigError, match="token") as info:
        Transport(A, token=token)
    assert "s3" not in str(info.value)
