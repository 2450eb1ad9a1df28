"""Dotted field paths into JSON states: ``sensors.temperature.motor``, ``tasks.0.progress``.

Pure helpers shared by ``rstream plot`` and the live views.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MISSING", "get_path", "numeric_value", "parse_path"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Returned by :func:`get_path` when the path does not exist in the state."""


def parse_path(path: str) -> tuple[str, ...]:
    """Split ``a.b.0.c`` into its parts; raises :class:`ValueError` on an empty part."""
    parts = tuple(path.split("."))
    if not path or any(part == "" for part in parts):
        raise ValueError(
            f"{path!r} is not a field path: use dotted names like 'battery', "
            "'sensors.temperature.motor' or 'tasks.0.progress'"
        )
    return parts


def get_path(state: Any, parts: tuple[str, ...]) -> Any:
    """The value at ``parts`` in ``state``, or :data:`MISSING`.

    A part indexes an object by key, or an array by a (non-negative or
    negative) integer.
    """
    value = state
    for part in parts:
        if isinstance(value, dict):
            if part not in value:
                return MISSING
            value = value[part]
        elif isinstance(value, list):
            try:
                index = int(part)
            except ValueError:
                return MISSING
            if not -len(value) <= index < len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value


def numeric_value(value: Any) -> float | None:
    """``value`` as a float to plot: numbers and booleans (as 0/1); ``None`` otherwise."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    return None
