"""``rstream serve``: refusals, tokens, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from rstream.cli.serve import is_loopback, serve
from tests.serverutil import ServerProcess


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
