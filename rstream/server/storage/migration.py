"""Schema migration of the SQL backends: create the schema of
:mod:`rstream.server.storage.sql` in a new database, or bring an older one up
to :data:`~rstream.server.storage.sql.SCHEMA_VERSION`, and give the store its id."""

from __future__ import annotations

import logging

from rstream.errors import RStreamError
from rstream.server.storage.base import new_store_id
from rstream.server.storage.sql import SCHEMA_VERSION, Statements
from rstream.server.storage.sqlbase import Connection

__all__ = ["migrate"]

logger = logging.getLogger("rstream.server.storage")


def migrate(
    conn: Connection, sql: Statements, where: str, error: type[RStreamError] = RStreamError
) -> int | None:
    """Create the schema, or bring an older one up to date, inside the write
    transaction the caller holds; returns the version found (None: created).

    Also gives the store its id (:func:`new_store_id`) unless it has one.
    ``where`` names the database in messages ("SQLite storage '/x.db'"); a
    schema newer than this code raises ``error``.
    """
    conn.execute(sql.create_schema_table)
    row = conn.execute(sql.schema_version).fetchone()
    version = None if row is None else int(row[0])
    if version is None:
        for stmt in sql.schema:
            conn.execute(stmt)
        conn.execute(sql.insert_schema_version, (SCHEMA_VERSION,))
    elif version > SCHEMA_VERSION:
        raise error(
            f"{where} has schema version {version}, newer than this rstream understands "
            f"({SCHEMA_VERSION}); upgrade rstream"
        )
    elif version < SCHEMA_VERSION:
        logger.info("migrating %s from schema %d to %d", where, version, SCHEMA_VERSION)
        for step in sql.migrations[version - 1 :]:
            for stmt in step:
                conn.execute(stmt)
        conn.execute(sql.update_schema_version, (SCHEMA_VERSION,))
    conn.execute(sql.create_store_table)
    conn.execute(sql.insert_store_id, (new_store_id(),))
    return version
