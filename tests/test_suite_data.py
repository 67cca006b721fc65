"""Fast checks of the accuracy suite's data generators (benchmarks/suite_data.py)."""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import suite_data as sd  # noqa: E402


def _need(generator: str) -> None:
    if generator == "cellsino" and not sd.cellsino_available():
        pytest.skip("cellsino is not installed")


def _small(case: sd.SuiteCase, **over) -> sd.SuiteCase:
    """A regression case cut to ~50 frames (keeps the tests fast)."""
    p = dict(case.params)
    p.update(sweep_deg=190.0, step_deg=4.0)
    p.update(over)
    return dataclasses.replace(case, params=p)


def test_suite_spans_the_requested_ranges() -> None:
    cases = sd.suite_cases()
    assert len(cases) >= 40
    assert len({c.name for c in cases}) == len(cases)
    for g in sd.GENERATORS:
        mine = [c for c in cases if c.generator == g]
        assert len(mine) >= 12
        assert 1 <= sum(c.regression for c in mine) <= 3
    p = [c.params for c in cases]
    assert min(x["cell_px"] for x in p) <= 65 and max(x["cell_px"] for x in p) >= 240
    assert {x["schedule"] for x in p} == {"smooth", "uneven", "stick-slip"}
    assert max(x["brownian_rms_px"] for x in p) >= 4.9 and min(x["brownian_rms_px"] for x in p) == 0
    assert max(x["sweep_deg"] for x in p) >= 700 and min(x["sweep_deg"] for x in p) <= 195
    assert all(c.n_frames <= 720 for c in cases)
    for c in cases:
        if c.regression:
            assert 60 <= c.params["cell_px"] <= 96 and c.n_frames <= 200
    assert [c.params for c in sd.suite_cases()] == p  # deterministic


@pytest.mark.parametrize("kind", ["smooth", "uneven", "stick-slip"])
def test_angle_schedules_start_at_zero_and_increase(kind: str) -> None:
    a = sd.angle_schedule(kind, 300, 450.0, np.random.default_rng(1))
    assert a[0] == 0 and a[-1] == pytest.approx(450.0)
    assert np.all(np.diff(a) > -1.0)  # stick-slip may slip back a little, never far
    steps = np.diff(a)
    if kind == "stick-slip":
        assert steps.max() > 3 * np.median(steps)  # bursts
        assert np.percentile(steps, 10) < 0.4 * np.median(steps)  # stalls


def test_projector_matches_the_volume_convention() -> None:
    vol = np.zeros((5, 21, 21), np.float32)
    vol[2, 10, 14] = 1.0  # x = +4, z = 0 (depth index 10 is the centre)
    vol[3, 16, 10] = 2.0  # x = 0, z = +6
    p = sd.parallel_project(vol, np.array([0.0, 90.0]))
    np.testing.assert_allclose(p[0], vol.sum(axis=1), atol=1e-6)
    # at 90 deg: u = x cos + z sin -> the depth-offset voxel lands 6 columns right of centre
    assert p[1][3].argmax() == 16 and p[1][2].argmax() == 10


@pytest.mark.parametrize("generator", sd.GENERATORS)
def test_regression_cases_shapes_angles_and_motion(generator: str) -> None:
    _need(generator)
    for case in (c for c in sd.suite_cases() if c.regression and c.generator == generator):
        ds = sd.generate(_small(case))
        t, h, w = ds.frames.shape
        assert ds.frames.dtype == np.float32 and ds.angles_deg.shape == (t,) and ds.centres_px.shape == (t, 2)
        assert ds.flat.shape == (h, w) and ds.truth.ndim == 3 and ds.truth.shape[1] == ds.truth.shape[2]
        assert ds.angles_deg[0] == 0 and np.all(np.isfinite(ds.frames))
        # the cell is inside the frame with room to spare
        assert h >= 1.3 * case.params["cell_px"] and w >= 1.3 * case.params["cell_px"]
        assert np.all(ds.centres_px > 0.3 * case.params["cell_px"])
        # the cell absorbs roughly what was asked through its centre (frame 0, noise averaged)
        li = sd.line_integrals(ds)[0]
        r, c = np.rint(ds.centres_px[0]).astype(int)
        absorbed = 1 - np.exp(-li[r - 2:r + 3, c - 2:c + 3].mean())
        assert absorbed == pytest.approx(case.params["absorption"], abs=0.05)


@pytest.mark.parametrize("generator", ["blobs"])
def test_motion_has_the_requested_rms(generator: str) -> None:
    case = next(c for c in sd.suite_cases() if c.regression and c.generator == generator and c.params["brownian_rms_px"] > 0)
    p = dict(case.params, sweep_deg=720.0, step_deg=1.0, drift_px_per_frame=0.0, wobble_px=0.0, memory_frames=8.0)
    rng = np.random.default_rng(3)
    angles = sd.angle_schedule("smooth", sd.n_frames_for(p), 720.0, rng)
    off = sd._motion(p, angles, rng)
    rms = off.std(axis=0)
    assert rms[1] == pytest.approx(p["brownian_rms_px"], rel=0.35)
    assert rms[0] == pytest.approx(0.7 * p["brownian_rms_px"], rel=0.35)
    ds = sd.generate(_small(case, step_deg=2.0, drift_px_per_frame=0.0, wobble_px=0.0, memory_frames=4.0))
    moved = ds.centres_px - ds.centres_px.mean(axis=0)
    assert 0.5 * p["brownian_rms_px"] < np.sqrt((moved[:, 1] ** 2).mean()) < 1.6 * p["brownian_rms_px"]


def test_still_case_does_not_move() -> None:
    case = next(c for c in sd.suite_cases() if c.regression and c.generator == "blobs" and c.params["brownian_rms_px"] == 0)
    ds = sd.generate(_small(case))
    assert np.ptp(ds.centres_px, axis=0).max() < 1e-9


@pytest.mark.parametrize("generator", sd.GENERATORS)
def test_ideal_reconstruction_reproduces_the_truth(generator: str) -> None:
    """The geometry check: true angles + true centres + FBP give back the truth volume; the same
    projections with the angles reversed must not (so the check can tell a mirrored cell)."""
    _need(generator)
    case = next(c for c in sd.suite_cases() if c.regression and c.generator == generator
                and c.params["brownian_rms_px"] == 0)
    ds = sd.generate(_small(case, step_deg=2.0, tilt_deg=1.5, brownian_rms_px=1.0, wobble_px=0.3))
    ideal = sd.ideal_reconstruction(ds)
    assert ideal.shape == ds.truth.shape
    good = sd.fine_structure_correlation(ideal, ds.truth)
    assert good > 0.85
    from mcf_rotator.reconstruction.fbp import fbp

    # (cellsino's cell is nearly mirror-symmetric spheres: its edges still match when mirrored)
    mirrored = fbp(sd.centred_projections(ds), -ds.angles_deg, tilt_deg=ds.tilt_deg, weights="circular")
    assert sd.fine_structure_correlation(mirrored, ds.truth) < good - 0.15


def test_truth_in_pose_matches_the_projection() -> None:
    vol = sd._blobs_volume(1, 40.0, 6, 0.2)
    for th in (35.0, 200.0):
        a = sd.truth_in_pose(vol, th).sum(axis=1)
        b = sd.parallel_project(vol, [th])[0]
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
