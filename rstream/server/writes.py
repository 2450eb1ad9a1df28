"""The write routes: a stream's rate (``PUT``), a state (``POST .../state``) and
a batch of entries (``POST .../entries``).

Writes go through one :class:`~rstream.core.stream.Stream` per stream id
(created lazily), under a per-stream lock so the answer's ``action`` is the
one of this write; each runs on a worker thread from its decision to its
commit (concurrent writes of other streams share the commit: see
:mod:`rstream.server.storage.groupcommit`) and notifies the live
:class:`~rstream.server.live.Hub` before the thread lets the stream go, so
live events follow the revisions. A request is checked in full (JSON, size,
timestamps) before any of this: a state on the event loop, a batch (whose
parsing takes long enough to stall the loop) on its worker thread, before
the stream's lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rstream.core.entry import Entry, EntryKind
from rstream.core.mutation import apply_mutation
from rstream.core.stream import RateConfig, Stream
from rstream.core.timestamps import from_micros
from rstream.core.wire import encode_entry
from rstream.errors import MutationError, StreamNotFound
from rstream.server.context import AppContext, stream_id_of
from rstream.server.params import (
    RateUpdate,
    check_state_depth,
    parse_entries,
    parse_json,
    parse_rate_body,
    parse_state_write,
    state_size,
)
from rstream.server.reads import NDJSON, metadata_response
from rstream.server.storage import StreamInfo
from rstream.server.storage.base import check_batch_order, check_entry_time

__all__ = ["StreamLocks", "WriteRoutes"]


@dataclass
class _StreamLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0  # holding or waiting; under StreamLocks._lock


class StreamLocks:
    """One lock per stream id, existing only while someone holds or waits for
    it, so ids that were only refused leave nothing behind."""

    def __init__(self) -> None:
        self._locks: dict[str, _StreamLock] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, stream_id: str) -> Iterator[None]:
        """Hold the stream's lock for the block (waiting for it)."""
        with self._lock:
            lock = self._locks.get(stream_id)
            if lock is None:
                lock = self._locks[stream_id] = _StreamLock()
            lock.users += 1
        try:
            with lock.lock:
                yield
        finally:
            with self._lock:
                lock.users -= 1
                if not lock.users:
                    del self._locks[stream_id]


@dataclass(frozen=True, slots=True)
class _Written:
    """What a state write did, as the route answers it."""

    created: bool
    action: str
    entry: bytes | None  # the entry as encode_entry makes it (with its rev)
    revision: int


class WriteRoutes:
    """The handlers of the write routes of one app."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.locks = StreamLocks()
        self._writers: dict[str, Stream] = {}  # each used under its stream's lock

    def _writer(self, stream_id: str, rate: RateConfig) -> Stream:
        """The stream's writer, at ``rate``; call under the stream's lock."""
        writer = self._writers.get(stream_id)
        if writer is None:
            writer = Stream(self.ctx.storage.log(stream_id), rate, clock=self.ctx.clock)
            self._writers[stream_id] = writer
        writer.rate = rate  # another replica may have changed it
        return writer

    # -- PUT /v1/streams/{id} -------------------------------------------------------

    async def put_stream(self, request: Request) -> Response:
        self.ctx.tokens.check_write(request)
        stream_id = stream_id_of(request)
        update = parse_rate_body(await self.ctx.read_body(request))
        created, info = await self.ctx.writing(self._put, stream_id, update)
        return metadata_response(info, self.ctx.store_id, status=201 if created else 200)

    def _put(self, stream_id: str, update: RateUpdate | None) -> tuple[bool, StreamInfo]:
        storage = self.ctx.storage
        with self.locks.hold(stream_id):
            rate = None
            if update is not None:  # what the body leaves out stays as it is
                current = storage.info(stream_id)
                rate = update.apply(None if current is None else current.rate)
            created = storage.create_stream(stream_id, rate)
            writer = self._writers.get(stream_id)
            if writer is not None and rate is not None:
                writer.rate = rate
            return created, self.ctx.info(stream_id)

    # -- POST /v1/streams/{id}/state ------------------------------------------------

    async def post_state(self, request: Request) -> Response:
        ctx = self.ctx
        ctx.tokens.check_write(request)
        stream_id = stream_id_of(request)
        body = await ctx.read_body(request)
        state, when = parse_state_write(parse_json(body, "request body"))
        state_size(state, "the state", len(body), ctx.limits.max_state_bytes)
        written = await ctx.writing(self._write_state, stream_id, state, when)
        return _state_response(written)

    def _write_state(self, stream_id: str, state: dict[str, Any], when: int | None) -> _Written:
        storage = self.ctx.storage
        with self.locks.hold(stream_id):
            info = storage.info(stream_id)
            created = False
            if info is None:
                created = storage.create_stream(stream_id)
                info = self.ctx.info(stream_id)
            writer = self._writer(stream_id, info.rate)
            log = storage.log(stream_id)
            with log.write_lock():
                # parse_state_write checked the state (check_json) on the event loop.
                at = None if when is None else from_micros(when)
                entry = writer.write_state(state, at, checked=True)
                action = writer.last_action.value
                revision = entry.rev if entry is not None and entry.rev else log.revision
            encoded = None
            if entry is not None:
                encoded = encode_entry(entry)
                self.ctx.hub.notify(stream_id, revision, len(encoded))
        return _Written(created, action, encoded, revision)

    # -- POST /v1/streams/{id}/entries ----------------------------------------------

    async def post_entries(self, request: Request) -> Response:
        ctx = self.ctx
        ctx.tokens.check_write(request)
        stream_id = stream_id_of(request)
        body = await ctx.read_body(request)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        # Parsed on the worker: a batch of 10,000 entries takes about 0.1 s of CPU,
        # which on the event loop would stall every other request meanwhile.
        created, count, revision = await ctx.writing(
            self._append, stream_id, body, content_type == NDJSON
        )
        return JSONResponse(
            {"count": count, "revision": revision},
            status_code=201 if created else 200,
            headers={"Cache-Control": "no-store"},
        )

    def _append(self, stream_id: str, body: bytes, ndjson: bool) -> tuple[bool, int, int]:
        """Check and append a batch (all of it checked before the stream's lock)."""
        batch = parse_entries(body, ndjson=ndjson)
        batch.check_sizes(self.ctx.limits.max_state_bytes)
        entries, deep = batch.entries, batch.deep
        storage = self.ctx.storage
        with self.locks.hold(stream_id):
            created = False
            info = storage.info(stream_id)
            if info is None:
                if not entries:
                    raise StreamNotFound(f"no stream {stream_id!r}", stream_id=stream_id)
                _check_first_batch(entries, deep)
                created = storage.create_stream(stream_id)
                info = self.ctx.info(stream_id)
            writer = self._writer(stream_id, info.rate)
            if not entries:
                return created, 0, writer.log.revision
            log = storage.log(stream_id)
            with log.write_lock():
                _check_mutations(writer.state, entries, deep)
                revision = log.append_batch(entries)
                # The writer would catch up by replaying the whole batch; a new
                # one starts from the newest snapshot (one window) instead.
                del self._writers[stream_id]
            # The body's size: about the size of the batch's events.
            self.ctx.hub.notify(stream_id, revision, len(body))
        return created, len(entries), revision


def _state_response(written: _Written) -> Response:
    """``{"action", "entry", "revision"}``, the entry spliced in as encoded."""
    body = b'{"action":"%s","entry":%s,"revision":%d}' % (
        written.action.encode("ascii"),
        b"null" if written.entry is None else written.entry,
        written.revision,
    )
    return Response(
        body,
        status_code=201 if written.created else 200,
        headers={"Cache-Control": "no-store"},
        media_type="application/json",
    )


def _check_mutations(
    state: dict[str, Any] | None, entries: list[Entry], deep: frozenset[int]
) -> None:
    """Raise MutationError unless every mutation applies to the state before it;
    400 if a mutation of ``deep`` makes a state nested too deep."""
    for i, entry in enumerate(entries):
        if entry.kind is EntryKind.SNAPSHOT:
            state = entry.data
            continue
        if state is None:
            raise MutationError(
                f"entry {i} of the batch is a mutation, but the stream has no snapshot before it"
            )
        try:
            state = apply_mutation(state, entry.data)
        except MutationError as exc:
            raise MutationError(f"entry {i} of the batch: {exc.reason}", exc.path) from None
        if i in deep:
            check_state_depth(state, f"entry {i} of the batch")


def _check_first_batch(entries: list[Entry], deep: frozenset[int]) -> None:
    """Raise what appending ``entries`` to a new stream would, before the stream
    is created: a refused batch leaves no empty stream behind."""
    _check_mutations(None, entries, deep)
    check_batch_order(None, entries)
    for i, entry in enumerate(entries):
        check_entry_time(entry.micros, f"entry {i} of the batch")
