"""SSE parsing throughput: large events, events of many data lines, many small events.

Compares rstream.client.sse.EventStream with plain sseclient-py on the same chunks.
sseclient-py is only timed where it finishes in reasonable time (it is quadratic in
the number of data lines of an event, and in the number of chunks of one event).
Each time is the best of five runs, in CPU seconds of the thread. For many small
events, the cost per event is shown too: a backlog in the form an rstream server
writes (``event``, ``id``, ``data``: whole runs of events go to sseclient-py at once)
and one in another field order (interpreted line by line).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sseclient import SSEClient

from rstream.client.sse import EventStream

MiB = 1024 * 1024


def _chunks(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def _time(parse: Callable[[list[bytes]], int], chunks: list[bytes]) -> tuple[float, int]:
    """CPU seconds of the best of five runs, and the events. CPU time of this thread,
    not wall time: on a shared machine, waiting for a core would swamp the ratios."""
    best = float("inf")
    for _ in range(5):
        started = time.thread_time()
        count = parse(chunks)
        best = min(best, time.thread_time() - started)
    return best, count


def _server_event(rev: int) -> bytes:
    """One mutation event as rstream.server.live writes it."""
    data = b'{"timestamp":"2023-11-14T22:13:20.%03dZ","type":1,"data":{"i":%d},"rev":%d}' % (
        rev % 1000,
        rev,
        rev,
    )
    return b"event: entry\nid: %d\ndata: %s\n\n" % (rev, data)


def _rstream(chunks: list[bytes]) -> int:
    return sum(1 for _ in EventStream(chunks))


def _sseclient(chunks: list[bytes]) -> int:
    return sum(1 for _ in SSEClient(iter(chunks)).events())


def main() -> None:
    cases: list[tuple[str, bytes, int, bool]] = [
        ("one 8 MiB event, 64 KiB chunks", b"data: " + b"x" * 8 * MiB + b"\n\n", 65536, True),
        ("one 1 MiB event, 128 B chunks", b"data: " + b"x" * MiB + b"\n\n", 128, True),
        (
            "one 8 MiB event of 80 B data lines",
            (b"data: " + b"y" * 73 + b"\n") * (8 * MiB // 80) + b"\n",
            65536,
            False,
        ),
        (
            "one 1 MiB event of 80 B data lines",
            (b"data: " + b"y" * 73 + b"\n") * (MiB // 80) + b"\n",
            65536,
            True,
        ),
        (
            "100k small events, 64 KiB chunks",
            b'id: 12345\nevent: put\ndata: {"rev": 12345}\n\n' * 100_000,
            65536,
            True,
        ),
        (
            "100k server events, 64 KiB chunks",
            b"".join(_server_event(i) for i in range(100_000)),
            65536,
            True,
        ),
    ]
    for name, body, size, compare in cases:
        chunks = _chunks(body, size)
        ours, count = _time(_rstream, chunks)
        mb = len(body) / MiB
        line = f"   {name:38} {count:>7} events  rstream {ours:6.3f} s ({mb / ours:6.1f} MiB/s)"
        if compare:
            theirs, _ = _time(_sseclient, chunks)
            line += f"  sseclient-py {theirs:6.3f} s ({theirs / ours:4.1f}x)"
            if count > 1:
                line += (
                    f"\n   {'':38} per event: rstream {ours / count * 1e6:.2f} us, "
                    f"sseclient-py {theirs / count * 1e6:.2f} us"
                )
        print(line, flush=True)
