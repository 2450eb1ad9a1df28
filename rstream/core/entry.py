"""Entries: the snapshots and mutations a state stream is made of."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NoReturn

from rstream.core.jsontype import json_equal
from rstream.core.timestamps import (
    TimeLike,
    format_rfc3339,
    from_micros,
    to_micros,
)
from rstream.errors import EntryFormatError

__all__ = ["Entry", "EntryKind"]


class EntryKind(enum.IntEnum):
    """What an entry holds: the whole state, or what changed."""

    SNAPSHOT = 0
    MUTATION = 1

    @classmethod
    def parse(cls, value: object) -> EntryKind:
        """Read ``0``/``1`` (the Go library's form) or ``"snapshot"``/``"mutation"``."""
        if type(value) is int and value in (0, 1):
            return _KINDS[value]
        if isinstance(value, str):
            kind = _KIND_NAMES.get(value.lower())
            if kind is not None:
                return kind
        if isinstance(value, EntryKind):
            return value
        raise EntryFormatError(f"entry type must be 0, 1, 'snapshot' or 'mutation', not {value!r}")


_KINDS = (EntryKind.SNAPSHOT, EntryKind.MUTATION)
_KIND_NAMES = {"snapshot": EntryKind.SNAPSHOT, "mutation": EntryKind.MUTATION}


class Entry:
    """One entry of a state stream: a snapshot or a mutation at a timestamp.

    ``Entry(timestamp, kind, data)``: ``timestamp`` is an aware datetime or epoch
    seconds, ``kind`` an :class:`EntryKind`, ``data`` the state (snapshot) or the
    mutation. ``rev`` is the log revision at which the entry was last written
    (``None`` until a log stores it); it is not part of equality, which
    compares the data as JSON, type for type (``True`` is not ``1``).

    Entries are immutable; ``micros`` is the exact timestamp as integer epoch
    microseconds, which is what logs order by.
    """

    __slots__ = ("data", "kind", "micros", "rev")

    micros: int
    kind: EntryKind
    data: dict[str, Any]
    rev: int | None

    def __init__(
        self,
        timestamp: TimeLike,
        kind: EntryKind | int | str,
        data: Mapping[str, Any],
        rev: int | None = None,
    ) -> None:
        if not isinstance(data, Mapping):
            raise TypeError(f"entry data must be a JSON object (dict), not {type(data).__name__}")
        _set(self, "micros", to_micros(timestamp))
        _set(self, "kind", EntryKind.parse(kind))
        _set(self, "data", data if type(data) is dict else dict(data))
        _set(self, "rev", rev)

    @classmethod
    def from_micros(
        cls, micros: int, kind: EntryKind, data: dict[str, Any], rev: int | None = None
    ) -> Entry:
        """Build an entry from already-validated parts (no checks; for storage code)."""
        self = object.__new__(cls)
        _set(self, "micros", micros)
        _set(self, "kind", kind)
        _set(self, "data", data)
        _set(self, "rev", rev)
        return self

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Entry is immutable; use entry.replace({name}=...)")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Entry is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Entry.from_micros, (self.micros, self.kind, self.data, self.rev))

    @property
    def timestamp(self) -> datetime:
        """The entry's time as an aware UTC datetime."""
        return from_micros(self.micros)

    @property
    def is_snapshot(self) -> bool:
        return self.kind is EntryKind.SNAPSHOT

    def replace(
        self,
        *,
        micros: int | None = None,
        kind: EntryKind | None = None,
        data: dict[str, Any] | None = None,
        rev: int | None = None,
    ) -> Entry:
        """A copy with some parts replaced."""
        return Entry.from_micros(
            self.micros if micros is None else micros,
            self.kind if kind is None else kind,
            self.data if data is None else data,
            self.rev if rev is None else rev,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return (
            self.micros == other.micros
            and self.kind is other.kind
            and json_equal(self.data, other.data)
        )

    __hash__ = None  # type: ignore[assignment]  # data is a mutable dict

    def __repr__(self) -> str:
        rev = "" if self.rev is None else f", rev={self.rev}"
        return f"Entry({format_rfc3339(self.micros)!r}, {self.kind.name}, {self.data!r}{rev})"

    # -- JSON form -------------------------------------------------------------

    def to_json(self, *, with_rev: bool = False) -> dict[str, Any]:
        """The JSON form: ``{"timestamp": RFC 3339 UTC, "type": 0|1, "data": {...}}``.

        With ``with_rev`` (the wire form of the server) ``"rev"`` is added
        (see :mod:`rstream.core.wire`).
        """
        from rstream.core.wire import entry_json

        return entry_json(self, with_rev=with_rev)

    @classmethod
    def from_json(cls, obj: object, *, where: str = "entry") -> Entry:
        """Read the JSON form (as parsed by :func:`json.loads`; see :mod:`rstream.core.wire`).

        Raises :class:`~rstream.EntryFormatError` naming the field and ``where``
        (for example ``"line 12"``) when anything is malformed.
        """
        from rstream.core.wire import decode_entry

        return decode_entry(obj, where=where)


_set = object.__setattr__
"""Sets a slot: Entry.__setattr__ refuses every assignment."""
