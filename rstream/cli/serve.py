"""``rstream serve``: run the reference server."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType

import click

__all__ = ["default_db_url", "serve"]

_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def default_db_url() -> str:
    """``sqlite:///`` + ``streams.db`` in the user data directory (created if missing)."""
    import platformdirs

    directory = Path(platformdirs.user_data_dir("rstream"))
    directory.mkdir(parents=True, exist_ok=True)
    return "sqlite:///" + str(directory / "streams.db")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _token(path: str | None, env: str) -> str | None:
    from rstream.server.auth import read_token_file

    if path is not None:
        try:
            return read_token_file(path)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc)) from None
    value = os.environ.get(env, "").strip()
    return value or None


@click.command()
@click.option(
    "--db",
    metavar="URL",
    help="Storage: sqlite:///relative.db, sqlite:////abs/path.db, memory:// or "
    "postgresql://user@host/db[?schema=name] for several replicas on one database "
    "(default: streams.db in the user data directory).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--read-token-file",
    type=click.Path(dir_okay=False),
    help="File holding the read token ($RSTREAM_READ_TOKEN otherwise).",
)
@click.option(
    "--write-token-file",
    type=click.Path(dir_okay=False),
    help="File holding the write token ($RSTREAM_WRITE_TOKEN otherwise).",
)
@click.option(
    "--heartbeat",
    default=15.0,
    show_default=True,
    type=click.FloatRange(0.05, 300),
    help="Seconds between heartbeats on live responses.",
)
@click.option(
    "--subscriber-buffer",
    default=16 * 1024 * 1024,  # Limits().subscriber_bytes; the server extra loads lazily
    show_default=True,
    type=click.IntRange(1),
    metavar="BYTES",
    help="How far (bytes of events) a live subscriber may fall behind before it is "
    "disconnected (it resumes by revision).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Let pages from ORIGIN (scheme://host[:port]) read streams and follow them "
    "live from the browser (repeatable; off by default).",
)
@click.option(
    "--retry-ms",
    default=1000,
    show_default=True,
    type=click.IntRange(0),
    help="The reconnection delay the live tail asks clients for (SSE retry:).",
)
def serve(
    db: str | None,
    host: str,
    port: int,
    read_token_file: str | None,
    write_token_file: str | None,
    heartbeat: float,
    subscriber_buffer: int,
    cors_origins: tuple[str, ...],
    retry_ms: int,
) -> None:
    """Run an rstream server until Ctrl-C or SIGTERM.

    Binding an address other than loopback needs a write token, so that the
    network cannot write to your streams.
    """
    from rstream.server import Limits, ServerThread, create_app, open_storage

    read_token = _token(read_token_file, "RSTREAM_READ_TOKEN")
    write_token = _token(write_token_file, "RSTREAM_WRITE_TOKEN")
    if write_token is None and not is_loopback(host):
        raise click.UsageError(
            f"refusing to listen on {host} without a write token: anyone on the network "
            "could write. Pass --write-token-file FILE (or set RSTREAM_WRITE_TOKEN), "
            "or listen on 127.0.0.1."
        )
    _check_origins(cors_origins)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    url = db or default_db_url()
    storage = open_storage(url)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        app = create_app(
            storage,
            read_token=read_token,
            write_token=write_token,
            heartbeat=heartbeat,
            limits=Limits(subscriber_bytes=subscriber_buffer),
            cors_origins=cors_origins,
            retry_ms=retry_ms,
        )
        with ServerThread(app, host, port) as server:
            click.echo(f"rstream serve: {_redacted(url)} listening on {server.url}")
            stop.wait()
            click.echo("rstream serve: stopping", err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        storage.close()


def _check_origins(origins: tuple[str, ...]) -> None:
    from rstream.errors import ConfigError
    from rstream.server.cors import normalize_origin

    for origin in origins:
        try:
            normalize_origin(origin)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--cors-origin") from None


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if at and ":" in userinfo:
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hostpart}"
    return url
