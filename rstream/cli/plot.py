"""``rstream plot URL STREAM FIELD... -o out.png``: numeric fields over time.

matplotlib is an optional extra (``pip install 'remote-state-stream[plot]'``),
imported only when the command runs, with the Agg backend (no display needed).
A state holds until the next change, so the lines are drawn as steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from rstream.cli.common import STREAM, URL, ClientOptions, client_options, format_time
from rstream.cli.fields import MISSING, get_path, numeric_value, parse_path
from rstream.cli.history import TimeProgress, check_range, time_range_options
from rstream.cli.output import EXIT_ERROR, CLIError, set_target
from rstream.cli.timeparse import DURATION

__all__ = ["Series", "collect_series", "plot", "render_png"]


class Series:
    """The values of one field path over time (``nan`` where it is missing or not a number)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.parts = parse_path(path)
        self.times: list[datetime] = []
        self.values: list[float] = []

    @property
    def numeric_points(self) -> int:
        return sum(1 for value in self.values if not math.isnan(value))

    def add(self, ts: datetime, state: dict[str, Any]) -> None:
        raw = get_path(state, self.parts)
        value = None if raw is MISSING else numeric_value(raw)
        self.times.append(ts)
        self.values.append(math.nan if value is None else value)


def collect_series(
    fields: Sequence[str], states: Iterable[tuple[datetime, dict[str, Any]]]
) -> list[Series]:
    """One :class:`Series` per field from ``(timestamp, state)`` pairs."""
    series = [Series(field) for field in fields]
    for ts, state in states:
        for one in series:
            one.add(ts, state)
    return series


def _import_pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise CLIError(
            "'rstream plot' needs matplotlib, which is not installed: "
            "pip install 'remote-state-stream[plot]'",
            EXIT_ERROR,
        ) from None
    matplotlib.use("Agg")  # files only; never open a window or need a display
    import matplotlib.pyplot as plt

    return plt


def render_png(
    series: Sequence[Series],
    output: Path,
    *,
    title: str,
    end: datetime | None = None,
    width: float = 10.0,
    height: float = 4.0,
    dpi: int = 100,
) -> None:
    """Draw ``series`` as step lines on one time axis into the PNG ``output``.

    ``end`` extends each line's last value to the end of the range, since the
    last state holds until then.
    """
    plt = _import_pyplot()
    import matplotlib.dates

    mdates: Any = matplotlib.dates  # partly untyped

    fig, ax = plt.subplots(figsize=(width, height), dpi=dpi)
    try:
        for one in series:
            times = list(one.times)
            values = list(one.values)
            if end is not None and times and times[-1] < end:
                times.append(end)
                values.append(values[-1])
            ax.plot(times, values, drawstyle="steps-post", label=one.path, linewidth=1.5)
        ax.set_title(title)
        ax.set_xlabel("time (UTC)")
        ax.grid(True, alpha=0.3)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        if len(series) > 1:
            ax.legend(loc="best")
        else:
            ax.set_ylabel(series[0].path)
        fig.tight_layout()
        fig.savefig(output, format="png")
    finally:
        plt.close(fig)


@click.command(params=time_range_options("-10m"))
@click.argument("url", type=URL)
@click.argument("stream", type=STREAM)
@click.argument("fields", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="The PNG file to write.",
)
@click.option(
    "--step",
    type=DURATION,
    default=None,
    help="Sample every STEP instead of using every change (for long ranges).",
)
@click.option("--title", default=None, help="Plot title (default: the stream id).")
@client_options
def plot(
    url: tuple[str, ...],
    stream: str,
    fields: tuple[str, ...],
    start: datetime,
    end: datetime,
    output: Path,
    step: timedelta | None,
    title: str | None,
    opts: ClientOptions,
) -> None:
    """Plot numeric FIELDs of STREAM over [--start, --end) into a PNG.

    FIELDs are dotted paths into the state: battery, sensors.temperature.motor,
    tasks.0.progress. Booleans plot as 0/1; missing or non-numeric values
    leave gaps. Needs matplotlib: pip install 'remote-state-stream[plot]'.
    """
    check_range(start, end)
    for field in fields:
        try:
            parse_path(field)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="FIELDS") from None
    _import_pyplot()  # fail before fetching anything when matplotlib is missing
    set_target(click.get_current_context(), url[0], stream, format_time(start))
    with opts.client(url) as client, TimeProgress(start, end, f"plot {stream}") as bar:
        robot = client.stream(stream)
        items = robot.history(start, end) if step is None else robot.history(start, end, step=step)

        def states() -> Iterable[tuple[datetime, dict[str, Any]]]:
            for ts, value in items:
                bar.advance_to(ts)
                yield ts, value

        series = collect_series(fields, states())
    if not any(one.times for one in series):
        raise CLIError(
            f"stream {stream!r} has no states between {format_time(start)} and "
            f"{format_time(end)}: widen --start/--end",
            EXIT_ERROR,
        )
    empty = [one.path for one in series if one.numeric_points == 0]
    if len(empty) == len(series):
        raise CLIError(
            f"no numeric values for {', '.join(map(repr, empty))} in that range: check the "
            f"field paths against 'rstream state {url[0]} {stream}'",
            EXIT_ERROR,
        )
    for path in empty:
        click.echo(f"warning: field {path!r} has no numeric values in that range", err=True)
    render_png(series, output, title=title or stream, end=end)
    points = max(len(one.times) for one in series)
    click.echo(f"wrote {output} ({points} states, {len(series)} fields)", err=True)
