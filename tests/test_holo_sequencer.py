"""Rotating-ellipse sequencer and rotation driver (with a fake SLM)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mcf_rotator.holography.mcf import FarFieldGrid, MCFGeometry, SLMCoreMapping, beam_moments
from mcf_rotator.holography.sequencer import EllipseSequencer, RotationDriver
from mcf_rotator.holography.targets import ellipse_target


class CountingGenerator:
    """Phases = a code of the target so tests can see which target was asked for."""

    def __init__(self, grid: FarFieldGrid, n: int) -> None:
        self.grid = grid
        self.n = n
        self.calls = 0

    def phases(self, target: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.full(self.n, beam_moments(target)["angle_deg"] / 60.0)


class FakeSLM:
    refresh_rate_hz = 200.0
    pixel_pitch_um = 8.0

    def __init__(self, shape, fail_after: int | None = None) -> None:
        self.shape = shape
        self.shown: list[np.ndarray] = []
        self.times: list[float] = []
        self.fail_after = fail_after
        self.lock = threading.RLock()

    def show_phase(self, phase: np.ndarray) -> None:
        if self.fail_after is not None and len(self.shown) >= self.fail_after:
            raise RuntimeError("SLM window closed")
        self.shown.append(np.array(phase))
        self.times.append(time.monotonic())


@pytest.fixture()
def setup():
    g = MCFGeometry.hexagonal(rings=2)
    grid = FarFieldGrid.for_geometry(g, 64)
    mapping = SLMCoreMapping.build(g, slm_shape=(120, 160), magnification=1 / 3.0)
    return g, grid, mapping, CountingGenerator(grid, g.n_cores)


def test_cache_per_step_and_half_turn_symmetry(setup):
    g, grid, mapping, gen = setup
    seq = EllipseSequencer(gen, mapping, step_deg=2.0)
    a = seq.core_phases(10.0)
    seq.core_phases(10.4)  # same step
    seq.core_phases(190.0)  # same ellipse half a turn later
    assert gen.calls == 1
    seq.core_phases(-170.0)
    assert gen.calls == 1
    b = seq.core_phases(40.0)
    assert gen.calls == 2 and not np.allclose(a, b)
    np.testing.assert_allclose(seq.target(10.0), ellipse_target(grid, (6, 2.5), 10.0))


def test_phase_image_has_correction_and_grating(setup):
    g, grid, mapping, gen = setup
    corr = np.random.default_rng(0).uniform(-1, 1, g.n_cores)
    seq = EllipseSequencer(gen, mapping, correction=corr)
    img = seq.phase_image(30.0)
    assert img.shape == mapping.labels.shape and img.min() >= 0 and img.max() < 2 * np.pi
    got = mapping.slm_to_phases(img)
    want = seq.core_phases(30.0) + corr
    np.testing.assert_allclose(np.angle(np.exp(1j * (got - want))), 0, atol=1e-5)
    seq.set_correction(None)
    got0 = mapping.slm_to_phases(seq.phase_image(30.0))
    np.testing.assert_allclose(np.angle(np.exp(1j * (got0 - seq.core_phases(30.0)))), 0, atol=1e-5)
    with pytest.raises(ValueError, match="cores"):
        seq.set_correction(np.zeros(3))
    grey = seq.grey_image(30.0)
    assert grey.dtype == np.uint8
    gr = EllipseSequencer(gen, mapping, grating_period_px=8.0)
    row = gr.phase_image(0.0)[0]  # background row: pure grating
    assert np.ptp(row) > 5.0


def test_precompute_uses_batch(setup):
    g, grid, mapping, gen = setup
    calls = []

    class Batch(CountingGenerator):
        def phases_batch(self, targets):
            calls.append(len(targets))
            return np.stack([self.phases(t) for t in targets])

    seq = EllipseSequencer(Batch(grid, g.n_cores), mapping, step_deg=5.0)
    seq.precompute()
    assert calls == [36] and seq.n_cached == 36
    with pytest.raises(ValueError, match="divide"):
        EllipseSequencer(gen, mapping, step_deg=7.0)


def test_driver_rotates_pauses_reverses(setup):
    g, grid, mapping, gen = setup
    seq = EllipseSequencer(gen, mapping, step_deg=1.0)
    slm = FakeSLM(mapping.labels.shape)
    drv = RotationDriver(slm, seq, rate_deg_s=90.0, direction=1)
    drv.start()
    try:
        deadline = time.monotonic() + 5
        while drv.angle_deg < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert drv.angle_deg >= 20
        drv.pause()
        time.sleep(0.05)
        held = drv.angle_deg
        n_held = len(slm.shown)
        time.sleep(0.15)
        assert drv.angle_deg == held and len(slm.shown) == n_held
        drv.set_rate(90.0, direction=-1)
        drv.resume()
        while drv.angle_deg > held - 10 and time.monotonic() < deadline + 5:
            time.sleep(0.01)
        assert drv.angle_deg <= held - 10
    finally:
        drv.stop()
    assert not drv.is_running
    # every SLM write is the sequencer's pattern for some step and consecutive writes differ
    assert len(slm.shown) >= 20
    assert all(not np.array_equal(a, b) for a, b in zip(slm.shown, slm.shown[1:]))
    # never faster than the refresh rate (with a little scheduling slack)
    gaps = np.diff(slm.times)
    assert gaps.min() > 0.5 / slm.refresh_rate_hz


def test_driver_on_an_external_clock_turns_with_that_clock(setup):
    """Clock mode (the simulated world's time): no thread, the angle follows the clock."""
    g, grid, mapping, gen = setup
    seq = EllipseSequencer(gen, mapping, step_deg=1.0)
    slm = FakeSLM(mapping.labels.shape)
    now = [10.0]
    drv = RotationDriver(slm, seq, rate_deg_s=30.0, direction=-1, clock=lambda: now[0])
    drv.tick()  # before start: nothing happens
    assert drv.angle_deg == 0.0 and slm.shown == []
    drv.start()
    assert drv.is_running and len(slm.shown) == 1  # the first step is shown at once
    now[0] += 0.01
    drv.tick()  # 0.3 deg: still the same 1-deg step, no SLM write
    assert drv.angle_deg == pytest.approx(-0.3) and len(slm.shown) == 1
    now[0] += 1.0
    drv.tick()
    assert drv.angle_deg == pytest.approx(-30.3) and len(slm.shown) == 2
    drv.pause()
    now[0] += 5.0
    drv.tick()
    assert drv.angle_deg == pytest.approx(-30.3)
    drv.resume()
    drv.set_rate(60.0, direction=1)
    now[0] += 0.5
    drv.tick()
    assert drv.angle_deg == pytest.approx(-0.3)
    drv.stop()
    assert not drv.is_running
    threaded = RotationDriver(slm, seq)
    with pytest.raises(RuntimeError, match="clock"):
        threaded.tick()


def test_driver_reports_device_error(setup):
    g, grid, mapping, gen = setup
    seq = EllipseSequencer(gen, mapping)
    slm = FakeSLM(mapping.labels.shape, fail_after=2)
    errors = []
    drv = RotationDriver(slm, seq, rate_deg_s=200.0, on_error=errors.append)
    drv.start()
    deadline = time.monotonic() + 5
    while drv.is_running and time.monotonic() < deadline:
        time.sleep(0.01)
    drv.stop()
    assert drv.error and "SLM window closed" in drv.error and errors == [drv.error]
    with pytest.raises(ValueError):
        drv.set_rate(-1.0)


def test_orientation_true_precompute_turns_the_beam_evenly():
    """Picking, per step, the candidate whose realised beam points at the command removes the
    generator's orientation error (CoreNet: up to ~20 deg at some angles)."""
    from mcf_rotator.holography.corenet import CoreNetHologramGenerator
    from mcf_rotator.holography.mcf import far_field_intensity, far_field_matrix
    from mcf_rotator.holography.quality import beam_orientation_deg

    gen = CoreNetHologramGenerator()
    mapping = SLMCoreMapping.build(gen.geometry, slm_shape=(108, 192), magnification=1 / 1.2)
    matrix = far_field_matrix(gen.geometry, gen.grid)
    errors = {}
    for orientation_true in (False, True):
        seq = EllipseSequencer(gen, mapping, step_deg=1.0)
        seq.precompute(orientation_true=orientation_true)
        commanded = np.arange(0, 180, 1.0)
        phases = np.stack([seq.core_phases(a) for a in commanded])
        realised = beam_orientation_deg(far_field_intensity(phases, matrix), gen.mask)
        errors[orientation_true] = np.abs((realised - commanded + 90) % 180 - 90)
    assert errors[True].max() < 1.5
    assert errors[True].mean() < 0.5 * errors[False].mean()
