"""Rotation tracking: orbit fit, rate search, slice centroids, the LK tracker on simulated crops."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import cv2
import numpy as np
import pytest

from mcf_rotator.reconstruction.tracking import (
    RotationTracker,
    TrackerConfig,
    fit_orbits,
    highpass_depth,
    scale_search,
    slice_centroids,
)
from mcf_rotator.simulation.brightfield import BrightfieldOptics, CellInstance, render_scene
from mcf_rotator.simulation.phantom import CellPhantom, pose_matrix, projection_stack

cv2.setNumThreads(1)


def smooth_sweep(n: int, rng: np.random.Generator, lo: float = 1.0, hi: float = 3.0) -> np.ndarray:
    t = np.arange(n - 1)
    rate = (lo + hi) / 2 + (hi - lo) / 2 * np.sin(2 * np.pi * t / 100 + rng.uniform(0, 6))
    return np.concatenate([[0.0], np.cumsum(np.clip(rate + rng.normal(0, 0.3, n - 1), 0.2, None))])


def synthetic_tracks(ang: np.ndarray, rng: np.random.Generator, n_tracks: int = 60, noise: float = 0.1,
                     n_stuck: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations (track, frame, u) of points on orbits about a drifting axis, plus stuck tracks."""
    t = len(ang)
    th = np.deg2rad(ang)
    axis = 50 + 0.01 * np.arange(t) + 0.3 * np.sin(np.arange(t) / 17)
    ks, fs, us = [], [], []
    for k in range(n_tracks + n_stuck):
        start = 0 if k % 6 == 0 else int(rng.integers(0, t - 40))  # some tracks from frame 0
        stop = int(min(t, start + rng.integers(40, 120)))
        f = np.arange(start, stop)
        if k < n_tracks:
            r, ph = rng.uniform(3, 30), rng.uniform(0, 2 * np.pi)
            u = axis[f] + r * np.cos(th[f] - ph) + rng.normal(0, noise, f.size)
        else:  # stuck on an outline: does not move with the cell
            u = np.full(f.size, rng.uniform(30, 70)) + rng.normal(0, noise, f.size)
        ks.append(np.full(f.size, k))
        fs.append(f)
        us.append(u)
    return np.concatenate(ks), np.concatenate(fs), np.concatenate(us)


def test_scale_search_finds_the_rotation_rate():
    rng = np.random.default_rng(0)
    ang = smooth_sweep(200, rng)
    k, f, u = synthetic_tracks(ang, rng)
    nominal = np.arange(200, dtype=float)  # 1 deg/frame, the true mean is ~2
    g = scale_search(k, f, u, nominal)
    assert g == pytest.approx(ang[-1] / 199, rel=0.08)  # an initial rate for the fit


def test_fit_orbits_recovers_angles_despite_stuck_tracks():
    rng = np.random.default_rng(1)
    ang = smooth_sweep(200, rng)
    k, f, u = synthetic_tracks(ang, rng)
    # start from a trace with frame-to-frame errors (what optical flow gives)
    init = ang + np.cumsum(rng.normal(0, 0.5, ang.size))
    init -= init[0]
    assert np.mean(np.abs(init - ang)) > 1.5
    th, axis, info = fit_orbits(k, f, u, init)
    err = np.abs(th - ang)
    assert err.mean() < 0.5, err.mean()
    assert not info["good"][-8:].any()  # the stuck tracks are rejected
    assert info["good"][:60].mean() > 0.8
    assert np.abs(axis - (50 + 0.01 * np.arange(200) + 0.3 * np.sin(np.arange(200) / 17))).mean() < 0.3
    # without the gate the stuck tracks pull the fit off: the test can fail
    th_bad, _, _ = fit_orbits(k, f, u, init, gate=1e9, huber_px=1e9)
    assert np.abs(th_bad - ang).mean() > 2 * err.mean()


def test_slice_centroids_run_on_orbits():
    ph = CellPhantom.random(2)
    ang = np.linspace(0, 360, 73)
    od = projection_stack(ph, ang, 64, axis_offset_px=2.0)
    th = np.deg2rad(ang)
    per_band: dict[int, list[tuple[int, float]]] = {}
    for i, p in enumerate(od):
        idx, cu, _v = slice_centroids(p, p > 0, band=4)
        for b, c in zip(idx, cu):
            per_band.setdefault(int(b), []).append((i, c))
    assert len(per_band) >= 8
    for obs in per_band.values():
        if len(obs) < len(ang):
            continue
        i, c = np.array(obs).T
        m = np.stack([np.ones_like(i), np.cos(th[i.astype(int)]), np.sin(th[i.astype(int)])], 1)
        coef, *_ = np.linalg.lstsq(m, c, rcond=None)
        assert coef[0] == pytest.approx(31.5 + 2.0, abs=0.1)  # orbit centre = the axis
        assert np.sqrt(np.mean((c - m @ coef) ** 2)) < 0.05


def test_highpass_removes_smooth_shading():
    y, x = np.mgrid[:64, :64]
    smooth = 200 * np.exp(-0.3 * np.exp(-((x - 32) ** 2 + (y - 32) ** 2) / 800.0))
    spot = smooth * np.exp(-0.2 * np.exp(-((x - 20) ** 2 + (y - 30) ** 2) / 2.0))
    hp = highpass_depth(spot.astype(np.float32), 200.0, 2.0)
    assert np.unravel_index(np.argmax(hp), hp.shape) == (30, 20)
    assert abs(float(highpass_depth(smooth.astype(np.float32), 200.0, 2.0)[32, 32])) < 0.01


def render(n: int, seed: int, size: int = 96, tilt: float = 1.0, offset: float = 2.0):
    rng = np.random.default_rng(seed)
    ph = CellPhantom.random(seed)
    ang = smooth_sweep(n, rng)
    optics = BrightfieldOptics(pixel_um=2 * ph.radius_um * 1.1 / (size / 1.25), electrons_per_count=4.0,
                               vignetting=0.0, illumination_tilt=0.0)
    c = (size - 1) / 2
    frames, masks = [], []
    for a in ang:
        sc = render_scene((size, size), [CellInstance(ph, pose_matrix(a, tilt), (c, c + offset))], optics, rng,
                          walls=False)
        frames.append(sc.image)
        masks.append(sc.masks[0])
    return ang, np.stack(frames), np.stack(masks)


@pytest.fixture(scope="module")
def sweep():
    return render(160, 3)


def test_tracker_follows_a_simulated_cell(sweep):
    ang, frames, masks = sweep
    tr = RotationTracker(TrackerConfig(nominal_step_deg=1.0))
    for f, m in zip(frames, masks):
        a = tr.update(f, m)
        pts = tr.features
        assert np.isfinite(a)
        if len(pts):  # features stay on the cell
            xi, yi = np.clip(pts.round().astype(int), 0, 95).T
            assert masks[len(tr.angles_deg) - 1][yi, xi].mean() > 0.95
    assert len(tr.angles_deg) == len(ang) and tr.angles_deg[0] == 0.0
    assert tr.n_tracks > 100  # corners are re-detected as tracks are lost
    fit = tr.solve(tilt_deg=1.0)
    _assert_tracker_accuracy(fit, ang)


def _assert_tracker_accuracy(fit: np.ndarray, ang: np.ndarray) -> None:
    """What the joint orbit fit guarantees before the mirror refinement, measured on seeds 1-8
    of this sweep: total turn within 13 % (it undercounts by up to 12 %), mean error 2-16 deg,
    never stepping back more than 2 deg. The refinement fixes the scale and the warp; it needs
    a start of this quality, not more. (Seed 3 alone gives 1 % and 1.8 deg: a bound that tight
    held for that seed only.)"""
    assert fit[-1] == pytest.approx(ang[-1], rel=0.15)
    assert np.mean(np.abs(fit - ang)) < 20.0
    assert np.all(np.diff(fit) > -3)


@pytest.mark.parametrize("seed", [4, 7])
def test_tracker_start_is_good_enough_on_harder_sweeps(seed):
    """The seeds where the fit is worst (turn undercounted by 11-12 %)."""
    ang, frames, masks = render(160, seed)
    tr = RotationTracker(TrackerConfig(nominal_step_deg=1.0))
    for f, m in zip(frames, masks):
        tr.update(f, m)
    _assert_tracker_accuracy(tr.solve(tilt_deg=1.0), ang)


def test_band_weight_weighs_the_slice_centroids_in_the_fit(sweep):
    ang, frames, masks = sweep
    tr = RotationTracker(TrackerConfig(nominal_step_deg=1.0))
    for f, m in zip(frames[:80], masks[:80]):
        tr.update(f, m)
    k, _f, _u, _v, w = tr.observations(band_weight=7.0)
    assert np.all(w[k < 0] == 7.0) and np.all(w[k >= 0] == 1.0) and (k < 0).any() and (k >= 0).any()
    assert np.all(tr.observations()[4][k < 0] == tr.cfg.band_weight)
    a1, a100 = tr.solve(tilt_deg=1.0), tr.solve(tilt_deg=1.0, band_weight=100.0)
    assert np.max(np.abs(a1 - a100)) > 0.05
    np.testing.assert_allclose(tr.solve(tilt_deg=1.0, band_weight=tr.cfg.band_weight), a1)


def test_direction_sets_the_sign(sweep):
    ang, frames, masks = sweep
    tr = RotationTracker(TrackerConfig(direction=-1))
    for f, m in zip(frames[:60], masks[:60]):
        tr.update(f, m)
    assert tr.angles_deg[-1] < 0
    assert tr.solve()[-1] < 0
