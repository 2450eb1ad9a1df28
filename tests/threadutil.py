"""Threads in tests: run a few at once and join them all; wait for a condition
nothing can await; record what a live subscriber receives.

Every thread a test starts is joined: :func:`run_threads` fails the test when
one is still running after its timeout instead of leaving it behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rstream import Entry
from rstream.core.timestamps import to_micros

__all__ = ["Collector", "new_client_threads", "run_threads", "wait_for"]


def new_client_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since ``before`` was taken, leaving out those of a server
    running in this process: its worker pools grow when requests need them."""
    return [
        t
        for t in threading.enumerate()
        if t not in before
        and t.name != "AnyIO worker thread"
        and not t.name.startswith("rstream-server-")
    ]


def run_threads(*targets: Callable[[], object], timeout: float = 30.0) -> list[BaseException]:
    """Run every target on a thread of its own, all at once, and join them
    (each within ``timeout`` seconds); returns what they raised, in no order."""
    failures: list[BaseException] = []
    lock = threading.Lock()

    def guarded(target: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                with lock:
                    failures.append(exc)

        return run

    threads = [threading.Thread(target=guarded(target)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), f"threads still running {timeout} s"
    return failures


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` with a deadline: for state that nothing can await (a
    client's health, rows in a database)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class Collector:
    """A live subscriber that records ``(micros, state)`` pairs, errors and the
    windows the tail committed, and lets a test wait for what it expects."""

    def __init__(self) -> None:
        self.items: list[tuple[int, dict[str, Any]]] = []
        self.errors: list[BaseException] = []
        self.commits: list[list[Entry]] = []
        self._cond = threading.Condition()

    def on_state(self, ts: datetime, state: dict[str, Any]) -> None:
        with self._cond:
            self.items.append((to_micros(ts), state))
            self._cond.notify_all()

    def on_error(self, error: BaseException) -> None:
        with self._cond:
            self.errors.append(error)
            self._cond.notify_all()

    def on_commit(self, entries: list[Entry]) -> None:
        with self._cond:
            self.commits.append(entries)

    def wait_for(self, predicate: Callable[[Collector], bool], timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self), timeout), (
                f"timed out; have {len(self.items)} states, errors {self.errors}"
            )

    def wait_for_count(self, n: int, timeout: float) -> None:
        self.wait_for(lambda c: len(c.items) >= n, timeout)
