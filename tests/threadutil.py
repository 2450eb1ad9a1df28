"""Threads in tests: run a few at once and join them all; wait for a condition
nothing can await.

Every thread a test starts is joined: :func:`run_threads` fails the test when
one is still running after its timeout instead of leaving it behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["run_threads", "wait_for"]


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
