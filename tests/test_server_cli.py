"""``rstream serve``: refusals, tokens, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from rstream.cli.serve import is_loopback, serve
from tests.serverutil import ServerProcess, SSEReader


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
     ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_refuses_the_network_without_a_write_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSTREAM_")}
    result = CliRunner(env=env).invoke(serve, ["--host", "0.0.0.0", "--db", "memory://"])
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0 without a write token" in result.output


def test_empty_token_file_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    result = CliRunner().invoke(serve, ["--db", "memory://", "--write-token-file", str(empty)])
    assert result.exit_code == 2
    assert "is empty" in result.output


def test_tokens_from_file_and_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "write.token"
    token_file.write_text("s3cret-write\n")
    env = {**os.environ, "RSTREAM_READ_TOKEN": "s3cret-read"}
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'auth.db'}", args=("--write-token-file", str(token_file)), env=env
    )
    with server, requests.Session() as http:
        url = server.url
        assert http.get(f"{url}/v1/streams").status_code == 401
        read = {"Authorization": "Bearer s3cret-read"}
        write = {"Authorization": "Bearer s3cret-write"}
        assert http.get(f"{url}/v1/streams", headers=read).status_code == 200
        r = http.post(f"{url}/v1/streams/a/state", json={"state": {}}, headers=read)
        assert r.status_code == 403
        r = http.post(f"{url}/v1/streams/a/state", json={"state": {}}, headers=write)
        assert r.status_code == 201
        assert server.stop() == 0
        logs = server.log_text()
    assert "stopping" in logs
    assert "s3cret" not in logs
    assert (tmp_path / "auth.db").exists()


def test_a_bracketed_ipv6_host_is_served(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'v6.db'}", args=("--host", "[::1]"))
    with server, requests.Session() as http:
        assert server.url.startswith("http://[::1]:")
        assert http.get(f"{server.url}/v1/health").json() == {"status": "ok"}
        assert http.post(f"{server.url}/v1/streams/a/state", json={"state": {}}).status_code == 201


@pytest.mark.parametrize("host", ["no such host!", "[::1", "256.1.1.1", "192.0.2.1"])
def test_a_host_that_cannot_be_bound_is_one_line(host: str) -> None:
    # 192.0.2.1 (TEST-NET) is a fine address that is not this machine's; the
    # write token only gets the non-loopback ones past the first check.
    env = {**os.environ, "RSTREAM_WRITE_TOKEN": "w"}
    result = CliRunner(env=env).invoke(serve, ["--host", host, "--port", "0", "--db", "memory://"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: cannot listen on {host!r}, port 0: ")
    assert lines[0].endswith(
        "(--host takes an address of this machine: 127.0.0.1, ::1, 0.0.0.0, ...)"
    )


def test_the_log_says_which_operations_are_open(tmp_path: Path) -> None:
    env = {**os.environ, "RSTREAM_READ_TOKEN": "s3cret-read"}
    env.pop("RSTREAM_WRITE_TOKEN", None)
    server = ServerProcess(f"sqlite:///{tmp_path / 'r.db'}", env=env)
    with server, requests.Session() as http:
        r = http.post(f"{server.url}/v1/streams/a/state", json={"state": {}})
        assert r.status_code == 401
        assert server.stop() == 0
        logs = server.log_text()
    assert "reads need the read or write token; writes need the read token" in logs
    assert "accepting at most" in logs
    assert "s3cret" not in logs


def test_limits_and_hosts_from_flags(tmp_path: Path) -> None:
    args = (
        "--allowed-host", "rstream.example", "--allowed-origin", "https://app.example",
        "--max-body", "1000", "--max-state", "100", "--max-subscribers", "1",
        "--max-connections", "50", "--idle-timeout", "2", "--request-timeout", "3",
        "--send-timeout", "4",
    )  # fmt: skip
    server = ServerProcess(f"sqlite:///{tmp_path / 'f.db'}", args=args)
    with server, requests.Session() as http:
        url = server.url
        assert http.get(f"{url}/v1/streams", headers={"Host": "rstream.example"}).ok
        page = {"Origin": "https://app.example"}
        assert http.post(f"{url}/v1/streams/a/state", json={"state": {}}, headers=page).ok
        big = {"state": {"x": "y" * 200}}
        assert http.post(f"{url}/v1/streams/a/state", json=big).status_code == 413
        huge = {"state": {"x": "y" * 2000}}
        assert http.post(f"{url}/v1/streams/a/state", json=huge).status_code == 413
        with SSEReader(f"{url}/v1/streams/a/live"):
            assert http.get(f"{url}/v1/streams/a/live").status_code == 429
        logs = server.log_text()
    assert "accepting at most 50 connections" in logs
    assert (
        "closed after 2 s, requests must arrive within 3 s, clients must take data within 4 s"
        in logs
    )
