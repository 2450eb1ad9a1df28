"""The server against its own OpenAPI document, by schemathesis, with every check.

``st run --checks all`` over every operation, the live tail included (its
events are read until two arrive or half a second passes, and each is validated
against ``LiveEvent``), in every phase: coverage (boundary and invalid values
of each parameter), fuzzing (positive and negative data), stateful (chains of
calls that reuse what earlier answers gave). Settings are in
``tests/schemathesis.toml``.

``RSTREAM_FUZZ_EXAMPLES`` sets the examples per operation (20 here, so the
suite stays fast), ``RSTREAM_FUZZ_SEED`` the seed (fixed here, so a failure is
reproducible; ``random`` for a new one each run). ``make fuzz`` runs it longer
with a random seed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import requests

from rstream.server.storage import Storage
from tests.serverutil import running_server

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("RSTREAM_FUZZ_EXAMPLES", "20"))
SEED = os.environ.get("RSTREAM_FUZZ_SEED", "2")


def seed_streams(url: str) -> None:
    """The streams of ``[dictionaries.streams]``: "a" with a window of
    snapshot, mutation and amend, "empty" with no entries."""
    with requests.Session() as http:
        for timestamp, state in ((1, {"x": 1}), (2, {"x": 2}), (2.5, {"x": 3, "y": [1]})):
            body = {"state": state, "timestamp": timestamp}
            r = http.post(f"{url}/v1/streams/a/state", json=body)
            assert r.status_code in (200, 201), r.text
        assert http.put(f"{url}/v1/streams/empty").status_code == 201


def run_schemathesis(url: str, examples: int, seed: str, workdir: Path) -> tuple[int, str]:
    """``st run`` in ``workdir`` (where it keeps its cache); (exit code, output)."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{url}/v1/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--request-timeout",
        "10",
    ]
    if seed != "random":
        command += ["--seed", seed]
    done = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=1800, check=False
    )
    return done.returncode, done.stdout + done.stderr


def test_every_operation_holds_to_the_schema(storage: Storage, tmp_path: Path) -> None:
    with running_server(storage) as url:
        seed_streams(url)
        code, output = run_schemathesis(url, EXAMPLES, SEED, tmp_path)
    tested = re.search(r"Tested: (\d+)", output)
    generated = re.search(r"(\d+) generated", output)
    print(output[-3000:])  # the summary, for `make fuzz` and for the closing figures
    assert code == 0, output[-20_000:]
    assert tested is not None, output[-3000:]
    assert int(tested.group(1)) == 9  # every operation, /live included
    assert generated is not None, output[-3000:]
    assert int(generated.group(1)) >= 9 * EXAMPLES
