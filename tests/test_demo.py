"""The demo: the simulated robot, the device thread, and ``rstream demo`` end to end."""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rstream.cli.demo import READY, StopSignals
from rstream.cli.main import main
from rstream.demo import RobotSimulator, SimulatedDevice
from rstream.errors import ClientClosed, TransportError


def test_simulator_is_deterministic_for_a_seed() -> None:
    a, b = RobotSimulator(seed=7), RobotSimulator(seed=7)
    assert [a.step(0.05) for _ in range(200)] == [b.step(0.05) for _ in range(200)]
    assert RobotSimulator(seed=8).step(0.05) != RobotSimulator(seed=7).step(0.05)


def test_simulator_state_is_json_and_has_the_promised_shape() -> None:
    robot = RobotSimulator("r-9")
    state = robot.step(0.05)
    assert json.loads(json.dumps(state)) == state
    assert state["name"] == "r-9"
    assert set(state) >= {"battery", "position", "tasks", "sensors", "mode"}
    assert set(state["position"]) == {"x", "y", "heading"}
    assert set(state["sensors"]["temperature"]) == {"motor", "board"}
    assert robot.state() == robot.state()  # reading does not advance anything


def test_simulator_changes_like_a_device() -> None:
    robot = RobotSimulator(seed=1)
    states = [robot.step(0.05) for _ in range(20 * 120)]  # two simulated minutes at 20 Hz
    task_counts = {len(s["tasks"]) for s in states}
    assert len(task_counts) >= 3  # the list grows and shrinks
    ids = [t["id"] for s in states for t in s["tasks"]]
    assert len(set(ids)) > 5  # tasks are finished and new ones arrive
    assert len({s["battery"] for s in states}) > 50
    assert len({(s["position"]["x"], s["position"]["y"]) for s in states}) > 100
    assert all(0.0 <= s["battery"] <= 1.0 for s in states)
    assert all(0.0 <= t["progress"] <= 1.0 for s in states for t in s["tasks"])
    changed = sum(1 for prev, cur in itertools.pairwise(states) if prev != cur)
    assert changed > 0.9 * len(states)


def test_simulator_charges_when_the_battery_runs_low() -> None:
    robot = RobotSimulator(seed=3)
    modes = {robot.step(1.0)["mode"] for _ in range(600)}
    assert "charging" in modes
    assert "working" in modes


def test_simulator_rejects_negative_time() -> None:
    with pytest.raises(ValueError, match="negative"):
        RobotSimulator().step(-1)


class _Sink:
    """A write_state that records states, fails on demand, and signals progress."""

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.states: list[dict[str, Any]] = []
        self.calls = 0
        self.fail_on = fail_on or set()
        self.progress: queue.Queue[int] = queue.Queue()

    def __call__(self, state: dict[str, Any]) -> None:
        self.calls += 1
        call = self.calls
        self.progress.put(call)
        if call in self.fail_on:
            raise TransportError("server gone for a moment")
        self.states.append(state)


def _wait_calls(sink: _Sink, count: int) -> None:
    while True:
        if sink.progress.get(timeout=30) >= count:
            return


def test_device_writes_keeps_going_after_a_failure_and_closes() -> None:
    sink = _Sink(fail_on={2})
    device = SimulatedDevice(sink, rate=1000.0)
    with device:
        _wait_calls(sink, 5)
    assert not any(t.name == "rstream-demo-device" for t in threading.enumerate())
    assert device.failures == 1
    assert isinstance(device.last_error, TransportError)
    assert device.writes == len(sink.states) >= 4
    device.close()  # idempotent
    device.start()  # a closed device does not start again
    assert not any(t.name == "rstream-demo-device" for t in threading.enumerate())


def test_device_close_interrupts_the_wait_between_writes() -> None:
    sink = _Sink()
    device = SimulatedDevice(sink, rate=0.01)  # 100 s between writes
    device.start()
    _wait_calls(sink, 1)
    done = threading.Event()

    def close() -> None:
        device.close()
        done.set()

    closer = threading.Thread(target=close)
    closer.start()
    assert done.wait(timeout=30), "close() did not interrupt the 100 s wait"
    closer.join()
    assert sink.calls == 1


def test_device_stops_when_its_client_is_closed() -> None:
    def closed(state: dict[str, Any]) -> None:
        raise ClientClosed("closed")

    device = SimulatedDevice(closed, rate=1000.0)
    device.start()
    assert device._thread is not None
    device._thread.join(timeout=30)
    assert not device._thread.is_alive()
    device.close()


def test_device_rejects_a_silly_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        SimulatedDevice(lambda s: None, rate=0)


# -- rstream demo, as a user runs it ----------------------------------------------


def _demo_command(*args: str) -> list[str]:
    exe = Path(sys.executable).parent / "rstream"
    if exe.exists():
        return [str(exe), "demo", *args]
    return [sys.executable, "-c", "from rstream.cli.main import main; main()", "demo", *args]


# SIGINT at its default, as a terminal starts a command: a suite run as a shell
# script's background job (make test &) passes SIGINT on ignored, and the demo
# keeps ignoring it, as Python does.
_FROM_A_TERMINAL = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _from_a_terminal(command: list[str]) -> list[str]:
    return [sys.executable, "-c", _FROM_A_TERMINAL, *command]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSTREAM_")}
    env["COLUMNS"] = "120"
    return env


LIVE = re.compile(r"^\[\s*([\d.]+)s\] live +(\S+) mode=\w+ battery=[\d.]+ .*revision (\d+)")
HISTORY = re.compile(r"^\[\s*([\d.]+)s\] history (\S+) mode=\w+ battery=[\d.]+ .*state_at")


def test_demo_runs_for_a_duration_and_shows_live_and_history() -> None:
    done = subprocess.run(
        _demo_command("--duration", "5", "--lag", "2"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout.splitlines()
    live = [m for m in map(LIVE.match, out) if m]
    history = [m for m in map(HISTORY.match, out) if m]
    assert len(live) >= 4  # a summary every second, not a redrawn screen
    revisions = [int(m.group(3)) for m in live]
    assert revisions == sorted(revisions)
    assert revisions[-1] - revisions[0] >= 20  # ~20 states/s arrived live
    assert len(history) >= 2
    # The historic state is from --lag seconds before the live one printed with it.
    for m in history:
        line_at = m.group(1)
        live_ts = next(x.group(2) for x in live if x.group(1) == line_at)
        assert (_parse(live_ts) - _parse(m.group(2))).total_seconds() == 2.0
    assert out[-1].startswith("rstream demo: stopped after")
    assert re.search(r"open http://127\.0\.0\.1:\d+/ui/streams/robot-1 in a browser", done.stdout)
    db = re.search(r"\(SQLite (.+)\)", done.stdout)
    assert db is not None
    assert not Path(db.group(1)).exists()
    assert not Path(db.group(1)).parent.exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_stops_cleanly_on_ctrl_c_or_sigterm(signum: signal.Signals) -> None:
    proc = subprocess.Popen(
        _from_a_terminal(_demo_command("--rate", "50")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        db = re.search(r"\(SQLite (.+)\)", first)
        assert db is not None, first
        # The demo's own readiness line: server, device and viewer all run.
        ready = proc.stdout.readline()
        assert ready.startswith(READY), ready
        assert Path(db.group(1)).exists()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)  # a hang, not a slow machine, fails
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "rstream demo: stopped after" in out
    assert not Path(db.group(1)).parent.exists()


def test_demo_restores_the_signal_handlers_it_replaced() -> None:
    before = {sig: signal.getsignal(sig) for sig in StopSignals.SIGNALS}
    logger = logging.getLogger("rstream")
    handlers = list(logger.handlers)
    try:
        result = CliRunner().invoke(main, ["demo", "--duration", "0.5"])
    finally:  # the command shows library warnings on stderr; not in later tests
        for handler in logger.handlers[:]:
            if handler not in handlers:
                logger.removeHandler(handler)
    assert result.exit_code == 0, result.output
    assert "rstream demo: stopped after" in result.stdout
    assert {sig: signal.getsignal(sig) for sig in StopSignals.SIGNALS} == before


def test_stop_signals_ask_once_then_interrupt() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stop = StopSignals()
    with stop.installed():
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)  # its handler has run when this returns
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_signals_keep_an_ignored_signal_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
    try:
        with StopSignals().installed():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_stop_signals_leave_the_handlers_alone_off_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def run() -> None:
        with StopSignals().installed():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert seen == [before]


def test_demo_on_a_terminal_draws_live_and_past_side_by_side() -> None:
    env = _env()
    env["TTY_COMPATIBLE"] = "1"  # rich draws as on a terminal
    done = subprocess.run(
        _demo_command("--duration", "2", "--lag", "0.5"),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b[" in done.stdout
    assert "robot-1 live" in done.stdout
    assert "robot-1 0.5 s ago (state_at)" in done.stdout
    assert "entries/s" in done.stdout
    assert '"battery"' in done.stdout
    assert LIVE.match(done.stdout.splitlines()[-1]) is None  # no plain summary lines


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
