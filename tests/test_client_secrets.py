"""No token ever appears in an exception message, a repr or a log record.

A session with tokens does what a user does, successes and failures alike,
with every logger at DEBUG (urllib3's included); then all the log output and
the full text of every exception (chained ones too) are searched for the
tokens.
"""

from __future__ import annotations

import logging
import math
import socket
import traceback
from collections.abc import Callable
from datetime import timedelta

import pytest

from rstream.client import Client, connect
from rstream.errors import RStreamError
from tests.serverutil import running_server

READ = "read-9f8e7d6c5b4a"
WRITE = "write-0a1b2c3d4e5f"
WRONG = "wrong-5e4d3c2b1a0f"
SECRETS = (READ, WRITE, WRONG)
T0 = 1_700_000_000


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_no_token_in_any_log_record_exception_or_repr(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: rstream, urllib3, the server's
    texts: list[str] = []

    def expect_error(call: Callable[[], object]) -> None:
        try:
            call()
        except RStreamError as exc:
            texts.extend([str(exc), repr(exc), *traceback.format_exception(exc)])
        else:
            pytest.fail("no error")

    with running_server(read_token=READ, write_token=WRITE) as url:
        # The token as read from a file: with a newline.
        with Client(url, token=f" {WRITE}\n") as client:
            robot = client.stream("robot")
            for i in range(5):
                robot.write_state({"i": i}, timestamp=T0 + i)
            robot.configure(change_frequency=timedelta(0))
            texts += [repr(client), repr(client.transport), repr(robot), repr(robot.info())]
            texts += [repr(list(robot.history())), repr(robot.state_at(T0 + 2))]
            assert client.ping()
            expect_error(lambda: robot.write_state({"i": math.nan}))
            expect_error(lambda: robot.state_at(T0 - 10))
            expect_error(lambda: client.stream("missing").info())
            expect_error(lambda: robot.write_state({"i": 0}, timestamp=T0))  # out of order
        with Client(url, token=READ) as reader:
            expect_error(lambda: reader.stream("robot").write_state({"i": 9}))  # 403
        with Client(url, token=lambda: WRONG) as wrong:
            expect_error(lambda: wrong.stream("robot").info())  # 401, asked twice
        expect_error(lambda: Client(url, token=f"{WRONG}\nX-Other: 1"))  # not a header
        robot = connect(url, "robot", token=READ)
        texts.append(repr(robot))
        robot.close()
    with Client(closed_port_url(), token=WRITE, sleep=lambda s: None) as client:
        expect_error(lambda: client.stream("robot").info())
        assert client.ping() is False

    assert len(texts) > 20
    assert any(isinstance(e, str) and "refused" in e for e in texts)
    logged = [caplog.text] + [record.getMessage() for record in caplog.records]
    logged += [repr(record.args) for record in caplog.records]
    for secret in SECRETS:
        for text in texts + logged:
            assert secret not in text
    assert any("401" in text for text in texts)  # the refusals were seen, and said so
    assert any("403" in text for text in texts)
