"""Every command and code block of README.rst, run against a real server.

The README's examples are written against ``rstream demo --port 8080``; here a
server with the same simulated robot runs on a free port and the URL is
substituted. Commands that cannot run inside the suite (``make``, ``rstream
serve``, the demo itself) are checked another way: the Makefile targets exist,
``rstream serve`` has every option the README uses, and the demo command is the
one ``tests/test_demo.py`` runs.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from rstream.cli.main import main
from rstream.client import Client
from rstream.core.entry import Entry, EntryKind
from rstream.demo import RobotSimulator, SimulatedDevice
from rstream.server.storage import SQLiteStorage
from tests.serverutil import running_server

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.rst"
DOC_URL = "http://127.0.0.1:8080"


def blocks(language: str) -> list[tuple[str, str]]:
    """``(section title, code)`` of every ``.. code-block:: language`` in the README.

    The code is preceded by blank lines, so line numbers in tracebacks are the
    README's own.
    """
    text = README.read_text(encoding="utf-8")
    found = []
    section = ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1]) and line.strip():
            section = line.strip()
        if line.strip() != f".. code-block:: {language}":
            continue
        body: list[str] = []
        for follow in lines[i + 1 :]:
            if follow.strip() and not follow.startswith("    "):
                break
            body.append(follow[4:])
        found.append((section, "\n" * (i + 1) + "\n".join(body).rstrip("\n") + "\n"))
    return found


def commands(section: str | None = None) -> list[str]:
    """Console commands (``$ ...`` or bare lines) with continuation lines joined."""
    out = []
    for title, code in blocks("console"):
        if section is not None and title != section:
            continue
        for line in code.strip().replace("\\\n", " ").splitlines():
            line = line.strip()
            if line:
                out.append(line.removeprefix("$ ").strip())
    return out


# -- set-up ---------------------------------------------------------------------------


def test_set_up_is_exactly_make_test_and_make_demo() -> None:
    assert commands("Set-up on a fresh machine") == ["make test", "make demo"]
    makefile = (ROOT / "Makefile").read_text()
    # `make` cannot run inside the suite; the targets exist and do what the README says.
    assert re.search(r"^test: install\n\t\$\(PY\) -m pytest", makefile, re.M)
    assert re.search(
        r"^demo: install\n\t\$\(VENV\)/bin/rstream demo \$\(DEMO_ARGS\)", makefile, re.M
    )
    assert re.search(r"^DEMO_ARGS \?= --duration \d+", makefile, re.M)


def test_demo_commands_use_existing_options() -> None:
    demo_lines = [c for c in commands() if c.startswith("rstream demo")]
    assert demo_lines
    for line in demo_lines:
        args = shlex.split(line)[2:]
        # test_demo.py runs `rstream demo --duration 5 --lag 2` and `rstream demo --rate 50`.
        result = CliRunner().invoke(main, ["demo", "--help"])
        for option in args[::2]:
            assert option in result.output


def test_serve_commands_use_existing_options() -> None:
    serve_lines = [c for c in commands() if c.startswith("rstream serve")]
    assert serve_lines
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    for line in serve_lines:
        for option in re.findall(r"--[a-z-]+", line):
            assert option in help_text, f"README uses `{option}` that rstream serve lacks"


# -- against a server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server like the demo's: robot-1 with 10 s of history, and a device writing live."""
    db = tmp_path_factory.mktemp("readme") / "readme.sqlite3"
    with SQLiteStorage(db) as storage, running_server(storage, heartbeat=0.5) as url:
        simulator = RobotSimulator()
        now = datetime.now(UTC)
        past = [
            Entry(now - timedelta(seconds=10 - i * 0.5), EntryKind.SNAPSHOT, simulator.step(0.5))
            for i in range(20)
        ]
        with Client(url) as client:
            client.stream("robot-1").append_entries(past)
            with SimulatedDevice(client.stream("robot-1").write_state, simulator=simulator):
                yield url


def test_python_quickstart(demo_url: str) -> None:
    (section, code), *_ = blocks("python")
    assert section == "Python quickstart"
    assert DOC_URL in code
    assert 10 <= len([line for line in code.splitlines() if line.strip()]) <= 20
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace(DOC_URL, demo_url), "README.rst", "exec"), {})
    printed = out.getvalue()
    assert re.search(r"battery [\d.]+ at .*, [\d.]+ a second earlier", printed)
    assert "live:" in printed
    with Client(demo_url) as client:
        assert client.stream("my-sensor").latest()[1] == {"temperature": 21.5}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSTREAM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_cli_examples(demo_url: str, tmp_path: Path) -> None:
    examples = [
        c
        for c in commands("The command line")
        if c.startswith("rstream ") and not c.startswith(("rstream demo", "rstream serve"))
    ]
    assert len(examples) >= 6
    ran = set()
    for line in examples:
        line = line.replace(DOC_URL, demo_url)
        if "rstream plot" in line:
            pytest.importorskip("matplotlib", reason="matplotlib is not installed (plot extra)")
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        ran.add(shlex.split(line)[1])
    assert ran >= {"streams", "state", "tail", "history", "export", "import", "plot"}
    assert (tmp_path / "robot-1.ndjson").stat().st_size > 0
    assert (tmp_path / "robot-1.png").stat().st_size > 5_000
