"""``rstream export`` and ``rstream import``: raw entries as NDJSON, for backups and
for moving a stream between servers.

The file format is the protocol's entry form, one per line::

    {"timestamp":"2024-05-01T12:00:00.25Z","type":0,"data":{...},"rev":17}

``rev`` (the source server's revision) is informational: an import assigns the
target's own revisions. Import checks every line before sending it, and sends
batches of whole lines as ``application/x-ndjson`` to ``POST .../entries``; a
batch is all-or-nothing on the server.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import IO

import click

from rstream.cli.common import STREAM, URL, ClientOptions, client_options, dump_json, format_time
from rstream.cli.history import TimeProgress, check_range, time_range_options
from rstream.cli.output import progress, set_target
from rstream.core.entry import Entry
from rstream.errors import EntryFormatError

__all__ = ["export_entries", "import_entries", "read_batches"]

# Small enough to stay far below a server's body limit, large enough that the
# per-request overhead does not dominate.
DEFAULT_BATCH_ENTRIES = 1000
DEFAULT_BATCH_BYTES = 2 * 2**20


@click.command("export", params=time_range_options(None, None))
@click.argument("url", type=URL)
@click.argument("stream", type=STREAM)
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8", lazy=True),
    default="-",
    help="Write here instead of stdout.",
)
@client_options
def export_entries(
    url: tuple[str, ...],
    stream: str,
    start: datetime | None,
    end: datetime | None,
    output: IO[str],
    opts: ClientOptions,
) -> None:
    """Write the raw entries of STREAM in [--start, --end) as NDJSON.

    Default range: the whole stream. Restore with 'rstream import'.
    """
    check_range(start, end)
    set_target(
        click.get_current_context(), url[0], stream, None if start is None else format_time(start)
    )
    with opts.client(url) as client:
        robot = client.stream(stream)
        info = robot.info()  # also: a clear "not found" before any output
        first = start or info.first
        last = end or (info.last and info.last + timedelta(microseconds=1))
        if first is not None and last is not None and first < last:
            with TimeProgress(first, last, f"export {stream}") as bar:
                for entry in robot.entries(start, end):
                    output.write(dump_json(entry.to_json(with_rev=True)))
                    output.write("\n")
                    bar.advance_to(entry.timestamp)
    output.flush()  # an empty stream or range still makes an (empty) file


def read_batches(
    lines: IO[bytes],
    *,
    max_entries: int = DEFAULT_BATCH_ENTRIES,
    max_bytes: int = DEFAULT_BATCH_BYTES,
    name: str = "<stdin>",
) -> Iterator[tuple[bytes, int, int]]:
    """Read NDJSON entries and yield ``(body, count, bytes_read)`` batches.

    Each line is checked with :meth:`Entry.from_json` first, so a broken file
    fails with its line number before the bad batch is sent; blank lines are
    skipped. ``body`` is NDJSON in the wire form (``rev`` dropped).
    """
    parts: list[bytes] = []
    size = 0
    consumed = 0
    for number, raw in enumerate(lines, 1):
        consumed += len(raw)
        text = raw.strip()
        if not text:
            continue
        where = f"{name} line {number}"
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise EntryFormatError(f"malformed entry ({where}): not JSON ({exc})") from None
        entry = Entry.from_json(obj, where=where)
        line = dump_json(entry.to_json()).encode("utf-8") + b"\n"
        if parts and (len(parts) >= max_entries or size + len(line) > max_bytes):
            yield b"".join(parts), len(parts), consumed - len(raw)
            parts, size = [], 0
        parts.append(line)
        size += len(line)
    if parts:
        yield b"".join(parts), len(parts), consumed


def _total_size(file: IO[bytes]) -> int | None:
    try:
        return os.fstat(file.fileno()).st_size or None
    except (OSError, ValueError, AttributeError):
        return None


@click.command("import")
@click.argument("url", type=URL)
@click.argument("stream", type=STREAM)
@click.argument("file", type=click.File("rb"))
@click.option(
    "--batch",
    type=click.IntRange(min=1, max=100_000),
    default=DEFAULT_BATCH_ENTRIES,
    show_default=True,
    help="Entries per request.",
)
@client_options
def import_entries(
    url: tuple[str, ...], stream: str, file: IO[bytes], batch: int, opts: ClientOptions
) -> None:
    """Append the NDJSON entries of FILE ('-' for stdin) to STREAM.

    The entries must all be after the stream's newest one, so import into a
    new stream or continue where an earlier import stopped. Needs the
    server's write token.
    """
    set_target(click.get_current_context(), url[0], stream)
    name = getattr(file, "name", "<stdin>")
    name = "<stdin>" if name in ("<stdin>", "-") else str(name)
    imported = 0
    revision: int | None = None
    bar = progress(
        total=_total_size(file),
        unit="B",
        desc=f"import {stream}",
        enabled=_stderr_is_tty(),
    )
    try:
        with opts.client(url) as client:
            robot = client.stream(stream)
            done = 0
            for body, count, consumed in read_batches(file, max_entries=batch, name=name):
                revision = robot.append_entries(body)
                imported += count
                bar.update(consumed - done)
                done = consumed
    except Exception:
        if imported:
            click.echo(f"note: {imported} entries were imported before the error", err=True)
        raise
    finally:
        bar.close()
    if revision is None:
        click.echo(f"nothing to import: {name} holds no entries", err=True)
    else:
        click.echo(f"imported {imported} entries into {stream!r} (revision {revision})", err=True)


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
