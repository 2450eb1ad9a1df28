"""Bearer-token authorization: an optional read token and an optional write token.

Without a read token reads are open; with one, reads need the read or the write
token. With a write token, writes need it; with only a read token, writes need
the read token (a server that guards reads never leaves writes open). Tokens
are compared with :func:`hmac.compare_digest` and never logged.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import Request

from rstream.errors import ConfigError
from rstream.server.errors import fail

__all__ = ["Tokens", "read_token_file"]


@dataclass(frozen=True)
class Tokens:
    """The server's tokens; ``None`` leaves that kind of access open."""

    read: str | None = field(default=None, repr=False)
    write: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("read", "write"):
            value = getattr(self, name)
            if value is not None and (not value or value != value.strip()):
                raise ConfigError(f"the {name} token must be non-empty without surrounding spaces")

    def check_read(self, request: Request) -> None:
        """Raise 401 unless the request may read."""
        if self.read is None:
            return
        given = _bearer(request)
        if given is None or not (_same(given, self.read) or _same(given, self.write)):
            fail(401, "unauthorized", "a read or write token is required (Authorization: Bearer)")

    def describe(self) -> str:
        """Which operations are open and which need which token, in one line (no secrets)."""
        reads = "open to anyone" if self.read is None else "need the read or write token"
        if self.write is not None:
            writes = "need the write token"
        elif self.read is not None:
            writes = "need the read token (there is no write token)"
        else:
            writes = "open to anyone"
        return f"reads {reads}; writes {writes}"

    def check_write(self, request: Request) -> None:
        """Raise 401 (no or unknown token) or 403 (a read token) unless the request may write.

        Without a write token, a server with a read token takes it for writes too.
        """
        if self.write is None:
            if self.read is not None and not _same(_bearer(request) or "", self.read):
                fail(401, "unauthorized", "a token is required (Authorization: Bearer)")
            return
        given = _bearer(request)
        if given is not None and _same(given, self.write):
            return
        if given is not None and _same(given, self.read):
            fail(403, "forbidden", "this token may read but not write")
        fail(401, "unauthorized", "a write token is required (Authorization: Bearer)")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def _same(given: str, expected: str | None) -> bool:
    if expected is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def read_token_file(path: str | Path) -> str:
    """Read a token from a file (first line, surrounding whitespace stripped)."""
    text = Path(path).read_text(encoding="utf-8")
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ConfigError(f"token file {str(path)!r} is empty")
    return token
