"""``rstream cache info`` and ``rstream cache clear [URL]``: the CLI's disk cache.

The client commands keep the history they fetch in the directory
:func:`~rstream.cli.common.cache_dir` names (``$RSTREAM_CACHE_DIR``, else the
user's cache directory) unless given ``--no-cache``; these commands show and
empty it. Neither contacts a server.
"""

from __future__ import annotations

import click

from rstream.cli.common import URL, cache_dir, dump_json
from rstream.client.diskcache import DiskCache


@click.group()
def cache() -> None:
    """Show or empty the disk cache of fetched history ($RSTREAM_CACHE_DIR)."""


@cache.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def info(as_json: bool) -> None:
    """Where the cache is, how big, and which store each URL served last."""
    disk = DiskCache(cache_dir())
    try:
        found = disk.info()
    finally:
        disk.close()
    if as_json:
        click.echo(dump_json(found))
        return
    click.echo(f"path:    {found['path']}")
    click.echo(f"file:    {found['file_bytes']:,} bytes")
    click.echo(
        f"windows: {found['windows']:,} ({found['entries']:,} entries, "
        f"{found['bytes']:,} bytes compressed; limit {found['max_bytes']:,})"
    )
    for url, store in found["urls"].items():
        click.echo(f"url:     {url} (store {store})")
    if "error" in found:
        click.echo(f"unusable: {found['error']}")


@cache.command()
@click.argument("url", type=URL, required=False)
def clear(url: tuple[str, ...] | None) -> None:
    """Delete the cached history of the store at URL, or all of it."""
    disk = DiskCache(cache_dir())
    try:
        deleted = sum(disk.clear(u) for u in url) if url else disk.clear()
    finally:
        disk.close()
    if disk.broken is not None:
        raise click.ClickException(
            f"the cache {disk.path} is unusable ({disk.broken}); delete the file yourself"
        )
    click.echo(f"removed {deleted:,} cached windows from {disk.path}")
