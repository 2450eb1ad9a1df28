"""PostgreSQL connections as the storage uses them: how they are opened (and
the schema migrated on the first), which failures may be retried, statements
sent in one round trip, and rolling back without masking the error that made
it necessary.

A failure is :class:`~rstream.StorageUnavailable` (the protocol's 503); it is
:class:`DeadConnection`, which the storage retries once on a fresh connection,
only when the connection was found closed before anything could be applied.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql as pgsql

from rstream.errors import StorageError, StorageUnavailable
from rstream.server.storage.migration import migrate
from rstream.server.storage.sql import POSTGRES, SCHEMA_VERSION, statements

__all__ = [
    "KEEPALIVE",
    "Conn",
    "DeadConnection",
    "connect_kwargs",
    "failure",
    "lock_key",
    "migrate_schema",
    "pipelined",
    "rollback",
    "rollback_on_error",
    "unavailable",
]

log = logging.getLogger("rstream.server.storage.postgres")

_T = TypeVar("_T")
Conn = psycopg.Connection[Any]

_SQL = statements(POSTGRES)
_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {}"

# Liveness of long-lived connections: the kernel notices a dead peer within
# about 20 s even when no packet arrives (a partition, a powered-off host).
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 2,
}


def connect_kwargs(conninfo: str, schema: str | None, connect_timeout: float) -> dict[str, Any]:
    """``psycopg.connect`` keywords of every connection of a storage in ``schema``
    (``application_name`` is ``rstream`` unless ``conninfo`` names one)."""
    kwargs: dict[str, Any] = {
        "autocommit": True,  # reads are single statements; writes BEGIN themselves
        "connect_timeout": max(1, round(connect_timeout)),
        **KEEPALIVE,
    }
    if "application_name" not in psycopg.conninfo.conninfo_to_dict(conninfo):
        kwargs["application_name"] = "rstream"
    if schema is not None:
        kwargs["options"] = f"-c search_path={schema}"
    return kwargs


def unavailable(exc: BaseException, what: str) -> StorageUnavailable:
    """The error of a failed operation (``what``), naming its cause."""
    return StorageUnavailable(f"PostgreSQL storage unavailable ({what}): {exc}; retry later")


class DeadConnection(StorageUnavailable):
    """A pooled connection was found closed before anything could be applied
    (after a database restart, or a terminated backend): safe to retry once
    on a fresh connection."""


def failure(conn: Conn, exc: psycopg.OperationalError, what: str) -> StorageUnavailable:
    """What a failed read or ``BEGIN`` raises: retryable when the connection is dead."""
    error = unavailable(exc, what)
    return DeadConnection(str(error)) if conn.closed else error


@contextmanager
def rollback_on_error(conn: Conn, what: str) -> Iterator[None]:
    """Roll the transaction back when the block raises; a failed connection
    becomes :class:`~rstream.StorageUnavailable` ("``what``")."""
    try:
        yield
    except psycopg.OperationalError as exc:
        rollback(conn)
        raise unavailable(exc, what) from exc
    except BaseException:
        rollback(conn)
        raise


def pipelined(conn: Conn, fn: Callable[[Conn], _T]) -> _T:
    """``fn(conn)`` in pipeline mode: its statements are sent together and the
    results awaited once, when the block ends (``fn`` must not fetch).

    A database error may surface at any statement of the block or at its end;
    either way it is raised once, as itself (psycopg would also log the
    pipeline's own "aborted" error as a warning when the block raises).
    """
    error: psycopg.Error | None = None
    try:
        with conn.pipeline():
            try:
                return fn(conn)
            except psycopg.Error as exc:
                error = exc
    except psycopg.errors.PipelineAborted:
        if error is None:
            raise
    assert error is not None
    raise error


def rollback(conn: Conn) -> None:
    """End the connection's transaction, if any; a connection that cannot is
    closed, so the pool discards it. Never raises."""
    if conn.closed:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        conn.close()


def lock_key(purpose: str, schema: str | None) -> int:
    """The advisory lock key of one ``purpose`` ("migrate", "compact") in a
    schema (a signed 64-bit int)."""
    digest = hashlib.sha256(f"rstream.{purpose}:{schema or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def migrate_schema(conn: Conn, schema: str | None, display: str) -> None:
    """Create the schema, or bring an older one up to date; one replica at a time."""
    with conn.transaction():
        # Replicas starting together take turns here; the lock ends with the
        # transaction, so a crashed migration never leaves it held.
        conn.execute(_MIGRATION_LOCK, (lock_key("migrate", schema),))
        if schema is not None:
            conn.execute(pgsql.SQL(_CREATE_SCHEMA).format(pgsql.Identifier(schema)))
        if migrate(conn, _SQL, f"PostgreSQL storage {display}", StorageError) is None:
            log.info("created the rstream schema (version %d) in %s", SCHEMA_VERSION, display)
