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
  events are merged, depending on where chunks happen to be split. Line endings
  are therefore normalised here: CRLF and CR become LF (``bytes.replace``, only in
  chunks holding a CR), remembering a CR at the end of one chunk so that an LF at
  the start of the next does not end a second line. Events are then found with
  ``bytes.find(b"\\n\\n")`` and it is only given LF-terminated blocks. (Its own
  split uses ``bytes.splitlines``, which, unlike ``str.splitlines``, leaves
  U+2028, U+2029 and U+0085 alone.)
* It does not strip a leading byte order mark, so the first field is lost: done here.
* It decodes each line strictly, so invalid UTF-8 raises ``UnicodeDecodeError``:
  blocks are decoded here with ``errors="replace"`` (U+FFFD) before it sees them
  (a run of server events, below, is given to it only if it is valid UTF-8).
* It keeps ``id`` only on the event that carries it, forgets it on events without
  data, accepts an ``id`` containing NUL, and lets a later ``id`` line in a block
  override an earlier one even when the later one is invalid: the last event ID
  is tracked here (its ``id`` is only used for server events, below, where it is right).
* It returns ``retry`` as an unvalidated string (``"1a"``, ``""``, Arabic-Indic digits) and
  only on events with data: ``retry`` is parsed here (ASCII digits only).
* It accumulates ``data`` with ``+=`` on a dict item, which CPython cannot do in
  place: an event of *n* data lines costs O(n * size) (100 000 lines of 40 bytes
  took 17 s). Its ``_read`` concatenates small chunks the same way (an 8 MiB event
  in 128-byte chunks took 7 s). It is therefore given complete events only, one at
  a time or a run of server events, whose lines ``_read`` concatenates event by
  event (so never more than a few lines at once), and events of more than
  ``_SSECLIENT_MAX_DATA_LINES`` data lines are assembled here instead, in linear
  time. Both paths are run against the whole conformance suite in the tests.

One ``SSEClient`` serves the whole stream (building one per event, with its
logger look-up, cost more than interpreting the event): its source is a queue
into which complete events are put just before they are asked for. Its ``_read``
yields as soon as its input ends with a blank line, and an event with a data
line is always dispatched, so it never reads ahead: the events it yields are the
ones just queued, and the ``id``/``retry`` tracked here belong to them.

The work is per chunk and per run of events rather than per line. Where no event
is held (none received in pieces), one regular expression finds the longest run
of consecutive events in the exact form an rstream server sends
(``event: NAME``, ``id: DIGITS``, ``data: VALUE``, a blank line). Its ids are
valid as they are (ASCII digits, so no NUL; one per event) and only id lines
start with ``id:``, so one ``re.split`` takes them out, and the rest of the run
(its event and data lines) is queued for sseclient-py at once: exactly one
event per id is taken from it, the last event ID set to that id as it is
yielded. No per-event framing is done here. A run larger than
``max_event_bytes`` or not valid UTF-8 is left to the general path: any other
event that a chunk holds whole is found with ``bytes.find`` and interpreted in
one go; only the lines of an event split between chunks are interpreted one by
one as they complete (so comments are reported, and ``retry`` applied, as soon
as their line is complete either way).

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

import collections
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from sseclient import SSEClient

from rstream.errors import ConfigError, ProtocolError

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

# Consecutive events in the exact form an rstream server sends (rstream.server.live):
# their ids are valid as they are (ASCII digits, one per event), and a blank line
# only ends an event, as no field value holds an LF.
_SERVER_RUN = re.compile(rb"(?:event: [^\n]*\nid: [0-9]+\ndata: [^\n]*\n\n)+")
# The id lines of such a run (their digits captured): in it, only they start with "id: ".
_SERVER_ID_LINE = re.compile(rb"\nid: ([0-9]+)(?=\n)")

_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_LF = 0x0A
_COLON = 0x3A


class SSEEvent(NamedTuple):
    """One dispatched event (immutable; a NamedTuple, as it is built for every event).

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
            raise ConfigError(f"max_event_bytes must be positive, not {max_event_bytes}")
        self.last_event_id: str = last_event_id
        self.retry_ms: int | None = None
        self.saw_eof_mid_event: bool = False
        self._chunks = chunks
        self._max = max_event_bytes
        self._on_comment = on_comment
        # The last event ID buffer: set by id lines, copied to last_event_id at dispatch.
        self._id_buffer = last_event_id
        # The event in progress, when its lines arrived in more than one chunk.
        self._held = 0  # bytes of its non-comment lines
        self._data_lines: list[bytes] = []
        self._event_line: bytes | None = None
        self._own_id: str | None = None
        self._own_retry: int | None = None
        # One sseclient-py parser for the whole stream, fed one complete event or one
        # run of server events at a time (see _run and _interpret_with_sseclient).
        self._sseclient_input: collections.deque[bytes] = collections.deque()
        self._sseclient_events: Iterator[Any] = SSEClient(_drain(self._sseclient_input)).events()
        self._events = self._run()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> SSEEvent:
        return next(self._events)

    # -- framing ----------------------------------------------------------------

    def _run(self) -> Iterator[SSEEvent]:
        """Split the stream into complete lines and blocks (events ended by a blank line).

        The work is per chunk and per run of events, not per line: line endings are
        normalised to LF with ``bytes.replace`` (only in chunks that hold a CR); a run
        of events in the server's form (``_SERVER_RUN``) goes to sseclient-py whole;
        any other block that a chunk holds entirely is found with ``bytes.find`` and
        interpreted in one go (:meth:`_block`). Only an event that straddles chunks,
        or is larger than ``max_event_bytes``, is interpreted line by line (:meth:`_field`).
        """
        partial: list[bytes] = []  # the incomplete last line, in pieces
        partial_len = 0
        server_events = self._sseclient_events
        for chunk in self._normalised():
            end = chunk.rfind(b"\n") + 1  # the complete lines are chunk[:end]
            if not end:
                partial.append(chunk)
                partial_len += len(chunk)
                self._check_size(partial_len)
                continue
            if partial:
                partial.append(chunk[:end])
                region = b"".join(partial)
                partial.clear()
            else:
                region = chunk[:end] if end < len(chunk) else chunk
            ascii = region.isascii()
            pos, size = 0, len(region)
            rejected = 0  # a run of server events up to here is left to the code below
            while pos < size:
                if region[pos] == _LF:  # a blank line
                    pos += 1
                    event = self._dispatch()
                    if event is not None:
                        yield event
                    continue
                if not self._held and pos >= rejected:
                    match = _SERVER_RUN.match(region, pos)
                    if match is not None:
                        run_end = match.end()
                        run = region if pos == 0 and run_end == size else region[pos:run_end]
                        if run_end - pos <= self._max and (ascii or _is_utf8(run)):
                            # sseclient-py yields each event of the run as soon as its
                            # blank line is read, and reads no further than the run.
                            # The ids are taken here and their lines left out: they are
                            # a third of the lines sseclient-py would read, and it
                            # would only tell us what the regex has already checked.
                            parts = _SERVER_ID_LINE.split(run)
                            ids = parts[1::2]
                            self._sseclient_input.append(b"".join(parts[::2]))
                            for parsed, raw_id in zip(
                                itertools.islice(server_events, len(ids)), ids, strict=True
                            ):
                                event_id = self._id_buffer = self.last_event_id = raw_id.decode()
                                yield SSEEvent(parsed.event, parsed.data, event_id, None)
                            pos = run_end
                            continue
                        # Taken event by event below; not matched again at each one.
                        rejected = run_end
                blank = region.find(b"\n\n", pos)
                if blank < 0:  # lines of an event that the next chunks complete
                    for line in region[pos:-1].split(b"\n"):
                        self._field(line)
                    break
                if self._held or blank - pos > self._max:
                    for line in region[pos:blank].split(b"\n"):
                        self._field(line)
                    event = self._dispatch()
                else:
                    event = self._block(region[pos:blank], ascii)
                pos = blank + 2
                if event is not None:
                    yield event
            partial_len = len(chunk) - end
            if partial_len:
                partial.append(chunk[end:])
                self._check_size(partial_len)
        self.saw_eof_mid_event = bool(partial) or self._held > 0
        self._reset_event()

    def _normalised(self) -> Iterator[bytes]:
        """The chunks, non-empty, with one leading BOM stripped and every line ending
        (CR, LF or CRLF, even one split between chunks) turned into LF."""
        after_cr = False  # the previous chunk ended with CR: drop an LF that starts this one
        head: bytes | None = b""  # the first bytes, until we know whether they are a BOM
        for raw in itertools.chain(self._chunks, [None]):
            if raw is None:  # end of stream
                if not head:
                    return
                chunk, head = head, None  # a lone prefix of a BOM is content
            else:
                chunk = bytes(raw)
                if head is not None:
                    head += chunk
                    if len(head) < len(_BOM) and _BOM.startswith(head):
                        continue
                    chunk, head = head.removeprefix(_BOM), None
            if after_cr and chunk[:1] == b"\n":
                chunk = chunk[1:]
            after_cr = False
            if b"\r" in chunk:
                after_cr = chunk[-1] == _CR
                chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if chunk:
                yield chunk

    def _check_size(self, line_len: int) -> None:
        if self._held + line_len > self._max:
            raise ProtocolError(
                f"server-sent event larger than max_event_bytes={self._max}: "
                f"{self._held + line_len} bytes received without a blank line ending it"
            )

    # -- interpretation ---------------------------------------------------------

    def _block(self, block: bytes, ascii: bool) -> SSEEvent | None:
        """Interpret a whole event (its lines, without the blank line ending it) and
        dispatch it: :meth:`_field` for each line, then :meth:`_dispatch`, in one go.

        Only called when no line of the event is held yet and the block is no larger
        than ``max_event_bytes`` (so the size checks of :meth:`_field` cannot fail).
        """
        data_lines: list[bytes] = []
        event_line: bytes | None = None
        own_id: str | None = None
        own_retry: int | None = None
        plain = True  # only event and data lines: the block goes to sseclient as it is
        for line in block.split(b"\n"):
            if line[:5] == b"data:" or line == b"data":
                data_lines.append(line)
                continue
            if line[0] == _COLON:
                plain = False
                if self._on_comment is not None:
                    self._on_comment(line[1:].decode("utf-8", "replace"))
                continue
            name, _, value = line.partition(b":")
            if name == b"event":
                event_line = line
                continue
            plain = False
            if name == b"id":
                own_id = self._id_line(value, own_id)
            elif name == b"retry":
                own_retry = self._retry_line(value, own_retry)
        self.last_event_id = self._id_buffer
        return self._event(
            event_line, data_lines, own_id, own_retry, block if plain else None, ascii
        )

    def _field(self, line: bytes) -> None:
        """Interpret one line of an event received in pieces."""
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
            self._own_id = self._id_line(value, self._own_id)
        elif name == b"retry":
            self._own_retry = self._retry_line(value, self._own_retry)
        # Any other field is ignored.

    def _id_line(self, value: bytes, own_id: str | None) -> str | None:
        """An ``id`` line (``value`` after the colon): the event's own id from now on."""
        value = value.removeprefix(b" ")
        if b"\0" in value:
            return own_id  # ignored, as WHATWG says
        self._id_buffer = value.decode("utf-8", "replace")
        return self._id_buffer

    def _retry_line(self, value: bytes, own_retry: int | None) -> int | None:
        """A ``retry`` line (``value`` after the colon): the event's own retry from now on."""
        value = value.removeprefix(b" ")
        if not value.isdigit():  # bytes.isdigit() is ASCII digits only, and False for b""
            return own_retry
        self.retry_ms = _clamp_retry(value)
        return self.retry_ms

    def _dispatch(self) -> SSEEvent | None:
        """A blank line: dispatch the event whose lines :meth:`_field` received."""
        self.last_event_id = self._id_buffer
        data_lines, event_line = self._data_lines, self._event_line
        own_id, own_retry = self._own_id, self._own_retry
        self._reset_event()
        return self._event(event_line, data_lines, own_id, own_retry, None, False)

    def _event(
        self,
        event_line: bytes | None,
        data_lines: list[bytes],
        own_id: str | None,
        own_retry: int | None,
        block: bytes | None,
        ascii: bool,
    ) -> SSEEvent | None:
        """The event of a dispatched block, or None when it has no data line.

        ``block``, when given, is the whole block and holds only its event and
        data lines: sseclient-py is then given it as it is.
        """
        if not data_lines:
            return None
        if len(data_lines) > _SSECLIENT_MAX_DATA_LINES:
            event, data = _interpret(event_line, data_lines)
        else:
            if block is None:
                block = b"\n".join(data_lines if event_line is None else [event_line, *data_lines])
            event, data = self._interpret_with_sseclient(block + b"\n\n", ascii)
        return SSEEvent(event, data, own_id, own_retry)

    def _reset_event(self) -> None:
        self._held = 0
        self._data_lines = []
        self._event_line = None
        self._own_id = None
        self._own_retry = None

    def _interpret_with_sseclient(self, block: bytes, ascii: bool) -> tuple[str, str]:
        """Event type and data of one complete event, by sseclient-py.

        ``block`` holds the event's ``event`` and ``data`` lines (of those, only
        the last ``event`` line may be missing or kept: later ones override earlier
        ones), LF-terminated, and a blank line. Made valid UTF-8 here, that is input
        sseclient-py handles correctly and always dispatches as one event (it has at
        least one data line, so its data is not empty). Its ``_read`` yields a block
        as soon as the block ends with a blank line, so the one parser of the stream
        never reads ahead: each ``next()`` takes exactly the block just queued.
        """
        if not ascii and not _is_utf8(block):
            block = block.decode("utf-8", "replace").encode("utf-8")
        self._sseclient_input.append(block)
        event = next(self._sseclient_events)
        return event.event, event.data


def _drain(blocks: collections.deque[bytes]) -> Iterator[bytes]:
    """sseclient-py's input: the event or run just queued (it never asks for more)."""
    while True:
        yield blocks.popleft()


def _is_utf8(text: bytes) -> bool:
    """Whether ``text`` decodes strictly (sseclient-py decodes it so)."""
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _clamp_retry(digits: bytes) -> int:
    digits = digits.lstrip(b"0")
    if len(digits) > len(str(RETRY_MAX_MS)):  # also keeps int() away from huge inputs
        return RETRY_MAX_MS
    return min(max(int(digits or b"0"), RETRY_MIN_MS), RETRY_MAX_MS)


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
