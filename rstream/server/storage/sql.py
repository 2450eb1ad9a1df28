"""Every SQL statement of the SQL backends, in one place.

The statements are written once, with ``?`` placeholders and a few
``{name}`` slots for what the dialects spell differently, and rendered for a
:class:`Dialect` by :func:`statements`. SQLite (``sqlite3``, qmark style) and
PostgreSQL (psycopg, ``%s`` style) agree on everything else used here:
``ON CONFLICT ... DO NOTHING``, ``LIMIT``, correlated ``MIN``/``MAX``
subqueries, ``CREATE ... IF NOT EXISTS``.

Schema (version :data:`SCHEMA_VERSION`), one row per entry::

    rstream_schema (version)                                   -- one row
    rstream_store (k = 1, id)                  -- one row: the store id, random
    streams (id PK, keyframe_us, change_us, revision,
             retention_us, compacted_us, compacted_rev)
    entries (stream_id -> streams.id, ts_us, kind, data, rev)
        PRIMARY KEY (stream_id, ts_us)          -- range, first/last, order
        INDEX entries_kind (stream_id, kind, ts_us)   -- snapshot before/after
        UNIQUE INDEX entries_rev (stream_id, rev)     -- changes since; no duplicate revs

``streams.revision`` is the stream's revision; every write updates it in the
same transaction as the entry rows, after locking the stream's row
(``BEGIN IMMEDIATE`` in SQLite, ``SELECT ... FOR UPDATE`` in PostgreSQL), so
concurrent writers (threads or processes) serialise and revisions never repeat.
``retention_us`` is the stream's retention (NULL: none set);
``compacted_us`` the edge of the last compaction (entries before it were
deleted; NULL: none ever were) and ``compacted_rev`` the newest revision it
deleted. Schema 2 added the three.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["POSTGRES", "SCHEMA_VERSION", "SQLITE", "Dialect", "Statements", "statements"]

#: The schema version this code writes; stored in ``rstream_schema``.
SCHEMA_VERSION = 2


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one SQL dialect spells differently."""

    name: str
    placeholder: str  # the DB-API parameter marker that replaces "?"
    int64: str  # a 64-bit integer column type
    json: str  # the column type of entry data (JSON text)
    begin_write: str  # starts a transaction that will write
    for_update: str  # appended to the SELECT that locks a stream's row


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    int64="INTEGER",
    json="TEXT",
    # IMMEDIATE takes the database's write lock at BEGIN, so the revision read
    # inside the transaction cannot change before COMMIT (two processes on one
    # file serialise here; busy_timeout makes the second wait).
    begin_write="BEGIN IMMEDIATE",
    for_update="",
)

POSTGRES = Dialect(
    name="postgresql",
    placeholder="%s",
    int64="BIGINT",
    # jsonb would reorder keys and drop duplicates; entries come back exactly
    # as written only from text.
    json="TEXT",
    begin_write="BEGIN",
    for_update=" FOR UPDATE",
)


@dataclass(frozen=True, slots=True)
class Statements:
    """The SQL of the storage backends, rendered for one dialect."""

    dialect: Dialect
    schema: tuple[str, ...]
    migrations: tuple[tuple[str, ...], ...]  # migrations[v - 1] takes version v to v + 1
    create_schema_table: str
    schema_version: str
    insert_schema_version: str
    update_schema_version: str

    list_streams: str
    stream_info: str
    insert_stream: str
    update_stream_rate: str
    stream_revision: str
    lock_stream: str
    set_revision: str

    first_entry: str
    last_entry: str
    last_entry_key: str
    insert_entry: str
    amend_entry: str
    snapshot_before: str
    latest_snapshot: str
    entry_after: str
    entry_after_kind: str
    range: str
    range_limit: str
    count_range: str
    changes_since: str
    nth_entry_key: str
    last_rev_before: str
    delete_before: str
    set_compacted: str
    create_store_table: str
    insert_store_id: str
    store_id: str


_COLUMNS = "ts_us, kind, data, rev"  # the order rows are read in everywhere

_INFO = """
SELECT s.id, s.keyframe_us, s.change_us, s.revision,
       s.retention_us, s.compacted_us, s.compacted_rev,
       (SELECT MIN(e.ts_us) FROM entries e WHERE e.stream_id = s.id),
       (SELECT MAX(e.ts_us) FROM entries e WHERE e.stream_id = s.id),
       (SELECT MAX(e.ts_us) FROM entries e WHERE e.stream_id = s.id AND e.kind = 0)
FROM streams s
"""

_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS streams (
            id TEXT PRIMARY KEY,
            keyframe_us {int64} NOT NULL,
            change_us {int64} NOT NULL,
            revision {int64} NOT NULL DEFAULT 0,
            retention_us {int64},
            compacted_us {int64},
            compacted_rev {int64}
        )""",
    """CREATE TABLE IF NOT EXISTS entries (
            stream_id TEXT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
            ts_us {int64} NOT NULL,
            kind SMALLINT NOT NULL CHECK (kind IN (0, 1)),
            data {json} NOT NULL,
            rev {int64} NOT NULL,
            PRIMARY KEY (stream_id, ts_us)
        )""",
    "CREATE INDEX IF NOT EXISTS entries_kind ON entries (stream_id, kind, ts_us)",
    "CREATE UNIQUE INDEX IF NOT EXISTS entries_rev ON entries (stream_id, rev)",
)

# _MIGRATIONS[v - 1] takes a database from schema version v to v + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "ALTER TABLE streams ADD COLUMN retention_us {int64}",
        "ALTER TABLE streams ADD COLUMN compacted_us {int64}",
        "ALTER TABLE streams ADD COLUMN compacted_rev {int64}",
    ),
)

_QUERIES: dict[str, str] = {
    "create_schema_table": "CREATE TABLE IF NOT EXISTS rstream_schema (version {int64} NOT NULL)",
    "schema_version": "SELECT version FROM rstream_schema",
    "insert_schema_version": "INSERT INTO rstream_schema (version) VALUES (?)",
    "update_schema_version": "UPDATE rstream_schema SET version = ?",
    "list_streams": _INFO + "ORDER BY s.id",
    "stream_info": _INFO + "WHERE s.id = ?",
    "insert_stream": (
        "INSERT INTO streams (id, keyframe_us, change_us, revision, retention_us) "
        "VALUES (?, ?, ?, 0, ?) ON CONFLICT (id) DO NOTHING"
    ),
    "update_stream_rate": (
        "UPDATE streams SET keyframe_us = ?, change_us = ?, retention_us = ? WHERE id = ?"
    ),
    "stream_revision": "SELECT revision FROM streams WHERE id = ?",
    "lock_stream": "SELECT revision FROM streams WHERE id = ?{for_update}",
    "set_revision": "UPDATE streams SET revision = ? WHERE id = ?",
    "first_entry": f"SELECT {_COLUMNS} FROM entries WHERE stream_id = ? ORDER BY ts_us LIMIT 1",
    "last_entry": (
        f"SELECT {_COLUMNS} FROM entries WHERE stream_id = ? ORDER BY ts_us DESC LIMIT 1"
    ),
    "last_entry_key": (
        "SELECT ts_us, kind FROM entries WHERE stream_id = ? ORDER BY ts_us DESC LIMIT 1"
    ),
    "insert_entry": (
        "INSERT INTO entries (stream_id, ts_us, kind, data, rev) VALUES (?, ?, ?, ?, ?)"
    ),
    "amend_entry": "UPDATE entries SET data = ?, rev = ? WHERE stream_id = ? AND ts_us = ?",
    "snapshot_before": (
        f"SELECT {_COLUMNS} FROM entries WHERE stream_id = ? AND kind = 0 AND ts_us <= ? "
        "ORDER BY ts_us DESC LIMIT 1"
    ),
    "latest_snapshot": (
        f"SELECT {_COLUMNS} FROM entries WHERE stream_id = ? AND kind = 0 "
        "ORDER BY ts_us DESC LIMIT 1"
    ),
    "entry_after": (
        f"SELECT {_COLUMNS} FROM entries WHERE stream_id = ? AND ts_us > ? ORDER BY ts_us LIMIT 1"
    ),
    "entry_after_kind": (
        f"SELECT {_COLUMNS} FROM entries WHERE stream_id = ? AND kind = ? AND ts_us > ? "
        "ORDER BY ts_us LIMIT 1"
    ),
    "range": (
        f"SELECT {_COLUMNS} FROM entries WHERE stream_id = ? AND ts_us >= ? AND ts_us < ? "
        "ORDER BY ts_us"
    ),
    "range_limit": (
        f"SELECT {_COLUMNS} FROM entries WHERE stream_id = ? AND ts_us >= ? AND ts_us < ? "
        "ORDER BY ts_us LIMIT ?"
    ),
    "count_range": (
        "SELECT COUNT(*) FROM entries WHERE stream_id = ? AND ts_us >= ? AND ts_us < ?"
    ),
    "changes_since": (
        f"SELECT {_COLUMNS} FROM entries WHERE stream_id = ? AND rev > ? ORDER BY rev"
    ),
    "nth_entry_key": (
        "SELECT ts_us FROM entries WHERE stream_id = ? ORDER BY ts_us LIMIT 1 OFFSET ?"
    ),
    # Revisions grow along the log (only the newest entry is ever amended).
    "last_rev_before": (
        "SELECT rev FROM entries WHERE stream_id = ? AND ts_us < ? ORDER BY ts_us DESC LIMIT 1"
    ),
    "delete_before": "DELETE FROM entries WHERE stream_id = ? AND ts_us < ?",
    "set_compacted": "UPDATE streams SET compacted_us = ?, compacted_rev = ? WHERE id = ?",
    # Created with the store (and added to older ones) outside the versioned
    # schema: one row, written once, never changed.
    "create_store_table": (
        "CREATE TABLE IF NOT EXISTS rstream_store "
        "(k SMALLINT PRIMARY KEY CHECK (k = 1), id TEXT NOT NULL)"
    ),
    "insert_store_id": "INSERT INTO rstream_store (k, id) VALUES (1, ?) ON CONFLICT (k) DO NOTHING",
    "store_id": "SELECT id FROM rstream_store WHERE k = 1",
}


def _render(sql: str, dialect: Dialect) -> str:
    # Neither "%" nor a literal "?" appears in the templates, so the swap is safe
    # for psycopg (where "%" would need escaping).
    assert "%" not in sql
    text = sql.format(int64=dialect.int64, json=dialect.json, for_update=dialect.for_update)
    return text.replace("?", dialect.placeholder)


def statements(dialect: Dialect) -> Statements:
    """Every statement, rendered for ``dialect``."""
    queries = {name: _render(sql, dialect) for name, sql in _QUERIES.items()}
    return Statements(
        dialect=dialect,
        schema=tuple(_render(sql, dialect) for sql in _SCHEMA),
        migrations=tuple(tuple(_render(sql, dialect) for sql in step) for step in _MIGRATIONS),
        **queries,
    )
