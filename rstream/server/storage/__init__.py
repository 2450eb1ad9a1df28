"""Server storage: where a server keeps its streams.

Open a backend from a URL with :func:`open_storage`:

- ``memory://``: :class:`MemoryStorage`, nothing survives the process;
- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
  (SQLAlchemy style): :class:`SQLiteStorage`;
- ``postgresql://user@host:5432/db?schema=name`` (libpq URL; ``schema`` is
  optional): :class:`~rstream.server.storage.postgres.PostgresStorage`, for
  several server replicas on one database (``docs/deploy.rst``).

See ``docs/storage.rst`` for the schema and what each backend guarantees.
"""

from __future__ import annotations

from urllib.parse import unquote

from rstream.errors import RStreamError
from rstream.server.storage.base import (
    Storage,
    StreamInfo,
    StreamLog,
    is_valid_stream_id,
)
from rstream.server.storage.memory import MemoryStorage, MemoryStreamLog
from rstream.server.storage.pg_url import redact
from rstream.server.storage.sqlite import SQLiteLog, SQLiteStorage

__all__ = [
    "MemoryStorage",
    "MemoryStreamLog",
    "SQLiteLog",
    "SQLiteStorage",
    "Storage",
    "StreamInfo",
    "StreamLog",
    "is_valid_stream_id",
    "open_storage",
    "sqlite_path",
]


def open_storage(url: str) -> Storage:
    """Open the storage a URL names (see the module docstring for the forms).

    Raises :class:`~rstream.RStreamError` for a URL it cannot open, naming the
    forms it can.
    """
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise RStreamError(f"storage URL {url!r} has no scheme; {_FORMS}")
    if scheme == "memory":
        if url.partition("://")[2] not in ("", "/"):
            raise RStreamError(f"storage URL {url!r}: memory:// takes no path")
        return MemoryStorage()
    if scheme == "sqlite":
        return SQLiteStorage(sqlite_path(url))
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        try:
            from rstream.server.storage.postgres import PostgresStorage
        except ImportError as exc:  # psycopg is the optional "postgres" extra
            raise RStreamError(
                f"storage URL {redact(url)!r}: PostgreSQL needs psycopg and psycopg-pool "
                f"({exc}); pip install 'remote-state-stream[postgres]'"
            ) from None
        return PostgresStorage(url)
    raise RStreamError(f"storage URL {redact(url)!r}: unknown scheme {scheme!r}; {_FORMS}")


_FORMS = (
    "expected memory://, sqlite:///relative.db, sqlite:////absolute/path.db "
    "or postgresql://user@host/db"
)


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///...`` URL (SQLAlchemy style: three slashes
    and a relative path, or four slashes and an absolute one)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "sqlite":
        raise RStreamError(f"{url!r} is not a sqlite:// URL")
    if "?" in rest or "#" in rest:
        raise RStreamError(f"storage URL {url!r}: sqlite:// URLs take no query or fragment")
    if not rest.startswith("/") or rest == "/":
        raise RStreamError(
            f"storage URL {url!r}: expected sqlite:///relative.db or "
            "sqlite:////absolute/path.db (in-memory SQLite is memory://)"
        )
    return unquote(rest[1:])
