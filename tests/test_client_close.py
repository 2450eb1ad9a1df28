"""Client.close() wakes every blocked call at once, against a server stopped by SIGSTOP.

A stopped server still accepts connections (the kernel completes them into its
listen backlog) and takes the requests into its socket buffers, but never
answers: every call waits for its response until the read timeout (30 s by
default). ``close()`` must wake them all, and return, within 100 ms.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rstream.client import Client, RemoteStream
from rstream.client.interrupt import Interrupter
from rstream.errors import ClientClosed
from tests.serverutil import ServerProcess
from tests.threadutil import new_client_threads

T0 = 1_700_000_000
BOUND = 0.1  # the feature: close() wakes every call, and returns, within 100 ms


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(f"sqlite:///{tmp_path / 'close.db'}") as server:
        with Client(server.url) as writer:
            robot = writer.stream("robot")
            for i in range(30):
                robot.write_state({"i": i}, timestamp=T0 + i)
        try:
            yield server
        finally:
            os.kill(server.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
            server.kill()


class Connections:
    """Counts the connections a client makes (Interrupter.add is called for each)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.changed = threading.Condition()
        add = Interrupter.add

        def counting(interrupter: Interrupter, sock: Any) -> None:
            add(interrupter, sock)
            with self.changed:
                self.count += 1
                self.changed.notify_all()

        monkeypatch.setattr(Interrupter, "add", counting)

    def wait_for(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.count >= count, timeout=10), self.count


CALLS: dict[str, Callable[[RemoteStream], object]] = {
    "state_at": lambda robot: robot.state_at(T0 + 5),
    "latest": lambda robot: robot.latest(),
    "info": lambda robot: robot.info(),
    "history": lambda robot: list(robot.history(T0, T0 + 20)),
    "write_state": lambda robot: robot.write_state({"i": -1}),
    "entries": lambda robot: list(robot.entries(T0, T0 + 20)),
}


def test_close_wakes_every_blocked_call_of_a_stopped_server(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    connections = Connections(monkeypatch)
    before = set(threading.enumerate())
    client = Client(server.url, timeout=(3.05, 30.0))
    robot = client.stream("robot")
    os.kill(server.pid, signal.SIGSTOP)
    outcomes: queue.Queue[tuple[str, BaseException | None, float]] = queue.Queue()

    def call(name: str) -> None:
        try:
            CALLS[name](robot)
        except BaseException as exc:
            outcomes.put((name, exc, time.monotonic()))
        else:
            outcomes.put((name, None, time.monotonic()))

    threads = [threading.Thread(target=call, args=(name,)) for name in CALLS]
    for thread in threads:
        thread.start()
    # Each call connects and sends its request, but state_at and history, both
    # asking for the window around T0, share one request (the window store
    # asks for one unknown window at a time): five connections.
    connections.wait_for(len(CALLS) - 1)
    assert outcomes.empty()  # ... and they wait for the answers

    began = time.monotonic()
    client.close()
    closed = time.monotonic() - began
    results = [outcomes.get(timeout=5) for _ in CALLS]
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()

    assert closed < BOUND
    for name, exc, ended in results:
        assert isinstance(exc, ClientClosed), (name, exc)
        assert ended - began < BOUND, (name, ended - began)
    assert {name for name, _, _ in results} == set(CALLS)
    assert new_client_threads(before) == []


def test_a_call_after_close_raises_at_once(server: ServerProcess) -> None:
    client = Client(server.url)
    robot = client.stream("robot")
    os.kill(server.pid, signal.SIGSTOP)
    client.close()
    for call in CALLS.values():
        with pytest.raises(ClientClosed):
            call(robot)
