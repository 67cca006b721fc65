"""Simulated devices (protocols, frames, faults) and the off-axis hologram camera."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mcf_rotator.config import RigConfig
from mcf_rotator.drivers.protocols import SLM, Camera, Device, Pump, Trap
from mcf_rotator.drivers.simulated import (
    SimulatedCalibrationCamera,
    SimulatedCamera,
    SimulatedPump,
    SimulatedSLM,
    SimulatedTrap,
)
from mcf_rotator.errors import DeviceDisconnectedError, DeviceError
from mcf_rotator.holography.mcf import MCFGeometry
from mcf_rotator.simulation.hologram_camera import HologramOptics, render_hologram
from mcf_rotator.simulation.world import SimulatedWorld

torch.set_num_threads(1)
cv2.setNumThreads(1)


@pytest.fixture()
def world() -> SimulatedWorld:
    cfg = RigConfig()
    cfg.simulation.camera_shape = (160, 200)
    cfg.optics.magnification = 20.0  # 0.17 um/px: the cell fits the small frame
    return SimulatedWorld(cfg)


def _carrier_peak(img: np.ndarray, exclude_radius: float = 0.08) -> tuple[float, float]:
    """Strongest spatial frequency (fx, fy) outside the zero order, in the +fx half plane."""
    h, w = img.shape
    spec = np.abs(np.fft.fft2(img.astype(float) - img.mean()))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    spec[np.hypot(fx, fy) < exclude_radius] = 0
    spec[:, fx[0] < 0] = 0
    r, c = np.unravel_index(np.argmax(spec), spec.shape)
    return float(fx[0, c]), float(fy[r, 0])


def test_hologram_has_carrier_peak_and_encodes_core_phases() -> None:
    geo = MCFGeometry.hexagonal(rings=2)
    phases = np.random.default_rng(0).uniform(0, 2 * np.pi, geo.n_cores)
    optics = HologramOptics(shape=(128, 128), facet_um_per_px=0.6, carrier_cyc_per_px=(0.25, 0.18))
    img, meta = render_hologram(geo, phases, None, optics, np.random.default_rng(1))
    assert img.dtype == np.uint16 and img.max() < 4095 and meta["saturated_fraction"] == 0
    fx, fy = _carrier_peak(img)
    assert abs(fx - 0.25) < 0.03 and abs(fy - 0.18) < 0.03
    assert meta["facet_um_per_px"] == 0.6 and meta["carrier_cyc_per_px"] == (0.25, 0.18)
    np.testing.assert_allclose(meta["true_core_phases"], np.mod(phases, 2 * np.pi))
    # demodulating the +1 order at each core returns its phase (documented convention)
    h, w = img.shape
    fyy, fxx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    order = np.fft.ifft2(np.fft.fft2(img.astype(float)) * (np.hypot(fxx - 0.25, fyy - 0.18) < 0.1))
    cy, cx = meta["facet_centre_px"]
    got = []
    for r, c in np.round(meta["core_positions_px"]).astype(int):
        got.append(np.angle(order[r, c]) - 2 * np.pi * (0.25 * (c - cx) + 0.18 * (r - cy)))
    d = np.angle(np.exp(1j * (np.array(got) - phases)))
    d -= np.angle(np.mean(np.exp(1j * d)))
    assert np.abs(np.angle(np.exp(1j * d))).max() < 0.15


def test_hologram_reference_block_and_saturation() -> None:
    geo = MCFGeometry.hexagonal(rings=2)
    phases = np.zeros(geo.n_cores)
    base = HologramOptics(shape=(96, 96), facet_um_per_px=0.6, bit_depth=8)
    blocked, _ = render_hologram(geo, phases, None, HologramOptics(**{**base.__dict__, "reference_blocked": True}),
                                 np.random.default_rng(0))
    spec = np.abs(np.fft.fft2(blocked - blocked.mean()))
    assert spec[int(round(0.2 * 96)), int(round(0.2 * 96))] < 0.05 * spec.max()  # no carrier
    assert blocked[0:5, 0:5].mean() < 5  # dark between/around the cores without the reference
    sat, meta = render_hologram(geo, phases, None, HologramOptics(**{**base.__dict__, "saturation": 3.0}),
                                np.random.default_rng(0))
    assert sat.dtype == np.uint8 and meta["saturated_fraction"] > 0.005


def test_devices_satisfy_protocols(world: SimulatedWorld) -> None:
    cam, slm, trap, cal = SimulatedCamera(world), SimulatedSLM(world), SimulatedTrap(world), SimulatedCalibrationCamera(world)
    assert isinstance(cam, Camera) and isinstance(cal, Camera)
    pump = SimulatedPump(world)
    assert isinstance(slm, SLM) and isinstance(trap, Trap) and isinstance(pump, Pump)
    for d in (cam, slm, trap, cal, pump):
        assert isinstance(d, Device)
        assert hasattr(d.lock, "acquire")
    assert slm.shape == (1080, 1920) and slm.pixel_pitch_um == 8.0
    assert cam.shape == (160, 200) and cam.dtype == np.uint8 and cam.bit_depth == 8


def test_camera_frames_follow_the_world(world: SimulatedWorld) -> None:
    cam, slm, trap = SimulatedCamera(world), SimulatedSLM(world), SimulatedTrap(world)
    events = []
    cam.events.connected.connect(lambda: events.append("connected"))
    for d in (cam, slm, trap):
        d.connect()
    assert events == ["connected"]
    with pytest.raises(DeviceError):
        cam.read_frame()  # not acquiring
    trap.set_enabled(True)
    assert trap.enabled and world.laser_enabled
    slm.show_phase(world.mapping.phases_to_slm(world.fibre.ellipse_phases(30.0)))
    assert slm.current_grey is not None and slm.current_grey.dtype == np.uint8
    slm.show_phase(world.mapping.phases_to_slm(world.fibre.ellipse_phases(30.0)))
    preview = slm.grey_preview(480)  # converted from the phase on the strided pixels only
    np.testing.assert_array_equal(preview, slm.current_grey[::4, ::4])
    np.testing.assert_array_equal(slm.grey_preview(480), preview)  # same from the cached grey
    cam.start_acquisition()
    frames = [cam.read_frame() for _ in range(45)]  # 0.75 s at 60 Hz
    assert [f.index for f in frames] == list(range(45))
    assert frames[-1].metadata["sim_time_s"] == pytest.approx(45 / 60.0)
    assert frames[-1].timestamp > frames[0].timestamp
    assert abs(frames[-1].metadata["true_angle_deg"] - 30.0) < 5.0  # the cell turned to the beam
    assert frames[-1].metadata["trapped"]
    img = frames[-1].image
    assert img.shape == (160, 200) and img.dtype == np.uint8
    r, c = frames[-1].metadata["cell_centre_px"]
    assert img[int(r) - 5 : int(r) + 5, int(c) - 5 : int(c) + 5].mean() < np.median(img)  # cell absorbs
    with pytest.raises(DeviceError):
        slm.show_phase(np.zeros((10, 10)))
    trap.disconnect()
    assert not world.laser_enabled


def test_simulated_disconnect_raises_and_emits(world: SimulatedWorld) -> None:
    cam = SimulatedCamera(world)
    errors: list[str] = []
    cam.events.error.connect(errors.append)
    cam.connect()
    cam.start_acquisition()
    cam.read_frame()
    cam.simulate_disconnect()
    with pytest.raises(DeviceDisconnectedError, match="simulated camera"):
        cam.read_frame()
    assert errors and "unplugged" in errors[0]
    assert not cam.is_connected
    with pytest.raises(DeviceDisconnectedError):
        cam.read_frame()
    cam.connect()  # recovers after reconnecting
    cam.start_acquisition()
    assert cam.read_frame().index == 0


def test_calibration_camera_sees_fibre_phases(world: SimulatedWorld) -> None:
    cal, slm, trap = SimulatedCalibrationCamera(world, HologramOptics(shape=(160, 160), facet_um_per_px=1.0)), SimulatedSLM(world), SimulatedTrap(world)
    for d in (cal, slm, trap):
        d.connect()
    trap.set_enabled(True)
    slm.show_phase(np.zeros(slm.shape))
    frame = cal.snap()
    assert frame.image.shape == (160, 160)
    np.testing.assert_allclose(frame.metadata["true_core_phases"], np.mod(world.fibre.distortion, 2 * np.pi), atol=1e-9)
    assert frame.metadata["facet_um_per_px"] == 1.0 and "carrier_cyc_per_px" in frame.metadata
    cal.exposure_ms = 4.0
    assert cal.snap().metadata["saturated_fraction"] > 0
    world.rebend_fibre(5)
    assert not np.allclose(cal.snap().metadata["true_core_phases"], frame.metadata["true_core_phases"])


def test_realtime_pacing_is_enforced_via_timeout() -> None:
    cfg = RigConfig()
    cfg.simulation.camera_shape = (64, 64)
    cam = SimulatedCamera(SimulatedWorld(cfg, realtime=True))
    cam.frame_rate_hz = 0.5  # next frame due 2 s after the first
    cam.connect()
    cam.start_acquisition()
    cam.read_frame()
    from mcf_rotator.errors import FrameTimeoutError

    with pytest.raises(FrameTimeoutError):
        cam.read_frame(timeout_s=0.01)


def test_slm_grating_is_demodulated() -> None:
    cfg = RigConfig()
    cfg.slm.grating_period_px = 8.0
    world = SimulatedWorld(cfg)
    target = np.random.default_rng(2).uniform(-np.pi, np.pi, world.geometry.n_cores)
    world.set_slm_phase(world.mapping.phases_to_slm(target, grating_period_px=8.0))
    assert np.abs(np.angle(np.exp(1j * (world.slm_core_phases() - target)))).max() < 1e-6
    assert np.allclose(world.core_amplitudes(), world.fibre.amplitudes)
    # a carrier the coupling optics do not pick: the cores get almost no light
    world.set_slm_phase(world.mapping.phases_to_slm(target, grating_period_px=8.0, grating_angle_deg=90.0))
    assert (world.core_amplitudes() / world.fibre.amplitudes).max() < 0.3
