"""Simulated devices: camera, SLM, trap laser and calibration camera over one SimulatedWorld.

Each device is a thin view of the shared :class:`~mcf_rotator.simulation.world.SimulatedWorld`
(the physics lives there), implements the protocols in ``drivers/protocols.py`` and holds
its own ``lock`` across every operation. Faults can be injected for tests of the layers
above: :meth:`SimulatedCamera.simulate_disconnect` makes the next read fail exactly like an
unplugged camera (``DeviceDisconnectedError`` + ``events.error``).
"""

from __future__ import annotations

import time

import numpy as np

from mcf_rotator.drivers.base import BaseDevice
from mcf_rotator.drivers.protocols import Frame
from mcf_rotator.errors import DeviceDisconnectedError, DeviceError, FrameTimeoutError
from mcf_rotator.holography.mcf import grey_to_phase, phase_to_grey
from mcf_rotator.simulation.hologram_camera import HologramOptics, render_hologram
from mcf_rotator.simulation.world import SimulatedWorld

__all__ = ["SimulatedCamera", "SimulatedSLM", "SimulatedTrap", "SimulatedCalibrationCamera", "SimulatedPump"]


class _SimCameraBase(BaseDevice):
    """Exposure / frame-rate / acquisition bookkeeping shared by both simulated cameras."""

    def __init__(self, world: SimulatedWorld, name: str, exposure_ms: float, frame_rate_hz: float, bit_depth: int) -> None:
        super().__init__(name)
        self.world = world
        self._exposure_ms = float(exposure_ms)
        self._frame_rate_hz = float(frame_rate_hz)
        self._bit_depth = int(bit_depth)
        self._acquiring = False
        self._index = 0
        self._fault: str | None = None
        self._pace_origin: float | None = None
        self._pace_index = 0

    # -- protocol properties ---------------------------------------------------------
    @property
    def exposure_ms(self) -> float:
        return self._exposure_ms

    @exposure_ms.setter
    def exposure_ms(self, value: float) -> None:
        if not value > 0:
            raise DeviceError(f"{self.name}: exposure must be > 0 ms, got {value}")
        with self.lock:
            self._set_property("exposure_ms", float(value))

    @property
    def frame_rate_hz(self) -> float:
        return self._frame_rate_hz

    @frame_rate_hz.setter
    def frame_rate_hz(self, value: float) -> None:
        if not value > 0:
            raise DeviceError(f"{self.name}: frame rate must be > 0 Hz, got {value}")
        with self.lock:
            self._set_property("frame_rate_hz", float(value))
            self._pace_origin = None

    @property
    def bit_depth(self) -> int:
        return self._bit_depth

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self._bit_depth <= 8 else np.dtype(np.uint16)

    @property
    def is_acquiring(self) -> bool:
        return self._acquiring

    # -- acquisition -------------------------------------------------------------------
    def _connect(self) -> None:
        self._fault = None

    def _disconnect(self) -> None:
        self._acquiring = False

    def start_acquisition(self) -> None:
        with self.lock:
            self._require_connected()
            self._acquiring = True
            self._index = 0
            self._pace_origin = None

    def stop_acquisition(self) -> None:
        with self.lock:
            self._acquiring = False

    def simulate_disconnect(self, message: str = "USB cable unplugged (simulated)") -> None:
        """Fault injection: the next read raises DeviceDisconnectedError and emits events.error."""
        with self.lock:
            self._fault = message

    def _require_connected(self) -> None:
        if not self._connected:
            raise DeviceDisconnectedError(f"{self.name}: not connected (call connect() first)")

    def _check_fault(self) -> None:
        if self._fault is not None:
            message = f"{self.name}: {self._fault}"
            self._fault = None
            self._acquiring = False
            self._fail(message)
            raise DeviceDisconnectedError(message)

    def _pace(self, timeout_s: float) -> None:
        """Realtime mode: wait until this frame is due (1 / frame_rate after the previous)."""
        if not self.world.realtime:
            return
        now = time.monotonic()
        if self._pace_origin is None:
            self._pace_origin, self._pace_index = now, 0
        due = self._pace_origin + self._pace_index / self._frame_rate_hz
        wait = due - now
        if wait > timeout_s:
            time.sleep(max(timeout_s, 0.0))  # a real camera blocks for the timeout, then fails
            raise FrameTimeoutError(f"{self.name}: no frame within {timeout_s:.3f} s (next due in {wait:.3f} s)")
        if wait > 0:
            time.sleep(wait)
        elif wait < -1.0:  # fell far behind (paused caller): restart the schedule, no burst
            self._pace_origin, self._pace_index = now, 0
        self._pace_index += 1

    def read_frame(self, timeout_s: float = 1.0) -> Frame:
        with self.lock:
            self._check_fault()
            self._require_connected()
            if not self._acquiring:
                raise DeviceError(f"{self.name}: read_frame() while not acquiring (call start_acquisition())")
            self._pace(timeout_s)
            frame = self._make_frame(advance=True)
            self._index += 1
            return frame

    def snap(self) -> Frame:
        with self.lock:
            self._check_fault()
            self._require_connected()
            return self._make_frame(advance=False)

    def _make_frame(self, advance: bool) -> Frame:  # pragma: no cover - abstract
        raise NotImplementedError


class SimulatedCamera(_SimCameraBase):
    """Brightfield camera over the whole field (``config.simulation.camera_shape``).

    Every ``read_frame`` advances the world by ``1 / frame_rate_hz`` (simulated time);
    with ``world.realtime`` reads are also paced in wall-clock time. Metadata:
    ``true_angle_deg``, ``sim_time_s``, ``trapped``, ``cell_centre_px``, ``exposure_ms``.
    """

    def __init__(self, world: SimulatedWorld, name: str = "simulated camera", seed: int | None = None) -> None:
        cam = world.config.camera
        super().__init__(world, name, cam.exposure_ms, cam.frame_rate_hz, cam.bit_depth)
        self._shape = tuple(int(v) for v in world.config.simulation.camera_shape)
        self._rng = np.random.default_rng([world.config.simulation.seed, 4242] if seed is None else seed)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape  # type: ignore[return-value]

    def _make_frame(self, advance: bool) -> Frame:
        if advance:
            self.world.advance(1.0 / self._frame_rate_hz)
        optics = self.world.brightfield_optics(self._exposure_ms, self._bit_depth)
        scene, meta = self.world.render_brightfield(self._shape, optics, self._rng)
        meta["exposure_ms"] = self._exposure_ms
        meta["laser_enabled"] = bool(self.world.laser_enabled)
        return Frame(scene.image, self._index, meta["sim_time_s"], meta)


class SimulatedCalibrationCamera(_SimCameraBase):
    """Camera behind the distal facet recording off-axis holograms (see hologram_camera).

    Exposure scales the signal (``exposure_ms / nominal_exposure_ms`` > 1 saturates);
    ``reference_blocked`` switches to intensity-only images. Reading does not advance time.
    """

    def __init__(
        self,
        world: SimulatedWorld,
        optics: HologramOptics | None = None,
        name: str = "simulated calibration camera",
        nominal_exposure_ms: float = 1.0,
        seed: int | None = None,
    ) -> None:
        self.optics = optics or HologramOptics()
        super().__init__(world, name, nominal_exposure_ms, 30.0, self.optics.bit_depth)
        self.nominal_exposure_ms = float(nominal_exposure_ms)
        self._reference_blocked = bool(self.optics.reference_blocked)
        self._rng = np.random.default_rng([world.config.simulation.seed, 777] if seed is None else seed)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.optics.shape)  # type: ignore[return-value]

    @property
    def reference_blocked(self) -> bool:
        return self._reference_blocked

    @reference_blocked.setter
    def reference_blocked(self, value: bool) -> None:
        with self.lock:
            self._set_property("reference_blocked", bool(value))

    def _make_frame(self, advance: bool) -> Frame:
        from dataclasses import replace

        optics = replace(
            self.optics,
            saturation=self.optics.saturation * self._exposure_ms / self.nominal_exposure_ms,
            reference_blocked=self._reference_blocked,
        )
        with self.world.lock:
            phases = self.world.total_core_phases()
            amps = self.world.core_amplitudes() if self.world.laser_enabled else np.zeros(self.world.geometry.n_cores)
            t = self.world.time_s
        image, meta = render_hologram(self.world.geometry, phases, amps, optics, self._rng)
        meta["sim_time_s"] = float(t)
        meta["exposure_ms"] = self._exposure_ms
        return Frame(image, self._index, float(t), meta)


class SimulatedSLM(BaseDevice):
    """Phase-only SLM (config size and pitch) whose pattern the world reads."""

    def __init__(self, world: SimulatedWorld, name: str = "simulated SLM") -> None:
        super().__init__(name)
        self.world = world
        slm = world.config.slm
        self._shape = (int(slm.height), int(slm.width))
        self.pixel_pitch_um = float(slm.pixel_pitch_um)
        self.refresh_rate_hz = float(slm.refresh_rate_hz)
        self.two_pi_grey = int(slm.two_pi_grey)
        self._grey: np.ndarray | None = None
        self._phase: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def _check(self, image: np.ndarray, what: str) -> np.ndarray:
        if not self._connected:
            raise DeviceDisconnectedError(f"{self.name}: not connected (call connect() first)")
        image = np.asarray(image)
        if image.shape != self._shape:
            raise DeviceError(f"{self.name}: {what} has shape {image.shape}, the SLM is {self._shape}")
        return image

    def show_phase(self, phase_rad: np.ndarray) -> None:
        """Display a phase image; the grey image is made lazily (the world reads core pixels)."""
        with self.lock:
            phase = self._check(phase_rad, "phase image")
            # what the SLM really shows: the 8-bit quantised phase (done on the core pixels only)
            self.world.set_slm_phase(phase, quantise_two_pi_grey=self.two_pi_grey)
            self._phase, self._grey = phase, None

    def show_grey(self, grey: np.ndarray) -> None:
        with self.lock:
            grey = self._check(grey, "grey image")
            if grey.dtype != np.uint8:
                raise DeviceError(f"{self.name}: grey image must be uint8, got {grey.dtype}")
            self.world.set_slm_phase(grey_to_phase(grey, self.two_pi_grey), quantise_two_pi_grey=None)
            self._grey, self._phase = grey.copy(), None

    @property
    def current_grey(self) -> np.ndarray | None:
        with self.lock:
            if self._grey is None and self._phase is not None:
                self._grey = phase_to_grey(self._phase, self.two_pi_grey)
            return self._grey

    def grey_preview(self, max_side: int) -> np.ndarray | None:
        """``current_grey`` at every n-th pixel (no side above ``max_side``), for display.

        Converts only the pixels shown (the same values as striding the full grey image), so
        a 2 Hz preview does not convert 2 million pixels per pattern.
        """
        with self.lock:
            image, convert = (self._grey, False) if self._grey is not None else (self._phase, True)
        if image is None:
            return None
        step = max(1, -(-max(image.shape) // max(1, int(max_side))))
        sub = image[::step, ::step]
        return phase_to_grey(sub, self.two_pi_grey) if convert else np.ascontiguousarray(sub)


class SimulatedTrap(BaseDevice):
    """The trapping laser: switches the world's laser and sets its power."""

    def __init__(self, world: SimulatedWorld, name: str = "simulated trap laser") -> None:
        super().__init__(name)
        self.world = world

    @property
    def power_mw(self) -> float:
        return float(self.world.power_mw)

    @power_mw.setter
    def power_mw(self, value: float) -> None:
        if value < 0:
            raise DeviceError(f"{self.name}: power must be >= 0 mW, got {value}")
        with self.lock:
            self.world.set_laser(self.world.laser_enabled, float(value))
            self.events.property_changed.emit("power_mw", float(value))

    def set_enabled(self, enabled: bool) -> None:
        with self.lock:
            if enabled and not self._connected:
                raise DeviceDisconnectedError(f"{self.name}: not connected (call connect() first)")
            self.world.set_laser(bool(enabled))
            self.events.property_changed.emit("enabled", bool(enabled))

    @property
    def enabled(self) -> bool:
        return bool(self.world.laser_enabled)

    def _disconnect(self) -> None:
        self.world.set_laser(False)  # a released laser is a safe laser


class SimulatedPump(BaseDevice):
    """Microfluidic pump (optional device): keeps its flow/running state and emits events.

    The simulated world has one cell already in the trap, so the flow does not move it.
    """

    def __init__(self, world: SimulatedWorld, name: str = "simulated pump", flow_ul_min: float = 0.5) -> None:
        super().__init__(name)
        self.world = world
        self._flow_ul_min = float(flow_ul_min)
        self._running = False

    @property
    def flow_ul_min(self) -> float:
        return self._flow_ul_min

    @flow_ul_min.setter
    def flow_ul_min(self, value: float) -> None:
        if value < 0:
            raise DeviceError(f"{self.name}: flow must be >= 0 ul/min, got {value}")
        with self.lock:
            self._set_property("flow_ul_min", float(value))

    @property
    def running(self) -> bool:
        return self._running

    def set_running(self, running: bool) -> None:
        with self.lock:
            if running and not self._connected:
                raise DeviceDisconnectedError(f"{self.name}: not connected (call connect() first)")
            self._set_property("running", bool(running))

    def _disconnect(self) -> None:
        self._running = False
