"""Off-axis phase retrieval, calibration records and the wizard on synthetic holograms."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mcf_rotator.calibration.offaxis import retrieve_phase, rms_phase_error
from mcf_rotator.calibration.record import CalibrationRecord, latest_record
from mcf_rotator.calibration.wizard import CalibrationWizard
from mcf_rotator.drivers.protocols import Frame
from mcf_rotator.errors import CalibrationError, InputFileError
from mcf_rotator.holography.mcf import MCFGeometry, SLMCoreMapping, near_field

PX = 0.5  # facet um per camera pixel
FULL = 4095.0


def hologram(geometry, phases, carrier=(0.2, 0.2), shape=(384, 384), ref=1.0, noise=True, seed=0,
             fill=0.8, offset=(0.0, 0.0), amps=None):
    """I = |E + R exp(-i 2 pi f.x)|^2 in 12-bit counts with shot + read noise (E at +f)."""
    h, w = shape
    cy, cx = (h - 1) / 2 + offset[0], (w - 1) / 2 + offset[1]
    e = near_field(geometry, phases, shape, PX, amps, (cy, cx))
    rr = np.exp(-2j * np.pi * (carrier[0] * (np.arange(w)[None] - cx) + carrier[1] * (np.arange(h)[:, None] - cy)))
    inten = np.abs(e + ref * rr) ** 2
    counts = inten * fill * FULL / (1 + ref) ** 2
    if noise:
        rng = np.random.default_rng(seed)
        counts = counts + np.sqrt(counts + 4.0) * rng.standard_normal(shape)
    return np.clip(np.rint(counts), 0, FULL).astype(np.uint16)


@pytest.fixture(scope="module")
def geo():
    return MCFGeometry.hexagonal()


@pytest.mark.parametrize("carrier,offset", [((0.2, 0.2), (0, 0)), ((-0.22, 0.12), (6.0, -9.0))])
def test_retrieves_core_phases_with_noise(geo, carrier, offset):
    truth = np.random.default_rng(4).uniform(-np.pi, np.pi, geo.n_cores)
    img = hologram(geo, truth, carrier, offset=offset)
    r = retrieve_phase(img, geo, PX, carrier_hint=carrier, full_scale=FULL)
    pos = geo.core_positions_um
    # piston and global tilt are irrelevant (tilt only shifts the far field)
    assert rms_phase_error(r.core_phases, truth, remove_tilt=True, positions=pos) < 0.03
    assert rms_phase_error(r.core_phases, truth) < 0.08
    assert np.hypot(r.carrier[0] - carrier[0], r.carrier[1] - carrier[1]) < 2e-3
    assert r.quality["bright_spots"] == geo.n_cores
    # without the hint the conjugate side-band may be taken: then the phases flip sign
    r2 = retrieve_phase(img, geo, PX, full_scale=FULL)
    sign = 1 if carrier[0] > 0 else -1
    assert rms_phase_error(sign * r2.core_phases, truth, remove_tilt=True, positions=pos) < 0.03


def test_bad_inputs_name_the_cause(geo):
    truth = np.zeros(geo.n_cores)
    no_ref = hologram(geo, truth, ref=0.0)
    with pytest.raises(CalibrationError, match="carrier"):
        retrieve_phase(no_ref, geo, PX, full_scale=FULL)
    sat = hologram(geo, truth, fill=3.0)
    with pytest.raises(CalibrationError, match="saturated"):
        retrieve_phase(sat, geo, PX, full_scale=FULL)
    wrong = MCFGeometry.hexagonal(rings=3)
    with pytest.raises(CalibrationError, match="core map"):
        retrieve_phase(hologram(geo, truth), wrong, PX, full_scale=FULL)
    with pytest.raises(CalibrationError, match="core map"):
        retrieve_phase(hologram(geo, truth), geo, PX * 1.6, full_scale=FULL)
    with pytest.raises(CalibrationError, match="flat"):
        retrieve_phase(np.zeros((64, 64)), geo, PX)


def test_record_roundtrip(tmp_path):
    rec = CalibrationRecord("hex61", [0.1, -0.2, 0.3], (0.2, 0.2), {"fringe_strength": 2.0}, 0.01)
    p = rec.save(tmp_path)
    back = CalibrationRecord.load(p)
    assert back == rec and back.calibration_id == rec.calibration_id
    assert latest_record(tmp_path).calibration_id == rec.calibration_id
    bad = tmp_path / "calibration-bad.json"
    bad.write_text('{"version": 99}')
    with pytest.raises(InputFileError, match="version"):
        CalibrationRecord.load(bad)
    with pytest.raises(CalibrationError, match="fibre"):
        rec.check_fibre("other", 3)


class FibreRig:
    """Fake SLM + calibration camera over a fibre with a hidden distortion (no simulation package)."""

    def __init__(self, geo, mapping, distortion, carrier=(0.2, 0.2)):
        self.geo, self.mapping, self.distortion, self.carrier = geo, mapping, distortion, carrier
        self.slm_phases = np.zeros(geo.n_cores)
        self.lock = threading.RLock()
        self.bit_depth = 12
        self.is_acquiring = True
        self.refresh_rate_hz = 60.0
        self.n = 0
        self.reference_ok = True

    def show_phase(self, img):
        self.slm_phases = self.mapping.slm_to_phases(img)

    def read_frame(self, timeout_s=1.0):
        self.n += 1
        img = hologram(self.geo, self.slm_phases + self.distortion, self.carrier, seed=self.n,
                       ref=1.0 if self.reference_ok else 0.0)
        return Frame(img, self.n, 0.0, {"facet_um_per_px": PX})


def test_wizard_steps_apply_verify_and_drift(geo, tmp_path):
    mapping = SLMCoreMapping.build(geo, slm_shape=(300, 300), magnification=1 / 4.0)
    distortion = np.random.default_rng(9).normal(0, 1.5, geo.n_cores)
    rig = FibreRig(geo, mapping, distortion)
    installed = []
    wiz = CalibrationWizard(rig, rig, geo, mapping, on_apply=installed.append, carrier_hint=(0.2, 0.2))
    assert wiz.enter_calibration_mode()["slm_image"].shape == (300, 300)
    assert wiz.capture_hologram()["image"].dtype == np.uint16
    fp = wiz.fourier_plane()
    assert fp["spectrum_log"].shape == (384, 384)
    assert wiz.per_core_phase_map()["core_phases"].shape == (geo.n_cores,)
    rec = wiz.apply()
    assert installed == [rec]
    # correction = -distortion up to a piston
    assert rms_phase_error(rec.correction, -distortion, remove_tilt=True, positions=geo.core_positions_um) < 0.05
    v = wiz.verify()
    assert v["ok"] and v["residual_rms_rad"] < 0.1
    path = wiz.save(tmp_path)
    assert CalibrationRecord.load(path).residual_rms_rad == pytest.approx(v["residual_rms_rad"])
    assert not wiz.drift_check().needs_recalibration
    rig.distortion = distortion + np.random.default_rng(1).normal(0, 0.5, geo.n_cores)
    report = wiz.drift_check()
    assert report.needs_recalibration and "recalibrate" in report.message
    # a failed re-calibration leaves the active one in place
    rig.reference_ok = False
    wiz2 = CalibrationWizard(rig, rig, geo, mapping, on_apply=installed.append, previous=rec)
    wiz2.enter_calibration_mode()
    wiz2.capture_hologram()
    with pytest.raises(CalibrationError, match="carrier"):
        wiz2.fourier_plane()
    assert wiz2.active is rec and installed == [rec]


def test_laser_off_gives_a_dark_frame_and_a_plain_calibration_error():
    """Laser off: the hologram camera reads out a dark frame (not a ZeroDivisionError) and the
    wizard says what is wrong."""
    from mcf_rotator.calibration.offaxis import check_signal
    from mcf_rotator.config import RigConfig
    from mcf_rotator.drivers.simulated import SimulatedCalibrationCamera, SimulatedSLM
    from mcf_rotator.simulation.hologram_camera import HologramOptics, render_hologram
    from mcf_rotator.simulation.world import SimulatedWorld

    g = MCFGeometry.hexagonal()
    optics = HologramOptics(shape=(128, 128))
    dark, meta = render_hologram(g, np.zeros(g.n_cores), np.zeros(g.n_cores), optics, np.random.default_rng(0))
    assert dark.shape == (128, 128) and dark.max() < 0.01 * optics.max_count
    assert meta["saturated_fraction"] == 0.0
    with pytest.raises(CalibrationError, match="no light on the calibration camera: is the trap laser on"):
        check_signal(dark, optics.max_count)
    with pytest.raises(CalibrationError, match="no light"):
        check_signal(np.full((64, 64), 7, np.uint16))  # flat, full scale unknown
    noise = np.random.default_rng(1).normal(100.0, 2.0, (128, 128))
    with pytest.raises(CalibrationError, match="no light"):
        check_signal(noise)  # read noise on an offset, full scale unknown
    with pytest.raises(CalibrationError, match="no light"):
        retrieve_phase(dark, g, optics.facet_um_per_px, full_scale=optics.max_count)

    world = SimulatedWorld(RigConfig())
    assert not world.laser_enabled
    slm, cam = SimulatedSLM(world), SimulatedCalibrationCamera(world, HologramOptics(shape=(320, 320)))
    slm.connect()
    cam.connect()
    wiz = CalibrationWizard(slm, cam, world.geometry, world.mapping)
    wiz.enter_calibration_mode()
    with pytest.raises(CalibrationError, match="no light on the calibration camera: is the trap laser on"):
        wiz.capture_hologram()
    assert wiz.image is None  # nothing to retrieve from
    with pytest.raises(CalibrationError, match="capture a hologram first"):
        wiz.fourier_plane()
    world.set_laser(True)  # the operator switches the laser on and retries
    out = wiz.capture_hologram()
    assert out["max_count"] > 0.05 * cam_full_scale(cam)
    check_signal(out["image"], cam_full_scale(cam))


def cam_full_scale(cam) -> float:
    return float(2 ** int(cam.bit_depth) - 1)


def test_check_signal_accepts_real_holograms(geo):
    from mcf_rotator.calibration.offaxis import check_signal

    rng = np.random.default_rng(3)
    img = hologram(geo, rng.uniform(-np.pi, np.pi, geo.n_cores))
    check_signal(img, FULL)
    check_signal(img)
