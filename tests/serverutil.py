"""Test helpers: real servers on loopback ports, and a plain SSE reader.

- :func:`running_server`: the app in a uvicorn thread, yields the base URL.
- :class:`ServerProcess`: ``rstream serve`` in a subprocess on a storage URL,
  which can be SIGKILLed and restarted on the same port.
- :class:`SSEReader`: a minimal Server-Sent Events reader over ``requests``,
  independent of the client SDK, that also reports comments and ``retry:``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import requests

from rstream.server import ServerThread, create_app
from rstream.server.storage import MemoryStorage, Storage

__all__ = ["SSEEvent", "SSEReader", "ServerProcess", "running_app", "running_server"]


@contextlib.contextmanager
def running_app(storage: Storage | None = None, **create_app_kwargs: Any) -> Iterator[ServerThread]:
    """Serve ``create_app(storage, **kwargs)`` on a free loopback port; yield the
    :class:`ServerThread` (``.url``, ``.app.state.hub``).

    Without ``storage`` a fresh :class:`MemoryStorage` is used (and closed after).
    """
    own = storage is None
    store: Storage = MemoryStorage() if storage is None else storage
    server = ServerThread(create_app(store, **create_app_kwargs))
    try:
        yield server.start()
    finally:
        server.stop()
        if own:
            store.close()


@contextlib.contextmanager
def running_server(storage: Storage | None = None, **create_app_kwargs: Any) -> Iterator[str]:
    """Like :func:`running_app`, yielding the base URL (``http://127.0.0.1:PORT``)."""
    with running_app(storage, **create_app_kwargs) as server:
        yield server.url


class ServerProcess:
    """``rstream serve --db URL`` in a subprocess on a loopback port.

    ``start()`` waits for the line with the URL the server prints;
    ``kill()`` sends SIGKILL, ``stop()`` SIGTERM; ``start()`` again reuses the
    port of the first start. Server logs go to a temporary file
    (:meth:`log_text`). Usable as a context manager (stops on exit).
    """

    def __init__(
        self,
        db: str,
        *,
        port: int = 0,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        start_timeout: float = 15.0,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        self.db = db
        self.preexec_fn = preexec_fn  # run in the child before rstream starts (setrlimit)
        self.port = port
        self.args = args
        self.env = dict(os.environ if env is None else env)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  # closed by close()
        self.url = ""

    def start(self) -> ServerProcess:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("already running")
        self._reap()
        cmd = [
            sys.executable, "-c", "from rstream.cli.serve import serve; serve()",
            "--db", self.db, "--host", "127.0.0.1", "--port", str(self.port),
            *self.args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=self.env,
            stdin=subprocess.DEVNULL,
            preexec_fn=self.preexec_fn,
        )
        line = self._read_line(self.start_timeout)
        url = line.strip().rsplit(" ", 1)[-1]
        if not url.startswith("http://"):
            self.kill()
            raise RuntimeError(f"rstream serve did not start: {line!r}\n{self.log_text()}")
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        return self

    def _read_line(self, timeout: float) -> str:
        assert self.proc is not None
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
        return buf.decode(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the server and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the server and wait (SIGKILL after ``timeout``); its exit code."""
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        elif self.proc is not None:
            code = self.proc.returncode
        self._reap()
        return code

    def _reap(self) -> None:
        if self.proc is None:
            return
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def log_text(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def close(self) -> None:
        self.stop()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched block: ``event`` (``"message"`` by default), ``data``, ``id``;
    a comment line is reported as ``event="comment"``; a block with only
    ``retry:`` as ``event="retry"``."""

    event: str
    data: str = ""
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        import json

        return json.loads(self.data)


class SSEReader:
    """GET an SSE endpoint and read its events, comments included.

    ``timeout`` is the read timeout of the socket: a test that waits for an
    event fails with ``requests.exceptions.ConnectionError`` (read timed out)
    instead of hanging.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.session = requests.Session()
        self.response = self.session.get(
            url, headers=dict(headers or {}), params=params, stream=True, timeout=(5, timeout)
        )
        self.status = self.response.status_code
        self.headers = self.response.headers
        self._events = self._parse()

    def _parse(self) -> Iterator[SSEEvent]:
        buf = b""
        event, last_id, retry = "", None, None
        data: list[str] = []
        for chunk in self.response.iter_content(chunk_size=None):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.rstrip(b"\r").decode()
                if not line:
                    if data:
                        yield SSEEvent(event or "message", "\n".join(data), last_id, retry)
                    elif retry is not None:
                        yield SSEEvent("retry", "", last_id, retry)
                    event, data, retry = "", [], None
                    continue
                if line.startswith(":"):
                    yield SSEEvent("comment", line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    last_id = value
                elif name == "retry" and value.isdigit():
                    retry = int(value)

    def __iter__(self) -> Iterator[SSEEvent]:
        return self._events

    def next(self, *, comments: bool = False) -> SSEEvent:
        """The next event (comments skipped unless asked for); StopIteration at the end."""
        for event in self._events:
            if comments or event.event != "comment":
                return event
        raise StopIteration

    def take(self, n: int) -> list[SSEEvent]:
        """The next ``n`` events, skipping comments and ``retry``."""
        out: list[SSEEvent] = []
        while len(out) < n:
            event = self.next()
            if event.event != "retry":
                out.append(event)
        return out

    def close(self) -> None:
        self.response.close()
        self.session.close()

    def __enter__(self) -> SSEReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
