"""Group commit: writes that arrive together share one SQLite transaction and one fsync.

With ``synchronous=FULL`` every commit waits for the disk (an fsync of the WAL,
milliseconds). :class:`GroupCommit` runs the write transactions of many threads
as one: the first thread to arrive while no commit is running leads; it takes
every write queued so far, runs each in a ``SAVEPOINT`` of one ``BEGIN
IMMEDIATE`` transaction, commits once, then wakes their threads. Writes that
arrive meanwhile queue up and form the next group, led by the first of them.
No thread of its own, no timer: a group is whatever arrived during the
previous commit.

What each write is promised is what a transaction of its own gave it:

- it returns only once its group's ``COMMIT`` returned, so an acknowledged
  write is durable (a SIGKILL after it loses nothing);
- a write that raises (a refusal such as :class:`~rstream.OutOfOrder`, or an
  SQL error that leaves the transaction open) is rolled back to its savepoint
  alone, its error raised in its own thread; the others of the group commit;
- when the group cannot commit (``BEGIN`` waiting longer than
  ``busy_timeout`` for another process, a full disk, SQLite rolling the whole
  transaction back), every write of the group raises that error and none is
  written;
- writes run in the order they arrived, each seeing the ones before it in its
  group, so per-stream order and revisions are exactly those of one
  transaction per write.
"""

from __future__ import annotations

import copy
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rstream.errors import RStreamError

__all__ = ["GroupCommit"]

_T = TypeVar("_T")


@dataclass(slots=True, eq=False)
class _Write:
    """One thread's write, queued for a group."""

    fn: Callable[[sqlite3.Connection], Any]
    wake: threading.Event = field(default_factory=threading.Event)
    done: bool = False  # set (with result or error) before wake
    result: Any = None
    error: BaseException | None = None

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        if not self.done:
            self.result, self.error, self.done = result, error, True


class _GroupFailed(Exception):
    """The group's transaction is gone; ``cause`` says why."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class GroupCommit:
    """Runs write transactions of many threads in shared transactions.

    ``GroupCommit(connection, begin)``: ``connection()`` is a context manager
    lending a connection (in autocommit mode) for one group; ``begin`` the
    statement that opens a write transaction (``BEGIN IMMEDIATE``).
    :meth:`run` may be called from any thread. ``groups`` and ``writes`` count
    the transactions committed or tried and the writes run in them.
    """

    def __init__(
        self,
        connection: Callable[[], AbstractContextManager[sqlite3.Connection]],
        begin: str,
    ) -> None:
        self._connection = connection
        self._begin = begin
        self._lock = threading.Lock()  # guards the three below
        self._queue: list[_Write] = []
        self._leading = False  # a thread is committing a group
        self.groups = 0
        self.writes = 0

    @property
    def queued(self) -> int:
        """How many writes wait for the group being committed to finish."""
        with self._lock:
            return len(self._queue)

    def run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn(conn)`` inside a write transaction and return its result once
        that transaction is committed; raise what ``fn`` raised (nothing of it
        written) or what made the commit fail (nothing of the group written).

        ``fn`` runs on whichever thread leads the group: it must only use
        ``conn`` (no locks, no other connection), as it may run beside the
        writes of other threads in one transaction.
        """
        write = _Write(fn)
        with self._lock:
            self._queue.append(write)
            lead = not self._leading
            self._leading = True
        if not lead:
            write.wake.wait()  # done, or handed the lead (and not done)
        if not write.done:
            self._lead()
        if write.error is not None:
            raise write.error
        result: _T = write.result
        return result

    def _lead(self) -> None:
        """Commit everything queued (this thread's write first), then hand the
        lead to the first write queued meanwhile, if any."""
        with self._lock:
            group, self._queue = self._queue, []
        try:
            self._commit(group)
        finally:
            for write in group:  # only if the leader was interrupted (KeyboardInterrupt)
                write.finish(error=RStreamError("the write was interrupted; nothing was written"))
            with self._lock:
                self.groups += 1
                self.writes += len(group)
                following = self._queue[0] if self._queue else None
                self._leading = following is not None
            for write in group:
                write.wake.set()
            if following is not None:
                following.wake.set()

    def _commit(self, group: list[_Write]) -> None:
        try:
            with self._connection() as conn:
                self._transaction(conn, group)
        except Exception as exc:
            cause = exc.cause if isinstance(exc, _GroupFailed) else exc
            for write in group:
                # A write refused on its own keeps its error; the others were
                # not written: each thread raises its own copy of the cause.
                write.finish(error=write.error or _copy(cause))
            return
        for write in group:
            write.done = True

    def _transaction(self, conn: sqlite3.Connection, group: list[_Write]) -> None:
        conn.execute(self._begin)
        try:
            for write in group:
                _run_in_savepoint(conn, write)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _run_in_savepoint(conn: sqlite3.Connection, write: _Write) -> None:
    """Run one write of the group; on its error, undo it alone (or, when SQLite
    has rolled the whole transaction back, fail the group)."""
    conn.execute("SAVEPOINT w")
    try:
        result = write.fn(conn)
    except Exception as exc:
        if not conn.in_transaction:
            raise _GroupFailed(exc) from exc
        conn.execute("ROLLBACK TO w")
        conn.execute("RELEASE w")
        write.error = exc
        return
    conn.execute("RELEASE w")
    write.result = result


def _copy(exc: BaseException) -> BaseException:
    """``exc`` for one more thread to raise (a raise adds to an exception's traceback)."""
    try:
        return copy.copy(exc).with_traceback(None)
    except Exception:  # an exception type that cannot be copied
        return exc
