"""LivePipeline on simulated full frames: per-frame results, snapshots, final angles and volume."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import cv2
import numpy as np
import pytest

from mcf_rotator.errors import ReconstructionError
from mcf_rotator.reconstruction.detection import BoxDetector, ClassicalDetector, Detection
from mcf_rotator.reconstruction.fbp import fbp
from mcf_rotator.reconstruction.incremental import IncrementalReconstructor
from mcf_rotator.reconstruction.final_angles import estimate_angles
from mcf_rotator.reconstruction.live import LivePipeline, LivePipelineConfig
from mcf_rotator.simulation.brightfield import BrightfieldOptics, CellInstance, render_scene
from mcf_rotator.simulation.phantom import CellPhantom, pose_matrix

cv2.setNumThreads(1)


def frames(n: int, seed: int = 4, shape: tuple[int, int] = (176, 192), cell_px: float = 76.0):
    rng = np.random.default_rng(seed)
    ph = CellPhantom.random(seed)
    steps = 2.2 + 0.7 * np.sin(np.arange(n - 1) / 14.0) + rng.normal(0, 0.2, n - 1)
    ang = np.concatenate([[0.0], np.cumsum(steps)])
    optics = BrightfieldOptics(pixel_um=2 * ph.radius_um / cell_px, electrons_per_count=4.0, vignetting=0.05,
                               phase_halo=0.0)
    centre = (shape[0] / 2 + 1.3, shape[1] / 2 - 2.6)
    out = [render_scene(shape, [CellInstance(ph, pose_matrix(a, 0.8), centre)], optics, rng, walls=False).image
           for a in ang]
    return ang, np.stack(out)


def test_pipeline_per_frame_results_and_snapshots():
    ang, imgs = frames(30)
    pipe = LivePipeline(LivePipelineConfig(roi_px=96, volume_size=96, cell_px=76.0, nominal_step_deg=2.0))
    versions = []
    for i, img in enumerate(imgs):
        r = pipe.process(img, 0.01 * i)
        assert r.ok and r.index == i
        x0, y0, x1, y1 = r.box
        cx, cy, rad = r.circle
        assert x0 <= cx <= x1 and y0 <= cy <= y1 and 30 < rad < 45
        assert abs(cx - (192 / 2 - 2.6)) < 3 and abs(cy - (176 / 2 + 1.3)) < 3
        assert r.features is not None and len(r.features) > 10
        fx, fy = r.features.T
        inside = (fx > x0 - 3) & (fx < x1 + 3) & (fy > y0 - 3) & (fy < y1 + 3)
        assert inside.mean() > 0.95  # features are full-frame coordinates on the cell
        assert r.contour.shape[1] == 2
        versions.append(pipe.snapshot().version)
    assert versions == sorted(versions) and versions[-1] == 30
    assert pipe.snapshot().volume.shape == (96, 96, 96)
    blank = pipe.process(np.full_like(imgs[0], 200), 1.0)
    assert blank.index == 30


def _run(pipe: LivePipeline, imgs: np.ndarray) -> list[int]:
    """Process every frame; each re-solve is awaited and adopted at once."""
    versions = []
    for i, img in enumerate(imgs):
        assert pipe.process(img, float(i)).ok
        pipe.wait_resolve()
        versions.append(pipe.snapshot().version)
    return versions


def test_live_angles_are_resolved_and_the_live_volume_follows():
    ang, imgs = frames(170)
    pipe = LivePipeline(LivePipelineConfig(roi_px=96, volume_size=96, cell_px=76.0, nominal_step_deg=2.0))
    versions = _run(pipe, imgs)
    assert pipe.n_resolves >= 4  # after 32, 48, 72, 108 (and 162) frames
    assert all(np.diff(versions) > 0)  # a rebuilt volume never reuses a version
    live, tracked = np.asarray(pipe.angles), np.asarray(pipe.tracker.angles_deg)
    # the causal trace drifts by tens of degrees; the re-solved one (mirror symmetry past 200 deg) does not
    assert np.mean(np.abs(live - ang)) < 5.0 < 20.0 < np.mean(np.abs(tracked - ang))
    # the live volume is the back-projection of the projections at the angles the pipeline reports
    rebuilt = IncrementalReconstructor((96, 96))
    for p, a in zip(pipe.projections, live):
        rebuilt.add(p, a)
    np.testing.assert_allclose(pipe.snapshot().volume, rebuilt.snapshot().volume, atol=1e-6)


def test_a_failed_resolve_leaves_the_live_angles(monkeypatch):
    from mcf_rotator.reconstruction import live

    calls = []

    def broken(*args, **kwargs):
        calls.append(len(args[1]))
        raise RuntimeError("no fit")

    monkeypatch.setattr(live, "resolve_live_angles", broken)
    ang, imgs = frames(40)
    pipe = LivePipeline(LivePipelineConfig(roi_px=96, volume_size=96, cell_px=76.0, nominal_step_deg=2.0))
    versions = _run(pipe, imgs)
    assert calls == [32] and pipe.n_resolves == 0 and versions[-1] == 40  # the run went on
    assert pipe._shift == 0.0 and pipe.angles[0] == 0.0  # the live angles as tracked


def test_finalize_stops_a_resolve_in_flight():
    import threading

    ang, imgs = frames(40)
    pipe = LivePipeline(LivePipelineConfig(roi_px=96, volume_size=96, cell_px=76.0, nominal_step_deg=2.0))
    for i, img in enumerate(imgs[:33]):
        pipe.process(img, float(i))
    assert pipe._resolver is not None  # started at frame 32
    res = pipe.finalize()
    assert not any(t.name == "angle-resolve" and t.is_alive() for t in threading.enumerate())
    assert len(res.angles_deg) == 33
    pipe.close()  # idempotent


def test_finalize_needs_frames():
    pipe = LivePipeline(LivePipelineConfig(roi_px=96, volume_size=96, cell_px=76.0))
    with pytest.raises(ReconstructionError, match="frames"):
        pipe.finalize()


@pytest.mark.slow
def test_full_sweep_angles_and_volume():
    ang, imgs = frames(170)
    pipe = LivePipeline(LivePipelineConfig(roi_px=96, volume_size=96, cell_px=76.0, nominal_step_deg=2.0,
                                           filter_name="hann"))
    for i, img in enumerate(imgs):
        assert pipe.process(img, float(i)).ok
    steps: list[str] = []
    res = pipe.finalize(progress=steps.append)
    assert steps[0].startswith("registration") and steps[-1] == "filtered back-projection"
    assert "tracking the registered frames" in steps and "rotation rate from all tracks" in steps
    warps = [s for s in steps if s.startswith("180 deg-periodic warp")]
    assert len(warps) == 4 and "axis fine-tune and last matching pass" in steps, steps  # one per ensemble member
    fits = res.report["orbit_fits"]
    best = min(m["mirror_residual_deg"] for m in fits)
    assert [m["averaged"] for m in fits] == [m["mirror_residual_deg"] <= 1.1 * best for m in fits]
    err = np.abs(res.angles_deg - ang)
    assert err.mean() < 2.0, err.mean()
    assert res.tilt_deg == pytest.approx(0.8, abs=0.3)
    assert res.report["coverage_deg"] > 300 and res.report["mirror_pairs"] > 50
    # the matching fine-tune moves an axis the mirror symmetry found well only slightly
    assert abs(res.report["axis_shift_px"]) < 0.3, res.report["axis_shift_px"]
    proj = res.projections
    assert res.volume.shape == (96, 96, 96) and res.report["voxel_px"] == 1.0
    assert res.report["registration"]["mode"].startswith("fixed crop")  # this cell does not move
    ref = fbp(proj, ang, axis_offset_px=res.axis_offset_px, tilt_deg=res.tilt_deg, weights="circular",
              filter_name="hann")
    good = np.corrcoef(res.volume.ravel(), ref.ravel())[0, 1]
    bad = fbp(proj, 0.95 * ang, axis_offset_px=res.axis_offset_px, tilt_deg=res.tilt_deg, weights="circular",
              filter_name="hann")
    assert good > 0.9 and good > np.corrcoef(bad.ravel(), ref.ravel())[0, 1] + 0.05
    # given angles bypass tracking and refinement
    res2 = pipe.finalize(ang)
    np.testing.assert_allclose(res2.angles_deg, ang)


def test_the_orbit_fits_of_each_slice_centroid_weight_are_averaged():
    ang, imgs = frames(100)  # 220 deg: too short for the mirror refinement, the fits alone
    pipe = LivePipeline(LivePipelineConfig(roi_px=96, volume_size=96, cell_px=76.0, nominal_step_deg=2.0,
                                           resolve_every=0))
    for img in imgs:
        assert pipe.process(img, 0.0).ok
    proj = np.stack(pipe.projections)
    single = {w: estimate_angles(copy.deepcopy(pipe.tracker), proj, per_frame=False, band_weights=(w,))[0]
              for w in (1.0, 100.0)}
    both, ref, info = estimate_angles(copy.deepcopy(pipe.tracker), proj, per_frame=False, band_weights=(1.0, 100.0))
    assert ref is None and [m["band_weight"] for m in info["orbit_fits"]] == [1.0, 100.0]
    assert all(m["averaged"] and m["mirror_residual_deg"] is None for m in info["orbit_fits"])
    assert np.max(np.abs(single[1.0] - single[100.0])) > 0.05  # the weight changes the fit
    np.testing.assert_allclose(both, (single[1.0] + single[100.0]) / 2, atol=1e-9)
    assert info["orbit_fit_spread_deg"] > 0
    for bad in ((), (1.0, 0.0)):
        with pytest.raises(ValueError, match="band_weights"):
            estimate_angles(pipe.tracker, proj, band_weights=bad)


def test_rounds_are_judged_on_pairs_searched_around_both_angle_sets(monkeypatch):
    """A poor starting trace finds wrong mirror pairs that agree with it; judged on those, every
    better orbit fit was rejected (benchmark seeds 12 and 13: 4.6 and 5.7 deg, now 0.2-0.4)."""
    import mcf_rotator.reconstruction.final_angles as live
    from mcf_rotator.simulation.phantom import projection_stack

    ph = CellPhantom.random(7)
    rng = np.random.default_rng(7)
    ang = np.concatenate([[0.0], np.cumsum(2.0 + 0.8 * np.sin(np.arange(199) / 15.0))])
    proj = projection_stack(ph, ang, 64, tilt_in_plane_deg=1.0, axis_offset_px=2.0)
    proj = proj + rng.normal(0, 0.02 * proj.max(), proj.shape).astype(np.float32)
    calls = []
    search = live.find_partners
    monkeypatch.setattr(live, "find_partners", lambda *a, **k: calls.append(1) or search(*a, **k))
    judge = live._FairMirrorPairs(proj, 2.0, 1.0)
    wrong = 0.94 * ang  # pairs searched around it alone agree with it
    r_wrong, r_true = judge.residuals([wrong, ang])
    assert r_true < 0.5 < 5.0 < r_wrong and len(calls) == 2
    assert judge.residuals([ang, wrong]) == pytest.approx([r_true, r_wrong]) and len(calls) == 2  # searches kept


class CountingDetector:
    """Classical detection, counting the calls of each path."""

    def __init__(self, boxes_path: bool) -> None:
        self.inner = ClassicalDetector(cell_px=76.0)
        self.calls = {"detect": [], "detect_boxes": []}
        self.frame = 0
        if boxes_path:
            self.detect_boxes = self._boxes  # instance attribute: only this detector is a BoxDetector

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.calls["detect"].append(self.frame)
        return self.inner.detect(image)

    def _boxes(self, image: np.ndarray) -> list[Detection]:
        self.calls["detect_boxes"].append(self.frame)
        return [Detection(d.box, d.score) for d in self.inner.detect(image)]


@pytest.mark.parametrize("boxes_path", [False, True])
def test_detection_schedule(boxes_path):
    _ang, imgs = frames(24)
    det = CountingDetector(boxes_path)
    assert isinstance(det, BoxDetector) == boxes_path
    pipe = LivePipeline(LivePipelineConfig(roi_px=96, volume_size=96, cell_px=76.0, nominal_step_deg=2.0,
                                           detector=det, detect_every=5, min_frames=20, refine=False))
    blank = np.full_like(imgs[0], 200)
    # no cell yet: every frame is searched until one is found, then every 5th frame
    for i, img in enumerate([blank, blank, *imgs]):
        det.frame = i
        r = pipe.process(img, float(i))
        assert r.ok == (i >= 2)
    used = det.calls["detect_boxes" if boxes_path else "detect"]
    assert used == [0, 1, 2, 5, 10, 15, 20, 25]
    assert not det.calls["detect" if boxes_path else "detect_boxes"]
    assert pipe.n_detections == len(used) and pipe.detect_seconds > 0
    res = pipe.finalize(_ang)
    assert res.report["detections"] == len(used) and res.report["timings_s"]["detect_mean"] > 0


def test_detect_every_must_be_positive():
    with pytest.raises(ReconstructionError, match="detect_every"):
        LivePipeline(LivePipelineConfig(detect_every=0))


def moving_frames(n: int, seed: int = 4, rms: float = 1.5, drift: float = 0.05):
    """As :func:`frames`, with the cell moving in the trap (Brownian + drift + wobble)."""
    from mcf_rotator.simulation.motion import MotionModel, trap_motion

    rng = np.random.default_rng(seed)
    ph = CellPhantom.random(seed)
    steps = 2.2 + 0.7 * np.sin(np.arange(n - 1) / 14.0) + rng.normal(0, 0.2, n - 1)
    ang = np.concatenate([[0.0], np.cumsum(steps)])
    mot = trap_motion(ang, MotionModel(brownian_rms_px=rms, memory_frames=20.0, drift_px_per_frame=drift), rng)
    optics = BrightfieldOptics(pixel_um=2 * ph.radius_um / 76.0, electrons_per_count=4.0, vignetting=0.05,
                               phase_halo=0.0)
    centre = np.array([176 / 2 + 1.3, 192 / 2 - 2.6])
    out = [render_scene((176, 192), [CellInstance(ph, pose_matrix(a, 0.8), tuple(centre + m))], optics, rng,
                        walls=False).image for a, m in zip(ang, mot)]
    return ang, mot, np.stack(out)


@pytest.mark.slow
def test_a_moving_cell_is_registered_frame_by_frame():
    """1.5 px RMS of Brownian motion plus drift: the fixed crop of the previous version made
    11.8 deg of this sweep; registered frame by frame, 4 deg (the angle stage's own limit, see
    docs/angles.md), and the registration follows the cell to a fraction of a pixel."""
    ang, mot, imgs = moving_frames(170)
    pipe = LivePipeline(LivePipelineConfig(roi_px=96, volume_size=96, cell_px=76.0, nominal_step_deg=2.0,
                                           filter_name="hann", resolve_every=0))
    for i, img in enumerate(imgs):
        assert pipe.process(img, float(i)).ok
    res = pipe.finalize()
    reg = res.report["registration"]
    assert reg["mode"] == "per-frame centre of mass" and reg["residual_motion_px"] > 1.0
    err = np.abs(res.angles_deg - ang)
    assert err.mean() < 6.0, err.mean()
    assert res.report["angle_confidence"]["level"] in ("good", "uncertain", "unreliable")
    # vertically the centre of mass is the cell's position (a rotation does not move it)
    rows = pipe.registered().centres[:, 0]
    true = mot[:, 0]
    assert np.sqrt(np.mean(((rows - rows.mean()) - (true - true.mean())) ** 2)) < 0.4
