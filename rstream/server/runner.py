"""Run a server in a background thread: for tests, the demo and scripts.

``ServerThread(app).start()`` binds a loopback port (a free one by default),
runs uvicorn on it in a thread, and returns once the server accepts
connections; ``stop()`` ends live responses, shuts uvicorn down and joins the
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from rstream.errors import RStreamError
from rstream.server.http11 import JSONErrorsH11Protocol

__all__ = ["ServerThread"]

logger = logging.getLogger("rstream.server")


class ServerThread:
    """uvicorn serving ``app`` on ``host:port`` in a daemon thread.

    ``port=0`` picks a free port; :attr:`url` is the base URL once
    :meth:`start` has returned. :meth:`stop` is idempotent, asks live
    responses to end (``app.state.hub.close()``) and joins the thread. Usable
    as a context manager.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        graceful_timeout: int = 2,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._graceful_timeout = graceful_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def url(self) -> str:
        """``http://host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __repr__(self) -> str:
        state = "running" if self._thread and self._thread.is_alive() else "stopped"
        return f"<ServerThread {self.url} {state}>"

    def start(self) -> ServerThread:
        """Bind, start serving and return once connections are accepted."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("a ServerThread can be started once")
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets
            # whose proto says TCP; with proto 0, Nagle + delayed ACK cost 40 ms a request.
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, self.port))
            except BaseException:
                sock.close()
                raise
            self._sock = sock
            self.port = sock.getsockname()[1]
            config = uvicorn.Config(
                self.app,
                lifespan="on",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=self._graceful_timeout,
                http=JSONErrorsH11Protocol,
            )
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(
                target=self._run, name=f"rstream-server-{self.port}", daemon=True
            )
            self._thread.start()
        server, thread = self._server, self._thread
        # uvicorn has no "started" callback: poll its flag, with a deadline.
        deadline = time.monotonic() + self.start_timeout
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            thread.join(0.005)
        if not server.started:
            self.stop()
            raise RStreamError(f"the server did not start on {self.url}: {self._error!r}")
        return self

    def _run(self) -> None:
        assert self._server is not None
        assert self._sock is not None
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()/stop(); the thread must end
            self._error = exc
            logger.error("server thread on %s failed", self.url, exc_info=exc)

    async def _serve(self) -> None:
        assert self._server is not None
        assert self._sock is not None
        self._loop = asyncio.get_running_loop()
        await self._server.serve(sockets=[self._sock])

    def stop(self) -> None:
        """End live responses, stop the server and join its thread (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        server, thread, loop = self._server, self._thread, self._loop
        hub = getattr(getattr(self.app, "state", None), "hub", None)
        if loop is not None and hub is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(hub.close)
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(self.stop_timeout)
            if thread.is_alive():
                if server is not None:
                    server.force_exit = True
                thread.join(self.stop_timeout)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> ServerThread:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
