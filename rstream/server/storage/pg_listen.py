"""LISTEN/NOTIFY: :class:`ChangeListener` follows a storage's notification channel.

Every PostgreSQL write of a :class:`~rstream.server.storage.postgres.PostgresStorage`
sends ``pg_notify(channel, '{"stream": ..., "rev": ..., "bytes": ..., "origin": ...}')``
in its transaction (delivered on commit); :func:`channel_for` names the channel
of a schema. A :class:`ChangeListener` blocks on its ``LISTEN`` connection's
socket and hands every notification to a callback (the server's fan-out hub);
after any reconnect it re-announces the current revision of every stream that
has subscribers, so nothing published while it was disconnected is missed.
Subscribers always read the changes themselves from the table
(``changes_since``): a notification is only a wake-up, and a malformed one is
logged and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

import psycopg
import tenacity
from psycopg import sql as pgsql

from rstream.errors import ClientClosed, RStreamError

__all__ = ["DEFAULT_CHANNEL", "ChangeListener", "channel_for", "default_retry", "parse_payload"]

log = logging.getLogger("rstream.server.storage.postgres")

#: The notification channel of a storage in the default schema; a storage in
#: schema ``s`` uses ``rstream_changes_s`` (channels are per database, and
#: schemas of one database must not wake each other's subscribers).
DEFAULT_CHANNEL = "rstream_changes"


def channel_for(schema: str | None) -> str:
    """The notification channel of a storage in ``schema`` (None: the default)."""
    if schema is None:
        return DEFAULT_CHANNEL
    name = f"{DEFAULT_CHANNEL}_{schema}"
    if len(name) > 63:  # NAMEDATALEN - 1: longer channel names are refused
        name = f"{DEFAULT_CHANNEL}_{hashlib.sha256(schema.encode()).hexdigest()[:32]}"
    return name


def default_retry() -> tenacity.Retrying:
    """The listener's reconnect policy: exponential backoff with jitter, 0.1 s to 5 s, forever."""
    return tenacity.Retrying(
        wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.1),
        retry=tenacity.retry_if_exception_type(psycopg.OperationalError),
        reraise=True,
    )


class ChangeListener:
    """Follows a storage's notification channel on a thread of its own.

    The thread holds one dedicated connection that ``LISTEN``\\s on the channel
    and blocks in :func:`select.select` on its socket and on a wake-up socket
    (no polling: it wakes for a notification, for :meth:`close`, or every
    ``ping_interval`` seconds to check the connection is alive). Every
    notification becomes ``on_change(stream_id, rev, nbytes)``. When the
    connection fails it reconnects with ``retry`` (a :class:`tenacity.Retrying`
    used as a template; default exponential backoff with jitter, 0.1 s to 5 s,
    for as long as it takes), and after every (re)connect calls
    ``on_change(stream_id, revision, 0)`` for each of ``streams()`` with the
    revision read from the database, since notifications sent while it was
    away are lost. Notifications tagged with ``origin`` (writes of the storage
    that started the listener) are skipped.

    Callbacks run on the listener's thread and should be quick (the server's
    hub only schedules work on its event loop). An exception in one is logged
    and does not stop the listener.
    """

    def __init__(
        self,
        conninfo: str,
        channel: str,
        on_change: Callable[[str, int, int], object],
        streams: Callable[[], Iterable[str]],
        *,
        revision_of: Callable[[str], int | None],
        origin: str | None = None,
        connect_kwargs: dict[str, Any] | None = None,
        retry: tenacity.Retrying | None = None,
        ping_interval: float = 30.0,
    ) -> None:
        self.channel = channel
        self._conninfo = conninfo
        self._on_change = on_change
        self._streams = streams
        self._revision_of = revision_of
        self._origin = origin
        self._connect_kwargs = {**(connect_kwargs or {}), "autocommit": True}
        self._retry = retry or default_retry()
        self._ping_interval = ping_interval
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"rstream-listen-{channel}", daemon=True
        )
        self._started = False
        self._closed = False
        self._state_lock = threading.Lock()
        #: Set while the listener is connected and listening.
        self.listening = threading.Event()
        #: Connections made so far (1 after the first; more after reconnects).
        self.connects = 0
        #: Notifications received.
        self.received = 0

    def __repr__(self) -> str:
        state = "listening" if self.listening.is_set() else "not listening"
        return f"<ChangeListener {self.channel!r} {state} connects={self.connects}>"

    def start(self) -> None:
        """Start the listener thread (idempotent)."""
        with self._state_lock:
            if self._started or self._closed:
                return
            self._started = True
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the connection; idempotent."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        self._stop.set()
        with suppress(OSError):  # the thread may be gone already
            self._wake_w.send(b"x")
        if started:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%r did not stop within %g s", self, timeout)
        self._wake_r.close()
        self._wake_w.close()

    def wait_listening(self, timeout: float | None = None) -> bool:
        """Wait until the listener is connected and listening; False on timeout."""
        return self.listening.wait(timeout)

    # -- the thread ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except (psycopg.Error, tenacity.RetryError) as exc:
                # Only when stopping, or when a retry policy with a limit gave up.
                if not self._stop.is_set():
                    log.error("listener on %r gave up connecting: %s", self.channel, exc)
                return
            if conn is None:
                return
            try:
                self._listen(conn)
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    log.warning(
                        "listener on %r lost its connection (%s); reconnecting", self.channel, exc
                    )
            finally:
                self.listening.clear()
                self._conn = None
                conn.close()

    def _connect(self) -> psycopg.Connection[Any] | None:
        base_stop = self._retry.stop

        def stop(state: tenacity.RetryCallState) -> bool:
            return self._stop.is_set() or bool(base_stop(state))

        retrying = self._retry.copy(
            sleep=self._sleep,
            stop=stop,
            before_sleep=self._log_retry,
        )
        conn: psycopg.Connection[Any] | None = None
        for attempt in retrying:
            with attempt:
                if self._stop.is_set():
                    return None
                conn = psycopg.connect(self._conninfo, **self._connect_kwargs)
                try:
                    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self.channel)))
                except BaseException:
                    conn.close()
                    raise
        if conn is None or self._stop.is_set():
            if conn is not None:
                conn.close()
            return None
        return conn

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "listener on %r cannot connect (attempt %d): %s",
            self.channel,
            state.attempt_number,
            exc,
        )

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        conn.add_notify_handler(self._handle)  # notifications that arrive during a ping
        self.connects += 1
        if self.connects > 1:
            log.info("listener on %r reconnected (connection %d)", self.channel, self.connects)
        self.listening.set()
        self._resync()
        pgconn = conn.pgconn
        fileno = conn.fileno()
        wake = self._wake_r.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([fileno, wake], [], [], self._ping_interval)
            if self._stop.is_set():
                return
            if not ready:
                conn.execute("SELECT 1")  # a dead connection fails here, not silently
                continue
            if fileno in ready:
                pgconn.consume_input()
                if pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the connection to the server was lost")
                while (notify := pgconn.notifies()) is not None:
                    self._handle(
                        psycopg.Notify(
                            notify.relname.decode(), notify.extra.decode(), notify.be_pid
                        )
                    )

    def _resync(self) -> None:
        """Announce the current revision of every followed stream (after a (re)connect)."""
        try:
            names = list(self._streams())
        except Exception:
            log.exception("listener on %r: streams() failed", self.channel)
            return
        for stream_id in names:
            try:
                rev = self._revision_of(stream_id)
            except ClientClosed:
                return  # the storage is closing
            except RStreamError as exc:  # unreachable again: reconnect and resync later
                raise psycopg.OperationalError(f"cannot read revisions: {exc}") from exc
            if rev is not None:
                self._call(stream_id, rev, 0)

    def _handle(self, notify: psycopg.Notify) -> None:
        self.received += 1
        change = parse_payload(notify.payload)
        if change is None:
            log.warning("listener on %r: ignoring a malformed notification", self.channel)
            return
        stream_id, rev, nbytes, origin = change
        if self._origin is not None and origin == self._origin:
            return  # a write of our own storage: the server has notified it already
        self._call(stream_id, rev, nbytes)

    def _call(self, stream_id: str, rev: int, nbytes: int) -> None:
        try:
            self._on_change(stream_id, rev, nbytes)
        except Exception:
            log.exception("listener on %r: on_change(%r, %d) failed", self.channel, stream_id, rev)


def parse_payload(payload: str) -> tuple[str, int, int, object] | None:
    """``(stream_id, rev, nbytes, origin)`` of a notification's payload, or None
    when it is not what a storage sends. Never raises."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    stream_id, rev, nbytes = message.get("stream"), message.get("rev"), message.get("bytes", 0)
    if not isinstance(stream_id, str) or type(rev) is not int or type(nbytes) is not int:
        return None
    return stream_id, rev, nbytes, message.get("origin")
