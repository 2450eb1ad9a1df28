"""A simulated robot whose state changes like a real device's.

:class:`RobotSimulator` is pure (no clock, no I/O): each :meth:`~RobotSimulator.step`
advances the simulation by ``dt`` seconds and returns the new state. The state
has what makes state streams interesting: numbers that drift (position,
battery, sensor readings), a mode that switches now and then, and a list of
tasks that grows and shrinks.
"""

from __future__ import annotations

import math
import random
from typing import Any

from rstream.errors import ConfigError

__all__ = ["RobotSimulator"]

_TASK_KINDS = ("pick", "place", "inspect", "charge-check", "scan")


class RobotSimulator:
    """A deterministic (for a given ``seed``) robot that drives, works and charges.

    ``RobotSimulator(name="robot-1", seed=0)``. :meth:`state` is the current
    state, :meth:`step` moves time forward. Both return a fresh dict the
    caller may keep or change.
    """

    def __init__(self, name: str = "robot-1", *, seed: int | None = 0) -> None:
        self._rng = random.Random(seed)
        self.name = name
        self.elapsed = 0.0
        self._x = 0.0
        self._y = 0.0
        self._heading = 0.0
        self._speed = 0.0
        self._battery = 0.93
        self._mode = "working"
        self._odometer = 0.0
        self._motor_temp = 35.0
        self._board_temp = 31.0
        self._lidar_front = 2.0
        self._lidar_rear = 3.0
        self._next_task = 1
        self._tasks: list[dict[str, Any]] = []
        self._until_new_task = 0.5
        for _ in range(2):
            self._add_task()

    def _add_task(self) -> None:
        self._tasks.append(
            {
                "id": f"task-{self._next_task}",
                "kind": self._rng.choice(_TASK_KINDS),
                "progress": 0.0,
            }
        )
        self._next_task += 1

    def step(self, dt: float) -> dict[str, Any]:
        """Advance by ``dt`` seconds and return the new state."""
        if dt < 0:
            raise ConfigError(f"dt must not be negative, got {dt}")
        rng = self._rng
        self.elapsed += dt
        if self._mode == "working":
            self._speed = max(0.0, min(1.5, self._speed + rng.uniform(-0.3, 0.35) * dt * 4))
            self._heading = (self._heading + rng.uniform(-0.6, 0.6) * dt * 4) % (2 * math.pi)
            self._battery -= dt * (0.004 + 0.006 * self._speed)
            self._motor_temp += dt * (0.8 * self._speed - 0.02 * (self._motor_temp - 30.0))
            if self._tasks:
                task = self._tasks[0]
                task["progress"] = min(1.0, task["progress"] + dt * rng.uniform(0.05, 0.35))
                if task["progress"] >= 1.0:
                    self._tasks.pop(0)
            self._until_new_task -= dt
            if self._until_new_task <= 0 and len(self._tasks) < 6:
                self._add_task()
                self._until_new_task = rng.uniform(0.5, 3.0)
            if self._battery < 0.25:
                self._mode = "charging"
        elif self._mode == "charging":
            self._speed = 0.0
            self._battery += dt * 0.05
            self._motor_temp += dt * -0.05 * (self._motor_temp - 30.0)
            if self._battery >= 0.95:
                self._mode = "working" if self._tasks else "idle"
        else:  # idle: wait for work
            self._speed = 0.0
            self._until_new_task -= dt
            if self._until_new_task <= 0:
                self._add_task()
                self._mode = "working"
        self._battery = max(0.0, min(1.0, self._battery))
        distance = self._speed * dt
        self._odometer += distance
        self._x += distance * math.cos(self._heading)
        self._y += distance * math.sin(self._heading)
        self._board_temp = 31.0 + 2.0 * math.sin(self.elapsed / 7.0) + rng.uniform(-0.05, 0.05)
        self._lidar_front = 0.3 + abs(3.0 * math.sin(self.elapsed / 3.0 + self._x))
        self._lidar_rear = self._lidar_front + rng.uniform(0.0, 2.0)
        return self.state()

    def state(self) -> dict[str, Any]:
        """The current state as a fresh JSON-compatible dict (rounded like a sensor would)."""
        return {
            "name": self.name,
            "mode": self._mode,
            "battery": round(self._battery, 3),
            "position": {
                "x": round(self._x, 2),
                "y": round(self._y, 2),
                "heading": round(math.degrees(self._heading), 1),
            },
            "speed": round(self._speed, 2),
            "odometer": round(self._odometer, 1),
            "tasks": [dict(task, progress=round(task["progress"], 2)) for task in self._tasks],
            "sensors": {
                "temperature": {
                    "motor": round(self._motor_temp, 1),
                    "board": round(self._board_temp, 1),
                },
                "lidar": {
                    "front": round(self._lidar_front, 2),
                    "rear": round(self._lidar_rear, 2),
                },
            },
        }
