"""The simulated rig keeps one clock: frames carry simulated time, one frame period apart,
however late the (realtime-paced) reads come; a deterministic fake wall clock stands in for a
busy machine."""

from __future__ import annotations

import numpy as np
import pytest

import mcf_rotator.drivers.simulated as simulated
from mcf_rotator.config import RigConfig
from mcf_rotator.drivers.simulated import SimulatedCamera
from mcf_rotator.simulation.world import SimulatedWorld


class _FakeWallClock:
    """monotonic() and sleep() for the driver: only sleeping and the test move it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += max(0.0, s)


def test_frames_carry_simulated_time_one_period_apart_on_a_busy_machine(monkeypatch) -> None:
    clock = _FakeWallClock()
    monkeypatch.setattr(simulated, "time", clock)
    cfg = RigConfig()
    cfg.simulation.camera_shape = (64, 64)
    world = SimulatedWorld(cfg, realtime=True)
    cam = SimulatedCamera(world)
    cam.connect()
    cam.start_acquisition()
    period = 1.0 / cam.frame_rate_hz
    stamps, wall = [], []
    for i in range(12):
        frame = cam.read_frame()
        stamps.append(frame.timestamp)
        wall.append(clock.now)
        assert frame.metadata["sim_time_s"] == frame.timestamp == pytest.approx(world.time_s)
        clock.now += 3 * period if i % 2 else 1.5  # the machine is busy: reads come late
    np.testing.assert_allclose(np.diff(stamps), period, rtol=1e-9)
    assert wall[-1] - wall[0] > 5 * (stamps[-1] - stamps[0])  # the wall clock ran far ahead
