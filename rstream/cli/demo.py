"""``rstream demo``: a server, a simulated robot and a live view, all in one process.

What runs, and in which order it stops (Ctrl-C or ``--duration``):

1. an embedded server (:class:`rstream.server.ServerThread`) on a free loopback
   port, storing into a SQLite file in a temporary directory;
2. a simulated device (:class:`rstream.demo.SimulatedDevice`) writing the
   robot's state through the HTTP writer (``RemoteStream.write_state``), as a
   real device would, with its own client;
3. a viewer following the stream with the client SDK: the live state, and
   every second the state of ``--lag`` seconds ago through ``state_at``, so
   live and history show side by side.

Shutdown goes in reverse: viewer, device, clients, server, storage, then the
temporary directory is removed. Ctrl-C (SIGINT) and SIGTERM both start it, from
the viewer's loop (see :class:`StopSignals`).
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from rstream.cli.common import STREAM, format_time
from rstream.cli.output import CLIError, show_library_warnings
from rstream.cli.views import (
    RateMeter,
    health_line,
    side_by_side,
    stack,
    state_panel,
    summarize_state,
)
from rstream.demo import SimulatedDevice
from rstream.errors import ClientClosed, Empty, OutOfRange

__all__ = ["StopSignals", "demo"]

# The device writes often; these make the log interesting to look at: a new
# window every few seconds, and a mutation per change (amends within 200 ms).
DEMO_KEYFRAME = timedelta(seconds=5)
DEMO_CHANGE = timedelta(milliseconds=200)
# The longest the viewer's loop waits for a state before it looks at the stop
# request again: how long a Ctrl-C or SIGTERM takes to start the shutdown.
_TICK = 0.1
READY = "rstream demo: running"


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM as a request to stop, seen by the demo's loop.

    A signal only sets :attr:`requested`; the loop ends at its next turn, so the
    clean-up always starts from the same place, never from inside a request or a
    lock. A second signal raises :class:`KeyboardInterrupt` at once, for a
    clean-up that hangs. The handlers are the application's to set: the demo
    command sets them for its run only (:meth:`installed`), from the main thread.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle the signals inside the block; restore the previous handlers after.

        A signal the process was started with ignored stays ignored (as Python
        does for SIGINT): a shell script's background job ignores Ctrl-C, which
        is meant for the job in the foreground. Off the main thread (where
        Python cannot set handlers) nothing is installed.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {
            sig: signal.signal(sig, self._handle)
            for sig in self.SIGNALS
            if signal.getsignal(sig) is not signal.SIG_IGN
        }
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                # None: a handler set outside Python, which cannot be put back.
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def embedded_server(port: int = 0, heartbeat: float = 1.0) -> Iterator[tuple[str, Path, Any]]:
    """A real server on a loopback port (0: a free one) with a temporary SQLite database.

    Yields ``(url, db_path, storage)``; everything is closed and the database
    removed on exit.
    """
    try:
        from rstream.server import ServerThread, create_app
        from rstream.server.storage import SQLiteStorage
    except ImportError as exc:
        raise CLIError(
            f"'rstream demo' runs a server, which needs the server extra ({exc}): "
            "pip install 'remote-state-stream[server]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix="rstream-demo-") as tmp:
        db = Path(tmp) / "demo.sqlite3"
        storage = SQLiteStorage(db)
        try:
            app = create_app(storage, heartbeat=heartbeat)
            server = ServerThread(app, host="127.0.0.1", port=port)
            try:
                server.start()
            except OSError as exc:
                raise CLIError(
                    f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}): pick another "
                    "--port, or leave it out for a free one"
                ) from None
            with server:
                yield server.url, db, storage
        finally:
            storage.close()


class _Viewer:
    """What the demo shows: the newest live state, and a historic one each second."""

    def __init__(self, robot: Any, lag: timedelta, clock: Callable[[], float]) -> None:
        self.robot = robot
        self.lag = lag
        self.clock = clock
        self.meter = RateMeter(clock=clock)
        self.received = 0
        self.live: tuple[datetime, dict[str, Any]] | None = None
        self.past: tuple[datetime, dict[str, Any]] | None = None

    def take(self, item: tuple[datetime, dict[str, Any]]) -> None:
        self.received += 1
        self.live = item
        self.meter.observe(self.robot.health.revision)

    def look_back(self) -> None:
        """Fetch the state of ``lag`` before the live one through the history API
        (not the tail), so the two shown are exactly ``lag`` apart."""
        if self.live is None:
            return
        when = self.live[0] - self.lag
        try:
            self.past = (when, self.robot.state_at(when))
        except OutOfRange:
            self.past = None  # the stream is younger than the lag

    def status(self) -> str:
        health = self.robot.health
        self.meter.observe(health.revision)
        return health_line(health, self.meter.rate())


@click.command()
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after SECONDS (default: run until Ctrl-C).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1, max=1000),
    default=20.0,
    show_default=True,
    help="States the simulated device writes per second.",
)
@click.option(
    "--lag",
    type=click.FloatRange(min=0.5),
    default=3.0,
    show_default=True,
    help="Next to the live state, show the state this many seconds before it.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Loopback port of the server (0: a free one).",
)
@click.option(
    "--stream", "stream_id", type=STREAM, default="robot-1", show_default=True, help="Stream id."
)
def demo(duration: float | None, rate: float, lag: float, port: int, stream_id: str) -> None:
    """Run a server, a simulated robot and a live view of its state.

    On a terminal the view redraws in place; otherwise a summary line is
    printed every second. Stop with Ctrl-C, or pass --duration.
    """
    from rstream.client import Client
    from rstream.core.stream import RateConfig

    show_library_warnings()
    console = Console()
    interactive = console.is_terminal
    started = time.monotonic()
    say = console.print if interactive else click.echo
    device: SimulatedDevice | None = None
    viewer: _Viewer | None = None
    try:
        with StopSignals().installed() as stop, contextlib.ExitStack() as stack_:
            url, db, storage = stack_.enter_context(embedded_server(port))
            storage.create_stream(stream_id, RateConfig(DEMO_KEYFRAME, DEMO_CHANGE))
            say(f"rstream demo: server {url} (SQLite {db})")
            device_client = stack_.enter_context(Client(url))
            viewer_client = stack_.enter_context(Client(url))
            device = SimulatedDevice(device_client.stream(stream_id).write_state, rate=rate)
            stack_.callback(device.close)
            device.start()
            started = time.monotonic()  # the clock of the output starts with the device
            deadline = None if duration is None else started + duration
            viewer = _Viewer(
                viewer_client.stream(stream_id), timedelta(seconds=lag), time.monotonic
            )
            queue = stack_.enter_context(viewer.robot.states(maxsize=1, overflow="latest"))
            # The readiness line: everything runs from here on.
            say(
                f"{READY}: simulated device writing {rate:g} states/s to {stream_id!r}; "
                f"try 'rstream tail {url} {stream_id}' in another shell"
                + ("" if duration else "; Ctrl-C stops")
            )
            say(f"rstream demo: open {url}/ui/streams/{stream_id} in a browser to watch it")
            if interactive:
                _run_live(console, viewer, queue, stream_id, started, deadline, stop)
            else:
                _run_lines(viewer, queue, started, deadline, stop)
    except KeyboardInterrupt:
        pass  # a second Ctrl-C or SIGTERM, during the clean-up
    writes = device.writes if device else 0
    received = viewer.received if viewer else 0
    say(
        f"rstream demo: stopped after {time.monotonic() - started:.1f} s: {writes} states "
        f"written, {received} received live; the temporary database was removed"
    )


def _next_state(queue: Any, timeout: float) -> tuple[datetime, dict[str, Any]] | None:
    """The next state within ``timeout`` (at most :data:`_TICK`), or ``None``."""
    try:
        item: tuple[datetime, dict[str, Any]] = queue.get(timeout=min(max(timeout, 0.0), _TICK))
    except Empty:
        return None
    return item


def _running(stop: StopSignals, deadline: float | None) -> bool:
    return not stop.requested and (deadline is None or time.monotonic() < deadline)


def _run_lines(
    viewer: _Viewer, queue: Any, started: float, deadline: float | None, stop: StopSignals
) -> None:
    """Plain lines for logs and pipes: one summary per second."""
    next_report = started + 1.0
    while _running(stop, deadline):
        until = next_report if deadline is None else min(next_report, deadline)
        try:
            item = _next_state(queue, until - time.monotonic())
        except ClientClosed:
            return
        if item is not None:
            viewer.take(item)
        now = time.monotonic()
        if now < next_report:
            continue
        next_report += 1.0
        elapsed = now - started
        status = viewer.status()
        if viewer.live is not None:
            ts, live = viewer.live
            click.echo(
                f"[{elapsed:5.1f}s] live    {format_time(ts)} {summarize_state(live)} ({status})"
            )
        else:
            click.echo(f"[{elapsed:5.1f}s] live    waiting for the first state ({status})")
        if elapsed >= viewer.lag.total_seconds():
            viewer.look_back()
            if viewer.past is not None:
                when, past = viewer.past
                click.echo(
                    f"[{elapsed:5.1f}s] history {format_time(when)} "
                    f"{summarize_state(past)} (state_at, {viewer.lag.total_seconds():g} "
                    "s ago)"
                )


def _run_live(
    console: Console,
    viewer: _Viewer,
    queue: Any,
    stream_id: str,
    started: float,
    deadline: float | None,
    stop: StopSignals,
) -> None:
    """A redrawn view: live state and the state of ``lag`` before it side by side."""
    lag = viewer.lag.total_seconds()

    def render() -> RenderableType:
        live_ts, live = viewer.live if viewer.live else (None, None)
        past_ts, past = viewer.past if viewer.past else (None, None)
        elapsed = time.monotonic() - started
        left = state_panel(f"{stream_id} live", live_ts, live)
        right = state_panel(
            f"{stream_id} {lag:g} s ago (state_at)",
            past_ts,
            past,
            None if past is not None else f"available after {lag:g} s",
        )
        footer = Text(
            f"{elapsed:.0f} s  |  {viewer.status()}  |  {viewer.received} states received "
            "live  |  Ctrl-C stops",
            style="dim",
        )
        return stack(side_by_side(left, right), footer)

    next_look = started + lag
    with Live(render(), console=console, auto_refresh=False, transient=False) as live:
        while _running(stop, deadline):
            wait = _TICK if deadline is None else deadline - time.monotonic()
            try:
                item = _next_state(queue, wait)
            except ClientClosed:
                return
            if item is not None:
                viewer.take(item)
            if time.monotonic() >= next_look:
                viewer.look_back()
                next_look += 1.0
            live.update(render(), refresh=True)
