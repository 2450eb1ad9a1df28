"""``rstream streams URL``: the streams a server holds."""

from __future__ import annotations

from datetime import datetime

import click
from rich.console import Console
from rich.table import Table

from rstream.cli.common import URL, ClientOptions, client_options, dump_json, format_time


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


@click.command()
@click.argument("url", type=URL)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@client_options
def streams(url: tuple[str, ...], as_json: bool, opts: ClientOptions) -> None:
    """List the streams on the server at URL: id, first and last entry, revision.

    On a terminal a table; otherwise tab-separated lines "id first last
    revision" (with "-" for an empty stream's times), or JSON with --json.
    """
    with opts.client(url) as client:
        found = client.streams()
    rows = [(s.id, _time(s.first), _time(s.last), s.revision) for s in found]
    if as_json:
        for sid, first, last, revision in rows:
            click.echo(dump_json({"id": sid, "first": first, "last": last, "revision": revision}))
        return
    console = Console()
    if not console.is_terminal:
        for row in rows:
            click.echo("\t".join("-" if f is None else str(f) for f in row))
        return
    if not rows:
        console.print(f"no streams on {url[0]} yet")
        return
    table = Table("stream", "first entry", "last entry", "revision")
    for sid, first, last, revision in rows:
        table.add_row(sid, first or "-", last or "-", str(revision))
    console.print(table)
