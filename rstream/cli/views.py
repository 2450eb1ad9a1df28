"""Live views: rich renderables for a followed stream, and a rate meter.

Drawing is rich's job (``rich.live.Live`` redraws); this module only builds
what to draw from a state and a :class:`~rstream.client.health.Health`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rstream.cli.common import dump_json, format_time

__all__ = [
    "RateMeter",
    "health_line",
    "side_by_side",
    "stack",
    "state_panel",
    "summarize_state",
]


class RateMeter:
    """Changes per second from a growing counter (the stream's revision), over a window.

    ``observe(count)`` records the counter now; ``rate()`` is the slope over
    the last ``window`` seconds. The clock is injectable for tests.
    """

    def __init__(self, window: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def observe(self, count: int | None) -> None:
        if count is None:
            return
        now = self._clock()
        samples = self._samples
        if samples and count < samples[-1][1]:
            samples.clear()  # the counter restarted (a reset, another server)
        samples.append((now, count))
        while len(samples) > 2 and now - samples[1][0] >= self._window:
            samples.popleft()

    def rate(self) -> float:
        samples = self._samples
        if len(samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


def health_line(health: Any, rate: float | None = None) -> str:
    """One line about a tail: connection state, revision, rate, reconnects."""
    state = getattr(health.state, "value", str(health.state))
    parts = [state]
    if health.revision is not None:
        parts.append(f"revision {health.revision}")
    if rate is not None:
        parts.append(f"{rate:.1f} entries/s")
    if health.reconnects:
        parts.append(f"{health.reconnects} reconnects")
    if health.last_error is not None and state != "open":
        parts.append(f"last error: {health.last_error}")
    return " | ".join(parts)


def state_panel(
    title: str, ts: datetime | None, state: dict[str, Any] | None, subtitle: str | None = None
) -> Panel:
    """A panel showing one state as highlighted JSON under its timestamp."""
    body: RenderableType
    if state is None:
        body = Text("waiting for the first state...", style="dim")
    else:
        body = JSON(dump_json(state), indent=2)
    heading = title if ts is None else f"{title}  [dim]{format_time(ts)}[/dim]"
    return Panel(body, title=heading, subtitle=subtitle, title_align="left")


def side_by_side(*panels: RenderableType) -> RenderableType:
    """Panels next to each other, sharing the width."""
    grid = Table.grid(expand=True, padding=(0, 1))
    for _ in panels:
        grid.add_column(ratio=1)
    grid.add_row(*panels)
    return grid


def stack(*parts: RenderableType) -> RenderableType:
    return Group(*parts)


def summarize_state(state: dict[str, Any]) -> str:
    """A short plain-text summary of a demo robot state, for non-terminal output."""
    pos = state.get("position") or {}
    tasks = state.get("tasks") or []
    temps = (state.get("sensors") or {}).get("temperature") or {}
    battery = state.get("battery")
    return (
        f"mode={state.get('mode')} "
        f"battery={battery if battery is None else f'{battery:.3f}'} "
        f"pos=({pos.get('x')}, {pos.get('y')}) "
        f"tasks={len(tasks)} "
        f"motor={temps.get('motor')}C"
    )
