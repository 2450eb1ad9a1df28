"""Retention: the background task that deletes the old windows of streams.

``Compactor(storage, default_retention=None, interval=60.0, clock=None)``
walks every stream once per ``interval`` on a thread of its own (off the
request path): a stream whose retention (its own, else ``default_retention``)
is set loses the windows that ended more than that long before the clock's
now (:meth:`~rstream.server.storage.StreamLog.compact`); then the storage
gives the freed space back (:meth:`~rstream.server.storage.Storage.reclaim_space`).
On PostgreSQL one replica compacts at a time
(:meth:`~rstream.server.storage.Storage.compaction_lock`); the others skip
their turn.

What it did is kept in plain counters, for logs and metrics to read from any
thread: :attr:`Compactor.runs`, :attr:`~Compactor.skipped_runs`,
:attr:`~Compactor.failed_runs`, :attr:`~Compactor.entries_deleted`,
:attr:`~Compactor.bytes_reclaimed` and :attr:`~Compactor.last_run`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from rstream.core.stream import Clock
from rstream.core.timestamps import to_micros
from rstream.errors import ConfigError
from rstream.server.storage import Storage

__all__ = ["DEFAULT_INTERVAL", "CompactionRun", "Compactor"]

log = logging.getLogger("rstream.server.compaction")

#: Seconds between two runs of a :class:`Compactor` unless told otherwise.
DEFAULT_INTERVAL = 60.0

_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class CompactionRun:
    """What one :meth:`Compactor.run` did.

    ``ran``: False when another compactor (another replica) held the lock,
    and nothing was done. ``streams``: the streams with a retention;
    ``compacted``: those that lost entries; ``entries_deleted``; and
    ``bytes_reclaimed``, the space given back to the file system.
    """

    ran: bool
    streams: int = 0
    compacted: int = 0
    entries_deleted: int = 0
    bytes_reclaimed: int = 0


class Compactor:
    """Applies the streams' retention to ``storage``; see the module docstring.

    ``interval``: seconds between runs of the background thread (``None``: no
    thread; call :meth:`run` yourself). ``clock``: now, as epoch microseconds
    or an aware datetime (default: the system clock). ``batch``: entries per
    delete transaction (a writer waits for at most one).

    :meth:`start` starts the thread, :meth:`close` stops and joins it (safe to
    call twice; also the context manager's exit). :meth:`run` may be called
    from any thread, also while the thread runs: one run at a time does the
    work, a concurrent one returns ``CompactionRun(ran=False)``.

    Counters (ints, updated after each run, readable from any thread):
    ``runs`` (runs that did the work), ``skipped_runs`` (the lock was held
    elsewhere), ``failed_runs`` (the storage raised; the thread logs it and
    tries again next time), ``entries_deleted`` and ``bytes_reclaimed`` (totals);
    ``last_run`` is the last :class:`CompactionRun` that did the work.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        default_retention: timedelta | None = None,
        interval: float | None = DEFAULT_INTERVAL,
        clock: Clock | None = None,
        batch: int = 1000,
    ) -> None:
        if default_retention is not None and (
            not isinstance(default_retention, timedelta) or default_retention < timedelta(0)
        ):
            raise ConfigError(
                f"default_retention must be a timedelta of 0 or more, not {default_retention!r}"
            )
        if interval is not None and not interval > 0:
            raise ConfigError(f"interval must be a number of seconds above 0, not {interval!r}")
        if type(batch) is not int or batch < 1:
            raise ConfigError(f"batch must be an int of 1 or more, not {batch!r}")
        self.storage = storage
        self.default_retention = default_retention
        self.interval = interval
        self.batch = batch
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the counters and _thread
        self.runs = 0
        self.skipped_runs = 0
        self.failed_runs = 0
        self.entries_deleted = 0
        self.bytes_reclaimed = 0
        self.last_run: CompactionRun | None = None

    def __repr__(self) -> str:
        return (
            f"<Compactor interval={self.interval} default_retention={self.default_retention} "
            f"runs={self.runs} entries_deleted={self.entries_deleted}>"
        )

    def __enter__(self) -> Compactor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> int:
        if self._clock is None:
            return time.time_ns() // 1000
        now = self._clock()
        return to_micros(now) if isinstance(now, datetime) else now

    def run(self) -> CompactionRun:
        """Compact every stream with a retention once, now; returns what it did.

        Raises what the storage raises (e.g. :class:`~rstream.StorageUnavailable`);
        counted in :attr:`failed_runs`.
        """
        try:
            result = self._run()
        except Exception:
            with self._lock:
                self.failed_runs += 1
            raise
        with self._lock:
            if result.ran:
                self.runs += 1
                self.entries_deleted += result.entries_deleted
                self.bytes_reclaimed += result.bytes_reclaimed
                self.last_run = result
            else:
                self.skipped_runs += 1
        return result

    def _run(self) -> CompactionRun:
        with self.storage.compaction_lock() as mine:
            if not mine:
                return CompactionRun(ran=False)
            now = self._now()
            streams = compacted = deleted = 0
            for info in self.storage.list_streams():
                retention = info.rate.retention
                if retention is None:
                    retention = self.default_retention
                if retention is None:
                    continue
                streams += 1
                n = self.storage.log(info.id).compact(now - retention // _ONE_US, self.batch)
                if n:
                    compacted += 1
                    deleted += n
                    log.debug("compacted stream %r: %d entries deleted", info.id, n)
            reclaimed = self.storage.reclaim_space() if deleted else 0
        if deleted:
            log.info(
                "compaction: %d entries deleted from %d stream(s), %d bytes given back",
                deleted,
                compacted,
                reclaimed,
            )
        return CompactionRun(True, streams, compacted, deleted, reclaimed)

    def start(self) -> Compactor:
        """Start the background thread (nothing when ``interval`` is None or it runs)."""
        with self._lock:
            if self.interval is None or self._thread is not None or self._stop.is_set():
                return self
            self._thread = threading.Thread(
                target=self._loop, args=(self.interval,), name="rstream-compactor", daemon=True
            )
            self._thread.start()
        return self

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.run()
            except Exception:
                log.exception("compaction failed; trying again in %g s", interval)

    def close(self) -> None:
        """Stop the background thread and wait for it (a run in progress ends
        first); idempotent. :meth:`run` still works afterwards."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
