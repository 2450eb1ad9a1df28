"""How a subscriber's errors and notices reach the user: ``on_error``, or the log.

Each subscriber has one :class:`NoticeReporter`. Notices (a
:class:`~rstream.Gap`, :class:`~rstream.Disconnected`,
:class:`~rstream.Reconnected`) and the exceptions of a subscriber's own
``on_state`` go to its ``on_error`` when it has one: the caller handles them,
so nothing is logged. Without one:

* a raising ``on_state`` is logged with its traceback once per exception
  type, then at most once a minute per type (with how many were not logged);
* a ``Gap`` or another error is logged as a warning;
* connection notices are not logged per subscriber: the live tail logs one
  warning per outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rstream.errors import Disconnected, Reconnected

__all__ = ["NoticeReporter"]

log = logging.getLogger("rstream.live")

_REPEAT_EVERY = 60.0  # seconds between two records of the same callback failure


class NoticeReporter:
    """Reports one subscriber's notices and callback failures (see the module).

    Called from the consumer's thread only (the dispatcher, or ``get``'s caller).
    """

    def __init__(
        self,
        on_error: Callable[[BaseException], object] | None,
        stream: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_error = on_error
        self.stream = stream
        self._clock = clock
        # Per exception type: when it was last logged, and how many were not logged since.
        self._failures: dict[type[BaseException], tuple[float, int]] = {}

    def __call__(self, notice: BaseException) -> None:
        """A notice or error from the tail, in order with the states."""
        if self.on_error is not None:
            self._call_on_error(notice)
        elif not isinstance(notice, (Disconnected, Reconnected)):
            log.warning("live tail of %r: %s", self.stream, notice)

    def callback_failed(self, error: Exception, callback: object) -> None:
        """``callback`` (the subscriber's ``on_state``) raised ``error``."""
        if self.on_error is not None:
            self._call_on_error(error)
            return
        kind = type(error)
        now = self._clock()
        seen = self._failures.get(kind)
        if seen is None:
            self._failures[kind] = (now, 0)
            log.error(
                "subscriber callback %r of stream %r raised %s (the subscription goes on; "
                "pass on_error= to handle it; later %s are logged at most once a minute)",
                callback,
                self.stream,
                kind.__name__,
                kind.__name__,
                exc_info=error,
            )
            return
        logged_at, unlogged = seen
        if now - logged_at < _REPEAT_EVERY:
            self._failures[kind] = (logged_at, unlogged + 1)
            return
        self._failures[kind] = (now, 0)
        log.error(
            "subscriber callback %r of stream %r raised %s again: %s "
            "(%d more since the last record)",
            callback,
            self.stream,
            kind.__name__,
            error,
            unlogged,
        )

    def _call_on_error(self, error: BaseException) -> None:
        assert self.on_error is not None
        try:
            self.on_error(error)
        except Exception:
            log.exception("on_error callback %r of stream %r raised", self.on_error, self.stream)
