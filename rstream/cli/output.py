"""Error reporting, exit codes and progress bars: the one place the CLI turns
exceptions into a line on stderr.

Exit codes:

== ===================================================================
0  success
1  any other error (server error, malformed response, bad input file)
2  usage error (bad option or argument; click's own code)
3  not found: unknown stream, or no state at the requested time
4  authentication: no token, or the server refused it
5  connection: the server could not be reached, or the connection broke
== ===================================================================
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import click
import requests

from rstream.errors import (
    AuthError,
    EntryFormatError,
    OutOfRange,
    ProtocolError,
    RStreamError,
    ServerError,
    StreamNotFound,
    TransportError,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONNECTION",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "CLIError",
    "Target",
    "describe_error",
    "progress",
    "report_errors",
    "show_library_warnings",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_CONNECTION = 5

# ctx.meta keys: shared by every context of one invocation, so the error
# handler on the group sees what the subcommand recorded.
_VERBOSE = "rstream.verbose"
_TARGET = "rstream.target"


class CLIError(Exception):
    """A failure the CLI explains itself: the message is the whole line after ``error:``."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass
class Target:
    """What a command talks to, so error messages can name it."""

    url: str | None = None
    stream: str | None = None
    when: str | None = None


def set_verbose(ctx: click.Context, verbose: bool) -> None:
    if verbose:
        ctx.meta[_VERBOSE] = True


def set_target(
    ctx: click.Context, url: str | None, stream: str | None = None, when: str | None = None
) -> None:
    ctx.meta[_TARGET] = Target(url, stream, when)


def describe_error(exc: BaseException, target: Target | None = None) -> tuple[str, int] | None:
    """The one-line message (without ``error:``) and exit code for ``exc``.

    ``None`` when ``exc`` is not an error the CLI explains (a bug: the caller
    shows the traceback).
    """
    if isinstance(exc, CLIError):
        return exc.message, exc.exit_code
    t = target or Target()
    where = f" on {t.url}" if t.url else ""
    streams_hint = f"'rstream streams {t.url}'" if t.url else "'rstream streams URL'"
    if isinstance(exc, (StreamNotFound, OutOfRange)):
        return _missing(exc, t, where, streams_hint), EXIT_NOT_FOUND
    if isinstance(exc, AuthError):
        status = f" (HTTP {exc.status})" if exc.status else ""
        if exc.status == 403:
            hint = "this needs the server's write token"
        else:
            hint = "pass a valid token with --token-file FILE or the RSTREAM_TOKEN variable"
        return f"the server{where} refused the credentials{status}: {hint}", EXIT_AUTH
    if isinstance(exc, (TransportError, requests.ConnectionError, requests.Timeout)):
        server = t.url or "the server"
        return (
            f"cannot reach {server} ({_first_line(exc)}): check the URL and that the "
            "server is running ('rstream serve')",
            EXIT_CONNECTION,
        )
    if isinstance(exc, ServerError):
        status = f" (HTTP {exc.status}{', ' + exc.code if exc.code else ''})" if exc.status else ""
        return f"the server{where} answered with an error{status}: {exc}", EXIT_ERROR
    if isinstance(exc, ProtocolError):
        return (
            f"the server{where} sent a malformed response ({exc}): is the URL an rstream "
            "server of the same protocol version?",
            EXIT_ERROR,
        )
    if isinstance(exc, EntryFormatError):
        return f"{exc}: the file must hold one JSON entry per line", EXIT_ERROR
    if isinstance(exc, RStreamError):
        return f"{exc}", EXIT_ERROR
    if isinstance(exc, requests.RequestException):
        return f"request failed ({_first_line(exc)})", EXIT_CONNECTION
    return None


def _missing(exc: StreamNotFound | OutOfRange, t: Target, where: str, streams_hint: str) -> str:
    """What is missing: the stream, or its state at the time asked for."""
    if isinstance(exc, StreamNotFound):
        stream = exc.stream_id or t.stream
        name = f"stream {stream!r}" if stream else "the stream"
        return f"{name} not found{where}: check the id with {streams_hint}"
    name = f"stream {t.stream!r}" if t.stream else "the stream"
    if t.when:
        return (
            f"{name} has no state at {t.when}{where}: that is before its first snapshot; "
            f"pick a later time (first entries are listed by {streams_hint})"
        )
    return f"{name}{where} has no state yet: nothing was written to it"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextmanager
def report_errors(ctx: click.Context) -> Iterator[None]:
    """Turn the errors of a command into ``error: ...`` on stderr and an exit code.

    With ``--verbose`` the traceback is printed first. Errors the CLI cannot
    explain (bugs) keep their traceback.
    """
    reported: BaseException | None = None
    try:
        yield
    except (click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except KeyboardInterrupt:
        # Ctrl-C is how tail and demo are meant to end: no traceback.
        raise click.exceptions.Exit(130) from None
    except BrokenPipeError:
        # `rstream export ... | head`: the reader went away, which is fine.
        _silence_stdout()
        raise click.exceptions.Exit(EXIT_OK) from None
    except Exception as exc:
        described = describe_error(exc, ctx.meta.get(_TARGET))
        if described is None:
            raise
        message, code = described
        reported = exc
        if ctx.meta.get(_VERBOSE):
            traceback.print_exception(exc, file=sys.stderr)
        click.echo(f"error: {message}", err=True)
        raise click.exceptions.Exit(code) from None
    finally:
        _release_held(reported)


def _silence_stdout() -> None:
    # Python flushes stdout at exit; after EPIPE that flush fails again and
    # prints "Exception ignored"; point stdout at devnull instead.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def progress(*, total: float | None, unit: str, desc: str, enabled: bool | None = None) -> Any:
    """A tqdm bar on stderr when it is a terminal, a no-op bar otherwise.

    ``enabled=None`` decides: a bar only when stderr is a terminal and stdout
    is not (``rstream export ... > file``). Piped or scripted runs stay quiet,
    and output shown on the terminal is its own progress report.
    """
    from tqdm import tqdm  # type: ignore[import-untyped]

    if enabled is None:
        enabled = _isatty(sys.stderr) and not _isatty(sys.stdout)
    return tqdm(
        total=total,
        unit=unit,
        desc=desc,
        file=sys.stderr,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
    )


def _isatty(stream: IO[Any] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


class _EchoHandler(logging.Handler):
    """Library warnings as ``warning: ...`` lines on the *current* stderr.

    Looked up at each record (click.echo), not bound at creation, so a
    replaced ``sys.stderr`` (tests, redirection) is honoured.

    An error record that carries an exception (a live tail stopping on a
    fatal error) is held instead: the same exception reaches the command (its
    queue raises it) and :func:`report_errors` says it in the CLI's words.
    :meth:`show_held` shows what no command reported.
    """

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self._held: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR and _carried_errors(record):
            with self.lock:  # type: ignore[union-attr]  # created in Handler.__init__
                self._held.append(record)
            return
        self._echo(record)

    def _echo(self, record: logging.LogRecord) -> None:
        try:
            click.echo(f"{record.levelname.lower()}: {self.format(record)}", err=True)
        except Exception:
            self.handleError(record)

    def show_held(self, reported: BaseException | None) -> None:
        """Show the held records, except those about ``reported`` (or its causes)."""
        with self.lock:  # type: ignore[union-attr]
            held, self._held = self._held, []
        said = _chain(reported)
        for record in held:
            if not any(exc is one for exc in _carried_errors(record) for one in said):
                self._echo(record)


def _carried_errors(record: logging.LogRecord) -> list[BaseException]:
    args = record.args if isinstance(record.args, tuple) else ()
    return [arg for arg in args if isinstance(arg, BaseException)]


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during."""
    seen: list[BaseException] = []
    while exc is not None and not any(exc is one for one in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _release_held(reported: BaseException | None) -> None:
    for handler in logging.getLogger("rstream").handlers:
        if isinstance(handler, _EchoHandler):
            handler.show_held(reported)


def show_library_warnings() -> None:
    """Show the library's warnings (a reconnect that lost events, a failed write) on stderr.

    For the client commands and the demo. Idempotent; does nothing when the
    ``rstream`` logger already has a handler.
    """
    logger = logging.getLogger("rstream")
    if logger.handlers:
        return
    # The handler's level, not the logger's: `rstream serve` logs INFO through
    # the root logger and must keep doing so.
    logger.addHandler(_EchoHandler(logging.WARNING))
