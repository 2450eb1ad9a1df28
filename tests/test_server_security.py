"""What a web page may not do to a local server (Host, Origin, Content-Type), and
which token a write needs when the server has only a read token."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import requests

from rstream.server.auth import Tokens
from rstream.server.security import host_name
from rstream.server.storage import Storage
from tests.serverutil import running_server

STATE = b'{"state": {"a": 1}}'
JSON = {"Content-Type": "application/json"}


def error_of(r: requests.Response) -> tuple[int, str]:
    assert r.headers["Content-Type"].startswith("application/json")
    return r.status_code, r.json()["error"]["code"]


def streams(http: requests.Session, url: str) -> Any:
    return http.get(f"{url}/v1/streams").json()["streams"]


@pytest.fixture
def http() -> Any:
    with requests.Session() as session:
        yield session


def test_the_request_of_a_web_page_is_refused(url: str, http: requests.Session) -> None:
    # What a page on evil.example sends, without a preflight, once evil.example
    # resolves to 127.0.0.1 (or to any address, to a server without the Host rule).
    page = {"Content-Type": "text/plain", "Origin": "http://evil.example", "Host": "evil.example"}
    r = http.post(f"{url}/v1/streams/x/state", data=STATE, headers=page)
    assert error_of(r) == (400, "invalid_host")
    assert streams(http, url) == []


def test_each_rule_alone(url: str, http: requests.Session) -> None:
    post = f"{url}/v1/streams/x/state"
    r = http.post(post, data=STATE, headers={"Content-Type": "text/plain"})
    assert error_of(r) == (415, "unsupported_media_type")
    assert "application/json" in r.json()["error"]["message"]
    r = http.post(post, data=STATE, headers={**JSON, "Origin": "http://evil.example"})
    assert error_of(r) == (403, "forbidden_origin")
    assert "--allowed-origin http://evil.example" in r.json()["error"]["message"]
    # DNS rebinding: a page of evil.example reading through its own name.
    r = http.get(f"{url}/v1/streams", headers={"Host": "evil.example"})
    assert error_of(r) == (400, "invalid_host")
    assert "--allowed-host evil.example" in r.json()["error"]["message"]
    r = http.post(post, data=STATE, headers={**JSON, "Host": "evil.example:8080"})
    assert error_of(r) == (400, "invalid_host")
    assert streams(http, url) == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "text/plain; charset=utf-8", "application/jsonx"],
)  # fmt: skip
def test_writes_need_a_json_content_type(
    url: str, http: requests.Session, content_type: str
) -> None:
    for method, path in (("POST", "/state"), ("POST", "/entries"), ("PUT", "")):
        r = http.request(
            method, f"{url}/v1/streams/x{path}", data=STATE, headers={"Content-Type": content_type}
        )
        assert error_of(r) == (415, "unsupported_media_type"), (method, path)
    r = http.post(f"{url}/v1/streams/x/state", data=STATE)  # no Content-Type at all
    assert error_of(r) == (415, "unsupported_media_type")
    assert streams(http, url) == []


def test_what_programs_send_is_accepted(url: str, http: requests.Session) -> None:
    r = http.post(
        f"{url}/v1/streams/x/state",
        data=STATE,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 201
    ndjson = b'{"timestamp": "2030-01-01T00:00:00Z", "type": "snapshot", "data": {}}\n'
    r = http.post(
        f"{url}/v1/streams/y/entries", data=ndjson, headers={"Content-Type": "application/x-ndjson"}
    )
    assert r.status_code == 201
    assert http.put(f"{url}/v1/streams/z").status_code == 201  # no body: no Content-Type
    # Reads carry no body and are not guarded by Origin (the browser keeps their answer).
    assert http.get(f"{url}/v1/streams", headers={"Origin": "http://evil.example"}).ok
    assert [s["id"] for s in streams(http, url)] == ["x", "y", "z"]


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:{port}", "localhost", "LOCALHOST:{port}", "localhost.", "[::1]:{port}",
     "app.localhost", "10.1.2.3", "[2001:db8::1]", socket.gethostname()],
)  # fmt: skip
def test_loopback_names_addresses_and_this_machine_are_accepted(
    url: str, http: requests.Session, host: str
) -> None:
    port = url.rsplit(":", 1)[1]
    r = http.get(f"{url}/v1/streams", headers={"Host": host.format(port=port)})
    assert r.status_code == 200


def test_allowed_hosts_and_origins(storage: Storage, http: requests.Session) -> None:
    with running_server(
        storage, allowed_hosts=["rstream.example"], allowed_origins=["https://app.example/"]
    ) as url:
        assert http.get(f"{url}/v1/streams", headers={"Host": "RStream.example:443"}).ok
        r = http.get(f"{url}/v1/streams", headers={"Host": "other.example"})
        assert error_of(r) == (400, "invalid_host")
        page = {**JSON, "Origin": "https://app.example"}
        assert http.post(f"{url}/v1/streams/a/state", data=STATE, headers=page).status_code == 201
        # The server's own origin (scheme and Host) may always write.
        own = {**JSON, "Origin": url, "Host": url.removeprefix("http://")}
        assert http.post(f"{url}/v1/streams/b/state", data=STATE, headers=own).status_code == 201
        for origin in ("null", "https://app.example.evil", "http://app.example"):
            r = http.post(
                f"{url}/v1/streams/c/state", data=STATE, headers={**JSON, "Origin": origin}
            )
            assert error_of(r) == (403, "forbidden_origin"), origin
    with running_server(storage, allowed_hosts=["*"]) as url:
        assert http.get(f"{url}/v1/streams", headers={"Host": "anything.example"}).ok


@pytest.mark.parametrize(
    ("value", "name"),
    [("Example.COM", "example.com"), ("example.com:80", "example.com"),
     ("example.com.", "example.com"), ("[::1]:8080", "::1"), ("[::1]", "::1"), ("::1", "::1"),
     ("10.0.0.1:1", "10.0.0.1"), ("[broken", "[broken"), ("a:b", "a:b")],
)  # fmt: skip
def test_host_name(value: str, name: str) -> None:
    assert host_name(value) == name


# -- a read token and no write token ---------------------------------------------------


def test_a_read_token_alone_guards_writes_too(storage: Storage, http: requests.Session) -> None:
    with running_server(storage, read_token="r-tok") as url:
        read = {"Authorization": "Bearer r-tok"}
        for headers in ({}, {"Authorization": "Bearer nope"}):
            r = http.post(f"{url}/v1/streams/a/state", json={"state": {}}, headers=headers)
            assert error_of(r) == (401, "unauthorized")
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert error_of(http.put(f"{url}/v1/streams/a", headers=headers)) == (
                401,
                "unauthorized",
            )
        assert http.get(f"{url}/v1/streams", headers=read).json()["streams"] == []
        r = http.post(f"{url}/v1/streams/a/state", json={"state": {}}, headers=read)
        assert r.status_code == 201
        assert http.put(f"{url}/v1/streams/b", headers=read).status_code == 201


@pytest.mark.parametrize(
    ("read", "write", "described"),
    [(None, None, "reads open to anyone; writes open to anyone"),
     ("r", None, "reads need the read or write token; writes need the read token (there is no "
                 "write token)"),
     (None, "w", "reads open to anyone; writes need the write token"),
     ("r", "w", "reads need the read or write token; writes need the write token")],
)  # fmt: skip
def test_tokens_describe_what_is_open(read: str | None, write: str | None, described: str) -> None:
    assert Tokens(read, write).describe() == described
