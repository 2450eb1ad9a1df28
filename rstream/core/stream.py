"""The writer: turn a sequence of states into snapshots, mutations and amends.

``Stream(log, RateConfig(...), clock=...)`` follows the state-stream rules to
keep a log small while the state changes often:

1. the first entry of a log is a snapshot;
2. a write more than ``keyframe_frequency`` after the last snapshot is a
   snapshot (even if the state did not change), so a state never needs more
   than one window of mutations to rebuild;
3. otherwise an unchanged state writes nothing;
4. otherwise a write less than ``change_frequency`` after the last entry, when
   that entry is a mutation, *amends* it: the mutation is replaced by one from
   the state before it to the new state, keeping its timestamp;
5. otherwise a new mutation is appended.

A write must be strictly after the last change: the newest entry of the log
and the last write of this Stream that changed it (an amend keeps the older
timestamp but counts as a change at the time written). Without a timestamp the
clock's time is used, moved to one microsecond after the last change if the
clock is behind, so clock skew never turns a plain write into an error.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rstream.core.cursor import Cursor, CursorKind
from rstream.core.entry import Entry, EntryKind
from rstream.core.jsontype import MAX_DEPTH, check_json, json_equal
from rstream.core.log import Log
from rstream.core.mutation import MAX_MUTATION_DEPTH, apply_mutation, build_mutation, copy_json
from rstream.core.timestamps import TimeLike, format_rfc3339, from_micros, to_micros
from rstream.errors import ConfigError, MutationError, OutOfOrder

__all__ = ["MAX_RATE_MS", "Clock", "RateConfig", "Stream", "WriteAction", "decide"]

State = dict[str, Any]
Clock = Callable[[], "int | datetime"]
"""A clock returns the time now as epoch microseconds (int) or an aware datetime."""

_ONE_MS = timedelta(milliseconds=1)
_ONE_US = timedelta(microseconds=1)

MAX_RATE_MS = 10**15
"""The longest ``keyframe_frequency`` or ``change_frequency``, in milliseconds
(about 31,700 years): as microseconds it still fits the 64-bit integers storage keeps."""
_MAX_RATE = timedelta(milliseconds=MAX_RATE_MS)


class WriteAction(enum.Enum):
    """What a write did to the log (``Stream.last_action``)."""

    NONE = "none"  # nothing changed; nothing written
    SNAPSHOT = "snapshot"  # a snapshot was appended
    MUTATION = "mutation"  # a mutation was appended
    AMEND = "amend"  # the last mutation was replaced (same timestamp)


@dataclass(frozen=True)
class RateConfig:
    """How often a :class:`Stream` writes snapshots and new mutations.

    ``keyframe_frequency``: a write more than this after the last snapshot is a
    snapshot (default 60 s). ``change_frequency``: a write less than this after
    the last mutation amends it instead of appending another (default 1 s;
    ``timedelta(0)`` turns amending off). Both are timedeltas from 0 to
    :data:`MAX_RATE_MS` milliseconds; anything else raises
    :class:`~rstream.ConfigError`.

    ``retention``: how long the server keeps entries (``None``, the default:
    for ever, or the server's default retention). The server deletes whole
    windows that ended more than this before now, never the newest snapshot
    or the live window; the writer itself ignores it. Same range as the rates.
    """

    keyframe_frequency: timedelta = timedelta(seconds=60)
    change_frequency: timedelta = timedelta(seconds=1)
    retention: timedelta | None = None

    def __post_init__(self) -> None:
        for name in ("keyframe_frequency", "change_frequency", "retention"):
            value = getattr(self, name)
            if value is None and name == "retention":
                continue
            if not isinstance(value, timedelta):
                raise TypeError(f"{name} must be a timedelta, not {type(value).__name__}")
            if value < timedelta(0):
                raise ConfigError(f"{name} must not be negative, got {value}")
            if value > _MAX_RATE:
                raise ConfigError(f"{name} must be at most {MAX_RATE_MS} ms, got {value}")

    @property
    def keyframe_micros(self) -> int:
        return self.keyframe_frequency // _ONE_US

    @property
    def change_micros(self) -> int:
        return self.change_frequency // _ONE_US

    @property
    def retention_micros(self) -> int | None:
        return None if self.retention is None else self.retention // _ONE_US

    def retention_json(self) -> int | float | None:
        """``retention`` as the protocol sends it: milliseconds, or None."""
        return None if self.retention is None else _to_ms(self.retention)

    @staticmethod
    def retention_from_json(value: object) -> timedelta | None:
        """Read :meth:`retention_json`'s form: milliseconds from 0 to
        :data:`MAX_RATE_MS`, or None; :class:`~rstream.ConfigError` otherwise."""
        return None if value is None else _ms_field("retention", value)

    def to_json(self) -> dict[str, int | float]:
        """The state-stream Config form, in milliseconds.

        ``{"keyframe_frequency": 60000, "change_frequency": 1000}``; a duration
        that is not a whole number of milliseconds is written as a float.
        """
        return {
            "keyframe_frequency": _to_ms(self.keyframe_frequency),
            "change_frequency": _to_ms(self.change_frequency),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RateConfig:
        """Read :meth:`to_json`'s form; a missing field keeps its default.

        Raises :class:`~rstream.ConfigError` (a ``ValueError``) for anything
        but a number of milliseconds from 0 to :data:`MAX_RATE_MS`.
        """
        if not isinstance(obj, Mapping):
            raise ConfigError(f"rate config must be a JSON object, not {type(obj).__name__}")
        fields: dict[str, timedelta] = {}
        for name in ("keyframe_frequency", "change_frequency"):
            if name in obj:
                fields[name] = _ms_field(name, obj[name])
        return cls(**fields)


def _ms_field(name: str, value: object) -> timedelta:
    """A JSON number of milliseconds from 0 to :data:`MAX_RATE_MS` as a timedelta."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of milliseconds, not {value!r}")
    # Compared as the number it is: a float or int past the range never
    # reaches timedelta, whose own overflow message speaks of days.
    if not 0 <= value <= MAX_RATE_MS:
        raise ConfigError(
            f"{name} must be a number of milliseconds from 0 to {MAX_RATE_MS}, not {value!r}"
        )
    return timedelta(milliseconds=value)


def _to_ms(value: timedelta) -> int | float:
    whole, rest = divmod(value, _ONE_MS)
    return whole if not rest else value / _ONE_MS


def decide(
    rate: RateConfig,
    *,
    when: int,
    last_micros: int | None,
    last_is_mutation: bool,
    snapshot_micros: int | None,
    changed: Callable[[], bool],
) -> WriteAction:
    """The state-stream rules: what a write at ``when`` (epoch micros) does.

    ``last_micros``/``last_is_mutation`` describe the newest entry (None for an
    empty log), ``snapshot_micros`` the newest snapshot; ``changed`` says
    whether the state differs from the newest (only called when it matters).
    The caller has checked that ``when`` is after the last change.
    """
    if last_micros is None or snapshot_micros is None:
        return WriteAction.SNAPSHOT
    if when - snapshot_micros > rate.keyframe_micros:
        return WriteAction.SNAPSHOT
    if not changed():
        return WriteAction.NONE
    if last_is_mutation and when - last_micros < rate.change_micros:
        return WriteAction.AMEND
    return WriteAction.MUTATION


def _wall_clock() -> int:
    return time.time_ns() // 1000


class Stream:
    """Writes states to a :class:`~rstream.core.log.Log` by the state-stream rules.

    ``Stream(log, rate=RateConfig(), *, clock=None)``. Over a log that already
    has entries (after a restart), the Stream places its write cursor at the
    newest state from the newest snapshot and the mutations after it.

    One lock serialises writes, so threads may share a Stream. Before each
    write the Stream compares the log's revision with its own; if another
    writer changed the log, it catches up before deciding.

    After each write, :attr:`last_action` says what it did
    (:class:`WriteAction`) and :attr:`last_write` is the entry written, if any.
    """

    def __init__(self, log: Log, rate: RateConfig | None = None, *, clock: Clock | None = None):
        self.log = log
        self.rate = RateConfig() if rate is None else rate
        if not isinstance(self.rate, RateConfig):
            raise TypeError(f"rate must be a RateConfig, not {type(self.rate).__name__}")
        self._clock: Clock = _wall_clock if clock is None else clock
        self._lock = threading.Lock()
        self._cursor = Cursor(log, CursorKind.WRITE)
        self._last_change: int | None = None  # time of this Stream's last changing write
        self.last_action = WriteAction.NONE
        self.last_write: Entry | None = None

    def __repr__(self) -> str:
        return f"<Stream at {self.timestamp} rate={self.rate}>"

    @property
    def state(self) -> State | None:
        """A copy of the newest state (yours to change); None while the log is empty."""
        with self._lock:
            self._cursor.advance()
            state = self._cursor.state
        return None if state is None else copy_json(state)

    @property
    def timestamp(self) -> datetime | None:
        """The time of the newest entry; None while the log is empty."""
        with self._lock:
            self._cursor.advance()
            return self._cursor.timestamp

    def write_state(
        self, state: Mapping[str, Any], timestamp: TimeLike | None = None, *, checked: bool = False
    ) -> Entry | None:
        """Write the whole state at ``timestamp`` (default: the clock's now).

        Returns the entry written (with its rev; for an amend, the replacing
        mutation with the older timestamp) or None when nothing changed, type
        for type (:func:`~rstream.core.jsontype.json_equal`: ``True`` after
        ``1`` is a change). ``state`` is copied, so the caller may keep
        changing its dict.

        Raises :class:`~rstream.OutOfOrder` if ``timestamp`` is not after the
        last change, and :class:`~rstream.InvalidJSON` (a ``ValueError``; its
        subclass :class:`~rstream.InvalidJSONType` is also a ``TypeError``)
        naming the path when the state is not JSON a stream can hold (see
        :func:`~rstream.core.jsontype.check_json`); nothing is written then.
        ``checked=True`` skips that check: the caller ran it on ``state``.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"a state must be a JSON object (dict), not {type(state).__name__}")
        new: State = state if type(state) is dict else dict(state)
        if not checked:
            check_json(new)
        given = None if timestamp is None else to_micros(timestamp)
        with self._lock:
            cursor = self._cursor
            cursor.advance()
            when = self._when(given)
            current = cursor.state
            action = decide(
                self.rate,
                when=when,
                last_micros=cursor.micros,
                last_is_mutation=cursor.at_mutation,
                snapshot_micros=cursor.snapshot_micros,
                changed=lambda: not json_equal(new, current),
            )
            if action is WriteAction.NONE:
                self.last_action, self.last_write = action, None
                return None
            new = copy_json(new)  # only now: an unchanged state is not kept
            if action is WriteAction.SNAPSHOT:
                stored = self.log.append(Entry.from_micros(when, EntryKind.SNAPSHOT, new))
            elif action is WriteAction.AMEND:
                base, at = cursor.base, cursor.micros
                assert base is not None
                assert at is not None
                stored = self.log.amend(
                    Entry.from_micros(at, EntryKind.MUTATION, build_mutation(base, new))
                )
            else:
                assert current is not None
                mutation = build_mutation(current, new)
                stored = self.log.append(Entry.from_micros(when, EntryKind.MUTATION, mutation))
            cursor.wrote(stored, new)
            self._last_change = when
            self.last_action, self.last_write = action, stored
            return stored

    def write_entry(self, entry: Entry) -> Entry:
        """Append a raw entry (import, replication); returns it with its rev.

        A mutation must apply to the newest state: otherwise
        :class:`~rstream.MutationError` is raised and nothing is written. The
        entry must be after the last change (:class:`~rstream.OutOfOrder`).
        A snapshot, and the state a mutation leads to, must pass
        :func:`~rstream.core.jsontype.check_json`, and a mutation must be JSON
        nested at most :data:`~rstream.core.mutation.MAX_MUTATION_DEPTH` deep:
        otherwise :class:`~rstream.InvalidJSON` names the path and nothing is
        written.
        """
        if not isinstance(entry, Entry):
            raise TypeError(f"write_entry takes an Entry, not {type(entry).__name__}")
        is_mutation = entry.kind is EntryKind.MUTATION
        check_json(entry.data, max_depth=MAX_MUTATION_DEPTH if is_mutation else MAX_DEPTH)
        data: State = copy_json(entry.data)
        with self._lock:
            cursor = self._cursor
            cursor.advance()
            self._when(entry.micros)
            if is_mutation:
                if cursor.state is None:
                    raise MutationError("the first entry of a stream must be a snapshot")
                new = apply_mutation(cursor.state, data)
                check_json(new)
                action = WriteAction.MUTATION
            else:
                new, action = data, WriteAction.SNAPSHOT
            stored = self.log.append(Entry.from_micros(entry.micros, entry.kind, data))
            cursor.wrote(stored, new)
            self._last_change = entry.micros
            self.last_action, self.last_write = action, stored
            return stored

    def _when(self, given: int | None) -> int:
        """The time of a write: ``given``, checked, or the clock's, moved after the last change."""
        last = self._cursor.micros
        if self._last_change is not None and (last is None or self._last_change > last):
            last = self._last_change
        if given is None:
            now = self._clock()
            if isinstance(now, datetime):
                now = to_micros(now)
            elif type(now) is not int:
                raise TypeError(
                    f"the clock must return epoch microseconds (int) or an aware datetime, "
                    f"not {type(now).__name__}"
                )
            return now if last is None or now > last else last + 1
        if last is not None and given <= last:
            raise OutOfOrder(
                f"a write at {format_rfc3339(given)} is not after the last change "
                f"({format_rfc3339(last)})",
                last=from_micros(last),
                given=from_micros(given),
            )
        return given
