"""A simulated device: a thread that writes a :class:`RobotSimulator`'s state at a rate."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rstream.demo.simulator import RobotSimulator
from rstream.errors import ClientClosed, ConfigError

__all__ = ["SimulatedDevice"]

log = logging.getLogger("rstream.demo")


class SimulatedDevice:
    """Writes ``simulator``'s state through ``write_state`` ``rate`` times a second.

    ``write_state`` is typically :meth:`rstream.RemoteStream.write_state`. A
    failed write is logged and counted, and the device carries on (a server
    restart should not end a demo). :meth:`close` stops the thread and joins it;
    it is idempotent, and so is :meth:`start`.
    """

    def __init__(
        self,
        write_state: Callable[[dict[str, Any]], object],
        *,
        rate: float = 20.0,
        simulator: RobotSimulator | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise ConfigError(f"rate must be positive, got {rate}")
        self._write_state = write_state
        self._interval = 1.0 / rate
        self._simulator = simulator or RobotSimulator()
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.writes = 0
        self.failures = 0
        self.last_error: BaseException | None = None

    def start(self) -> None:
        """Start writing on a daemon thread (no-op when already started)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name="rstream-demo-device", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        last = self._clock()
        deadline = last
        while not self._stop.is_set():
            now = self._clock()
            state = self._simulator.step(now - last)
            last = now
            try:
                self._write_state(state)
            except ClientClosed:
                return
            except Exception as exc:  # keep going: the demo shows reconnects, not crashes
                self.failures += 1
                self.last_error = exc
                log.warning("simulated device: write failed: %s", exc)
            else:
                self.writes += 1
            # A fixed schedule, not a fixed pause: slow writes do not lower the rate
            # below what the server can take, and a stall does not cause a burst.
            deadline = max(deadline + self._interval, self._clock())
            self._stop.wait(max(0.0, deadline - self._clock()))

    def close(self) -> None:
        """Stop writing and join the thread (idempotent)."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> SimulatedDevice:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
