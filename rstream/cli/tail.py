"""``rstream tail URL STREAM``: follow a stream live."""

from __future__ import annotations

import click
from rich.console import Console
from rich.live import Live

from rstream.cli.common import STREAM, URL, ClientOptions, client_options, dump_json, format_time
from rstream.cli.output import set_target
from rstream.cli.views import RateMeter, health_line, state_panel


@click.command()
@click.argument("url", type=URL)
@click.argument("stream", type=STREAM)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print every state as one JSON line {"timestamp":..., "state":...}.',
)
@click.option(
    "-n",
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after COUNT states (the first is the current state).",
)
@client_options
def tail(
    url: tuple[str, ...], stream: str, as_json: bool, count: int | None, opts: ClientOptions
) -> None:
    """Follow STREAM live: its current state, then every change as it happens.

    On a terminal the view is redrawn in place; with --json (or when stdout is
    not a terminal) each state is a line. Stop with Ctrl-C or --count.
    """
    set_target(click.get_current_context(), url[0], stream)
    console = Console()
    lines = as_json or not console.is_terminal
    with opts.client(url) as client:
        robot = client.stream(stream)
        # Lines must show every state; a redrawn view only ever shows the newest.
        queue = robot.states(maxsize=1000, overflow="block" if lines else "latest")
        seen = 0
        with queue:
            if lines:
                for ts, value in queue:
                    click.echo(dump_json({"timestamp": format_time(ts), "state": value}))
                    seen += 1
                    if count is not None and seen >= count:
                        return
                return
            meter = RateMeter()
            with Live(console=console, auto_refresh=False, transient=False) as live:
                for ts, value in queue:
                    health = robot.health
                    meter.observe(health.revision)
                    subtitle = health_line(health, meter.rate())
                    live.update(state_panel(stream, ts, value, subtitle), refresh=True)
                    seen += 1
                    if count is not None and seen >= count:
                        return
