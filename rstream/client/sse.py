"""Server-Sent Events: bytes in, events out, exactly as WHATWG interprets an event stream.

This module is pure: no sockets, no threads, no clock. :class:`EventStream` turns any
iterable of byte chunks (of any sizes) into :class:`SSEEvent` objects, following
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation.
:func:`iter_chunks` is the one edge helper: it reads large chunks from a streamed
``requests`` response without waiting for a chunk to fill up.

``sseclient-py`` (``sseclient.SSEClient``) interprets the ``event`` and ``data``
fields of each complete event. It falls short of the specification in ways that
cannot be fixed from outside, so the bytes it sees are framed and normalised here
first, and everything else is done here:

* It yields the half-received event when the stream ends (its ``_read`` flushes
  what it has): only complete events (ended by a blank line) are handed to it; an
  incomplete event at end of stream is discarded and ``saw_eof_mid_event`` is set.
* It finds the end of an event by ``endswith((b"\\r\\r", b"\\n\\n", b"\\r\\n\\r\\n"))``, so a
  blank line after mixed endings (``LF CRLF``, ``CR CRLF``) is missed and two
  events are merged, depending on where chunks happen to be split. Lines are
  therefore split here, on CR, LF and CRLF, remembering a CR at the end of one
  chunk so that an LF at the start of the next does not end a second line. It is
  then only given LF-terminated blocks. (Its own split uses ``bytes.splitlines``,
  which, unlike ``str.splitlines``, leaves U+2028, U+2029 and U+0085 alone.)
* It does not strip a leading byte order mark, so the first field is lost: done here.
* It decodes each line strictly, so invalid UTF-8 raises ``UnicodeDecodeError``:
  blocks are decoded here with ``errors="replace"`` (U+FFFD) before it sees them.
* It keeps ``id`` only on the event that carries it, forgets it on events without
  data, accepts an ``id`` containing NUL, and lets a later ``id`` line in a block
  override an earlier one even when the later one is invalid: the last event ID
  is tracked here.
* It returns ``retry`` as an unvalidated string (``"1a"``, ``""``, Arabic-Indic digits) and
  only on events with data: ``retry`` is parsed here (ASCII digits only).
* It accumulates ``data`` with ``+=`` on a dict item, which CPython cannot do in
  place: an event of *n* data lines costs O(n * size) (100 000 lines of 40 bytes
  took 17 s). Its ``_read`` concatenates small chunks the same way (an 8 MiB event
  in 128-byte chunks took 7 s). It is therefore given one complete event at a time
  (so ``_read`` never concatenates more than a few lines), and events of more than
  ``_SSECLIENT_MAX_DATA_LINES`` data lines are assembled here instead, in linear
  time. Both paths are run against the whole conformance suite in the tests.

Deliberate choices, beyond the specification:

* ``retry`` values are clamped to ``RETRY_MIN_MS .. RETRY_MAX_MS`` (100 ms to
  10 min), so a server cannot make a client hammer it or go silent for days.
* The last event ID buffer starts at the ``last_event_id`` given (as browsers do
  on reconnection), not at ``""``, so a blank line on a resumed stream does not
  forget where the stream was.
* An event held in memory (its lines so far, comment lines while they are being
  received, line endings not counted) larger than ``max_event_bytes`` raises
  :class:`rstream.ProtocolError`. Events dispatched before it are yielded first,
  whatever the chunking.
* Comment lines (``:`` heartbeats) are reported to ``on_comment`` as soon as the
  line is complete, so a reader can observe them; they are never events.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sseclient import SSEClient

from rstream.errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "RETRY_MAX_MS",
    "RETRY_MIN_MS",
    "EventStream",
    "SSEEvent",
    "iter_chunks",
]

RETRY_MIN_MS = 100
"""Smallest reconnection delay a ``retry:`` field can set, in milliseconds."""
RETRY_MAX_MS = 600_000
"""Largest reconnection delay a ``retry:`` field can set, in milliseconds (10 min)."""
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
"""Default largest event :class:`EventStream` accepts, in bytes."""

# Events with more data lines than this are assembled here: sseclient-py's data
# accumulation is quadratic in the number of data lines (see the module docstring).
_SSECLIENT_MAX_DATA_LINES = 16

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_LF = 0x0A
_COLON = 0x3A


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event.

    ``event`` is the event type (``"message"`` when the event names none) and
    ``data`` the data lines joined with ``"\\n"``. ``id`` and ``retry`` are the
    valid ``id`` and ``retry`` fields *of this event's own lines* (``None`` when it
    has none; ``retry`` clamped like :attr:`EventStream.retry_ms`). The
    stream-wide last event ID, which WHATWG gives every event and which is what
    to resume from, is :attr:`EventStream.last_event_id`: when an event is
    yielded, it is that event's last event ID.
    """

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class EventStream:
    """Iterate the events of an SSE byte stream, given as chunks of any size.

    ``chunks`` is any iterable of bytes (``iter_chunks(response)``, a list in
    tests). Iterating yields :class:`SSEEvent` objects as soon as each one's blank
    line has been received; it ends when ``chunks`` ends. It is a single-pass
    iterator. Only :class:`rstream.ProtocolError` (an event larger than
    ``max_event_bytes``) is raised for bad input; whatever ``chunks`` or
    ``on_comment`` raise propagates unchanged.

    Attributes, read them between events or at the end:

    ``last_event_id``
        The WHATWG last event ID: set by each dispatched block (a blank line),
        also by blocks with an ``id`` but no data; ``""`` after an empty ``id:``.
        Send it as ``Last-Event-ID`` when reconnecting.
    ``retry_ms``
        The last valid ``retry`` value (ASCII digits only), clamped to
        ``RETRY_MIN_MS .. RETRY_MAX_MS``; ``None`` until the server sends one.
        Like WHATWG, it takes effect as soon as its line is complete.
    ``saw_eof_mid_event``
        The stream ended inside an incomplete event (a partial line, or field
        lines not followed by a blank line), which was discarded.

    ``on_comment(text)`` is called for each comment line (``text`` is what
    follows the ``:``, decoded) as soon as the line is complete, so heartbeats
    can be observed. Each byte received counts as activity for a read timeout
    anyway; the callback is for knowing that the server is still talking.
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        last_event_id: str = "",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        on_comment: Callable[[str], None] | None = None,
    ) -> None:
        if max_event_bytes < 1:
            raise ValueError(f"max_event_bytes must be positive, not {max_event_bytes}")
        self.last_event_id: str = last_event_id
        self.retry_ms: int | None = None
        self.saw_eof_mid_event: bool = False
        self._chunks = chunks
        self._max = max_event_bytes
        self._on_comment = on_comment
        # The last event ID buffer: set by id lines, copied to last_event_id at dispatch.
        self._id_buffer = last_event_id
        # The event in progress.
        self._held = 0  # bytes of its non-comment lines
        self._data_lines: list[bytes] = []
        self._event_line: bytes | None = None
        self._own_id: str | None = None
        self._own_retry: int | None = None
        self._events = self._run()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> SSEEvent:
        return next(self._events)

    # -- framing ----------------------------------------------------------------

    def _run(self) -> Iterator[SSEEvent]:
        for line in self._lines():
            if line:
                self._field(line)
                continue
            event = self._dispatch()
            if event is not None:
                yield event

    def _lines(self) -> Iterator[bytes]:
        """Yield complete lines, without their CR, LF or CRLF; strip one leading BOM."""
        partial: list[bytes] = []
        partial_len = 0
        after_cr = False  # the previous chunk ended with CR: skip an LF that starts this one
        head: bytes | None = b""  # the first bytes, until we know whether they are a BOM
        for raw in itertools.chain(self._chunks, [None]):
            if raw is None:  # end of stream
                if not head:
                    break
                chunk, head = head, None  # a lone prefix of a BOM is content
            else:
                chunk = bytes(raw)
                if head is not None:
                    head += chunk
                    if len(head) < len(_BOM) and _BOM.startswith(head):
                        continue
                    chunk, head = head.removeprefix(_BOM), None
            if not chunk:
                continue
            start = 1 if after_cr and chunk[0] == _LF else 0
            after_cr = False
            for match in _LINE_END.finditer(chunk, start):
                if partial:
                    partial.append(chunk[start : match.start()])
                    line = b"".join(partial)
                    partial.clear()
                    partial_len = 0
                else:
                    line = chunk[start : match.start()]
                start = match.end()
                after_cr = start == len(chunk) and chunk[-1] == _CR
                yield line
            if start < len(chunk):
                partial.append(chunk[start:])
                partial_len += len(chunk) - start
                self._check_size(partial_len)
        self.saw_eof_mid_event = bool(partial) or self._held > 0
        self._reset_event()

    def _check_size(self, line_len: int) -> None:
        if self._held + line_len > self._max:
            raise ProtocolError(
                f"server-sent event larger than max_event_bytes={self._max}: "
                f"{self._held + line_len} bytes received without a blank line ending it"
            )

    # -- interpretation ---------------------------------------------------------

    def _field(self, line: bytes) -> None:
        self._check_size(len(line))
        if line[0] == _COLON:
            if self._on_comment is not None:
                self._on_comment(line[1:].decode("utf-8", "replace"))
            return
        self._held += len(line)
        name, _, value = line.partition(b":")
        if name == b"data":
            self._data_lines.append(line)
        elif name == b"event":
            self._event_line = line
        elif name == b"id":
            value = value.removeprefix(b" ")
            if b"\0" not in value:
                self._id_buffer = self._own_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            value = value.removeprefix(b" ")
            if value.isdigit():  # bytes.isdigit() is ASCII digits only, and False for b""
                self.retry_ms = self._own_retry = _clamp_retry(value)
        # Any other field is ignored.

    def _dispatch(self) -> SSEEvent | None:
        self.last_event_id = self._id_buffer
        data_lines, event_line = self._data_lines, self._event_line
        own_id, own_retry = self._own_id, self._own_retry
        self._reset_event()
        if not data_lines:
            return None
        if len(data_lines) <= _SSECLIENT_MAX_DATA_LINES:
            event, data = _interpret_with_sseclient(event_line, data_lines)
        else:
            event, data = _interpret(event_line, data_lines)
        return SSEEvent(event=event, data=data, id=own_id, retry=own_retry)

    def _reset_event(self) -> None:
        self._held = 0
        self._data_lines = []
        self._event_line = None
        self._own_id = None
        self._own_retry = None


def _clamp_retry(digits: bytes) -> int:
    digits = digits.lstrip(b"0")
    if len(digits) > len(str(RETRY_MAX_MS)):  # also keeps int() away from huge inputs
        return RETRY_MAX_MS
    return min(max(int(digits or b"0"), RETRY_MIN_MS), RETRY_MAX_MS)


def _interpret_with_sseclient(event_line: bytes | None, data_lines: list[bytes]) -> tuple[str, str]:
    """Event type and data of one complete event, by sseclient-py.

    It gets the event's last ``event`` line (later ones override earlier ones, so
    that is equivalent) and its ``data`` lines, LF-terminated, valid UTF-8, ending
    with a blank line: input it handles correctly, and always dispatches.
    """
    lines = data_lines if event_line is None else [event_line, *data_lines]
    block = b"\n".join(lines) + b"\n\n"
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        block = block.decode("utf-8", "replace").encode("utf-8")
    (event,) = SSEClient(iter([block])).events()
    return event.event, event.data


def _interpret(event_line: bytes | None, data_lines: list[bytes]) -> tuple[str, str]:
    """The same as :func:`_interpret_with_sseclient`, in linear time for many data lines."""
    data = b"\n".join(_value(line) for line in data_lines).decode("utf-8", "replace")
    event = "" if event_line is None else _value(event_line).decode("utf-8", "replace")
    return event or "message", data


def _value(line: bytes) -> bytes:
    return line.partition(b":")[2].removeprefix(b" ")


# -- the edge: reading a requests response --------------------------------------


def iter_chunks(response: Any, chunk_size: int = 65536) -> Iterator[bytes]:
    """Yield the body of a streamed ``requests`` response in chunks of up to ``chunk_size``.

    Iterating a response directly reads 128-byte chunks (quadratic work for large
    events, in the layers that join them); ``response.iter_content(n)`` on a body
    without chunked transfer-encoding waits until ``n`` bytes have arrived, which
    holds back live events. This yields each HTTP chunk as it arrives (chunked
    bodies), or whatever is available, up to ``chunk_size`` (other bodies), with
    ``Content-Encoding`` decoded. urllib3 errors are raised as the ``requests``
    exceptions ``iter_content`` raises for them.
    """
    # requests is imported here so that the parser above stays free of I/O imports.
    import requests.exceptions as rexc
    import urllib3.exceptions as uexc

    raw = response.raw
    if not (hasattr(raw, "read1") and hasattr(raw, "stream")):
        yield from response.iter_content(chunk_size)  # not urllib3: let requests cope
        return
    try:
        if raw.chunked and raw.supports_chunked_reads():
            yield from raw.stream(chunk_size, decode_content=True)
        else:
            while chunk := raw.read1(chunk_size, decode_content=True):
                yield chunk
    except uexc.ProtocolError as exc:
        raise rexc.ChunkedEncodingError(exc) from exc
    except uexc.DecodeError as exc:
        raise rexc.ContentDecodingError(exc) from exc
    except uexc.ReadTimeoutError as exc:
        raise rexc.ConnectionError(exc) from exc
    except uexc.SSLError as exc:
        raise rexc.SSLError(exc) from exc
