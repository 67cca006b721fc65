"""Stop, cancel and shutdown act at once during Run all and FINISHING; the simulated rotation
follows the world's clock (no Qt; fake devices, deterministic simulated time)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcf_rotator.config import RigConfig
from mcf_rotator.controller import RigController, RigState
from mcf_rotator.drivers.protocols import Frame
from mcf_rotator.recording import open_recording
from mcf_rotator.rig import Rig

from test_core_support import (EmptyCamera, FakeCamera, FakePipeline, FakeRecon, FakeSequencer, FakeSLM,
                               FakeTrap, FakeWorld, SlowFinalPipeline)


def _wait(pred, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def _controller(tmp_path: Path, pipe: FakePipeline, camera: type[FakeCamera] = FakeCamera,
                realtime: bool = False) -> RigController:
    world = FakeWorld()
    world.realtime = realtime
    rig = Rig(camera=camera(world), slm=FakeSLM(), trap=FakeTrap(), world=world)
    return RigController(RigConfig(), rig=rig, pipeline_factory=lambda c: pipe,
                         sequencer=FakeSequencer(), output_dir=tmp_path)


def _run_all_in_thread(ctl: RigController, **kw: Any) -> tuple[threading.Thread, list]:
    out: list = []

    def body() -> None:
        try:
            out.append(ctl.run_all(**kw))
        except Exception as exc:  # noqa: BLE001 - the test reads it
            out.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, out


def test_stop_during_run_all_trapping_ends_the_sequence_quietly(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, FakePipeline(), camera=EmptyCamera)
    t, out = _run_all_in_thread(ctl, trap_timeout_s=60.0)
    assert _wait(lambda: ctl.state == RigState.TRAPPING and ctl.stats()["frames_read"] > 5)
    ctl.stop()
    assert ctl.state == RigState.IDLE
    t.join(10)
    assert not t.is_alive() and out == [None]  # no "no cell was trapped" error: the operator stopped
    assert ctl.rig.trap.enabled is False and not ctl.rig.camera.is_acquiring


def test_stop_during_run_all_reconstructing_finishes_the_run(tmp_path: Path) -> None:
    pipe = FakePipeline(deg_per_frame=0.5)  # 360 deg would take 720 frames
    ctl = _controller(tmp_path, pipe)
    t, out = _run_all_in_thread(ctl, trap_timeout_s=10.0, timeout_s=60.0)
    assert _wait(lambda: ctl.state == RigState.RECONSTRUCTING and pipe.n > 400)
    ctl.stop()
    t.join(20)
    assert not t.is_alive() and ctl.state == RigState.IDLE
    result = out[0]
    assert result is ctl.last_result and result.volume_path is not None
    assert pipe.n < 720  # it stopped before the coverage target


def test_pause_and_rate_act_during_run_all(tmp_path: Path) -> None:
    pipe = FakePipeline(deg_per_frame=0.01)
    ctl = _controller(tmp_path, pipe)
    t, out = _run_all_in_thread(ctl, trap_timeout_s=10.0, timeout_s=60.0)
    assert _wait(lambda: ctl.state == RigState.RECONSTRUCTING and pipe.n > 5)
    ctl.pause()  # would raise if it waited for run_all to end (IDLE)
    assert ctl.is_paused
    ctl.resume()
    ctl.set_rotation(90.0, -1)
    assert ctl._rotation.rate_deg_s == 90.0 and ctl._rotation.direction == -1
    ctl.cancel()
    t.join(20)
    assert not t.is_alive() and ctl.state == RigState.IDLE


def test_cancel_during_finishing_keeps_the_recording_and_returns_at_once(tmp_path: Path) -> None:
    pipe = SlowFinalPipeline()
    ctl = _controller(tmp_path, pipe)
    finished: list = []
    ctl.events.finished.connect(finished.append)
    ctl.run_all(trap_timeout_s=10.0, wait=False)
    assert _wait(lambda: pipe.n > 200)
    ctl.stop()
    assert pipe.entered.wait(20)
    assert ctl.state == RigState.FINISHING
    progress = ctl.finishing_progress()
    assert progress["stage"] == 2 and progress["stages"][1] == "final angles and volume"
    assert "final angles: slow angle step" in progress["steps"]
    ctl.cancel()
    assert ctl.state == RigState.IDLE  # at once, not when the refinement ends
    assert finished and finished[0].error == "cancelled"
    frames, _ = open_recording(finished[0].recording.path)
    assert len(frames) >= pipe.n
    report = json.loads(finished[0].report_path.read_text())
    assert report["error"] == "cancelled during finishing"
    # the abandoned refinement ends later and changes nothing
    pipe.release.set()
    time.sleep(0.3)
    assert not pipe.returned.is_set()  # its next step raised: the work was dropped
    assert ctl.state == RigState.IDLE and len(finished) == 1
    assert json.loads(finished[0].report_path.read_text())["error"] == "cancelled during finishing"
    assert not (finished[0].run_dir / "volume.tif").exists()


def test_shutdown_during_finishing_returns_without_waiting_for_the_refinement(tmp_path: Path) -> None:
    pipe = SlowFinalPipeline()
    ctl = _controller(tmp_path, pipe)
    ctl.run_all(trap_timeout_s=10.0, wait=False)
    assert _wait(lambda: pipe.n > 200)
    ctl.stop()
    assert pipe.entered.wait(20)
    done = threading.Event()
    threading.Thread(target=lambda: (ctl.shutdown(), done.set()), daemon=True).start()
    # bounded by the 30 s the fake refinement would take: shutdown must not wait for it
    assert _wait(done.is_set, timeout=20.0) and not pipe.returned.is_set()
    assert ctl.state == RigState.IDLE and not ctl.rig.camera.is_connected
    pipe.release.set()


class _LaggingCamera(FakeCamera):
    """A busy machine: every frame takes 30 ms of wall time, twice its 10 ms simulated period."""

    def read_frame(self, timeout_s: float = 1.0) -> Frame:
        time.sleep(0.03)
        return super().read_frame(timeout_s)


def test_simulated_rotation_follows_the_world_clock_not_the_wall_clock(tmp_path: Path) -> None:
    pipe = FakePipeline(deg_per_frame=0.01)
    ctl = _controller(tmp_path, pipe, camera=_LaggingCamera, realtime=True)
    assert not ctl.lockstep  # the GUI's realtime world: the ring drops, the clock still is the world's
    ctl.config.rotation.rate_deg_s = 30.0
    ctl.trap()
    ctl.rotate()
    assert _wait(lambda: ctl.stats()["recorded_frames"] > 40)
    ctl.stop()
    _frames, meta = open_recording(next(tmp_path.glob("run-*/recording.ome.tif")))
    sim_t = np.array([m["sim_time_s"] for m in meta])
    angle = np.array([m["slm_angle_deg"] for m in meta])
    rate = np.median(np.diff(angle) / np.diff(sim_t))
    # wall-clock turning would give 3x: 30 ms of wall time per 10 ms of simulated time
    assert rate == pytest.approx(30.0, rel=0.02)
