"""The ``rstream`` client commands against real servers on loopback ports.

Output and exit codes are checked for each command, including the error paths
(unknown stream, out of range, refused token, server down, bad input).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rstream.cli.main import main
from rstream.cli.output import EXIT_AUTH, EXIT_CONNECTION, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_USAGE
from rstream.cli.timeparse import CommandClock
from rstream.client import Client
from rstream.core.entry import Entry, EntryKind
from rstream.server.storage import MemoryStorage
from tests.serverutil import running_server

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
WRITE_TOKEN = "w-secret"
READ_TOKEN = "r-secret"


def history_entries(seconds: int = 30) -> list[Entry]:
    """A snapshot every 10 s and a mutation every second in between."""
    entries = []
    for i in range(seconds):
        ts = T0 + timedelta(seconds=i)
        if i % 10 == 0:
            entries.append(
                Entry(ts, EntryKind.SNAPSHOT, {"battery": 1.0 - i / 100, "tick": i, "tags": []})
            )
        else:
            entries.append(Entry(ts, EntryKind.MUTATION, {"battery": 1.0 - i / 100, "tick": i}))
    return entries


def _put_history(url: str, stream_id: str, token: str | None = None) -> None:
    with Client(url, token=token) as client:
        client.stream(stream_id).append_entries(history_entries())


@pytest.fixture(autouse=True)
def _no_lasting_log_handler() -> Iterator[None]:
    """The commands add a stderr handler to the "rstream" logger; keep it to one test."""
    logger = logging.getLogger("rstream")
    before = list(logger.handlers)
    yield
    for handler in logger.handlers[:]:
        if handler not in before:
            logger.removeHandler(handler)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """An open server holding 'robot-1' (30 s of history from T0)."""
    with running_server(MemoryStorage(), heartbeat=0.2) as base:
        _put_history(base, "robot-1")
        yield base


@pytest.fixture(scope="module")
def secure_url() -> Iterator[str]:
    """A server with read and write tokens, holding 'robot-1'."""
    with running_server(
        MemoryStorage(), read_token=READ_TOKEN, write_token=WRITE_TOKEN, heartbeat=0.2
    ) as base:
        _put_history(base, "robot-1", WRITE_TOKEN)
        yield base


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    clock: CommandClock | None = None,
) -> Result:
    runner = CliRunner()
    return runner.invoke(main, list(args), env=env or {"RSTREAM_TOKEN": ""}, input=stdin, obj=clock)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- streams ----------------------------------------------------------------------


def test_streams_lists_ids_times_and_revision(url: str) -> None:
    result = run("streams", url)
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    row = next(r for r in rows if r[0] == "robot-1")
    assert row[1] == "2024-05-01T12:00:00Z"
    assert row[2] == "2024-05-01T12:00:29Z"
    assert row[3] == "30"
    as_json = lines(run("streams", url, "--json").stdout)
    assert {"id": "robot-1", "revision": 30}.items() <= next(
        s for s in as_json if s["id"] == "robot-1"
    ).items()


# -- state ------------------------------------------------------------------------


def test_state_latest_and_at_a_time(url: str) -> None:
    result = run("state", url, "robot-1")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == {
        "timestamp": "2024-05-01T12:00:29Z",
        "state": {"battery": 0.71, "tick": 29, "tags": []},
    }
    result = run("state", url, "robot-1", "--at", at(12.5), "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    assert json.loads(result.stdout) == {
        "timestamp": "2024-05-01T12:00:12.5Z",
        "state": {"battery": 0.88, "tick": 12, "tags": []},
    }
    epoch = str((T0 + timedelta(seconds=3)).timestamp())
    assert json.loads(run("state", url, "robot-1", "--at", epoch).stdout)["state"]["tick"] == 3


def test_state_before_the_first_snapshot_is_out_of_range(url: str) -> None:
    result = run("state", url, "robot-1", "--at", at(-60))
    assert result.exit_code == EXIT_NOT_FOUND
    assert result.stdout == ""
    assert result.stderr.startswith("error: stream 'robot-1' has no state at 2024-05-01T11:59:00Z")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_unknown_stream_says_how_to_find_the_id(url: str) -> None:
    result = run("state", url, "robot-404")
    assert result.exit_code == EXIT_NOT_FOUND
    assert result.stderr == (
        f"error: stream 'robot-404' not found on {url}: check the id with 'rstream streams {url}'\n"
    )


def test_verbose_shows_the_traceback(url: str) -> None:
    result = run("state", url, "robot-404", "--verbose")
    assert result.exit_code == EXIT_NOT_FOUND
    assert "Traceback (most recent call last)" in result.stderr
    assert "StreamNotFound" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: stream 'robot-404' not found")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["state", "URL", "bad/id"], "invalid stream id"),
        (["state", "URL", "robot-1", "--at", "yesterday"], "is not a time"),
        (["state", "ftp://x", "robot-1"], "not an http(s) URL"),
        (["history", "URL", "robot-1", "--start", "-1m", "--end", "-2m"], "must be after"),
        (["history", "URL", "robot-1", "--step", "0s"], "more than zero"),
        (["plot", "URL", "robot-1", "a..b", "-o", "x.png"], "not a field path"),
    ],
)
def test_usage_errors_exit_2(url: str, args: list[str], words: str) -> None:
    result = run(*[url if a == "URL" else a for a in args])
    assert result.exit_code == EXIT_USAGE
    assert words in result.stderr


# -- history ----------------------------------------------------------------------


def test_history_every_change_and_sampled(url: str) -> None:
    result = run("history", url, "robot-1", "--start", at(5.5), "--end", at(9), "--json")
    assert result.exit_code == 0, result.output
    got = lines(result.stdout)
    assert [d["timestamp"] for d in got] == [
        "2024-05-01T12:00:05.5Z",
        "2024-05-01T12:00:06Z",
        "2024-05-01T12:00:07Z",
        "2024-05-01T12:00:08Z",
    ]
    assert [d["state"]["tick"] for d in got] == [5, 6, 7, 8]  # type: ignore[index]

    result = run("history", url, "robot-1", "--start", at(0), "--end", at(30), "--step", "10s")
    assert result.exit_code == 0, result.output
    text = result.stdout.splitlines()
    assert len(text) == 3
    stamp, state = text[1].split(" ", 1)
    assert stamp == "2024-05-01T12:00:10Z"
    assert json.loads(state) == {"battery": 0.9, "tick": 10, "tags": []}


def test_one_command_reads_now_once(url: str) -> None:
    # A clock that moves on at every read: two reads would make the range
    # [-40m, -37m) a microsecond longer than three minutes, and sample four times.
    reads: list[datetime] = []

    def clock() -> datetime:
        reads.append(T0 + timedelta(minutes=40, seconds=5, microseconds=len(reads)))
        return reads[-1]

    relative = ("--start", "-40m", "--end", "-37m")
    absolute = ("--start", at(5), "--end", at(185))
    got = {}
    for times in (relative, absolute):
        args = ("history", url, "robot-1", *times, "--step", "1m", "--json")
        result = run(*args, clock=CommandClock(clock))
        assert result.exit_code == 0, result.output
        got[times] = [d["timestamp"] for d in lines(result.stdout)]
        assert len(reads) == len(got)  # one read per command
    expected = ["2024-05-01T12:00:05Z", "2024-05-01T12:01:05Z", "2024-05-01T12:02:05Z"]
    assert got[relative] == got[absolute] == expected


def test_a_time_without_a_zone_says_so(url: str) -> None:
    result = run("history", url, "robot-1", "--start", "2024-05-01T12:00:00", "--end", at(9))
    assert result.exit_code == EXIT_USAGE
    assert "'2024-05-01T12:00:00' has no time zone" in result.stderr
    assert "add Z for UTC (2024-05-01T12:00:00Z)" in result.stderr


def test_history_of_an_unknown_stream(url: str) -> None:
    result = run("history", url, "nope", "--start", at(0), "--end", at(1))
    assert result.exit_code == EXIT_NOT_FOUND
    assert "stream 'nope' not found" in result.stderr


# -- export and import ------------------------------------------------------------


def test_export_then_import_moves_a_stream(url: str, tmp_path: Path) -> None:
    result = run("export", url, "robot-1")
    assert result.exit_code == 0, result.output
    exported = lines(result.stdout)
    assert len(exported) == 30
    assert exported[0] == {
        "timestamp": "2024-05-01T12:00:00Z",
        "type": 0,
        "data": {"battery": 1.0, "tick": 0, "tags": []},
        "rev": 1,
    }
    backup = tmp_path / "robot-1.ndjson"
    backup.write_text(result.stdout)

    result = run("import", url, "robot-copy", str(backup), "--batch", "7")
    assert result.exit_code == 0, result.output
    assert "imported 30 entries into 'robot-copy'" in result.stderr

    again = lines(run("export", url, "robot-copy").stdout)
    assert again == exported  # same entries, and revisions 1..30 again
    ranged = lines(run("export", url, "robot-1", "--start", at(10), "--end", at(12)).stdout)
    assert [e["timestamp"] for e in ranged] == ["2024-05-01T12:00:10Z", "2024-05-01T12:00:11Z"]


def test_import_from_stdin_and_refusals(url: str) -> None:
    body = "".join(json.dumps(e.to_json()) + "\n" for e in history_entries(5))
    result = run("import", url, "from-stdin", "-", stdin=body.encode())
    assert result.exit_code == 0, result.output
    assert "imported 5 entries" in result.stderr
    # The same entries again are not after the newest one: refused, nothing written.
    result = run("import", url, "from-stdin", "-", stdin=body.encode())
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.startswith("error: ")
    assert "after" in result.stderr
    assert lines(run("export", url, "from-stdin").stdout)[-1]["rev"] == 5
    # A broken line is reported with its number before anything is sent.
    result = run("import", url, "broken", "-", stdin=b'{"timestamp": 1}\n')
    assert result.exit_code == EXIT_ERROR
    assert "<stdin> line 1" in result.stderr
    assert run("state", url, "broken").exit_code == EXIT_NOT_FOUND


# -- tail -------------------------------------------------------------------------


@pytest.mark.timeout(60)  # a tail waits for ever by design; fail fast instead
def test_tail_prints_the_current_state_then_changes(url: str) -> None:
    with Client(url) as client:
        robot = client.stream("tailed")
        robot.write_state({"n": 0})
        stop = threading.Event()

        def write() -> None:
            n = 1
            while not stop.wait(0.05):
                robot.write_state({"n": n})
                n += 1

        writer = threading.Thread(target=write)
        writer.start()
        try:
            result = run("tail", url, "tailed", "--json", "--count", "4")
        finally:
            stop.set()
            writer.join()
    assert result.exit_code == 0, result.output
    got = lines(result.stdout)
    assert len(got) == 4
    ns = [d["state"]["n"] for d in got]  # type: ignore[index]
    assert ns == sorted(ns)
    assert len(set(ns)) == 4
    assert all(isinstance(d["timestamp"], str) for d in got)


@pytest.mark.timeout(60)  # a tail waits for ever by design; fail fast instead
def test_tail_of_an_unknown_stream(url: str) -> None:
    result = run("tail", url, "not-there", "--json", "--count", "1")
    assert result.exit_code == EXIT_NOT_FOUND
    # Said once, in the CLI's words: the library's record of the stopped tail is
    # the same error.
    assert result.stderr == (
        f"error: stream 'not-there' not found on {url}: check the id with 'rstream streams {url}'\n"
    )


# -- tokens -----------------------------------------------------------------------


def test_tokens_from_the_environment_or_a_file(secure_url: str, tmp_path: Path) -> None:
    result = run("state", secure_url, "robot-1")
    assert result.exit_code == EXIT_AUTH
    assert "refused the credentials (HTTP 401)" in result.stderr
    assert "--token-file" in result.stderr

    result = run("state", secure_url, "robot-1", env={"RSTREAM_TOKEN": READ_TOKEN})
    assert result.exit_code == 0, result.output

    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    result = run("state", secure_url, "robot-1", "--token-file", str(wrong))
    assert result.exit_code == EXIT_AUTH

    right = tmp_path / "right"
    right.write_text(READ_TOKEN + "\n")
    result = run("streams", secure_url, env={"RSTREAM_TOKEN_FILE": str(right)})
    assert result.exit_code == 0, result.output
    assert "robot-1" in result.stdout

    result = run("state", secure_url, "robot-1", "--token-file", str(tmp_path / "missing"))
    assert result.exit_code == EXIT_AUTH
    assert "cannot read the token file" in result.stderr


def test_import_needs_the_write_token(secure_url: str) -> None:
    body = json.dumps(history_entries(1)[0].to_json()).encode()
    result = run("import", secure_url, "new", "-", stdin=body, env={"RSTREAM_TOKEN": READ_TOKEN})
    assert result.exit_code == EXIT_AUTH
    assert "write token" in result.stderr
    result = run("import", secure_url, "new", "-", stdin=body, env={"RSTREAM_TOKEN": WRITE_TOKEN})
    assert result.exit_code == 0, result.output


# -- server down ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["streams", "state", "history", "export"])
def test_server_down_is_a_connection_error(dead_url: str, command: str) -> None:
    args = [command, dead_url] + ([] if command == "streams" else ["robot-1"])
    result = run(*args, "--retries", "0")
    assert result.exit_code == EXIT_CONNECTION
    assert result.stderr.startswith(f"error: cannot reach {dead_url}")
    assert "is running" in result.stderr
    assert result.stderr.count("\n") == 1


# -- plot -------------------------------------------------------------------------


def test_plot_writes_a_png_with_the_line(url: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the plot extra)")
    from tests.test_plot import C0, line_pixels

    out = tmp_path / "battery.png"
    result = run(
        "plot", url, "robot-1", "battery", "--start", at(0), "--end", at(30), "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr
    assert out.stat().st_size > 5_000
    assert line_pixels(out, C0) > 300


def test_plot_of_a_field_that_is_never_numeric(url: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the plot extra)")
    out = tmp_path / "tags.png"
    result = run("plot", url, "robot-1", "tags", "--start", at(0), "--end", at(30), "-o", str(out))
    assert result.exit_code == EXIT_ERROR
    assert "no numeric values for 'tags'" in result.stderr
    assert not out.exists()


def test_plot_without_matplotlib_says_how_to_get_it(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = run("plot", url, "robot-1", "battery", "-o", str(tmp_path / "x.png"))
    assert result.exit_code == EXIT_ERROR
    assert result.stderr == (
        "error: 'rstream plot' needs matplotlib, which is not installed: "
        "pip install 'remote-state-stream[plot]'\n"
    )


# -- the installed entry point -----------------------------------------------------


def _entry_point() -> str:
    found = Path(sys.executable).parent / "rstream"
    if found.exists():
        return str(found)
    which = shutil.which("rstream")
    if which is None:
        pytest.skip("the rstream entry point is not installed (pip install -e .)")
    return which


def test_the_installed_entry_point(url: str, dead_url: str) -> None:
    exe = _entry_point()
    # No token from the environment; the disk cache stays the test's (conftest.py).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RSTREAM_") or k == "RSTREAM_CACHE_DIR"
    }
    done = subprocess.run(
        [exe, "state", url, "robot-1", "--json"], capture_output=True, env=env, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"]["tick"] == 29
    done = subprocess.run(
        [exe, "state", dead_url, "robot-1", "--retries", "0"],
        capture_output=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == EXIT_CONNECTION
    assert done.stderr.decode().startswith("error: cannot reach")
    assert b"Traceback" not in done.stderr


@pytest.mark.timeout(60)  # a tail waits for ever by design; fail fast instead
def test_tail_view_on_a_terminal_redraws_the_state(url: str) -> None:
    with Client(url) as client:
        client.stream("viewed").write_state({"battery": 0.5, "nested": {"temp": 40}})
    # TTY_COMPATIBLE makes rich treat the captured output as a terminal.
    env = {"RSTREAM_TOKEN": "", "TTY_COMPATIBLE": "1", "COLUMNS": "100"}
    result = run("tail", url, "viewed", "--count", "1", env=env)
    assert result.exit_code == 0, result.output
    assert "\x1b[" in result.stdout  # drawn with escape sequences, not printed as lines
    assert "viewed" in result.stdout
    assert '"temp"' in result.stdout
    assert "revision 1" in result.stdout


def test_library_warnings_are_shown_as_lines(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from rstream.cli.output import show_library_warnings

    show_library_warnings()
    show_library_warnings()  # once only
    logging.getLogger("rstream.live").warning("reconnected after %s", "a reset")
    logging.getLogger("rstream.live").info("not shown")
    assert capsys.readouterr().err == "warning: reconnected after a reset\n"


def test_a_library_error_is_held_until_the_command_ends(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # An error record carrying an exception waits for the command's end: shown
    # unless the command reports that exception itself.
    import click

    from rstream.cli.output import report_errors, show_library_warnings
    from rstream.errors import StreamNotFound

    show_library_warnings()
    log = logging.getLogger("rstream.live")
    ctx = click.Context(main)
    reported, other = StreamNotFound("gone"), StreamNotFound("other")

    def command() -> None:
        with report_errors(ctx):
            log.error("tail stopped: %s", reported)
            log.error("tail stopped: %s", other)
            assert capsys.readouterr().err == ""  # held
            raise reported

    with pytest.raises(click.exceptions.Exit):
        command()
    assert capsys.readouterr().err == "error: the stream not found: check the id with " + (
        "'rstream streams URL'\nerror: tail stopped: other\n"
    )
    with report_errors(ctx):
        log.error("tail stopped: %s", reported)
    assert capsys.readouterr().err == "error: tail stopped: gone\n"
