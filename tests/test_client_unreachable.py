"""An unreachable server: a name that does not resolve fails at once, a refused
connection within a short deadline, with messages in plain words; ping() says False."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
import requests

from rstream.client import Client
from rstream.client.retry import REFUSED_DEADLINE
from rstream.client.transport import Transport, describe_failure
from rstream.errors import TransportError
from rstream.server import ServerThread, create_app
from rstream.server.storage import MemoryStorage
from tests.serverutil import running_server

# Names urllib3 puts in its messages, which mean nothing to a user.
INTERNALS = ("ConnectionPool", "object at 0x", "Observable", "urllib3", "Max retries")


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_plain(message: str) -> None:
    for internal in INTERNALS:
        assert internal not in message, message


def test_a_name_that_does_not_resolve_fails_at_once() -> None:
    waits: list[float] = []
    with (
        Transport("http://no-such-host.invalid:8080", sleep=waits.append) as t,
        pytest.raises(TransportError, match="could not be resolved") as info,
    ):
        t.get_json("/v1/health")
    assert waits == []  # not retried
    assert "no-such-host.invalid" in str(info.value)
    assert_plain(str(info.value))


def test_a_refused_connection_is_retried_within_the_deadline_then_fails() -> None:
    waits: list[float] = []
    with (
        Transport(closed_port_url(), sleep=waits.append) as t,
        pytest.raises(TransportError, match="connection was refused") as info,
    ):
        t.get_json("/v1/health")
    assert len(waits) >= 1  # retried ...
    assert sum(waits) < REFUSED_DEADLINE  # ... within the deadline
    assert_plain(str(info.value))


def test_a_refused_connection_fails_within_the_deadline_in_real_time() -> None:
    began = time.monotonic()
    with Client(closed_port_url()) as client, pytest.raises(TransportError) as info:
        client.stream("robot").info()
    assert time.monotonic() - began < REFUSED_DEADLINE + 1.0  # margin for a busy machine
    assert "Check that the server is running" in str(info.value)
    assert_plain(str(info.value))


def test_a_replica_with_a_bad_name_fails_over_to_a_good_one() -> None:
    waits: list[float] = []
    with (
        running_server() as url,
        Client(["http://no-such-host.invalid", url], sleep=waits.append) as client,
    ):
        assert client.stream("robot").write_state({"a": 1}) is not None
        assert client.transport.current_index == 1
    assert waits == []


def test_ping_says_whether_a_server_answers() -> None:
    waits: list[float] = []
    with Client(closed_port_url(), sleep=waits.append) as client:
        assert client.ping() is False
    assert waits == []  # a probe: one attempt
    with Client("http://no-such-host.invalid") as client:
        assert client.ping() is False
    with running_server() as url, Client(url) as client:
        assert client.ping() is True


def test_describe_failure_names_what_happened() -> None:
    for url, words in [
        (closed_port_url(), "the connection was refused"),
        ("http://no-such-host.invalid", "could not be resolved"),
    ]:
        with pytest.raises(requests.RequestException) as info:
            requests.get(url, timeout=5)
        assert words in describe_failure(info.value)
        assert_plain(describe_failure(info.value))


def test_a_server_that_never_answers_is_a_timeout_that_says_so() -> None:
    waits: list[float] = []
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with (
            Client(url, timeout=(1.0, 0.05), sleep=waits.append) as client,
            pytest.raises(
                TransportError, match=r"no answer within the read timeout \(0.05 s\)"
            ) as info,
        ):
            client.stream("robot").info()
    assert len(waits) == 4  # a read timeout is worth retrying: 5 attempts
    assert "after 5 attempt(s)" in str(info.value)
    assert_plain(str(info.value))


# -- writes: sent again only when the failure proves the server never saw them --


def test_a_write_whose_connection_was_refused_is_sent_again_and_stored_once() -> None:
    """Refused: the request never left, so the retry cannot duplicate it. The
    server comes up on the refused port during the client's first backoff."""
    url = closed_port_url()
    port = int(url.rsplit(":", 1)[1])
    storage = MemoryStorage()
    server = ServerThread(create_app(storage), port=port)
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the backoff: start the server, no real wait
        waits.append(seconds)
        if len(waits) == 1:
            server.start()

    try:
        with Client(url, sleep=sleep) as client:
            stream = client.stream("robot")
            assert stream.write_state({"x": 1}, timestamp=1.0) is not None
            assert stream.info().revision == 1
            assert stream.latest()[1] == {"x": 1}
    finally:
        server.stop()
        storage.close()
    assert len(waits) >= 1


def test_a_write_whose_connection_broke_after_sending_is_not_sent_again() -> None:
    """Reset once the request was sent: the server may have applied it, so the
    client says so instead of sending it again (which could store it twice)."""
    requests_seen: list[bytes] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def reset_after_reading() -> None:
            # One connection at a time: read the request, then reset (RST), no answer.
            listener.settimeout(2.0)
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:  # closed by the test, or no further attempt came
                    return
                with conn:
                    conn.settimeout(5.0)
                    data = b""
                    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    requests_seen.append(data)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        waits: list[float] = []
        thread = threading.Thread(target=reset_after_reading)
        thread.start()
        try:
            with (
                Client(f"http://127.0.0.1:{port}", sleep=waits.append) as client,
                pytest.raises(TransportError, match="may or may not have taken effect") as info,
            ):
                client.stream("robot").write_state({"x": 1}, timestamp=1.0)
        finally:
            listener.close()
            thread.join(10)
        assert not thread.is_alive()
    posts = [r for r in requests_seen if r.startswith(b"POST ")]
    assert len(posts) == 1, requests_seen  # sent once, never again
    assert b"/v1/streams/robot/state" in posts[0]
    assert waits == []
    assert_plain(str(info.value))
