"""``rstream backup`` of a SQLite store a server is writing to, and ``rstream restore``:
the copy holds everything acknowledged before it began, with no holes, and a
restore never clobbers a store by accident."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result

import rstream
from rstream.cli.backup import backup_sqlite, restore_sqlite
from rstream.cli.main import main
from rstream.cli.output import CLIError
from rstream.core.entry import Entry
from rstream.core.timestamps import format_rfc3339
from rstream.server.storage import SQLiteStorage
from tests.pgutil import replay
from tests.serverutil import ServerProcess, running_server

RATE = 200  # writes a second, from
THREADS = 4  # writers (one alone would wait out each write's fsync)
T0_US = 1_700_000_000_000_000


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


class Writers:
    """``THREADS`` threads that together write a new state to stream ``live``
    ``RATE`` times a second; ``acked`` holds the revision of every write the
    server acknowledged, in the order the answers came."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acked: list[int] = []
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._run, args=(i,), name=f"writer-{i}")
            for i in range(THREADS)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _run(self, writer: int) -> None:
        try:
            with requests.Session() as http:
                next_at = time.monotonic()
                n = 0
                while not self.stopping.is_set():
                    n += 1
                    # Every state differs from the one before it, whoever wrote that.
                    body = {"state": {"writer": writer, "n": n, "pad": "x" * 200}}
                    r = http.post(f"{self.url}/v1/streams/live/state", json=body, timeout=10)
                    r.raise_for_status()
                    assert r.json()["action"] in ("snapshot", "mutation")
                    with self.changed:
                        self.acked.append(r.json()["revision"])
                        self.changed.notify_all()
                    next_at += THREADS / RATE
                    self.stopping.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:
            self.errors.append(exc)

    def wait_for(self, count: int) -> int:
        """Wait until ``count`` writes are acknowledged; the newest revision acknowledged."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.acked) >= count, timeout=15)
            return max(self.acked)

    def finish(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)
            assert not thread.is_alive()
        if self.errors:
            raise self.errors[0]


def fill(url: str, stream_id: str, count: int) -> None:
    """``count`` snapshots of ~300 bytes, appended in batches (pages for the backup)."""
    with requests.Session() as http:
        for start in range(0, count, 500):
            batch = [
                {
                    "timestamp": format_rfc3339(T0_US + i * 1000),
                    "type": 0,
                    "data": {"i": i, "pad": "y" * 300},
                }
                for i in range(start, min(count, start + 500))
            ]
            r = http.post(f"{url}/v1/streams/{stream_id}/entries", json=batch, timeout=30)
            assert r.status_code in (200, 201), r.text


def entries_of(url: str, stream_id: str) -> list[Entry]:
    with rstream.Client(url) as client:
        return list(client.stream(stream_id).entries())


@pytest.mark.slow
def test_backup_while_a_server_writes(tmp_path: Path) -> None:
    db, out = tmp_path / "streams.db", tmp_path / "backup.db"
    steps: list[tuple[int, int]] = []
    with SQLiteStorage(db) as storage, running_server(storage) as url:
        fill(url, "bulk", 4_000)
        # Every write a mutation: each one adds a revision, so revisions have no holes.
        r = requests.put(f"{url}/v1/streams/live", json={"record_rate": {"change_frequency": 0}})
        assert r.status_code == 201
        writers = Writers(url)
        writer_started = time.monotonic()
        writers.start()
        try:
            acked_before = writers.wait_for(50)
            during: list[int] = []

            def progress(remaining: int, total: int) -> None:
                if not steps:
                    # Writes go on between the steps: wait for 20 more.
                    during.append(writers.wait_for(len(writers.acked) + 20))
                steps.append((remaining, total))

            started = time.monotonic()
            report = backup_sqlite(db, out, pages=16, progress=progress)
            elapsed = time.monotonic() - started
            writers.wait_for(len(writers.acked) + 10)
        finally:
            writers.finish()
        rate = len(writers.acked) / (time.monotonic() - writer_started)
        original = entries_of(url, "live")
        original_bulk = entries_of(url, "bulk")

    assert len(steps) > 10, steps  # copied in steps, not in one go
    assert steps[-1][0] == 0
    # Answers in flight may come back late, with older revisions.
    assert during[0] >= acked_before + 20 - THREADS
    print(
        f"backup: {len(steps)} steps in {elapsed:.2f} s, {report.size} bytes, {rate:.0f} writes/s"
    )
    assert sorted(writers.acked) == list(range(1, len(writers.acked) + 1))
    assert not Path(f"{out}-wal").exists()

    with SQLiteStorage(out) as copy, running_server(copy) as url:
        with rstream.Client(url) as client:
            revision = client.stream("live").info().revision
            copied = list(client.stream("live").entries())
            state = client.stream("live").state_at(copied[-1].timestamp)
        copied_bulk = entries_of(url, "bulk")
    # Everything acknowledged before the backup began, and nothing written
    # after it: the copy is one moment of the store.
    assert acked_before <= revision < during[0]
    assert [e.rev for e in copied] == list(range(1, revision + 1))
    assert copied == original[:revision]
    assert state == replay(copied)[-1]
    assert copied_bulk == original_bulk
    assert report.entries == 4_000 + revision
    assert report.streams == 2


def test_backup_and_restore_commands(tmp_path: Path) -> None:
    db, out, target = tmp_path / "streams.db", tmp_path / "b.db", tmp_path / "restored.db"
    with SQLiteStorage(db) as storage, running_server(storage) as url:
        requests.post(f"{url}/v1/streams/a/state", json={"state": {"x": 1}})
        result = run("backup", "--db", f"sqlite:///{db}", str(out))
        assert result.exit_code == 0, result.output
        assert "1 streams, 1 entries" in result.output
        # An existing file is only replaced with --force.
        requests.post(f"{url}/v1/streams/a/state", json={"state": {"x": 2}})
        result = run("backup", "--db", f"sqlite:///{db}", str(out))
        assert result.exit_code == 1
        assert "exists: pass --force" in result.output
        result = run("backup", "--db", f"sqlite:///{db}", "--force", str(out))
        assert result.exit_code == 0, result.output
        assert "1 streams, 2 entries" in result.output

        # The store a server has open is never replaced, even with --force.
        result = run("restore", "--db", f"sqlite:///{db}", str(out))
        assert result.exit_code == 1
        assert "exists: pass --force" in result.output
        result = run("restore", "--db", f"sqlite:///{db}", "--force", str(out))
        assert result.exit_code == 1
        assert "in use" in result.output
        assert requests.get(f"{url}/v1/streams/a").json()["revision"] == 2

    result = run("restore", "--db", f"sqlite:///{target}", str(out))
    assert result.exit_code == 0, result.output
    with ServerProcess(f"sqlite:///{target}") as server, rstream.Client(server.url) as client:
        assert client.stream("a").latest()[1] == {"x": 2}
        # A second restore over a store in use by the server process: refused.
        result = run("restore", "--db", f"sqlite:///{target}", "--force", str(out))
        assert result.exit_code == 1
        assert "in use" in result.output
    # Stopped: --force replaces it.
    result = run("restore", "--db", f"sqlite:///{target}", "--force", str(out))
    assert result.exit_code == 0, result.output


def test_restore_checks_the_backup(tmp_path: Path) -> None:
    good = tmp_path / "good.db"
    with SQLiteStorage(good) as storage:
        storage.create_stream("a")
    target = tmp_path / "target.db"

    def refused(backup: Path, message: str) -> None:
        with pytest.raises(CLIError, match=message):
            restore_sqlite(backup, target)
        assert not target.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".target")] == []

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    refused(garbage, "not a sound SQLite database|not an rstream store")

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    refused(other, "not an rstream store")

    newer = tmp_path / "newer.db"
    newer.write_bytes(good.read_bytes())
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE rstream_schema SET version = 99")
    conn.close()
    refused(newer, "schema version 99")

    damaged = tmp_path / "damaged.db"
    data = bytearray(good.read_bytes())
    page = 4096
    assert len(data) >= 4 * page
    data[2 * page : 3 * page] = b"\xff" * page  # a b-tree page of the schema
    damaged.write_bytes(bytes(data))
    refused(damaged, "integrity_check|not a sound SQLite database|malformed")

    report = restore_sqlite(good, target)
    assert report.streams == 1
    assert report.schema_version >= 1


def test_postgresql_is_backed_up_with_pg_dump(tmp_path: Path) -> None:
    result = run("backup", "--db", "postgresql://postgres@127.0.0.1/postgres", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "pg_dump" in result.output
    result = run("backup", "--db", "memory://", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert not (tmp_path / "o").exists()


def test_backup_refuses_a_missing_store_and_itself(tmp_path: Path) -> None:
    db = tmp_path / "streams.db"
    with pytest.raises(CLIError, match="no SQLite store"):
        backup_sqlite(db, tmp_path / "out.db")
    assert not db.exists()  # never created by trying
    with SQLiteStorage(db):
        pass
    with pytest.raises(CLIError, match="the store itself"):
        backup_sqlite(db, db, force=True)


def test_an_unwritable_target_is_one_error_line(tmp_path: Path) -> None:
    db = tmp_path / "streams.db"
    with SQLiteStorage(db):
        pass
    missing = tmp_path / "no" / "such" / "dir.db"
    for args in (("backup", "--db", f"sqlite:///{db}", str(missing)),
                 ("restore", "--db", f"sqlite:///{missing}", str(db))):  # fmt: skip
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"error: {args[0]} to ")
        assert "failed: No such file or directory" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
