"""rstream's PostgreSQL URLs: the libpq URL plus rstream's own parameters.

Pure string handling, no driver: :func:`parse_postgres_url` splits a URL,
:func:`check_schema` vets a schema name, :func:`redact` hides a password for
messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from rstream.errors import ConfigError

__all__ = ["PostgresURL", "check_schema", "parse_postgres_url", "redact"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")


@dataclass(frozen=True)
class PostgresURL:
    """An rstream PostgreSQL URL, split by :func:`parse_postgres_url`."""

    conninfo: str  # the libpq URL, without rstream's own parameters
    schema: str | None = None
    pool_max: int | None = None
    pool_timeout: float | None = None


def parse_postgres_url(url: str) -> PostgresURL:
    """Split an rstream PostgreSQL URL into the libpq URL and rstream's options.

    rstream reads and removes ``schema`` (where its tables live), ``pool_max``
    (connections per server process, default 10) and ``pool_timeout`` (seconds
    to wait for a free one before answering 503, default 10); every other query
    parameter is libpq's (``sslmode``, ``connect_timeout``, ...). So
    ``postgresql://u@db/rs?schema=rs&pool_max=20&sslmode=require`` connects to
    ``postgresql://u@db/rs?sslmode=require``. ``postgres://`` and
    ``postgresql+psycopg://`` are accepted as well. Raises
    :class:`~rstream.ConfigError` for another scheme or a bad option value.
    """
    parts = urlsplit(url)
    # "postgresql+psycopg://" (SQLAlchemy style) names the same database.
    if parts.scheme.lower().partition("+")[0] not in ("postgresql", "postgres"):
        raise ConfigError(f"{redact(url)!r} is not a postgresql:// URL")
    schema: str | None = None
    pool_max: int | None = None
    pool_timeout: float | None = None
    query: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            check_schema(value)
            schema = value
        elif key == "pool_max":
            pool_max = _pool_max(value)
        elif key == "pool_timeout":
            pool_timeout = _pool_timeout(value)
        else:
            query.append((key, value))
    libpq = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))
    return PostgresURL(libpq, schema, pool_max, pool_timeout)


def _pool_max(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise ConfigError(f"pool_max must be an integer from 1 to 1000, not {value!r}")
    return int(value)


def _pool_timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise ConfigError(f"pool_timeout must be seconds in (0, 3600], not {value!r}")
    return seconds


def check_schema(schema: str) -> None:
    """Raise :class:`~rstream.ConfigError` unless ``schema`` is a name rstream uses
    unquoted-safe: 1 to 63 characters from a-z, 0-9 and _, not starting with a digit."""
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(
            f"PostgreSQL schema name {schema!r} is not allowed: use 1 to 63 characters "
            "from a-z, 0-9 and _, not starting with a digit"
        )


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
