"""``rstream streams URL``: the streams a server holds."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from rstream.cli.common import URL, ClientOptions, client_options, dump_json
from rstream.errors import ProtocolError


def _check(body: Any) -> list[dict[str, Any]]:
    streams = body.get("streams") if isinstance(body, dict) else None
    if not isinstance(streams, list) or not all(
        isinstance(s, dict) and isinstance(s.get("id"), str) for s in streams
    ):
        raise ProtocolError(f"GET /v1/streams answered {str(body)[:200]!r}, not a stream list")
    return streams


@click.command()
@click.argument("url", type=URL)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@client_options
def streams(url: tuple[str, ...], as_json: bool, opts: ClientOptions) -> None:
    """List the streams on the server at URL: id, first and last entry, revision."""
    with opts.client(url) as client:
        found = _check(client.transport.get_json("/v1/streams"))
    if as_json:
        for item in found:
            click.echo(dump_json(item))
        return
    console = Console()
    if not console.is_terminal:
        # Tab-separated for scripts (cut, awk): id, first, last, revision.
        for item in found:
            fields = (item.get("id"), item.get("first"), item.get("last"), item.get("revision"))
            click.echo("\t".join("-" if f is None else str(f) for f in fields))
        return
    if not found:
        console.print(f"no streams on {url[0]} yet")
        return
    table = Table("stream", "first entry", "last entry", "revision")
    for item in found:
        table.add_row(
            item["id"],
            str(item.get("first") or "-"),
            str(item.get("last") or "-"),
            str(item.get("revision", "-")),
        )
    console.print(table)
