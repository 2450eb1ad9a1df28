"""``rstream backup`` and ``rstream restore``: copy a live SQLite store, and put a copy back.

A backup is SQLite's online backup API (:meth:`sqlite3.Connection.backup`) run
inside one read transaction on the store: the copy is the store as it was
when that transaction began, every entry acknowledged before it included. In
WAL mode (every rstream store) a reader never blocks writers, so a server
keeps writing while the pages are copied, a step at a time. Holding the read
transaction across the steps is what keeps the copy consistent and lets it
finish: without it, SQLite restarts a backup whenever another connection
writes between two steps, and the copy would be of some later moment, or
(for a large store under a steady write load) never done.

Both commands write to a temporary file next to their target, check it
(``PRAGMA integrity_check``, rstream's schema version), and only then rename it
into place: an interrupted run leaves the target as it was. PostgreSQL stores
are backed up with ``pg_dump`` (``docs/deploy.rst``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from rstream.cli.output import EXIT_NOT_FOUND, CLIError

__all__ = ["BackupReport", "backup", "backup_sqlite", "restore", "restore_sqlite"]

#: Pages copied per step: 4 MiB with SQLite's default 4 KiB pages.
STEP_PAGES = 1024
#: A target's companions: SQLite would apply a stale WAL or journal to a new file.
_SIDECARS = ("-wal", "-shm", "-journal")

#: ``progress(remaining, total)``: called after each step of a backup, from the
#: thread that runs it.
Progress = Callable[[int, int], object]


@dataclass(frozen=True)
class BackupReport:
    """What a backup or restore wrote: its path, size, schema version and streams."""

    path: Path
    size: int
    schema_version: int
    streams: int
    entries: int

    def describe(self) -> str:
        return (
            f"{self.path}: {self.streams} streams, {self.entries} entries, "
            f"{self.size} bytes (schema version {self.schema_version})"
        )


def backup_sqlite(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    pages: int = STEP_PAGES,
    progress: Progress | None = None,
) -> BackupReport:
    """Copy the rstream store at ``source`` to ``out``, while servers may write to it.

    Raises :class:`~rstream.cli.output.CLIError` when ``source`` is not an
    rstream store, or ``out`` exists and ``force`` is false.
    """
    source_path, out_path = Path(source), Path(out)
    if not source_path.is_file():
        raise CLIError(f"no SQLite store at {str(source_path)!r}", EXIT_NOT_FOUND)
    if out_path.exists():
        if out_path.resolve() == source_path.resolve():
            raise CLIError(f"{str(out_path)!r} is the store itself: back up to another file")
        if not force:
            raise CLIError(f"{str(out_path)!r} exists: pass --force to replace it")
    with _closing(_open_existing(source_path)) as src, _temporary(out_path) as tmp:
        # One read transaction across every step: its snapshot is the copy.
        src.execute("BEGIN")
        _schema_version(src, source_path)
        with _closing(sqlite3.connect(tmp, isolation_level=None)) as dst:

            def step(status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress(remaining, total)

            src.backup(dst, pages=pages, progress=step)
            src.execute("COMMIT")
            report = _check(dst, tmp, f"the copy of {str(source_path)!r}")
        _replace(tmp, out_path)
    return BackupReport(out_path, out_path.stat().st_size, *report)


def restore_sqlite(
    backup_file: str | os.PathLike[str], target: str | os.PathLike[str], *, force: bool = False
) -> BackupReport:
    """Put the backup ``backup_file`` at ``target``, after checking it.

    Refuses (:class:`~rstream.cli.output.CLIError`) a backup that fails
    ``PRAGMA integrity_check`` or is not an rstream store this version
    reads, an existing ``target`` without ``force``, and, even with it, a
    ``target`` that a server (any connection) has open.
    """
    backup_path, target_path = Path(backup_file), Path(target)
    if not backup_path.is_file():
        raise CLIError(f"no backup at {str(backup_path)!r}", EXIT_NOT_FOUND)
    if any(Path(f"{backup_path}{suffix}").exists() for suffix in ("-wal", "-journal")):
        raise CLIError(
            f"{str(backup_path)!r} has a -wal or -journal file next to it: it is a store in "
            "use, not a backup; make one with 'rstream backup'"
        )
    exists = target_path.exists()
    if exists and target_path.resolve() == backup_path.resolve():
        raise CLIError(f"{str(target_path)!r} is the backup itself")
    if exists and not force:
        raise CLIError(f"{str(target_path)!r} exists: pass --force to replace it")
    with _temporary(target_path) as tmp:
        # Checked as a copy, so that nothing (not even SQLite's recovery) writes
        # to the backup file itself.
        shutil.copyfile(backup_path, tmp)
        with _closing(sqlite3.connect(tmp, isolation_level=None)) as dst:
            report = _check(dst, tmp, f"backup {str(backup_path)!r}")
        with _exclusive(target_path) if exists else contextlib.nullcontext():
            for suffix in _SIDECARS:
                stale = Path(f"{target_path}{suffix}")
                if stale.exists():
                    if not force:
                        raise CLIError(
                            f"{str(stale)!r} is left from an earlier store: pass --force to "
                            "remove it"
                        )
                    stale.unlink()
            _replace(tmp, target_path)
    return BackupReport(target_path, target_path.stat().st_size, *report)


def _open_existing(path: Path) -> sqlite3.Connection:
    """A connection to an existing file (``mode=rw``: never creates one)."""
    try:
        return sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None, timeout=10
        )
    except sqlite3.Error as exc:
        raise CLIError(f"cannot open {str(path)!r}: {exc}") from None


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    from rstream.server.storage.sql import SCHEMA_VERSION

    try:
        row = conn.execute("SELECT version FROM rstream_schema").fetchone()
    except sqlite3.DatabaseError as exc:
        raise CLIError(f"{str(path)!r} is not an rstream store ({exc})") from None
    if row is None or not isinstance(row[0], int) or not 1 <= row[0] <= SCHEMA_VERSION:
        found = "none" if row is None else repr(row[0])
        raise CLIError(
            f"{str(path)!r} has rstream schema version {found}; this rstream reads 1 to "
            f"{SCHEMA_VERSION} (upgrade rstream for a newer one)"
        )
    version: int = row[0]
    return version


def _check(conn: sqlite3.Connection, path: Path, name: str) -> tuple[int, int, int]:
    """Raise unless ``conn`` holds a sound rstream store; its (version, streams, entries)."""
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise CLIError(f"{name} is not a sound SQLite database: {exc}") from None
    if problems != ["ok"]:
        raise CLIError(f"{name} fails PRAGMA integrity_check: {'; '.join(problems[:3])}")
    version = _schema_version(conn, Path(name))
    (streams,) = conn.execute("SELECT count(*) FROM streams").fetchone()
    (entries,) = conn.execute("SELECT count(*) FROM entries").fetchone()
    return version, int(streams), int(entries)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold ``path`` exclusively (nobody else has it open) for the block.

    Leaving WAL mode needs every other connection closed; SQLite refuses
    (or keeps WAL) otherwise, which is how a store in use is told apart.
    """
    in_use = CLIError(
        f"{str(path)!r} is in use (a server or another program has it open): stop it first"
    )
    conn = _open_existing(path)
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            mode = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
            if str(mode).lower() != "delete":
                raise in_use
            conn.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError:
            raise in_use from None
        except sqlite3.DatabaseError as exc:
            raise CLIError(
                f"{str(path)!r} is not a SQLite store ({exc}): remove it yourself if it may go"
            ) from None
        yield
    finally:
        conn.close()


@contextlib.contextmanager
def _temporary(target: Path) -> Iterator[Path]:
    """A new temporary file next to ``target``, removed unless renamed."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        for suffix in ("", *_SIDECARS):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{tmp}{suffix}")


def _replace(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target`` durably (the file, then the directory, synced)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def _closing(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield conn
    finally:
        conn.close()


def _sqlite_file(url: str, option: str) -> str:
    from rstream.errors import RStreamError
    from rstream.server.storage import sqlite_path

    if url.partition("://")[0].lower().startswith("postgres"):
        raise CLIError(
            f"{option} names a PostgreSQL store: back it up with pg_dump and restore it "
            "with pg_restore (docs/deploy.rst)"
        )
    try:
        return sqlite_path(url)
    except RStreamError as exc:
        raise CLIError(f"{option}: {exc}") from None


@contextlib.contextmanager
def _io_errors(what: str, target: str) -> Iterator[None]:
    """Turn an I/O failure (no such directory, a full disk) into one error line."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CLIError(f"{what} to {target!r} failed: {reason}") from None


@click.command()
@click.option(
    "--db", required=True, metavar="URL", help="The store to copy: sqlite:///path.db (or ////)."
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.argument("out", type=click.Path(dir_okay=False))
def backup(db: str, force: bool, out: str) -> None:
    """Copy a SQLite store to OUT, consistently, while a server writes to it.

    OUT holds every entry acknowledged before the copy began. Restore it with
    'rstream restore OUT --db sqlite:///path.db'.
    """
    with _io_errors("backup", out):
        report = backup_sqlite(_sqlite_file(db, "--db"), out, force=force)
    click.echo(f"rstream backup: {report.describe()}")


@click.command()
@click.option(
    "--db", required=True, metavar="URL", help="Where to restore: sqlite:///path.db (or ////)."
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing store (never one that a server has open).",
)
@click.argument("backup_file", metavar="BACKUP", type=click.Path(dir_okay=False))
def restore(db: str, force: bool, backup_file: str) -> None:
    """Put the backup BACKUP (made by 'rstream backup') in place as the store --db.

    The backup is checked first (PRAGMA integrity_check, rstream schema
    version); a store that a server has open is never replaced: stop the
    server, restore, start it again.
    """
    target = _sqlite_file(db, "--db")
    with _io_errors("restore", target):
        report = restore_sqlite(backup_file, target, force=force)
    click.echo(f"rstream restore: {report.describe()}")
