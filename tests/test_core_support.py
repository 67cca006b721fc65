"""Small fake devices and pipeline for the core tests (no simulation physics, fast)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from mcf_rotator.drivers.base import BaseDevice
from mcf_rotator.drivers.protocols import Frame
from mcf_rotator.errors import DeviceDisconnectedError, ReconstructionError
from mcf_rotator.rig import Rig


class FakeWorld:
    """Simulated clock only; the fake camera advances it."""

    realtime = False

    def __init__(self, fps: float = 100.0) -> None:
        self.time_s = 0.0
        self.dt = 1.0 / fps

    def beam_far_field(self) -> np.ndarray:
        return np.ones((8, 8), np.float32)


class FakeCamera(BaseDevice):
    """Dark disc on a bright background; can 'unplug' itself after ``fail_after`` frames."""

    def __init__(self, world: FakeWorld, shape: tuple[int, int] = (48, 64), fail_after: int | None = None) -> None:
        super().__init__("fake camera")
        self.world = world
        self._shape = shape
        self.fail_after = fail_after
        self.exposure_ms = 1.0
        self.frame_rate_hz = 1.0 / world.dt
        self._acq = False
        self._index = 0
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        self._disc = ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) < (min(shape) / 5) ** 2

    shape = property(lambda self: self._shape)
    dtype = property(lambda self: np.dtype(np.uint8))
    bit_depth = property(lambda self: 8)
    is_acquiring = property(lambda self: self._acq)

    def start_acquisition(self) -> None:
        self._acq = True
        self._index = 0

    def stop_acquisition(self) -> None:
        self._acq = False

    def read_frame(self, timeout_s: float = 1.0) -> Frame:
        if not self._connected:
            raise DeviceDisconnectedError("fake camera: not connected")
        if self.fail_after is not None and self._index >= self.fail_after:
            self._fail("USB cable unplugged")
            raise DeviceDisconnectedError("fake camera: USB cable unplugged")
        self.world.time_s += self.world.dt
        img = np.where(self._disc, 80, 200).astype(np.uint8)
        img[0, 0] = self._index % 256  # frame tag for the tests
        f = Frame(img, self._index, self.world.time_s, {"sim_time_s": self.world.time_s})
        self._index += 1
        return f

    def snap(self) -> Frame:
        return self.read_frame()


class FakeSLM(BaseDevice):
    def __init__(self) -> None:
        super().__init__("fake slm")
        self.pixel_pitch_um = 8.0
        self.refresh_rate_hz = 60.0
        self._grey: np.ndarray | None = None
        self.shown: list[float] = []

    shape = property(lambda self: (4, 4))
    current_grey = property(lambda self: self._grey)

    def show_phase(self, phase_rad: np.ndarray) -> None:
        self.shown.append(float(phase_rad.flat[0]))
        self._grey = (np.mod(phase_rad, 2 * np.pi) / (2 * np.pi) * 255).astype(np.uint8)

    def show_grey(self, grey: np.ndarray) -> None:
        self._grey = grey


class FakeTrap(BaseDevice):
    def __init__(self) -> None:
        super().__init__("fake trap")
        self.power_mw = 10.0
        self._enabled = False

    enabled = property(lambda self: self._enabled)

    def set_enabled(self, enabled: bool) -> None:
        self._enabled = bool(enabled)


class FakeSequencer:
    step_deg = 1.0

    def __init__(self) -> None:
        self.correction: Any = None

    def step_index(self, angle_deg: float) -> int:
        return int(round(angle_deg / self.step_deg)) % 180

    def phase_image(self, angle_deg: float) -> np.ndarray:
        return np.full((4, 4), np.deg2rad(angle_deg % 360), np.float32)

    def set_correction(self, correction: Any) -> None:
        self.correction = correction


@dataclass
class FakeResult:
    index: int
    angle_deg: float | None
    ok: bool = True
    box: Any = None
    contour: Any = None
    circle: Any = None
    features: Any = None


@dataclass
class FakeSnapshot:
    version: int
    volume: np.ndarray
    n_projections: int
    coverage_deg: float


@dataclass
class FakeRecon:
    volume: np.ndarray
    angles_deg: np.ndarray
    axis_offset_px: float = 0.0
    tilt_deg: float = 0.0
    report: Any = None


class FakePipeline:
    """Pretends every frame is ``deg_per_frame`` further round; optionally fails at a frame."""

    def __init__(self, deg_per_frame: float = 2.0, fail_at: int | None = None) -> None:
        self.deg_per_frame = deg_per_frame
        self.fail_at = fail_at
        self.n = 0
        self.angles: list[float] = []
        self.finalized = False

    def process(self, image: np.ndarray, timestamp: float) -> FakeResult:
        if self.fail_at is not None and self.n >= self.fail_at:
            raise RuntimeError("segmentation exploded")
        a = self.n * self.deg_per_frame
        self.angles.append(a)
        self.n += 1
        return FakeResult(self.n - 1, a)

    def snapshot(self) -> FakeSnapshot | None:
        if not self.angles:
            return None
        return FakeSnapshot(self.n, np.zeros((4, 4, 4), np.float32), self.n, self.angles[-1] - self.angles[0])

    def finalize(self, progress: Any = None) -> FakeRecon:
        self.finalized = True
        if progress is not None:
            progress("fake angle step")
        if len(self.angles) < 3 or self.angles[-1] < 180:
            raise ReconstructionError(f"coverage {self.angles[-1] if self.angles else 0:.0f} deg < 180 deg")
        return FakeRecon(np.ones((6, 6, 6), np.float32), np.asarray(self.angles))


def fake_rig(fail_after: int | None = None) -> Rig:
    world = FakeWorld()
    return Rig(camera=FakeCamera(world, fail_after=fail_after), slm=FakeSLM(), trap=FakeTrap(), world=world)


class EmptyCamera(FakeCamera):
    """A field without a cell: the trap never holds one, so Run all waits in TRAPPING."""

    def read_frame(self, timeout_s: float = 1.0) -> Frame:
        f = super().read_frame(timeout_s)
        return Frame(np.full_like(f.image, 200), f.index, f.timestamp, f.metadata)


class SlowFinalPipeline(FakePipeline):
    """Its final reconstruction takes until ``release`` is set (minutes on a real rig), at most
    ``hold_s``; ``returned`` is set only if it got past its second step."""

    def __init__(self, hold_s: float = 30.0) -> None:
        super().__init__(deg_per_frame=0.01)
        self.hold_s = hold_s
        self.release = threading.Event()
        self.entered = threading.Event()
        self.returned = threading.Event()

    def finalize(self, progress: Any = None) -> FakeRecon:
        self.entered.set()
        if progress is not None:
            progress("slow angle step")
        self.release.wait(self.hold_s)
        if progress is not None:
            progress("after the slow step")  # raises once the run was abandoned
        self.returned.set()
        return FakeRecon(np.ones((6, 6, 6), np.float32), np.asarray(self.angles))
