"""``rstream history URL STREAM --start --end [--step] [--json]``: states over a time range."""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from rstream.cli.common import STREAM, URL, ClientOptions, client_options, dump_json, format_time
from rstream.cli.output import progress, set_target
from rstream.cli.timeparse import DURATION, TIME


def time_range_options(
    default_start: str | None, default_end: str | None = "now"
) -> list[click.Option]:
    """``--start``/``--end`` shared by history, export and plot (``None``: the stream's own)."""
    return [
        click.Option(
            ["--start"],
            type=TIME,
            default=default_start,
            show_default=default_start is not None,
            help="From this time (included): RFC 3339, epoch seconds, 'now' or -5m, -1h30m."
            + ("" if default_start is not None else "  [default: the first entry]"),
        ),
        click.Option(
            ["--end"],
            type=TIME,
            default=default_end,
            show_default=default_end is not None,
            help="Up to this time (excluded)."
            + ("" if default_end is not None else "  [default: after the newest entry]"),
        ),
    ]


def check_range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise click.BadParameter(
            f"--end ({format_time(end)}) must be after --start ({format_time(start)})",
            param_hint="'--end'",
        )


class TimeProgress:
    """A progress bar over a time range: advances with the timestamps seen."""

    def __init__(self, start: datetime, end: datetime, desc: str) -> None:
        self._start = start
        self._total = max((end - start).total_seconds(), 1e-6)
        self._done = 0.0
        self._bar = progress(total=round(self._total, 3), unit="s", desc=desc)

    def advance_to(self, ts: datetime) -> None:
        done = min(max((ts - self._start).total_seconds(), 0.0), self._total)
        if done > self._done:
            self._bar.update(round(done - self._done, 3))
            self._done = done

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> TimeProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@click.command(params=time_range_options("-10m"))
@click.argument("url", type=URL)
@click.argument("stream", type=STREAM)
@click.option(
    "--step",
    type=DURATION,
    default=None,
    help="Sample every STEP (500ms, 1s, 5m) instead of printing every change.",
)
@click.option("--json", "as_json", is_flag=True, help='NDJSON: {"timestamp":..., "state":...}.')
@client_options
def history(
    url: tuple[str, ...],
    stream: str,
    start: datetime,
    end: datetime,
    step: timedelta | None,
    as_json: bool,
    opts: ClientOptions,
) -> None:
    """Print every state of STREAM in [--start, --end), or one every --step.

    Without --json each line is "TIMESTAMP STATE-AS-JSON".
    """
    check_range(start, end)
    set_target(click.get_current_context(), url[0], stream, format_time(start))
    with opts.client(url) as client, TimeProgress(start, end, stream) as bar:
        robot = client.stream(stream)
        items = robot.history(start, end) if step is None else robot.history(start, end, step=step)
        for ts, value in items:
            if as_json:
                click.echo(dump_json({"timestamp": format_time(ts), "state": value}))
            else:
                click.echo(f"{format_time(ts)} {dump_json(value)}")
            bar.advance_to(ts)
