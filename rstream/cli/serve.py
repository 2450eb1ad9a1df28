"""``rstream serve``: run the reference server."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from rstream.cli.timeparse import DURATION

__all__ = ["default_db_url", "serve"]

_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}

logger = logging.getLogger("rstream.server")
_F = TypeVar("_F", bound=Callable[..., Any])


def default_db_url() -> str:
    """``sqlite:///`` + ``streams.db`` in the user data directory (created if missing)."""
    import platformdirs

    directory = Path(platformdirs.user_data_dir("rstream"))
    directory.mkdir(parents=True, exist_ok=True)
    return "sqlite:///" + str(directory / "streams.db")


_MIB = 1024 * 1024


def _limit(flag: str, default: float, metavar: str, help: str) -> Callable[[_F], _F]:
    """A limit's option; the defaults are those of Limits and ConnectionLimits (the
    server extra loads lazily). Sizes and counts are positive ints, times seconds."""
    kind = click.IntRange(1) if isinstance(default, int) else click.FloatRange(0.01, 3600)
    return click.option(
        flag, default=default, show_default=True, type=kind, metavar=metavar, help=help
    )


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
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (an IPv6 address with or without brackets).",
)
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
@_limit(
    "--subscriber-buffer",
    16 * _MIB,
    "BYTES",
    "How far (bytes of events) a live subscriber may fall behind before it is "
    "disconnected (it resumes by revision).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Accept requests whose Host is NAME (repeatable; '*': any). Loopback names, "
    "IP addresses, this machine's name and the --host name are always accepted.",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Let web pages of ORIGIN (https://app.example) write (repeatable).",
)
@click.option(
    "--default-retention",
    type=DURATION,
    metavar="DURATION",
    help="Delete whole windows older than this (30d, 12h) in streams that set no "
    "retention of their own (default: keep everything).",
)
@_limit("--max-body", 8 * _MIB, "BYTES", "Largest request body (413 past it).")
@_limit("--max-state", _MIB, "BYTES", "Largest state or entry data, as compact JSON (413 past it).")
@_limit("--max-subscribers", 1_000, "N", "Live subscribers per stream (429 past it).")
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    metavar="N",
    help="Open connections at most (default: what the open files limit allows).",
)
@_limit("--idle-timeout", 5.0, "SECONDS", "Close a connection that waits this long for a request.")
@_limit(
    "--request-timeout",
    30.0,
    "SECONDS",
    "Answer 408 and close when a request takes longer than this to arrive.",
)
@_limit(
    "--send-timeout",
    30.0,
    "SECONDS",
    "Drop a response whose client takes no data for this long.",
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
@click.option(
    "--metrics",
    is_flag=True,
    help="Serve Prometheus metrics at /metrics (behind the read token when there is one).",
)
def serve(
    db: str | None,
    host: str,
    port: int,
    read_token_file: str | None,
    write_token_file: str | None,
    heartbeat: float,
    subscriber_buffer: int,
    allowed_hosts: tuple[str, ...],
    allowed_origins: tuple[str, ...],
    default_retention: timedelta | None,
    max_body: int,
    max_state: int,
    max_subscribers: int,
    max_connections: int | None,
    idle_timeout: float,
    request_timeout: float,
    send_timeout: float,
    cors_origins: tuple[str, ...],
    retry_ms: int,
    metrics: bool,
) -> None:
    """Run an rstream server until Ctrl-C or SIGTERM.

    Binding an address other than loopback needs a write token, so that the
    network cannot write to your streams.
    """
    from rstream.errors import ConfigError
    from rstream.server import Limits, ServerThread, create_app, open_storage
    from rstream.server.auth import Tokens
    from rstream.server.compaction import Compactor
    from rstream.server.connections import ConnectionLimits
    from rstream.server.logs import RepeatFilter
    from rstream.server.storage.pg_url import redact

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
    detach_filter = RepeatFilter().attach()
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
            limits=Limits(
                max_body_bytes=max_body,
                max_state_bytes=max_state,
                max_subscribers=max_subscribers,
                subscriber_bytes=subscriber_buffer,
            ),
            allowed_hosts=(*allowed_hosts, host.strip("[]")),
            allowed_origins=allowed_origins,
            cors_origins=cors_origins,
            retry_ms=retry_ms,
            metrics=metrics,
            compactor=Compactor(storage, default_retention=default_retention),
        )
        connections = ConnectionLimits(max_connections, idle_timeout, request_timeout, send_timeout)
        try:
            server = ServerThread(app, host, port, connections=connections).start()
        except ConfigError as exc:  # an address that cannot be bound, in one line
            raise click.ClickException(
                f"{exc} (--host takes an address of this machine: 127.0.0.1, ::1, 0.0.0.0, ...)"
            ) from None
        logger.info("access: %s", Tokens(read_token, write_token).describe())
        logger.info(
            "retention: %s for streams that set none",
            "keep everything" if default_retention is None else f"{default_retention}",
        )
        with server:
            click.echo(f"rstream serve: {redact(url)} listening on {server.url}")
            stop.wait()
            click.echo("rstream serve: stopping", err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        storage.close()
        detach_filter()


def _check_origins(origins: tuple[str, ...]) -> None:
    from rstream.errors import ConfigError
    from rstream.server.cors import normalize_origin

    for origin in origins:
        try:
            normalize_origin(origin)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--cors-origin") from None
