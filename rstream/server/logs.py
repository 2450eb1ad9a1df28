"""Rate limiting of repeated log messages, for the server's own loggers.

A server under a flood of bad connections can log the same line thousands of
times a second (asyncio's "socket.accept() out of system resource", a
refused connection, ...). :class:`RepeatFilter` lets a few records of each
message through per period, drops the rest, and says on the next record it
lets through how many it dropped. ``rstream serve`` attaches it to
:data:`SERVER_LOGGERS`; the library attaches it nowhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

__all__ = ["SERVER_LOGGERS", "RepeatFilter"]

# The loggers a running server writes to (a filter on a logger sees only the
# records logged on that very logger, not its children's).
SERVER_LOGGERS = (
    "rstream.server",
    "rstream.server.live",
    "rstream.server.storage",
    "rstream.server.storage.postgres",
    "uvicorn.error",
    "asyncio",
)


class RepeatFilter(logging.Filter):
    """Pass at most ``burst`` records of one message per ``period`` seconds.

    Records are "the same message" when they come from the same logger with
    the same level and format string (arguments may differ). The first record
    passed after some were dropped ends with ``(N similar messages
    suppressed)``. At most ``max_keys`` messages are tracked (the oldest are
    forgotten). Thread-safe; ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        burst: int = 5,
        period: float = 60.0,
        *,
        max_keys: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.period = period
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [period start, records passed in it, records dropped since the last pass]
        self._seen: OrderedDict[tuple[str, int, str], list[float]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            state = self._seen.get(key)
            if state is None:
                state = self._seen[key] = [now, 0, 0]
                while len(self._seen) > self.max_keys:
                    self._seen.popitem(last=False)
            else:
                self._seen.move_to_end(key)
            if now - state[0] >= self.period:
                state[0], state[1] = now, 0
            if state[1] >= self.burst:
                state[2] += 1
                return False
            state[1] += 1
            dropped = int(state[2])
            state[2] = 0
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} similar messages suppressed)"
            record.args = None
        return True

    def attach(self, names: Iterable[str] = SERVER_LOGGERS) -> Callable[[], None]:
        """Add this filter to the loggers ``names``; returns a function that removes it."""
        loggers = [logging.getLogger(name) for name in names]
        for one in loggers:
            one.addFilter(self)

        def detach() -> None:
            for one in loggers:
                one.removeFilter(self)

        return detach
