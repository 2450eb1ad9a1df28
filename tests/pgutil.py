"""PostgreSQL for tests: a fresh schema per test in the server named by
``RSTREAM_TEST_POSTGRES_URL``, dropped afterwards.

Without the variable, tests that need PostgreSQL are skipped with a message
naming it; with ``RSTREAM_REQUIRE_POSTGRES`` set (CI) they fail instead, so a
misconfigured CI can never pass by skipping them. Schemas are named
``rstream_test_<random>``, so tests may run repeatedly and in parallel against
one server.

A test module defines its fixture from :func:`fresh_schema` (importing the
fixtures here works too, but their names then shadow the imports)::

    @pytest.fixture
    def schema() -> Iterator[PgSchema]:
        with fresh_schema() as schema:
            yield schema
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from rstream.core.entry import Entry, EntryKind
from rstream.core.log import Log
from rstream.core.mutation import apply_mutation

if TYPE_CHECKING:
    from rstream.server.storage.postgres import PostgresLog as PostgresLogT
    from rstream.server.storage.postgres import PostgresStorage as PostgresStorageT

URL_VARIABLE = "RSTREAM_TEST_POSTGRES_URL"
REQUIRE_VARIABLE = "RSTREAM_REQUIRE_POSTGRES"

__all__ = [
    "URL_VARIABLE",
    "Backends",
    "PgSchema",
    "assert_exactly_once",
    "create_schema",
    "drop_schema",
    "fresh_schema",
    "fresh_storage",
    "held_pid",
    "pg_schema",
    "pg_storage",
    "postgres_url",
    "replay",
    "with_schema",
]


def postgres_url() -> str:
    """The test server's URL; skips the test without one (fails it in CI)."""
    url = os.environ.get(URL_VARIABLE, "").strip()
    if url:
        return url
    message = (
        f"needs PostgreSQL: set {URL_VARIABLE} (e.g. postgresql://postgres@127.0.0.1:5432/postgres)"
    )
    if os.environ.get(REQUIRE_VARIABLE, "").strip() not in ("", "0"):
        pytest.fail(f"{message}; {REQUIRE_VARIABLE} is set, so PostgreSQL tests must run")
    pytest.skip(message)


def replay(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    """The state after each entry of a log read back from the database,
    computed with the core (a mutation before any snapshot fails the test)."""
    states: list[dict[str, Any]] = []
    state: dict[str, Any] | None = None
    for entry in entries:
        if entry.kind is EntryKind.SNAPSHOT:
            state = entry.data
        else:
            assert state is not None, "a mutation before any snapshot"
            state = apply_mutation(state, entry.data)
        states.append(state)
    return states


def with_schema(url: str, schema: str) -> str:
    """``url`` with rstream's ``schema=`` query parameter set."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    query.append(("schema", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


def create_schema(url: str) -> str:
    """Create a schema with a fresh random name; returns the name."""
    import psycopg
    from psycopg import sql

    name = f"rstream_test_{secrets.token_hex(8)}"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        message = f"cannot connect to PostgreSQL at {URL_VARIABLE}={url!r}: {exc}"
        if os.environ.get(REQUIRE_VARIABLE, "").strip() not in ("", "0"):
            pytest.fail(message)
        pytest.skip(message)
    return name


def drop_schema(url: str, name: str) -> None:
    """Drop a schema made by :func:`create_schema`, with everything in it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        # A replica killed mid-transaction is cleaned up by the server within
        # moments; do not hang the suite if something still holds a lock.
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@dataclass(frozen=True)
class PgSchema:
    """A test's own schema: ``url`` is the server's URL, ``storage_url`` the
    ``postgresql://...?schema=name`` URL a storage (or ``rstream serve --db``)
    opens it with."""

    url: str
    name: str

    @property
    def storage_url(self) -> str:
        return with_schema(self.url, self.name)


@contextmanager
def fresh_schema() -> Iterator[PgSchema]:
    """A fresh schema, dropped at the end of the block (skips without a server)."""
    url = postgres_url()
    name = create_schema(url)
    try:
        yield PgSchema(url, name)
    finally:
        drop_schema(url, name)


@pytest.fixture
def pg_schema() -> Iterator[PgSchema]:
    """A fresh schema for this test, dropped afterwards."""
    with fresh_schema() as schema:
        yield schema


@pytest.fixture
def pg_storage(pg_schema: PgSchema) -> Iterator[object]:
    """A :class:`~rstream.server.storage.postgres.PostgresStorage` on a fresh schema."""
    from rstream.server.storage.postgres import PostgresStorage

    storage = PostgresStorage(pg_schema.storage_url)
    try:
        yield storage
    finally:
        storage.close()


def fresh_storage(**kwargs: object) -> PostgresStorageT:
    """A PostgresStorage in a fresh schema of its own; closing it drops the schema.

    For factories that only get to return a storage (``tests/test_storage.py``).
    """
    from rstream.server.storage.postgres import PostgresStorage

    class _SchemaStorage(PostgresStorage):
        def close(self) -> None:
            super().close()
            drop_schema(url, name)  # idempotent: IF EXISTS

    url = postgres_url()
    name = create_schema(url)
    try:
        return _SchemaStorage(with_schema(url, name), **kwargs)  # type: ignore[arg-type]
    except BaseException:
        drop_schema(url, name)
        raise


class Backends:
    """The backends of this test's storages, found by their ``application_name``."""

    def __init__(self, schema: PgSchema) -> None:
        self.schema = schema
        self.name = f"rstream_fault_{secrets.token_hex(6)}"

    @property
    def url(self) -> str:
        """The storage URL whose connections carry this test's name."""
        return f"{self.schema.storage_url}&application_name={self.name}"

    def terminate(self, *, listening: bool = False, pid: int | None = None) -> int:
        """Terminate the pool's connections (``listening``: the LISTEN ones
        instead; ``pid``: that one only); returns how many were terminated."""
        where = "application_name = %s AND (query LIKE 'LISTEN%%') = %s"
        params: list[Any] = [self.name, listening]
        if pid is not None:
            where += " AND pid = %s"
            params.append(pid)
        import psycopg

        with psycopg.connect(self.schema.url, autocommit=True) as admin:
            rows = admin.execute(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {where}", params
            ).fetchall()
        return sum(1 for (done,) in rows if done)


def held_pid(log: PostgresLogT) -> int:
    """The backend of the transaction this thread holds in ``log.write_lock()``."""
    held = log._held
    assert held is not None
    return held.conn.info.backend_pid


def assert_exactly_once(log: Log, acknowledged: list[dict[str, Any]]) -> None:
    """Every acknowledged state in the log once, in order; revisions without holes."""
    entries = log.changes_since(0)
    assert [e.rev for e in entries] == list(range(1, len(entries) + 1))
    assert replay(entries) == acknowledged
