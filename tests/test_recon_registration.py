"""Registration of a moving cell: flat field, centre of mass, sub-pixel re-centring, end to end."""

from __future__ import annotations

import numpy as np
import pytest

from mcf_rotator.reconstruction.registration import centre_of_mass, disk_mask, extract_centred, flat_field, register
from mcf_rotator.simulation.brightfield import BrightfieldOptics, CellInstance, background, render_scene
from mcf_rotator.simulation.motion import MotionModel, ou_process, trap_motion
from mcf_rotator.simulation.phantom import CellPhantom, pose_matrix


def _scenes(n: int, motion: MotionModel, seed: int = 2, shape=(120, 150), cell_px=60.0, walls=True, noise=True):
    rng = np.random.default_rng(seed)
    ph = CellPhantom.random(seed)
    ang = np.linspace(0, 2.0 * (n - 1), n)
    mot = trap_motion(ang, motion, rng)
    optics = BrightfieldOptics(pixel_um=2 * ph.radius_um / cell_px, electrons_per_count=8.0, vignetting=0.08)
    c = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
    scenes = [render_scene(shape, [CellInstance(ph, pose_matrix(a, 0.0), tuple(c + m))], optics, rng, walls=walls,
                           noise=noise) for a, m in zip(ang, mot)]
    return scenes, optics, c + mot


def _true_com(od: np.ndarray) -> np.ndarray:
    yy, xx = np.indices(od.shape)
    return np.array([(od * yy).sum(), (od * xx).sum()]) / od.sum()


def test_ou_process_has_the_requested_rms_and_memory():
    x = ou_process(20000, 1.5, 30.0, np.random.default_rng(0))
    assert np.std(x) == pytest.approx(1.5, rel=0.1)
    lag = np.corrcoef(x[:-30], x[30:])[0, 1]
    assert lag == pytest.approx(np.exp(-1), abs=0.08)
    m = trap_motion(np.arange(500.0), MotionModel(brownian_rms_px=0.0, drift_px_per_frame=0.0, wobble_px=2.0),
                    np.random.default_rng(1))
    assert np.ptp(m[:, 1]) == pytest.approx(4.0, rel=0.05)  # the wobble alone: +-2 px sideways
    assert not np.any(trap_motion(np.arange(10.0), MotionModel.still(), np.random.default_rng(1)))


def test_flat_field_recovers_the_walls_and_vignetting_under_a_moving_cell():
    scenes, optics, centres = _scenes(40, MotionModel(brownian_rms_px=3.0, memory_frames=5.0, wobble_px=0.0))
    frames = np.stack([s.image for s in scenes]).astype(np.float32)
    flat = flat_field(frames, centres, 48.0)  # the cell and its halo
    truth = background(frames.shape[1:], optics, walls=True)
    rel = flat / truth - 1
    assert np.sqrt(np.mean(rel ** 2)) < 0.02  # noise of a median of 40 frames + the filled core
    # a single border level (what the live view uses) is off by the vignetting
    assert np.sqrt(np.mean((np.median(frames[:, :4]) / truth - 1) ** 2)) > 2 * np.sqrt(np.mean(rel ** 2))


def test_centre_of_mass_follows_the_cell_sub_pixel_and_crops_centre_it():
    scenes, optics, _ = _scenes(24, MotionModel(brownian_rms_px=2.0, memory_frames=3.0, drift_px_per_frame=0.3),
                                noise=True)
    frames = np.stack([s.image for s in scenes]).astype(np.float32)
    truth = np.array([_true_com(s.optical_depth) for s in scenes])
    start = truth + np.random.default_rng(3).normal(0, 2.0, truth.shape)  # a rough live guess
    reg = register(frames, start, radius=30.0, side=80)
    err = reg.centres - truth
    assert np.sqrt(np.mean(err ** 2)) < 0.35, err  # sub-pixel, from a 2 px guess
    assert np.sqrt(np.mean((start - truth) ** 2)) > 1.5
    # the crops have the mass centre on their centre
    noiseless = extract_centred(np.stack([s.optical_depth for s in scenes]), truth, 80)
    coms = np.array([_true_com(np.clip(p, 0, None)) for p in noiseless])
    np.testing.assert_allclose(coms, 39.5, atol=0.05)
    assert reg.report()["motion_rms_px_col"] > 0.5


def test_centre_of_mass_is_exact_on_a_clean_projection_and_ignores_a_flat_offset():
    scenes, _, _ = _scenes(1, MotionModel.still(), walls=False, noise=False)
    od = scenes[0].optical_depth.astype(np.float64)
    truth = _true_com(od)
    np.testing.assert_allclose(centre_of_mass(od, tuple(truth + 3.0), 32.0, iterations=20), truth, atol=0.02)
    # a residual background level inside the window does not move the fixed point
    np.testing.assert_allclose(centre_of_mass(od + 0.002, tuple(truth + 2.0), 32.0, iterations=40), truth, atol=0.1)
    assert disk_mask((5, 5), (2, 2), 1.0).sum() == 5


def test_the_track_is_smoothed_as_far_as_its_noise_calls_for():
    from mcf_rotator.reconstruction.registration import smooth_track

    rng = np.random.default_rng(5)
    still = np.zeros((300, 2)) + rng.normal(0, 0.2, (300, 2))
    out = smooth_track(still, 0.2)
    assert np.std(out) < 0.5 * np.std(still)  # a still cell's jitter is averaged
    fast = np.stack([ou_process(300, 2.0, 3.0, rng), ou_process(300, 2.0, 3.0, rng)], axis=1)
    noisy = fast + rng.normal(0, 0.2, fast.shape)
    err = np.sqrt(np.mean((smooth_track(noisy, 0.2) - fast) ** 2))
    assert err < 0.25  # fast motion is followed, not smoothed away
