"""The client's disk cache (rstream/client/diskcache.py) against the real server.

Readers run as separate processes (``python -c READER``) where the point is
what survives a process or what processes share; the server counts the
requests it answers (:class:`Recorder`), so "fetches only what lies after the
last committed window" is checked on the server's side.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

import rstream
from rstream.client import cachefile
from rstream.client.cachefile import APPLICATION_ID, FORMAT
from rstream.client.diskcache import FILE_NAME, DiskCache
from rstream.client.storecache import StoreCache
from rstream.core.entry import Entry, EntryKind
from rstream.core.timestamps import parse_time, to_micros
from rstream.server import ServerThread, create_app
from rstream.server.storage import Storage, open_storage
from tests.pgutil import PgSchema, fresh_schema

T0 = 1_700_000_000
PER_WINDOW = 10
STREAM = "robot"

# A reader process: prints the count, the states and the store's counters as JSON.
READER = """
import json, sys
import rstream
url, cache, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
with rstream.Client(url, cache=cache, cache_max_bytes=int(sys.argv[5])) as client:
    stream = client.stream("robot")
    pairs = list(stream.history(start, None if end == "-" else float(end)))
    stats = stream.windows.stats
print(json.dumps({
    "states": [[t.timestamp(), s] for t, s in pairs],
    "disk_hits": stats.disk_hits,
}))
"""


class Recorder:
    """The server's app, recording ``(path, query)`` of every request it answers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self._lock = threading.Lock()

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            with self._lock:
                self.requests.append((scope["path"], parse_qs(scope["query_string"].decode())))
        await self.app(scope, receive, send)

    def take(self) -> list[tuple[str, dict[str, list[str]]]]:
        with self._lock:
            out, self.requests = self.requests, []
        return out


@contextlib.contextmanager
def serving(storage: Storage, port: int = 0) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(create_app(storage))
    server = ServerThread(recorder, port=port)
    try:
        yield server.start().url, recorder
    finally:
        server.stop()


def ndjson(first: int, count: int, salt: int = 0) -> bytes:
    lines = []
    for i in range(first, first + count):
        if i % PER_WINDOW == 0:
            entry = Entry(T0 + i, EntryKind.SNAPSHOT, {"i": i, "salt": salt, "pos": {"x": 0}})
        else:
            entry = Entry(T0 + i, EntryKind.MUTATION, {"i": i, "pos": {"x": i * 0.5}})
        lines.append(json.dumps(entry.to_json(), separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def write(url: str, first: int, count: int, salt: int = 0) -> None:
    response = requests.post(
        f"{url}/v1/streams/{STREAM}/entries",
        data=ndjson(first, count, salt),
        headers={"Content-Type": "application/x-ndjson"},
        timeout=30,
    )
    response.raise_for_status()


def read(
    url: str, cache: Path, start: float = T0, end: float | None = None, max_bytes: int = 2**30
) -> tuple[dict[str, Any], str]:
    """A reader process's output and its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", READER, url, str(cache), str(start),
         "-" if end is None else str(end), str(max_bytes)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def expected(url: str, start: float = T0, end: float | None = None) -> list[list[Any]]:
    """The states as a client without a disk cache reads them."""
    with rstream.Client(url) as client:
        return [[t.timestamp(), s] for t, s in client.stream(STREAM).history(start, end)]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "sqlite":
        storage = open_storage(f"sqlite:///{tmp_path / 'streams.db'}")
        yield storage
        storage.close()
        return
    schema: PgSchema
    with fresh_schema() as schema:
        storage = open_storage(schema.storage_url)
        yield storage
        storage.close()


def entries_starts(requests_seen: list[tuple[str, dict[str, list[str]]]]) -> list[int]:
    return [
        parse_time(query["start"][0]) if "start" in query else -1
        for path, query in requests_seen
        if path.endswith("/entries")
    ]


# -- across processes --------------------------------------------------------------


def test_second_process_fetches_only_what_follows_the_last_committed_window(
    store: Storage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with serving(store) as (url, recorder):
        write(url, 0, 95)  # windows of 10 entries; the last one (90..94) is live
        first, _ = read(url, cache)
        assert first["states"] == expected(url)
        assert first["disk_hits"] == 0
        write(url, 95, 3)  # the live window grows
        recorder.take()
        second, stderr = read(url, cache)
        seen = recorder.take()
        assert second["states"] == expected(url)
        assert len(second["states"]) == 98
        assert second["disk_hits"] == 9
        live_start = to_micros(T0 + 90)
        # Only the live window is fetched, plus one metadata request (the store id).
        assert entries_starts(seen)
        assert min(entries_starts(seen)) >= live_start
        assert [p for p, _ in seen if p.endswith("/window")] == []
        assert [p for p, _ in seen if p == f"/v1/streams/{STREAM}"] == [f"/v1/streams/{STREAM}"]
        assert stderr == ""


def test_state_at_in_a_second_process_costs_no_entries_request(
    storage: Storage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with serving(storage) as (url, recorder):
        write(url, 0, 55)
        read(url, cache)
        recorder.take()
        script = (
            "import json, sys, rstream\n"
            "with rstream.Client(sys.argv[1], cache=sys.argv[2]) as c:\n"
            "    print(json.dumps(c.stream('robot').state_at(float(sys.argv[3]))))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, url, str(cache), str(T0 + 23.5)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert json.loads(done.stdout) == {"i": 23, "salt": 0, "pos": {"x": 11.5}}
        seen = recorder.take()
        assert [p for p, _ in seen] == [f"/v1/streams/{STREAM}"]  # the store id, nothing else


def test_processes_share_one_cache_directory_at_once(storage: Storage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with serving(storage) as (url, _):
        write(url, 0, 400)
        want = expected(url)
        args = [sys.executable, "-c", READER, url, str(cache), str(T0), "-", str(2**30)]
        procs = [
            subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        outputs = [proc.communicate(timeout=120) for proc in procs]
        for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, stderr
            assert json.loads(stdout)["states"] == want
            assert stderr == ""
        after, stderr = read(url, cache)
        assert after["states"] == want
        assert after["disk_hits"] == 39
    assert DiskCache(cache).info()["windows"] == 39


def test_another_store_under_the_same_url_purges_the_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    old = open_storage(f"sqlite:///{tmp_path / 'old.db'}")
    with serving(old) as (url, _):
        write(url, 0, 45, salt=1)
        first, _ = read(url, cache)
    old.close()
    port = int(url.rsplit(":", 1)[1])
    new = open_storage(f"sqlite:///{tmp_path / 'new.db'}")  # a fresh database, same times
    with serving(new, port=port) as (url2, _):
        assert url2 == url
        write(url, 0, 45, salt=2)
        second, stderr = read(url, cache)
        assert second["states"] == expected(url)
        assert second["states"] != first["states"]
        assert second["disk_hits"] == 0
        # One warning, nothing else (logging's last-resort handler prints the message).
        assert stderr.count("now serves another store") == 1, stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
        third, stderr = read(url, cache)  # the new store's windows are used from now on
        assert third["states"] == second["states"]
        assert third["disk_hits"] == 4
        assert stderr == ""
    new.close()
    info = DiskCache(cache).info()
    assert info["windows"] == 4  # the old store's are gone
    assert set(info["urls"].values()) == {new.store_id}


def test_a_store_change_seen_by_a_running_client_drops_the_old_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = open_storage(f"sqlite:///{tmp_path / 'old.db'}")
    new = open_storage(f"sqlite:///{tmp_path / 'new.db'}")
    cache = tmp_path / "cache"
    with rstream.Client(f"http://127.0.0.1:{_free_port()}", cache=cache) as client:
        port = int(client.urls[0].rsplit(":", 1)[1])
        with serving(old, port=port) as (url, _):
            write(url, 0, 25)
            list(client.stream(STREAM).history(T0, None))
        assert DiskCache(cache).info()["windows"] == 2
        with serving(new, port=port) as (url, _), caplog.at_level(logging.WARNING):
            write(url, 0, 25, salt=3)
            stream = client.stream(STREAM)
            # The live window is fetched again: its response names the new store.
            list(stream.history(T0 + 20, None))
            # What the client held in memory of the old store went too: the windows
            # before are fetched again, from the new store.
            assert stream.state_at(T0 + 5) == {"i": 5, "salt": 3, "pos": {"x": 2.5}}
            again: list[list[Any]] = [[t.timestamp(), s] for t, s in stream.history(T0, None)]
            assert again == expected(url)
            assert again[0][1]["salt"] == 3
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "now serves another store" in warnings[0]
    info = DiskCache(cache).info()
    assert set(info["urls"].values()) == {new.store_id}
    with contextlib.closing(sqlite3.connect(cache / FILE_NAME)) as conn:
        stores = [row[0] for row in conn.execute("SELECT store FROM windows")]
    assert stores == [new.store_id] * 2  # the old store's are gone, the new one's read since
    old.close()
    new.close()


def test_a_store_change_drops_the_old_store_from_memory_without_a_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = open_storage(f"sqlite:///{tmp_path / 'old.db'}")
    new = open_storage(f"sqlite:///{tmp_path / 'new.db'}")
    with rstream.Client(f"http://127.0.0.1:{_free_port()}") as client:
        port = int(client.urls[0].rsplit(":", 1)[1])
        with serving(old, port=port) as (url, _):
            write(url, 0, 25)
            assert client.stream(STREAM).state_at(T0 + 5)["salt"] == 0
        with serving(new, port=port) as (url, _), caplog.at_level(logging.WARNING):
            write(url, 0, 25, salt=3)
            stream = client.stream(STREAM)
            list(stream.history(T0 + 20, None))  # a response that names the new store
            assert stream.state_at(T0 + 5) == {"i": 5, "salt": 3, "pos": {"x": 2.5}}
            again: list[list[Any]] = [[t.timestamp(), s] for t, s in stream.history(T0, None)]
            assert again == expected(url)
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "now serves another store" in warnings[0]
    old.close()
    new.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- damage ------------------------------------------------------------------------


def _filled(url: str, cache: Path) -> Path:
    write(url, 0, 65)
    read(url, cache)
    path = cache / FILE_NAME
    assert path.stat().st_size > 0
    return path


def _read_in_process(url: str, cache: Path, caplog: pytest.LogCaptureFixture) -> list[Any]:
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="rstream"),
        rstream.Client(url, cache=cache) as client,
    ):
        got = [[t.timestamp(), s] for t, s in client.stream(STREAM).history(T0, None)]
        assert client.stream(STREAM).state_at(T0 + 33)["i"] == 33
    return got


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_truncated_file_falls_back_to_memory(
    storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    with serving(storage) as (url, _):
        path = _filled(url, cache)
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 3)
        assert _read_in_process(url, cache, caplog) == expected(url)
        warnings = _warnings(caplog)
        assert len(warnings) == 1, warnings
        assert "unusable" in warnings[0]


def test_a_corrupt_file_falls_back_to_memory(
    storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    with serving(storage) as (url, _):
        path = _filled(url, cache)
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.seek(100)
            f.write(os.urandom(size - 100))
        assert _read_in_process(url, cache, caplog) == expected(url)
        assert len(_warnings(caplog)) == 1, _warnings(caplog)


def test_a_damaged_window_falls_back_to_memory(
    storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    with serving(storage) as (url, _):
        path = _filled(url, cache)
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("UPDATE blobs SET data = x'789c0300000000'")  # zlib of nothing
        assert _read_in_process(url, cache, caplog) == expected(url)
        assert len(_warnings(caplog)) == 1, _warnings(caplog)


@pytest.mark.parametrize("kind", ["text", "sqlite"])
def test_a_foreign_file_is_left_alone(
    storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    path = cache / FILE_NAME
    if kind == "text":
        path.write_text("my notes\n" * 100)
    else:
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("CREATE TABLE mine (x)")
    before = path.read_bytes()
    with serving(storage) as (url, _):
        write(url, 0, 45)
        assert _read_in_process(url, cache, caplog) == expected(url)
    assert len(_warnings(caplog)) == 1, _warnings(caplog)
    assert path.read_bytes() == before


def _rstream_cache_of_format(cache: Path, version: int) -> None:
    """A cache file in ``cache`` that rstream wrote in format ``version``: its own
    ``application_id``, a ``windows`` table of another layout, one row."""
    cache.mkdir()
    with contextlib.closing(sqlite3.connect(cache / FILE_NAME)) as conn, conn:
        conn.execute("CREATE TABLE windows (store, stream, start, blob)")
        conn.execute("INSERT INTO windows VALUES ('s', 'robot', 0, x'00')")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {version}")


def test_a_cache_of_an_older_format_is_made_anew(
    storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    _rstream_cache_of_format(cache, FORMAT - 1)
    with serving(storage) as (url, _):
        write(url, 0, 45)
        assert _read_in_process(url, cache, caplog) == expected(url)
        assert _warnings(caplog) == []
        with contextlib.closing(sqlite3.connect(cache / FILE_NAME)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT
        # The new file works as a cache: a second process reads from it.
        got, stderr = read(url, cache)
        assert got["disk_hits"] > 0, stderr
        assert got["states"] == expected(url)


def test_a_cache_of_a_newer_format_is_left_alone(
    storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    _rstream_cache_of_format(cache, FORMAT + 1)
    before = (cache / FILE_NAME).read_bytes()
    with serving(storage) as (url, _):
        write(url, 0, 45)
        assert _read_in_process(url, cache, caplog) == expected(url)
    assert len(_warnings(caplog)) == 1, _warnings(caplog)
    assert (cache / FILE_NAME).read_bytes() == before


def test_a_file_locked_while_opening_is_tried_again_not_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(cachefile, "BUSY_TIMEOUT", 0.05)
    disk = DiskCache(cache)
    # Another process holds the new file's lock while it creates the tables.
    with contextlib.closing(sqlite3.connect(cache / FILE_NAME, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        assert disk.find("store", "robot", 0) is None  # skipped: busy
        assert disk.broken is None
        other.execute("ROLLBACK")
    disk.put("store", "robot", [10, 20], [{"i": 1}, {"i": 2}], 30)
    disk.flush()
    found = disk.find("store", "robot", 15)
    assert found is not None
    assert [state for _, state in found.pairs] == [{"i": 1}, {"i": 2}]
    assert disk.broken is None
    disk.close()


def test_a_directory_that_cannot_be_written_falls_back_to_memory(
    storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Not a directory at all (a file in the way): unwritable whoever runs the test.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with serving(storage) as (url, _):
        write(url, 0, 45)
        assert _read_in_process(url, blocker / "cache", caplog) == expected(url)
        assert len(_warnings(caplog)) == 1, _warnings(caplog)
        if os.geteuid() != 0:  # root writes to a read-only directory anyway
            readonly = tmp_path / "ro"
            readonly.mkdir(mode=0o500)
            assert _read_in_process(url, readonly, caplog) == expected(url)
            assert len(_warnings(caplog)) == 1, _warnings(caplog)


def test_a_full_disk_falls_back_to_memory(storage: Storage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    def small_files() -> None:  # in the child: files may not grow past 40 KiB
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    with serving(storage) as (url, _):
        write(url, 0, 2000)
        done = subprocess.run(
            [sys.executable, "-c", READER, url, str(cache), str(T0), "-", str(2**30)],
            capture_output=True, text=True, timeout=120, check=False, preexec_fn=small_files,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["states"] == expected(url)
        assert done.stderr.count("unusable") == 1, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- bounds and safety --------------------------------------------------------------


def test_least_recently_used_windows_are_evicted(storage: Storage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with serving(storage) as (url, _):
        write(url, 0, 205)
        read(url, cache)
        sizes = DiskCache(cache).info()
        assert sizes["windows"] == 20
        budget = sizes["bytes"] // 4
        DiskCache(cache).clear()
        got, stderr = read(url, cache, max_bytes=budget)
        assert got["states"] == expected(url)
        info = DiskCache(cache).info()
        assert 0 < info["bytes"] <= budget
        assert info["windows"] < 20
        # The newest windows were written last, so they are the ones kept.
        with contextlib.closing(sqlite3.connect(cache / FILE_NAME)) as conn:
            starts = [row[0] for row in conn.execute("SELECT start FROM windows ORDER BY start")]
        assert starts[-1] == to_micros(T0 + 190)
        assert stderr == ""


def test_the_file_is_private_and_holds_no_token(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'streams.db'}")
    token = "s3cret-token-for-the-cache-test"
    cache = tmp_path / "cache"
    recorder = Recorder(create_app(storage, read_token=token, write_token=token))
    server = ServerThread(recorder).start()
    try:
        requests.post(
            f"{server.url}/v1/streams/{STREAM}/entries",
            data=ndjson(0, 45),
            headers={"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {token}"},
            timeout=30,
        ).raise_for_status()
        with rstream.Client(server.url, token=token, cache=cache) as client:
            assert len(list(client.stream(STREAM).history(T0, None))) == 45
    finally:
        server.stop()
        storage.close()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    for path in cache.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert token.encode() not in path.read_bytes()


def test_the_live_tail_writes_the_windows_it_commits(storage: Storage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with serving(storage) as (url, _), rstream.Client(url, cache=cache) as client:
        write(url, 0, 5)
        stream = client.stream(STREAM)
        queue = stream.states()
        assert queue.get(timeout=10)[1]["i"] == 4
        write(url, 5, 10)  # completes the first window: the tail commits it
        while queue.get(timeout=10)[1]["i"] != 14:
            pass
        assert client.cache is not None
        client.cache.disk.flush()  # the writer thread has written what was committed
        info = DiskCache(cache).info()
    assert info["windows"] == 1
    assert info["entries"] == 10


# -- the CLI -----------------------------------------------------------------------


def test_the_cli_uses_the_default_cache_unless_told_not_to(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from rstream.cli.main import main

    cache = tmp_path / "cli-cache"
    monkeypatch.setenv("RSTREAM_CACHE_DIR", str(cache))
    runner = CliRunner()
    with serving(storage) as (url, recorder):
        write(url, 0, 45)
        start = datetime.fromtimestamp(T0, UTC).isoformat()
        args = ["history", url, STREAM, "--start", start, "--json"]
        nocache = runner.invoke(main, [*args, "--no-cache"])
        assert nocache.exit_code == 0, nocache.output
        assert not (cache / FILE_NAME).exists()
        first = runner.invoke(main, args)
        assert first.exit_code == 0, first.output
        assert first.output == nocache.output
        shown = json.loads(runner.invoke(main, ["cache", "info", "--json"]).output)
        assert shown["windows"] == 4
        assert list(shown["urls"]) == [url]
        recorder.take()
        again = runner.invoke(main, args)
        assert again.output == first.output
        assert entries_starts(recorder.take()) == [to_micros(T0 + 40)]  # the live window only
        cleared = runner.invoke(main, ["cache", "clear", url])
        assert cleared.exit_code == 0, cleared.output
        assert "removed 4 cached windows" in cleared.output
        assert DiskCache(cache).info()["windows"] == 0


# -- units -------------------------------------------------------------------------


def test_a_server_without_a_store_id_is_asked_once_and_nothing_is_cached(tmp_path: Path) -> None:

    asked: list[str] = []

    def ask(stream_id: str) -> str:
        asked.append(stream_id)
        return ""  # an older server: no store id

    store = StoreCache(DiskCache(tmp_path), ["http://x"], ask)
    stream = store.stream(STREAM)
    stream.put([1, 2], [(None, {"a": 1}), (None, {"a": 2})], 10)
    assert stream.find(1) is None
    assert stream.run(1, None, 100) == []
    assert asked == [STREAM]
    assert store.disk.info()["windows"] == 0


def test_urls_are_kept_without_credentials(tmp_path: Path) -> None:

    store = StoreCache(DiskCache(tmp_path), ["http://me:pw@127.0.0.1:9/x"], lambda _: "s1")
    assert store.urls == ("http://127.0.0.1:9/x",)
    assert store.stream(STREAM).find(5) is None  # asks for the store id, binds the URL
    assert store.disk.info()["urls"] == {"http://127.0.0.1:9/x": "s1"}
    store.stream(STREAM).put([1, 2], [(None, {"a": 1}), (None, {"a": 2})], 10)
    store.disk.close()
    for path in tmp_path.iterdir():
        assert b"me:pw" not in path.read_bytes(), path
    assert store.disk.clear("http://me:pw@127.0.0.1:9/x") == 1  # the URL as the user knows it


def test_a_window_kept_before_its_end_was_known_gains_it(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path)
    states = [{"a": 1}, {"a": 2}]
    disk.put("s", STREAM, [10, 20], states, None)  # from the live tail: ends after 20
    disk.flush()  # writes are queued for the writer thread
    assert disk.find("s", STREAM, 25) is None
    found = disk.find("s", STREAM, 20)
    assert found is not None
    assert (found.start, found.end, found.micros) == (10, None, [10, 20])
    assert [state for _, state in found.pairs] == states
    disk.confirm_end("s", STREAM, 10, 30)
    disk.flush()
    confirmed = disk.find("s", STREAM, 25)
    assert confirmed is not None
    assert confirmed.end == 30
    disk.put("s", STREAM, [30], [{"a": 3}], 40)
    disk.flush()
    assert [w.start for w in disk.run("s", STREAM, 15, None, 100)] == [10, 30]
    assert disk.run("other-store", STREAM, 15, None, 100) == []
    disk.close()


def test_close_writes_what_was_queued_and_ends_the_writer(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path)
    for i in range(300):  # more than one batch of the writer
        disk.put("s", STREAM, [i * 10, i * 10 + 1], [{"a": i}, {"a": -i}], i * 10 + 10)
    disk.confirm_end("s", STREAM, 0, 10)  # queued behind the puts: a no-op, end known
    disk.close()
    assert [t for t in threading.enumerate() if t.name == "rstream-cache-writer"] == []
    again = DiskCache(tmp_path)
    assert again.info()["windows"] == 300
    found = again.find("s", STREAM, 2995)
    assert found is not None
    assert [state for _, state in found.pairs] == [{"a": 299}, {"a": -299}]
    again.close()


def test_when_no_thread_can_start_the_caller_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(thread: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    disk = DiskCache(tmp_path)
    monkeypatch.setattr(threading.Thread, "start", refuse)
    disk.put("s", STREAM, [10, 20], [{"a": 1}, {"a": 2}], 30)  # written before it returns
    monkeypatch.undo()
    assert disk.info()["windows"] == 1
    disk.close()


def test_threads_of_one_client_read_through_the_disk_at_once(
    storage: Storage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with serving(storage) as (url, _):
        write(url, 0, 305)
        read(url, cache)  # another process filled the cache
        times = [T0 + i + 0.5 for i in range(0, 300, 7)]
        with rstream.Client(url) as plain:
            want = [plain.stream(STREAM).state_at(t) for t in times]
        got: dict[int, list[Any]] = {}
        with rstream.Client(url, cache=cache) as client:
            stream = client.stream(STREAM)

            def reader(k: int) -> None:
                got[k] = [stream.state_at(t) for t in times[k::2] + times[1 - k :: 2]]

            threads = [threading.Thread(target=reader, args=(k,)) for k in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
                assert not thread.is_alive()
            assert stream.windows.stats.bounds_fetches == 0  # every window came from disk
        for k in (0, 1):
            order = times[k::2] + times[1 - k :: 2]
            assert got[k] == [want[times.index(t)] for t in order]
