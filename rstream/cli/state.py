"""``rstream state URL STREAM [--at TIME]``: one state, now or at a past moment."""

from __future__ import annotations

from datetime import datetime

import click

from rstream.cli.common import STREAM, URL, ClientOptions, client_options, dump_json, format_time
from rstream.cli.output import set_target
from rstream.cli.timeparse import TIME


@click.command()
@click.argument("url", type=URL)
@click.argument("stream", type=STREAM)
@click.option(
    "--at",
    "when",
    type=TIME,
    default=None,
    help="The moment: RFC 3339, epoch seconds, 'now' or relative (-5m, -1h30m). "
    "Default: the newest state.",
)
@click.option("--json", "as_json", is_flag=True, help="One compact JSON line.")
@client_options
def state(
    url: tuple[str, ...], stream: str, when: datetime | None, as_json: bool, opts: ClientOptions
) -> None:
    """Print the state of STREAM: the newest one, or the one at --at.

    Prints {"timestamp": ..., "state": {...}}: the newest entry's time, or the
    --at time.
    """
    ctx = click.get_current_context()
    set_target(ctx, url[0], stream, None if when is None else format_time(when))
    with opts.client(url) as client:
        robot = client.stream(stream)
        if when is None:
            ts, value = robot.latest()
        else:
            ts, value = when, robot.state_at(when)
    doc = {"timestamp": format_time(ts), "state": value}
    click.echo(dump_json(doc) if as_json else dump_json(doc, indent=2))
