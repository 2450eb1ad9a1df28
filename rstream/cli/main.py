"""The ``rstream`` command line."""

from __future__ import annotations

import click

import rstream


@click.group()
@click.version_option(rstream.__version__, prog_name="rstream")
def main() -> None:
    """Follow remote state streams."""
