"""Live fan-out: N SSE subscribers on one stream while a writer posts at a fixed rate.

The server runs in its own process (``rstream serve``), so its CPU time can be
read from ``/proc/<pid>/stat``. Subscribers are raw sockets served by a few
threads with selectors (a thread per subscriber would measure the client).
Every subscriber checks it received every revision; a sample of them parse the
events to measure write-to-receive latency (the writer puts its send time in
the state).

Reports delivered events/s, server CPU seconds per 1,000 delivered events and
p50/p99 latency, each also as a ratio against the same run with 1 subscriber.

Environment: ``RSTREAM_BENCH_SUBSCRIBERS`` (500), ``RSTREAM_BENCH_SECONDS``
(30), ``RSTREAM_BENCH_RATE`` (states/s, 200), ``RSTREAM_BENCH_DB`` (storage URL
for the server, default a SQLite file in a temporary directory; a PostgreSQL
URL works once that backend exists), ``RSTREAM_BENCH_THREADS`` (reader
threads, 4).
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import requests

STREAM = "fanout"
LATENCY_EVERY = 10  # one subscriber in this many parses events for latency


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# -- the server process -------------------------------------------------------------


class Server:
    """``rstream serve --db URL --port 0`` in a subprocess."""

    def __init__(self, db: str) -> None:
        cmd = [
            sys.executable, "-c", "from rstream.cli.serve import serve; serve()",
            "--db", db, "--port", "0", "--subscriber-buffer", str(64 * 1024 * 1024),
        ]  # fmt: skip
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        self.url = line.strip().rsplit(" ", 1)[-1]
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError(f"rstream serve did not start: {line!r}")
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.address = (host, int(port))

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of the file; 12 and 13 after the ")".
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


# -- subscribers ----------------------------------------------------------------------


@dataclass
class Subscriber:
    """One raw SSE connection: a chunked-transfer decoder and an event scanner."""

    sock: socket.socket
    measure: bool
    revs: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    _raw: bytes = b""  # undecoded transfer bytes
    _text: bytes = b""  # decoded body not yet split into lines
    _chunk_left: int = -1  # -1: expecting a chunk-size line
    _headers_done: bool = False

    def feed(self, data: bytes, now: float) -> None:
        self._raw += data
        if not self._headers_done:
            head, sep, rest = self._raw.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"subscribe failed: {head[:80]!r}")
            self._raw, self._headers_done = rest, True
        body = []
        while True:
            if self._chunk_left < 0:
                line, sep, rest = self._raw.partition(b"\r\n")
                if not sep:
                    break
                self._chunk_left, self._raw = int(line, 16), rest
            else:
                if len(self._raw) < self._chunk_left + 2:
                    take = min(len(self._raw), self._chunk_left)
                    body.append(self._raw[:take])
                    self._raw = self._raw[take:]
                    self._chunk_left -= take
                    break
                body.append(self._raw[: self._chunk_left])
                self._raw = self._raw[self._chunk_left + 2 :]
                self._chunk_left = -1
        self._text += b"".join(body)
        *lines, self._text = self._text.split(b"\n")
        for line in lines:
            if line.startswith(b"id: "):
                self.revs.append(int(line[4:]))
            elif self.measure and line.startswith(b"data: "):
                state = json.loads(line[6:])["data"]
                if "sent" in state:
                    self.latencies.append(now - state["sent"])


def read_all(subscribers: Sequence[Subscriber], stop: threading.Event) -> None:
    with selectors.DefaultSelector() as sel:
        for sub in subscribers:
            sel.register(sub.sock, selectors.EVENT_READ, sub)
        while not stop.is_set():
            for key, _ in sel.select(0.1):
                sub = key.data
                data = sub.sock.recv(262144)
                if data:
                    sub.feed(data, time.time())
                else:
                    sel.unregister(sub.sock)


# -- one run ----------------------------------------------------------------------------


@dataclass
class Result:
    subscribers: int
    delivered: int
    seconds: float
    cpu: float
    p50: float
    p99: float
    missing: int

    @property
    def events_per_s(self) -> float:
        return self.delivered / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu / self.delivered * 1000 if self.delivered else float("nan")


def run(
    db: str, n_subscribers: int, seconds: float, rate: float, threads: int, replicas: int = 1
) -> Result:
    """One run: ``replicas`` servers on ``db`` (several need a shared database,
    PostgreSQL), the subscribers dealt round-robin among them, the writer
    posting to the first. CPU time is summed over the servers."""
    servers: list[Server] = []
    try:
        for _ in range(replicas):
            servers.append(Server(db))
        writer = servers[0]
        with requests.Session() as http:
            rr = {"record_rate": {"keyframe_frequency": 3_600_000, "change_frequency": 0}}
            http.put(f"{writer.url}/v1/streams/{STREAM}", json=rr).raise_for_status()
            start_rev = http.post(
                f"{writer.url}/v1/streams/{STREAM}/state", json={"state": {"i": 0}}
            ).json()["revision"]
            subs = []
            for k in range(n_subscribers):
                sock = socket.create_connection(servers[k % replicas].address)
                sock.sendall(
                    f"GET /v1/streams/{STREAM}/live?since={start_rev} HTTP/1.1\r\n"
                    "Host: 127.0.0.1\r\n\r\n".encode()
                )
                # Measure latency on every replica alike.
                subs.append(Subscriber(sock, measure=(k // replicas) % LATENCY_EVERY == 0))
            stop = threading.Event()
            groups = [subs[i::threads] for i in range(threads)]
            readers = [threading.Thread(target=read_all, args=(g, stop)) for g in groups if g]
            for t in readers:
                t.start()
            try:
                cpu0 = sum(s.cpu_seconds() for s in servers)
                t0 = time.perf_counter()
                writes = int(seconds * rate)
                for i in range(1, writes + 1):
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        stop.wait(delay)
                    http.post(
                        f"{writer.url}/v1/streams/{STREAM}/state",
                        json={"state": {"i": i, "sent": time.time()}},
                    ).raise_for_status()
                last_rev = start_rev + writes
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and any(
                    not s.revs or s.revs[-1] < last_rev for s in subs
                ):
                    stop.wait(0.05)  # a condition across sockets: poll, with a deadline
                elapsed = time.perf_counter() - t0
                cpu = sum(s.cpu_seconds() for s in servers) - cpu0
            finally:
                stop.set()
                for t in readers:
                    t.join()
                for s in subs:
                    s.sock.close()
    finally:
        for server in servers:
            server.stop()
    expected = list(range(start_rev + 1, last_rev + 1))
    missing = sum(1 for s in subs if s.revs != expected)
    latencies = sorted(x for s in subs for x in s.latencies)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    delivered = sum(len(s.revs) for s in subs)
    return Result(n_subscribers, delivered, elapsed, cpu, pct(0.50), pct(0.99), missing)


#: The figures every fan-out table shows: name, value of a result, format.
FIGURES: list[tuple[str, Callable[[Result], float], str]] = [
    ("delivered events/s", lambda r: r.events_per_s, "{:.0f}"),
    ("server CPU s / 1k events", lambda r: r.cpu_per_1000, "{:.4f}"),
    ("latency p50 (ms)", lambda r: r.p50 * 1000, "{:.2f}"),
    ("latency p99 (ms)", lambda r: r.p99 * 1000, "{:.2f}"),
]


def print_table(results: Sequence[tuple[str, Result]], ratio_names: Sequence[str]) -> None:
    """One column per result, then each later result's ratio to the first."""
    header = "".join(f"{name:>12}" for name, _ in results)
    ratios_header = "".join(f"{name:>12}" for name in ratio_names)
    print(f"{'':26}{header}{ratios_header}")
    for name, get, fmt in FIGURES:
        values = [get(result) for _, result in results]
        cells = "".join(f"{fmt.format(v):>12}" for v in values)
        ratios = "".join(
            f"{(v / values[0] if values[0] else float('nan')):>11.2f}x" for v in values[1:]
        )
        print(f"{name:26}{cells}{ratios}")
    for name, result in results:
        status = "OK" if result.missing == 0 else f"MISSING ({result.missing} subscribers)"
        print(f"{name}: {result.subscribers} subscriber(s) received every entry: {status}")


def main() -> None:
    n = _env_int("RSTREAM_BENCH_SUBSCRIBERS", 500)
    seconds = _env_float("RSTREAM_BENCH_SECONDS", 30)
    rate = _env_float("RSTREAM_BENCH_RATE", 200)
    threads = _env_int("RSTREAM_BENCH_THREADS", 4)
    with tempfile.TemporaryDirectory() as tmp:
        default_db = "sqlite:///" + os.path.join(tmp, "bench.db")
        db = os.environ.get("RSTREAM_BENCH_DB", default_db)
        print(f"{rate:g} states/s for {seconds:g} s on {db.split('://')[0]}://; "
              f"1 subscriber, then {n}")  # fmt: skip
        one = run(db if db != default_db else default_db + "1", 1, seconds, rate, threads)
        many = run(db if db != default_db else default_db + "n", n, seconds, rate, threads)
    print_table([("1 sub", one), (f"{n} subs", many)], ["ratio"])
    print(f"server CPU: {one.cpu:.2f} s and {many.cpu:.2f} s over {many.seconds:.1f} s")


if __name__ == "__main__":
    main()
