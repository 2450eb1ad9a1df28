"""Ingest: many devices writing at once, driven by ``wrk`` (a compiled load generator).

``wrk`` (Debian package ``wrk``) runs a Lua script that posts small states
(``POST /v1/streams/dev-N/state``) to 64 streams in turn, at 1, 8 and 64
connections, ``SECONDS`` each, against, in the same run:

(a) ``rstream serve`` on SQLite (writes that arrive together share a commit);
(b) ``rstream serve`` on PostgreSQL (``RSTREAM_BENCH_PG_URL``, default
    ``RSTREAM_TEST_POSTGRES_URL``; a fresh schema, dropped afterwards;
    skipped when neither is set or the server cannot be reached);
(c) a bare Starlette + uvicorn endpoint that only parses the same JSON body.

Printed: writes/s, p50/p99 latency, the server process's CPU per write (what is
not CPU is waiting: for fsync, for the lock of the stream) and the part of it
spent on its busiest thread (``loop``: the event loop's HTTP, parsing and
answers; the rest is the worker threads' storage calls), and the ratio of
writes/s to (c), with the targets on SQLite beside them. Also the batch import
rate on SQLite (entries appended in batches of 10,000) and the server's CPU
per batch, and the event loop's CPU per write of the apps alone (rstream on
SQLite and the bare endpoint driven in-process through ASGI, no sockets: the
part of ``loop`` that is not HTTP parsing or system calls, with less noise).
Skipped with a note when ``wrk`` is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from bench.bench_fanout_pg import DEFAULT_PG_URL, pg_schema
from bench.bench_history import BATCH, cpu_seconds, make_ndjson
from rstream.client import Client
from rstream.server import create_app
from rstream.server.storage import SQLiteStorage
from tests.serverutil import ServerProcess

SECONDS = 4
CONNECTIONS = (1, 8, 64)
STREAMS = 64
IMPORT_COUNT = 50_000

LUA = (
    textwrap.dedent(
        """
    -- Each wrk thread counts its own requests: its id (tid) in the state keeps
    -- two threads from posting the same state, so every write changes its stream.
    local threads = 0
    setup = function(thread)
      thread:set("tid", threads)
      threads = threads + 1
    end
    local n = 0
    request = function()
      n = n + 1
      local path = "/v1/streams/dev-" .. (n % %(streams)d) .. "/state"
      local body = '{"state":{"battery":' .. (n %% 100) / 100 ..
        ',"pos":{"x":' .. n .. ',"y":2.5},"status":"ok","seq":' .. n ..
        ',"writer":' .. tid .. '}}'
      return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
    end
    done = function(summary, latency, requests)
      local errors = summary.errors.status + summary.errors.connect + summary.errors.read
        + summary.errors.write + summary.errors.timeout
      io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests,
        summary.duration, latency:percentile(50), latency:percentile(99), errors))
    end
    """
    )
    .replace("%(streams)d", str(STREAMS))
    .replace("%%", "%")
)

BARE_APP = textwrap.dedent(
    """
    import sys
    import uvicorn
    sys.path.insert(0, sys.argv[2])
    from bench.bench_ingest import bare_app

    uvicorn.run(bare_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)
ROOT = str(Path(__file__).resolve().parent.parent)
IN_PROCESS_WRITES = 4_000


async def _bare_post_state(request: Request) -> Response:
    body = json.loads(await request.body())
    return JSONResponse({"action": "snapshot", "revision": len(body)})


def bare_app() -> Starlette:
    """(c): a Starlette endpoint that only parses the JSON body of a state."""
    return Starlette(
        routes=[Route("/v1/streams/{stream_id}/state", _bare_post_state, methods=["POST"])]
    )


class Load(NamedTuple):
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float  # the server process's CPU per write (NaN where /proc is missing)
    loop_ms: float  # of which its busiest thread's (the event loop: HTTP, parsing, answers)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def bare_endpoint() -> Iterator[tuple[str, int]]:
    """The bare Starlette + uvicorn endpoint in a subprocess; its URL and pid."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port), ROOT])
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the bare endpoint did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU time of each thread of a process (Linux; empty elsewhere)."""
    times: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                times[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return times


def busiest_thread_seconds(before: dict[int, float], after: dict[int, float]) -> float | None:
    """The CPU seconds of the thread that used the most between two readings:
    the event loop, which handles every request (the workers share the rest)."""
    if not after:
        return None
    return max(after[tid] - before.get(tid, 0.0) for tid in after)


def per_write_ms(before: float | None, after: float | None, count: int) -> float:
    if before is None or after is None:
        return math.nan
    return (after - before) / count * 1000


def drive(url: str, pid: int, connections: int, script: Path) -> Load:
    """Run wrk against ``url`` (served by process ``pid``); see :class:`Load`."""
    threads = min(2, connections)
    cpu_before, threads_before = cpu_seconds(pid), thread_cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{SECONDS}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=SECONDS + 60,
    ).stdout  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    requests, micros, p50, p99, errors = (int(x) for x in line.split()[1:])
    cpu = per_write_ms(cpu_before, cpu_seconds(pid), requests)
    loop = per_write_ms(
        0.0, busiest_thread_seconds(threads_before, thread_cpu_seconds(pid)), requests
    )
    return Load(requests / (micros / 1e6), p50 / 1000, p99 / 1000, errors, cpu, loop)


def drive_server(server: ServerProcess, connections: int, script: Path) -> Load:
    assert server.proc is not None
    return drive(server.url, server.proc.pid, connections, script)


class Import(NamedTuple):
    per_second: float
    cpu_ms: float  # the server process's CPU per batch of BATCH (NaN where /proc is missing)


def batch_import(server: ServerProcess) -> Import:
    """Append IMPORT_COUNT entries in batches of BATCH: entries per second and
    the server's CPU per batch."""
    bodies = [make_ndjson(i, BATCH) for i in range(0, IMPORT_COUNT, BATCH)]
    with Client(server.url) as client:
        stream = client.stream("import")
        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        for body in bodies:
            stream.append_entries(body)
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(server.pid)
    cpu = math.nan
    if cpu_before is not None and cpu_after is not None:
        cpu = (cpu_after - cpu_before) / len(bodies) * 1000
    return Import(IMPORT_COUNT / elapsed, cpu)


# -- the app alone: its event loop's CPU per write, without sockets or HTTP parsing --


def _scope(n: int) -> tuple[dict[str, object], bytes]:
    """The ASGI scope and body of the ``n``th state the wrk script would post."""
    body = json.dumps(
        {"state": {"battery": n % 100 / 100, "pos": {"x": n, "y": 2.5}, "status": "ok", "seq": n}}
    ).encode()
    path = f"/v1/streams/dev-{n % STREAMS}/state"
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope: dict[str, object] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": headers, "state": {},
    }  # fmt: skip
    return scope, body


async def _post(app: ASGIApp, n: int) -> None:
    scope, body = _scope(n)
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    statuses: list[int] = []

    async def receive() -> Message:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    if statuses[0] not in (200, 201):
        raise RuntimeError(f"POST .../state answered {statuses[0]}")


async def _drive_in_process(app: ASGIApp, writes: int, connections: int) -> float:
    """``writes`` POSTs from ``connections`` concurrent tasks: the loop's CPU
    seconds per write (the thread's time: the workers' is not counted)."""
    counter = itertools.count()

    async def client(count: int) -> None:
        for _ in range(count):
            await _post(app, next(counter))

    await asyncio.gather(*(client(100) for _ in range(connections)))  # warm up
    started = time.thread_time()
    await asyncio.gather(*(client(writes // connections) for _ in range(connections)))
    return (time.thread_time() - started) / (writes // connections * connections)


async def _with_lifespan(app: ASGIApp, writes: int) -> float:
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})

    async def run_lifespan() -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        await app(scope, inbox.get, outbox.put)

    lifespan = asyncio.create_task(run_lifespan())
    if (await outbox.get())["type"] != "lifespan.startup.complete":
        raise RuntimeError("the app did not start")
    try:
        return await _drive_in_process(app, writes, 8)
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await lifespan


def app_loop_us(tmp: str) -> tuple[float, float]:
    """The event loop's CPU per write in microseconds, the ASGI apps driven
    in-process at 8 concurrent writes: (rstream on SQLite, the bare endpoint)."""
    storage = SQLiteStorage(str(Path(tmp) / "in-process.db"))
    try:
        ours = asyncio.run(_with_lifespan(create_app(storage), IN_PROCESS_WRITES))
    finally:
        storage.close()
    bare = asyncio.run(_with_lifespan(bare_app(), IN_PROCESS_WRITES))
    return ours * 1e6, bare * 1e6


def postgres_url() -> str | None:
    url = os.environ.get("RSTREAM_BENCH_PG_URL") or os.environ.get("RSTREAM_TEST_POSTGRES_URL")
    if url is None:
        return None
    try:
        with socket.create_connection(("127.0.0.1", 5432), 1):
            pass
    except OSError:
        return None
    return url or DEFAULT_PG_URL


def main() -> None:
    if shutil.which("wrk") is None:
        print("   skipped: wrk is not installed (Debian: apt-get install wrk)")
        return
    results: dict[str, dict[int, Load]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post_state.lua"
        script.write_text(LUA)
        in_process = app_loop_us(tmp)
        with bare_endpoint() as (url, pid):
            results["bare"] = {c: drive(url, pid, c, script) for c in CONNECTIONS}
        with ServerProcess(f"sqlite:///{Path(tmp) / 'ingest.db'}") as server:
            results["sqlite"] = {c: drive_server(server, c, script) for c in CONNECTIONS}
            imported = batch_import(server)
        pg = postgres_url()
        if pg is not None:
            with pg_schema(pg) as db, ServerProcess(db) as server:
                results["postgres"] = {c: drive_server(server, c, script) for c in CONNECTIONS}
    bare = results["bare"]
    print(f"   POST .../state of small states to {STREAMS} streams, wrk, {SECONDS} s per row")
    print(f"   {'server':<9} {'conns':>5} {'writes/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'errors':>6} {'CPU ms/w':>8} {'loop':>5} {'vs bare':>7}  target")  # fmt: skip
    for name, loads in results.items():
        for c, load in loads.items():
            target = ""
            if name == "sqlite" and c in (8, 64):
                target = ">= 0.5x bare" + (", p99 < 50 ms" if c == 8 else "")
            print(
                f"   {name:<9} {c:>5} {load.per_second:>9,.0f} {load.p50_ms:>7.1f}"
                f" {load.p99_ms:>7.1f} {load.errors:>6} {load.cpu_ms:>8.2f} {load.loop_ms:>5.2f}"
                f" {load.per_second / bare[c].per_second:>6.2f}x"
                f"  {target}"
            )
    print(
        f"   the apps alone (ASGI in-process, no sockets or HTTP parsing, 8 at once),"
        f" event loop CPU per write: rstream on SQLite {in_process[0]:.0f} us,"
        f" bare {in_process[1]:.0f} us"
    )
    if "postgres" not in results:
        print("   postgres: skipped (set RSTREAM_BENCH_PG_URL or RSTREAM_TEST_POSTGRES_URL)")
    print(
        f"   batch import on SQLite, {IMPORT_COUNT:,} entries in batches of {BATCH:,}:"
        f" {imported.per_second:,.0f} entries/s, server CPU {imported.cpu_ms:.0f} ms"
        f" per batch  (target >= 50,000 entries/s)"
    )
