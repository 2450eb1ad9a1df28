"""The demo's simulated device: a robot whose state changes like a real one's.

:class:`RobotSimulator` computes states (pure, deterministic for a seed);
:class:`SimulatedDevice` writes them to a stream at a rate on a thread. ``rstream
demo`` uses both; tests and benchmarks can too.
"""

from __future__ import annotations

from rstream.demo.device import SimulatedDevice
from rstream.demo.simulator import RobotSimulator

__all__ = ["RobotSimulator", "SimulatedDevice"]
