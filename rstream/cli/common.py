"""What every client command shares: the URL argument, the options that build a
:class:`rstream.client.Client`, and token loading.

Client commands read and write the disk cache of committed windows
(:func:`cache_dir`) unless given ``--no-cache``.

Tokens never come from a plain command-line flag (it would show in ``ps`` and
shell history): ``--token-file FILE`` (or ``RSTREAM_TOKEN_FILE``) names a file
whose content is the token, re-read on every (re)connect so a rotated token is
picked up; otherwise ``RSTREAM_TOKEN`` holds the token itself.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from rstream.cli.output import (
    EXIT_AUTH,
    CLIError,
    set_target,
    set_verbose,
    show_library_warnings,
)
from rstream.errors import ConfigError

if TYPE_CHECKING:
    from rstream.client import Client

__all__ = [
    "STREAM",
    "URL",
    "ClientOptions",
    "StreamIdParam",
    "UrlParam",
    "cache_dir",
    "client_options",
    "dump_json",
    "format_time",
    "load_token",
]

F = TypeVar("F", bound=Callable[..., Any])

CACHE_DIR_VARIABLE = "RSTREAM_CACHE_DIR"


class UrlParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A server base URL (``http://host:port``), or several replicas separated by commas."""

    name = "URL"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        from rstream.client.options import normalise_urls

        urls = [part for part in str(value).split(",") if part.strip()]
        if not urls:
            self.fail("a server URL is needed, e.g. http://127.0.0.1:8080", param, ctx)
        try:
            return normalise_urls(urls)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


URL = UrlParam()


def load_token(token_file: Path | None, environ: dict[str, str] | None = None) -> Any:
    """The token to send: a callable re-reading ``token_file``, the ``RSTREAM_TOKEN``
    value, or ``None``.

    Raises :class:`CLIError` (exit 4) when the file cannot be read or is empty,
    so a typo in the path is not silently an anonymous request.
    """
    env = os.environ if environ is None else environ
    if token_file is None:
        token = env.get("RSTREAM_TOKEN", "").strip()
        return token or None

    def read() -> str:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CLIError(
                f"cannot read the token file {str(token_file)!r} ({exc.strerror or exc}): "
                "check --token-file / RSTREAM_TOKEN_FILE",
                EXIT_AUTH,
            ) from None
        if not token:
            raise CLIError(
                f"the token file {str(token_file)!r} is empty: put the token in it", EXIT_AUTH
            )
        return token

    read()  # fail now, before any request, if the file is unusable
    return read


@dataclass(frozen=True)
class ClientOptions:
    """The parsed client options of one command."""

    token_file: Path | None
    timeout: float
    retries: int | None
    ca_bundle: str | None
    verbose: bool
    cache: bool = True  # the default disk cache (see rstream.cli.cache); --no-cache: off

    def client(self, urls: tuple[str, ...], **overrides: Any) -> Client:
        """A :class:`~rstream.client.Client` for ``urls`` built from these options."""
        import tenacity

        from rstream.client import Client
        from rstream.client.retry import default_template

        kwargs: dict[str, Any] = {
            "token": load_token(self.token_file),
            "timeout": (min(3.05, self.timeout), self.timeout),
            "verify": self.ca_bundle if self.ca_bundle else True,
            "cache": cache_dir() if self.cache else None,
        }
        if self.retries is not None:
            # The SDK's policy, with as many attempts as asked and no time limit.
            attempts = tenacity.stop_after_attempt(self.retries + 1)
            kwargs["retry"] = default_template().copy(stop=attempts)
        kwargs.update(overrides)
        return Client(list(urls), **kwargs)


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The CLI's disk cache directory: ``$RSTREAM_CACHE_DIR``, else the SDK's default
    (``cache=True``: the user's cache directory)."""
    from rstream.client.diskcache import default_cache_dir

    found = (os.environ if environ is None else environ).get(CACHE_DIR_VARIABLE)
    return Path(found) if found else default_cache_dir()


def client_options(func: F) -> F:
    """Add the shared client options; the command receives them as ``opts``."""

    @click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="RSTREAM_TOKEN_FILE",
        help="File holding the bearer token (else $RSTREAM_TOKEN_FILE, then $RSTREAM_TOKEN).",
    )
    @click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=30.0,
        show_default=True,
        help="Seconds to wait for the server to answer.",
    )
    @click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=None,
        help="Retries of a request after a connection error or 5xx (default 4; "
        "a live tail always reconnects).",
    )
    @click.option(
        "--ca-bundle",
        type=click.Path(exists=True, dir_okay=False),
        help="CA certificates to verify the server's TLS certificate with.",
    )
    @click.option(
        "--no-cache",
        is_flag=True,
        help="Keep fetched history in memory only (default: also in the disk cache, "
        "see 'rstream cache info').",
    )
    @click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of errors.")
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        token_file: Path | None,
        timeout: float,
        retries: int | None,
        ca_bundle: str | None,
        no_cache: bool,
        verbose: bool,
        **kwargs: Any,
    ) -> Any:
        ctx = click.get_current_context()
        set_verbose(ctx, verbose)
        show_library_warnings()
        urls = kwargs.get("url")
        if urls:
            set_target(ctx, urls[0], kwargs.get("stream"))
        opts = ClientOptions(token_file, timeout, retries, ca_bundle, verbose, not no_cache)
        return func(*args, opts=opts, **kwargs)

    return wrapper  # type: ignore[return-value]


class StreamIdParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A stream id, checked against the protocol's rules before any request."""

    name = "STREAM"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        from rstream.client.transport import quote_stream_id

        text = str(value)
        try:
            quote_stream_id(text)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return text


STREAM = StreamIdParam()


def dump_json(value: Any, *, indent: int | None = None) -> str:
    """JSON as the CLI prints it: UTF-8 kept readable, compact separators on one line."""
    import json

    if indent is None:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value, ensure_ascii=False, indent=indent)


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC, as on the wire."""
    from rstream.core.timestamps import format_rfc3339, to_micros

    return format_rfc3339(to_micros(when))
