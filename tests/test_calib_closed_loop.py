"""Closed loop on the simulated rig: re-bend -> the beam breaks and the cell stops following
-> calibration wizard with the simulated SLM and calibration camera -> beam and rotation back.

Everything goes through the real simulated devices (SLM image -> per-core coupling -> hidden
fibre distortion -> off-axis hologram / far field -> trap dynamics); the hidden distortion is
used only to score the result.

Residuals: piston is invisible; a global tilt only shifts the far-field spot (the off-axis
carrier is known to ~1e-4 cyc/px, a shift of < 0.1 far-field pixel), so the headline residual
removes piston and the best-fit tilt plane; the piston-only residual is bounded too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcf_rotator.calibration.offaxis import rms_phase_error, wrap
from mcf_rotator.calibration.wizard import CalibrationWizard
from mcf_rotator.config import RigConfig
from mcf_rotator.drivers.simulated import SimulatedCalibrationCamera, SimulatedCamera, SimulatedSLM, SimulatedTrap
from mcf_rotator.errors import CalibrationError
from mcf_rotator.holography.corenet import CoreNetHologramGenerator
from mcf_rotator.holography.mcf import beam_moments
from mcf_rotator.holography.quality import correlation
from mcf_rotator.holography.sequencer import EllipseSequencer
from mcf_rotator.holography.targets import central_mask
from mcf_rotator.simulation.hologram_camera import HologramOptics
from mcf_rotator.simulation.world import SimulatedWorld

torch.set_num_threads(1)

RATE_DEG_S = 30.0
#: the cell aligns with the beam's second-moment axis; the hologram's own orientation error
#: (CoreNet: a few degrees, ~10 at worst) plus the trap lag stay below this
FOLLOW_TOL_DEG = 15.0
N_STEPS = 120  # camera frames; at the default 60 Hz: 2 s, 60 deg of commanded rotation


class Bench:
    """Simulated rig with the holography stack the controller uses on top of it."""

    def __init__(self) -> None:
        cfg = RigConfig()
        cfg.simulation.camera_shape = (96, 96)
        cfg.optics.magnification = 20.0
        self.world = SimulatedWorld(cfg)
        self.slm = SimulatedSLM(self.world)
        self.trap = SimulatedTrap(self.world)
        self.camera = SimulatedCamera(self.world)
        # 320 px at 0.5 um/px holds the 120 um facet with margin, and keeps the test quick
        self.cal_camera = SimulatedCalibrationCamera(self.world, HologramOptics(shape=(320, 320)))
        for d in (self.slm, self.trap, self.camera, self.cal_camera):
            d.connect()
        self.trap.set_enabled(True)
        self.camera.start_acquisition()
        self.sequencer = EllipseSequencer(
            CoreNetHologramGenerator(geometry=self.world.geometry), self.world.mapping,
            step_deg=cfg.rotation.angle_step_deg, axes=cfg.rotation.ellipse_axes,
        )
        self.mask = central_mask(self.world.grid, self.world.geometry)

    def wizard(self, previous=None) -> CalibrationWizard:
        return CalibrationWizard(self.slm, self.cal_camera, self.world.geometry, self.world.mapping,
                                 on_apply=self.sequencer.set_correction, previous=previous)

    def beam_correlation(self, angle_deg: float) -> float:
        self.slm.show_phase(self.sequencer.phase_image(angle_deg))
        return float(correlation(self.world.beam_far_field(), self.sequencer.target(angle_deg), self.mask))

    def rotate(self) -> tuple[float, float, bool]:
        """Fresh cell, rotate the ellipse for N_STEPS frames; (commanded, followed, trapped)."""
        self.world.reset_cell()
        self.slm.show_phase(self.sequencer.phase_image(0.0))
        start = self.camera.read_frame().metadata["true_angle_deg"]
        angle = 0.0
        meta = {}
        dt_s = 1.0 / self.camera.frame_rate_hz  # each read advances the world by one frame
        for _ in range(N_STEPS):
            angle += RATE_DEG_S * dt_s
            self.slm.show_phase(self.sequencer.phase_image(angle))
            meta = self.camera.read_frame().metadata  # advances the world by one frame
        return angle, meta["true_angle_deg"] - start, bool(meta["trapped"])

    def facet_residual(self, correction: np.ndarray) -> tuple[float, float]:
        """True distal phases of a flat pattern + correction: (piston-only, piston+tilt) RMS."""
        self.slm.show_phase(self.world.mapping.phases_to_slm(correction))
        total = self.world.total_core_phases()
        zero = np.zeros_like(total)
        pos = self.world.geometry.core_positions_um
        return rms_phase_error(total, zero), rms_phase_error(total, zero, remove_tilt=True, positions=pos)


@pytest.fixture(scope="module")
def bench() -> Bench:
    return Bench()


@pytest.mark.slow  # three 2 s rotations of the simulated trap and three calibrations: ~15-30 s
def test_rebend_breaks_rotation_and_calibration_restores_it(bench: Bench) -> None:
    angles = (0.0, 45.0, 120.0)
    # calibrated on the first bend: good beam, the cell follows the ellipse
    first = bench.wizard().run()
    assert first.residual_rms_rad is not None and first.residual_rms_rad < 0.05
    good = [bench.beam_correlation(a) for a in angles]
    assert min(good) > 0.85
    commanded, followed, trapped = bench.rotate()
    assert trapped and abs(followed - commanded) < FOLLOW_TOL_DEG

    # re-bend: the old correction scrambles the beam into a speckle; the cell does not rotate
    bench.world.rebend_fibre(11)
    bad = [bench.beam_correlation(a) for a in angles]
    assert max(bad) < 0.5
    assert bench.world.beam_state().efficiency < 0.35
    commanded, followed, trapped = bench.rotate()
    assert not trapped or abs(followed - commanded) > 30.0

    # recalibrate (every wizard step in order), previous record kept for a fallback
    wiz = bench.wizard(previous=first)
    wiz.enter_calibration_mode()
    shot = wiz.capture_hologram()
    assert shot["image"].shape == (320, 320) and shot["max_count"] < 4095
    spectrum = wiz.fourier_plane()
    assert spectrum["fringe_strength"] > 0.3
    cores = wiz.per_core_phase_map()
    assert cores["quality"]["bright_spots"] == bench.world.geometry.n_cores
    rec = wiz.apply()
    assert np.allclose(bench.sequencer.correction, rec.correction)  # installed in the sequencer
    v = wiz.verify()
    assert v["ok"] and v["residual_rms_rad"] < 0.05 and v["residual_piston_only_rms_rad"] < 0.15

    # against the hidden truth: the correction undoes the new distortion
    piston_only, piston_tilt = bench.facet_residual(rec.correction)
    assert piston_tilt <= 0.05
    assert piston_only <= 0.15
    assert rms_phase_error(rec.correction, -bench.world.fibre.distortion, remove_tilt=True,
                           positions=bench.world.geometry.core_positions_um) <= 0.05

    # beam restored and the cell follows the commanded rotation again
    restored = [bench.beam_correlation(a) for a in angles]
    assert min(restored) > 0.85
    assert bench.world.beam_state().efficiency > 0.5
    for a in angles:  # the beam's long axis follows the commanded angle
        bench.slm.show_phase(bench.sequencer.phase_image(a))
        seen = beam_moments(np.where(bench.mask, bench.world.beam_far_field(), 0.0))["angle_deg"]
        assert abs((seen - a + 90.0) % 180.0 - 90.0) < 20.0
    commanded, followed, trapped = bench.rotate()
    assert trapped and abs(followed - commanded) < FOLLOW_TOL_DEG


def test_fibre_moving_during_calibration_keeps_previous(bench: Bench) -> None:
    """A bend between apply and verify fails verification and restores the old correction."""
    bench.world.rebend_fibre(21)
    before = bench.wizard().run()
    assert np.allclose(bench.sequencer.correction, before.correction)
    bench.world.rebend_fibre(22)
    wiz = bench.wizard(previous=before)
    wiz.enter_calibration_mode()
    wiz.capture_hologram()
    wiz.apply()
    assert not np.allclose(bench.sequencer.correction, before.correction)
    bench.world.rebend_fibre(23)  # the fibre moves before the verification frame
    with pytest.raises(CalibrationError, match="did not verify"):
        wiz.verify()
    assert wiz.active is before
    np.testing.assert_allclose(bench.sequencer.correction, wrap(np.asarray(before.correction)))
