"""Pausing the cyclic garbage collector while a thread turns received bytes into data.

A page of history or a chunk of the live stream makes thousands of containers
(parsed JSON, entries, states). CPython's collector counts allocations, so it
runs many times while they are made and promotes the short-lived ones to the
oldest generation, which then triggers full collections of everything alive
(the window cache, a long live window). Measured on 200,000 history entries,
that was half of the client's CPU time; on the live tail, about 2 us of its
12 us per state. Paused while the data is made, nothing is promoted needlessly
and no full collection runs (the technique of Mercurial's ``util.nogc``).

A pause is held only by a thread turning received data into entries and
states, never across a blocking read, a wait, or the caller's code (at most
tens of milliseconds). The pauses of several threads nest (a process-wide
count), and the collector is re-enabled only if it was enabled when the first
pause began. Reference counting frees memory as usual meanwhile; only the
collection of reference cycles waits for the end of the pause.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["pause", "paused", "resume"]

_lock = threading.Lock()
_depth = 0  # pauses held now, by all threads
_was_enabled = False  # whether the collector was enabled when the first of them began


def pause() -> None:
    """Begin a pause; every call must be followed by exactly one :func:`resume`."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1


def resume() -> None:
    """End a pause begun by :func:`pause`."""
    global _depth
    with _lock:
        if _depth <= 0:
            raise RuntimeError("rstream GC pause resumed more often than paused")
        _depth -= 1
        if _depth == 0 and _was_enabled:
            gc.enable()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector paused for the ``with`` block (see the module docstring)."""
    pause()
    try:
        yield
    finally:
        resume()
