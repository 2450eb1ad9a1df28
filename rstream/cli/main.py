"""The ``rstream`` command line.

Each command lives in a module named after it; errors of every command are
turned into one ``error: ...`` line and an exit code in one place,
:class:`RStreamGroup` (see :mod:`rstream.cli.output` for the codes).
"""

from __future__ import annotations

from typing import Any

import click

import rstream
from rstream.cli.backup import backup, restore
from rstream.cli.cache import cache
from rstream.cli.demo import demo
from rstream.cli.history import history
from rstream.cli.output import report_errors
from rstream.cli.plot import plot
from rstream.cli.serve import serve
from rstream.cli.state import state
from rstream.cli.streams import streams
from rstream.cli.tail import tail
from rstream.cli.transfer import export_entries, import_entries


class RStreamGroup(click.Group):
    """A group that reports the errors of its commands as ``error: ...`` lines."""

    def invoke(self, ctx: click.Context) -> Any:
        with report_errors(ctx):
            return super().invoke(ctx)


@click.group(cls=RStreamGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(rstream.__version__, prog_name="rstream")
def main() -> None:
    """Follow remote state streams.

    \b
    Exit codes: 0 ok, 1 error, 2 usage, 3 stream or time not found,
    4 authentication, 5 connection.
    Tokens: --token-file FILE, $RSTREAM_TOKEN_FILE or $RSTREAM_TOKEN.
    """


main.add_command(streams)
main.add_command(state)
main.add_command(tail)
main.add_command(history)
main.add_command(export_entries)
main.add_command(import_entries)
main.add_command(plot)
main.add_command(demo)
main.add_command(serve)
main.add_command(backup)
main.add_command(restore)
main.add_command(cache)
