"""Rig controller state machine on fake devices (no Qt, no physics)."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from mcf_rotator.config import RigConfig
from mcf_rotator.controller import InvalidTransitionError, RigController, RigState, cell_centroid
from mcf_rotator.errors import McfRotatorError
from mcf_rotator.recording import open_recording

from test_core_support import FakePipeline, FakeRecon, FakeResult, FakeSequencer, fake_rig


def _controller(tmp_path: Path, pipeline: FakePipeline | None = None, fail_after: int | None = None,
                target: float = 360.0) -> tuple[RigController, FakePipeline]:
    cfg = RigConfig()
    cfg.rotation.target_coverage_deg = target
    pipe = pipeline or FakePipeline()
    ctl = RigController(cfg, rig=fake_rig(fail_after), pipeline_factory=lambda c: pipe,
                        sequencer=FakeSequencer(), output_dir=tmp_path)
    return ctl, pipe


def _wait(pred, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_full_run_transitions_and_outputs(tmp_path: Path) -> None:
    ctl, pipe = _controller(tmp_path)
    states: list[tuple[RigState, RigState]] = []
    finished: list = []
    ctl.events.state_changed.connect(lambda old, new: states.append((old, new)))
    ctl.events.finished.connect(finished.append)
    messages: list[tuple[str, str]] = []
    ctl.events.message.connect(lambda level, text: messages.append((level, text)))
    result = ctl.run_all(trap_timeout_s=10, timeout_s=60)
    assert ctl.state == RigState.IDLE
    assert [s[1] for s in states] == [RigState.TRAPPING, RigState.ROTATING, RigState.RECONSTRUCTING,
                                      RigState.FINISHING, RigState.IDLE]
    assert finished and finished[0] is result and result.error is None
    assert pipe.finalized and ("info", "final angles: fake angle step") in messages
    vol = tifffile.imread(result.volume_path)
    assert vol.shape == (6, 6, 6) and vol.dtype.name == "float32"
    rows = list(csv.reader(open(result.angles_path)))
    assert rows[0] == ["frame", "angle_deg"] and float(rows[1][1]) == 0.0
    assert len(rows) - 1 == pipe.n
    report = json.loads(result.report_path.read_text())
    assert report["n_projections"] == pipe.n
    frames, meta = open_recording(result.recording.path)
    # lockstep mode: every recorded frame that was queued reached the pipeline or the recording
    assert len(frames) == result.recording.frames_written >= pipe.n
    processed = [m for m in meta if "tracked_angle_deg" in m]
    assert len(processed) == pipe.n
    assert all("slm_angle_deg" in m and "timestamp_s" in m and "hologram_id" in m for m in meta)
    assert ctl.rig.trap.enabled is False
    st = ctl.stats()
    assert st["coverage_deg"] >= 360 and st["recorded_frames"] == len(frames)


class _GappyPipeline(FakePipeline):
    """Every 7th frame has no cell: no angle, no projection (as LivePipeline)."""

    def process(self, image: np.ndarray, timestamp: float) -> FakeResult:
        if self.n % 7 == 3:
            self.n += 1
            return FakeResult(self.n - 1, None, ok=False)
        return super().process(image, timestamp)


def test_angles_name_the_recorded_frames_when_some_frames_had_no_cell(tmp_path: Path) -> None:
    ctl, pipe = _controller(tmp_path, pipeline=_GappyPipeline())
    result = ctl.run_all(trap_timeout_s=10, timeout_s=60)
    rows = list(csv.reader(open(result.angles_path)))[1:]
    assert len(rows) == len(pipe.angles) < pipe.n
    frames, meta = open_recording(result.recording.path)
    for f, a in rows:  # the refined angle lands on the frame whose tracked angle it refines
        m = meta[int(f)]
        assert m["tracked_angle_deg"] == pytest.approx(float(a)) and m["refined_angle_deg"] == pytest.approx(float(a))
    assert sum("tracked_angle_deg" not in m for m in meta[: int(rows[-1][0])]) > 0  # gaps were skipped


class _ResolvingPipeline(FakePipeline):
    """At frame 50 it finds the cell turned half as far as it said (as a live re-solve does)."""

    n_resolves = 0

    def process(self, image: np.ndarray, timestamp: float) -> FakeResult:
        r = super().process(image, timestamp)
        if self.n == 50:
            self.deg_per_frame /= 2
            self.angles = [a / 2 for a in self.angles]
            self.n_resolves += 1
            r = FakeResult(r.index, self.angles[-1])
        elif self.n > 50:
            self.angles[-1] = self.angles[-2] + self.deg_per_frame
            r = FakeResult(r.index, self.angles[-1])
        return r


def test_trace_and_coverage_follow_a_resolve_of_the_live_angles(tmp_path: Path) -> None:
    ctl, pipe = _controller(tmp_path, pipeline=_ResolvingPipeline())
    ctl.run_all(trap_timeout_s=10, timeout_s=60)
    _t, trace = ctl.angle_trace()
    np.testing.assert_allclose(trace, pipe.angles)
    # 360 deg at the re-solved 1 deg/frame, not at the 2 deg/frame said before it
    assert pipe.n >= 360 and ctl.stats()["coverage_deg"] == pytest.approx(pipe.angles[-1] - pipe.angles[0])


class _RefiningPipeline(FakePipeline):
    """Its final angles differ from the live ones (the cell turned 10 % less)."""

    def finalize(self, progress: Any = None) -> FakeRecon:
        rec = super().finalize(progress)
        return FakeRecon(rec.volume, 0.9 * rec.angles_deg)


def test_angle_plot_shows_the_refined_angles_after_a_run(tmp_path: Path) -> None:
    ctl, pipe = _controller(tmp_path, pipeline=_RefiningPipeline())
    result = ctl.run_all(trap_timeout_s=10, timeout_s=60)
    np.testing.assert_allclose(ctl.angle_trace()[1], 0.9 * np.asarray(pipe.angles))
    assert ctl.stats()["coverage_deg"] == pytest.approx(np.ptp(result.reconstruction.angles_deg))


def test_save_volume_and_angles_give_the_final_result_after_a_run(tmp_path: Path) -> None:
    ctl, pipe = _controller(tmp_path)
    with pytest.raises(McfRotatorError, match="no volume"):
        ctl.save_volume(tmp_path / "none.tif")
    with pytest.raises(McfRotatorError, match="no tracked angles"):
        ctl.save_angles(tmp_path / "none.csv")
    versions: list[int] = []
    ctl.events.volume_updated.connect(versions.append)
    result = ctl.run_all(trap_timeout_s=10, timeout_s=60)
    # the view shows the final volume (FakeRecon: ones, 6^3), not the live one (zeros, 4^3)
    snap = ctl.volume_snapshot()
    assert snap.volume.shape == (6, 6, 6) and np.all(snap.volume == 1.0)
    assert versions and versions[-1] == snap.version and snap.version > pipe.n
    out = ctl.save_volume(tmp_path / "sub" / "v.tif")
    with tifffile.TiffFile(out) as tf:
        assert np.array_equal(tf.asarray(), tifffile.imread(result.volume_path))
        assert tf.imagej_metadata["spacing"] == pytest.approx(
            json.loads(result.report_path.read_text())["voxel_um"])
    ctl.save_angles(tmp_path / "a.csv")
    assert (tmp_path / "a.csv").read_text() == result.angles_path.read_text()


def test_invalid_transitions_refused_with_clear_message(tmp_path: Path) -> None:
    ctl, _ = _controller(tmp_path)
    with pytest.raises(InvalidTransitionError, match="cannot rotate while the rig is idle"):
        ctl.rotate()
    with pytest.raises(InvalidTransitionError, match="reconstruct"):
        ctl.reconstruct()
    ctl.trap()
    try:
        with pytest.raises(InvalidTransitionError, match="cannot trap while the rig is trapping"):
            ctl.trap()
        with pytest.raises(InvalidTransitionError):
            ctl.reconstruct()
    finally:
        ctl.stop()
    assert ctl.state == RigState.IDLE


def test_trapped_check_and_slm_shows_ellipse(tmp_path: Path) -> None:
    ctl, _ = _controller(tmp_path)
    ctl.trap()
    try:
        assert ctl.rig.trap.enabled
        full = ctl.slm_image()
        assert full is not None
        # an SLM without its own preview is strided by the controller (the fake one is 4x4)
        np.testing.assert_array_equal(ctl.slm_image(max_side=2), full[::2, ::2])
        assert ctl.slm_image(max_side=480) is full
        assert ctl.wait_trapped(timeout_s=10)
        assert ctl.latest_frame() is not None
        assert ctl.beam_image() is not None
    finally:
        ctl.stop()


def test_cell_centroid_finds_disc_and_rejects_blank() -> None:
    import numpy as np

    img = np.full((60, 80), 200, np.uint8)
    assert cell_centroid(img) is None
    img[20:30, 50:62] = 90
    c = cell_centroid(img)
    assert c is not None and abs(c[0] - 55.5) < 2 and abs(c[1] - 24.5) < 2


def test_camera_disconnect_mid_run_gives_error_and_keeps_recording(tmp_path: Path) -> None:
    ctl, pipe = _controller(tmp_path, pipeline=FakePipeline(deg_per_frame=0.1))
    errors: list[str] = []
    ctl.events.error.connect(errors.append)
    ctl.run_all(trap_timeout_s=10, wait=False)
    assert _wait(lambda: ctl.stats()["recorded_frames"] > 20)
    cam = ctl.rig.camera
    fail_at = cam._index + 40
    cam.fail_after = fail_at
    assert ctl.wait_finished(30)
    assert ctl.state == RigState.ERROR
    assert errors and "unplugged" in errors[0]
    assert ctl.rig.trap.enabled is False
    rec_path = next(tmp_path.glob("run-*/recording.ome.tif"))
    frames, meta = open_recording(rec_path)
    # every frame read after rotate() is in the recording: camera indices are contiguous up to the failure
    cam_idx = [m["camera_index"] for m in meta]
    assert len(frames) == len(meta) > 0
    assert cam_idx == list(range(cam_idx[0], fail_at))
    assert int(frames[-1][0, 0]) == (fail_at - 1) % 256
    with pytest.raises(InvalidTransitionError, match="reset"):
        ctl.trap()
    ctl.reset()
    assert ctl.state == RigState.IDLE


def test_pipeline_exception_goes_to_error(tmp_path: Path) -> None:
    ctl, _ = _controller(tmp_path, pipeline=FakePipeline(fail_at=5))
    with pytest.raises(Exception, match="segmentation exploded"):
        ctl.run_all(trap_timeout_s=10, timeout_s=30)
    assert ctl.state == RigState.ERROR
    assert "reconstruction" in ctl.last_error


def test_stop_early_keeps_recording_without_volume(tmp_path: Path) -> None:
    ctl, pipe = _controller(tmp_path, pipeline=FakePipeline(deg_per_frame=0.01))
    ctl.run_all(trap_timeout_s=10, wait=False)
    assert _wait(lambda: pipe.n > 20)
    ctl.stop()
    assert ctl.wait_finished(20)
    assert ctl.state == RigState.IDLE
    res = ctl.last_result
    assert res is not None and res.volume_path is None and "180" in res.error
    frames, _ = open_recording(res.recording.path)
    assert len(frames) >= pipe.n
    assert json.loads(res.report_path.read_text())["error"]


def test_pause_holds_pipeline_and_rotation_then_cancel(tmp_path: Path) -> None:
    ctl, pipe = _controller(tmp_path, pipeline=FakePipeline(deg_per_frame=0.01))
    ctl.run_all(trap_timeout_s=10, wait=False)
    assert _wait(lambda: pipe.n > 5)
    ctl.pause()
    time.sleep(0.2)
    n0, a0 = pipe.n, ctl.stats()["commanded_angle_deg"]
    time.sleep(0.3)
    assert pipe.n <= n0 + 1  # at most the frame in flight
    assert ctl.stats()["commanded_angle_deg"] == pytest.approx(a0)
    ctl.resume()
    assert _wait(lambda: pipe.n > n0 + 5)
    ctl.cancel()
    assert ctl.wait_finished(20)
    assert ctl.state == RigState.IDLE
    assert ctl.last_result.error == "cancelled" and not pipe.finalized


def test_max_frames_budget_finishes_run(tmp_path: Path) -> None:
    ctl, pipe = _controller(tmp_path, pipeline=FakePipeline(deg_per_frame=2.0), target=3600)
    ctl.max_frames = 120
    res = ctl.run_all(trap_timeout_s=10, timeout_s=30)
    assert res.recording.frames_written == 120
    assert res.volume_path is not None


def test_shutdown_mid_run(tmp_path: Path) -> None:
    ctl, pipe = _controller(tmp_path, pipeline=FakePipeline(deg_per_frame=0.001))
    ctl.run_all(trap_timeout_s=10, wait=False)
    assert _wait(lambda: pipe.n > 5)
    ctl.shutdown()
    assert ctl.state in (RigState.IDLE,)
    assert not any(t.name in ("camera", "pipeline") and t.is_alive() for t in threading.enumerate())
    assert not ctl.rig.camera.is_connected


def test_stats_contract_names_and_trapped_flag(tmp_path: Path) -> None:
    ctl, _ = _controller(tmp_path)
    messages: list[tuple[str, str]] = []
    ctl.events.message.connect(lambda level, text: messages.append((level, text)))
    st = ctl.stats()
    for key in ("fps", "dropped", "queue_depth", "recorded", "coverage_deg", "trapped",
                "camera_fps", "dropped_frames", "recorded_frames"):
        assert key in st, key
    assert st["trapped"] is False
    ctl.trap()
    try:
        # the controller watches the camera itself: no wait_trapped() call needed
        assert _wait(lambda: ctl.stats()["trapped"], timeout=20.0)
        assert ctl.trapped
        assert ctl.wait_trapped(timeout_s=10)
        trapped_msgs = [t for lvl, t in messages if "cell trapped" in t]
        assert len(trapped_msgs) == 1  # announced once
        st = ctl.stats()
        assert st["fps"] == st["camera_fps"] and st["dropped"] == st["dropped_frames"]
        assert st["recorded"] == st["recorded_frames"]
    finally:
        ctl.stop()
    assert ctl.state == RigState.IDLE


def test_calibration_wizard_on_the_simulated_rig(tmp_path: Path) -> None:
    import numpy as np

    from mcf_rotator.calibration.offaxis import wrap
    from mcf_rotator.calibration.wizard import CalibrationWizard
    from mcf_rotator.rig import build_rig

    cfg = RigConfig()
    rig = build_rig(cfg)
    ctl = RigController(cfg, rig=rig, sequencer=FakeSequencer(), output_dir=tmp_path)
    world = rig.world
    wiz = ctl.calibration_wizard()
    assert isinstance(wiz, CalibrationWizard)
    assert wiz.slm is rig.slm and wiz.camera is rig.calibration_camera
    assert not world.laser_enabled
    wiz.enter_calibration_mode()
    assert world.laser_enabled and rig.calibration_camera.is_connected  # fibre lit for fringes
    rec = wiz.run(save_to=tmp_path / "cal.json")
    assert ctl.calibration is rec  # installed for the next run
    assert (tmp_path / "cal.json").is_file()
    err = wrap(world.fibre.distortion + rec.correction)
    err = wrap(err - np.angle(np.sum(np.exp(1j * err))))
    assert float(np.sqrt(np.mean(err**2))) < 0.3
    wiz.leave_calibration_mode()
    assert not world.laser_enabled
    # a fresh wizard starts from the active calibration; the drift check leaves the laser off
    report = ctl.calibration_wizard().drift_check()
    assert not report.needs_recalibration and not world.laser_enabled
    ctl.shutdown()


def test_calibration_wizard_refused_during_a_run(tmp_path: Path) -> None:
    ctl, _ = _controller(tmp_path)
    ctl.trap()
    try:
        with pytest.raises(InvalidTransitionError, match="calibrate"):
            ctl.calibration_wizard()
    finally:
        ctl.stop()
