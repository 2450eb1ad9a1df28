"""The demo: the simulated robot, the device thread, and ``rstream demo`` end to end."""

from __future__ import annotations

import itertools
import json
import queue
import threading
from typing import Any

import pytest

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
        if sink.progress.get(timeout=5) >= count:
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
    device = SimulatedDevice(sink, rate=0.1)  # 10 s between writes
    device.start()
    _wait_calls(sink, 1)
    done = threading.Event()
    closer = threading.Thread(target=lambda: (device.close(), done.set()))
    closer.start()
    assert done.wait(timeout=2), "close() did not interrupt the 10 s wait"
    closer.join()
    assert sink.calls == 1


def test_device_stops_when_its_client_is_closed() -> None:
    def closed(state: dict[str, Any]) -> None:
        raise ClientClosed("closed")

    device = SimulatedDevice(closed, rate=1000.0)
    device.start()
    assert device._thread is not None
    device._thread.join(timeout=5)
    assert not device._thread.is_alive()
    device.close()


def test_device_rejects_a_silly_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        SimulatedDevice(lambda s: None, rate=0)
