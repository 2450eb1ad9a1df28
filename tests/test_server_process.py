"""``rstream serve`` as a real process on a SQLite file: restarts, SIGKILL, memory."""

from __future__ import annotations

import itertools
import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.serverutil import ServerProcess, SSEReader
from tests.test_server_api import T0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def all_entries(http: requests.Session, url: str, stream: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    next_url: str | None = f"{url}/v1/streams/{stream}/entries"
    while next_url:
        r = http.get(next_url)
        assert r.status_code == 200
        out += [json.loads(line) for line in r.text.splitlines()]
        next_url = url + r.links["next"]["url"] if "next" in r.links else None
    return out


def test_resume_with_last_event_id_across_a_restart(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'resume.db'}"
    with ServerProcess(db) as server, requests.Session() as http:
        url = server.url
        rate = {"record_rate": {"keyframe_frequency": 60000, "change_frequency": 0}}
        http.put(f"{url}/v1/streams/r", json=rate)
        state = f"{url}/v1/streams/r/state"
        for i in range(5):
            http.post(state, json={"state": {"i": i}, "timestamp": T0 + i})
        seen: list[dict[str, Any]] = []
        with SSEReader(f"{url}/v1/streams/r/live") as reader:
            seen += [e.json() for e in reader.take(5)]
        last_id = str(seen[-1]["rev"])
        server.kill()
        server.start()
        assert server.url == url
        for i in range(5, 9):
            assert http.post(state, json={"state": {"i": i}, "timestamp": T0 + i}).ok
        with SSEReader(f"{url}/v1/streams/r/live", headers={"Last-Event-ID": last_id}) as reader:
            assert reader.next().event == "retry"
            resumed = reader.take(4)
        assert [e.event for e in resumed] == ["entry"] * 4
        seen += [e.json() for e in resumed]
        assert seen == all_entries(http, url, "r")
        assert [e["rev"] for e in seen] == list(range(1, 10))


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'crash.db'}"
    acked: list[dict[str, Any]] = []
    grew = threading.Condition()
    stop = threading.Event()

    def wait_for_more(count: int) -> None:
        with grew:
            grew.wait_for(lambda: len(acked) >= count, timeout=15)

    with ServerProcess(db) as server:
        url = server.url
        with requests.Session() as http:
            rate = {"record_rate": {"keyframe_frequency": 500, "change_frequency": 0}}
            assert http.put(f"{url}/v1/streams/c", json=rate).status_code == 201

        def write() -> None:
            i = 0
            with requests.Session() as session:
                while not stop.is_set():
                    i += 1
                    try:
                        r = session.post(f"{url}/v1/streams/c/state",
                                         json={"state": {"i": i}}, timeout=2)  # fmt: skip
                    except requests.RequestException:
                        session.close()  # drop the pooled connection to the dead server
                        stop.wait(0.01)  # the server is restarting: do not spin
                        continue
                    if r.ok and r.json()["entry"] is not None:
                        with grew:
                            acked.append(r.json()["entry"])
                            grew.notify_all()

        writer = threading.Thread(target=write)
        writer.start()
        try:
            for _ in range(3):
                wait_for_more(len(acked) + 20)
                server.kill()
                server.start()
            wait_for_more(len(acked) + 20)
        finally:
            stop.set()
            writer.join(10)
        assert not writer.is_alive()
        with requests.Session() as http:
            stored = all_entries(http, url, "c")
    assert len(acked) >= 80, len(acked)
    revs = [e["rev"] for e in stored]
    assert revs == sorted(set(revs))  # strictly increasing
    by_rev = {e["rev"]: e for e in stored}
    missing = [e for e in acked if by_rev.get(e["rev"]) != e]
    assert missing == []


def test_concurrent_writers_on_many_streams_survive_sigkill(tmp_path: Path) -> None:
    # Writes of many threads to several streams share commits (group commit);
    # every one acknowledged must be on disk, with its revision, after SIGKILL.
    db = f"sqlite:///{tmp_path / 'group.db'}"
    streams = [f"g{i}" for i in range(4)]
    acked: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Condition()
    killed = threading.Event()

    with ServerProcess(db) as server:
        url = server.url
        with requests.Session() as http:
            rate = {"record_rate": {"keyframe_frequency": 20, "change_frequency": 0}}
            for stream in streams:
                assert http.put(f"{url}/v1/streams/{stream}", json=rate).status_code == 201

        def write(n: int) -> None:
            stream = streams[n % len(streams)]
            with requests.Session() as session:
                for i in itertools.count():
                    state = {"writer": n, "i": i}
                    try:
                        r = session.post(f"{url}/v1/streams/{stream}/state",
                                         json={"state": state}, timeout=5)  # fmt: skip
                    except requests.RequestException:
                        assert killed.is_set()
                        return
                    assert r.status_code == 200, r.text
                    entry = r.json()["entry"]
                    with lock:
                        acked.append((stream, entry))
                        lock.notify_all()

        writers = [threading.Thread(target=write, args=(n,)) for n in range(12)]
        for thread in writers:
            thread.start()
        try:
            with lock:
                assert lock.wait_for(lambda: len(acked) >= 300, timeout=60)
        finally:
            killed.set()
            server.kill()
            for thread in writers:
                thread.join(10)
        assert not any(thread.is_alive() for thread in writers)
        server.start()
        with requests.Session() as http:
            stored = {stream: all_entries(http, server.url, stream) for stream in streams}
    for stream in streams:
        revs = [e["rev"] for e in stored[stream]]
        assert revs == list(range(1, len(revs) + 1))  # no gap, no repeat
    missing = [(s, e) for s, e in acked if e not in stored[s]]
    assert missing == []
    by_stream = {s: [e["rev"] for t, e in acked if t == s] for s in streams}
    assert all(len(set(revs)) == len(revs) for revs in by_stream.values())


def test_slow_subscriber_does_not_grow_server_memory(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'mem.db'}"
    args = ("--subscriber-buffer", str(512 * 1024))
    n, size = 120, 250_000  # 30 MB through a subscriber that never reads
    with ServerProcess(db, args=args) as server, requests.Session() as http, \
            socket.socket() as stuck:  # fmt: skip
        url = server.url
        state = f"{url}/v1/streams/m/state"
        http.post(state, json={"state": {"blob": ""}, "timestamp": T0})
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.port))
        stuck.sendall(b"GET /v1/streams/m/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert stuck.recv(1024).startswith(b"HTTP/1.1 200 ")
        for i in range(1, 5):  # warm up allocator and caches
            http.post(state, json={"state": {"blob": "w" * size}, "timestamp": T0 + 0.01 * i})
        before = rss_bytes(server.pid)
        for i in range(5, n):
            blob = f"{i:05d}" * (size // 5)
            r = http.post(state, json={"state": {"blob": blob}, "timestamp": T0 + 0.01 * i})
            assert r.ok
        grown = rss_bytes(server.pid) - before
        stuck.settimeout(5)

        def drain() -> None:
            while stuck.recv(65536):
                pass

        with pytest.raises(ConnectionResetError):
            drain()
    assert grown < n * size // 3, f"server RSS grew {grown} bytes"
