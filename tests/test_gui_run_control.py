"""The main window on the real controller (fake devices): Stop, Pause and Cancel act at once
during Run all and FINISHING, closing never hangs, every view shows the same coverage, runs go
to the configured output folder. Run under Xvfb (pytest-xvfb): napari needs GL."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcf_rotator.config import RigConfig
from mcf_rotator.controller import RigController, RigState
from mcf_rotator.rig import Rig

from test_core_support import (EmptyCamera, FakeCamera, FakePipeline, FakeRecon, FakeSequencer, FakeSLM,
                               FakeTrap, FakeWorld, SlowFinalPipeline)

pytestmark = pytest.mark.gui


class _RefiningPipeline(FakePipeline):
    """Final angles 10 % short of the live ones (the live tracker ran ahead of the cell)."""

    def finalize(self, progress: Any = None) -> FakeRecon:
        rec = super().finalize(progress)
        return FakeRecon(rec.volume, 0.9 * rec.angles_deg)


def _controller(tmp_path: Path, pipe: FakePipeline, camera: type[FakeCamera] = FakeCamera) -> RigController:
    world = FakeWorld()
    rig = Rig(camera=camera(world), slm=FakeSLM(), trap=FakeTrap(), world=world)
    cfg = RigConfig()
    cfg.rotation.target_coverage_deg = 360.0
    return RigController(cfg, rig=rig, pipeline_factory=lambda c: pipe, sequencer=FakeSequencer(),
                         output_dir=tmp_path / "default-output")


@pytest.fixture
def make_window(qtbot, tmp_path, monkeypatch):
    from mcf_rotator.gui.main_window import MainWindow
    from mcf_rotator.gui.user_settings import UserSettings

    monkeypatch.setenv("MCF_ROTATOR_SETTINGS", str(tmp_path / "gui_settings.json"))
    made: list = []

    def make(ctl: RigController, **settings: Any) -> MainWindow:
        win = MainWindow(ctl, settings=UserSettings(**settings), simulated=True)
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        made.append(win)
        return win

    yield make
    for win in made:
        win.close()


def _state(win) -> str:
    return win.controller.state.name


def test_stop_during_run_all_acts_at_once(make_window, qtbot, tmp_path):
    ctl = _controller(tmp_path, FakePipeline(), camera=EmptyCamera)
    win = make_window(ctl)
    win.run_all()
    qtbot.waitUntil(lambda: _state(win) == "TRAPPING" and win.buttons["stop"].isEnabled(), timeout=5000)
    qtbot.waitUntil(lambda: ctl.stats()["frames_read"] > 5, timeout=5000)
    win.buttons["stop"].click()
    # Run all is still waiting for a cell: Stop must not queue behind it
    qtbot.waitUntil(lambda: _state(win) == "IDLE", timeout=2000)
    qtbot.wait(300)
    assert win.error_count == 0, win.log_panel.plain_text()[-1000:]  # no "no cell was trapped"
    assert win.state_label.text() == "IDLE"


def test_pause_and_stop_during_run_all_reconstructing(make_window, qtbot, tmp_path):
    pipe = FakePipeline(deg_per_frame=0.05)
    ctl = _controller(tmp_path, pipe)
    win = make_window(ctl)
    win.run_all()
    qtbot.waitUntil(lambda: _state(win) == "RECONSTRUCTING" and win.pause_button.isEnabled(), timeout=10000)
    win.pause_button.click()
    qtbot.waitUntil(lambda: ctl.is_paused, timeout=2000)
    win.pause_button.click()
    qtbot.waitUntil(lambda: not ctl.is_paused, timeout=2000)
    win.rate_spin.setValue(75.0)
    win.rate_spin.editingFinished.emit()
    qtbot.waitUntil(lambda: ctl._rotation.rate_deg_s == 75.0, timeout=2000)
    win.buttons["stop"].click()
    qtbot.waitUntil(lambda: _state(win) != "RECONSTRUCTING", timeout=2000)  # Stop acted at once
    qtbot.waitUntil(lambda: _state(win) == "IDLE", timeout=30000)  # then the recording is closed
    assert "pause failed" not in win.log_panel.plain_text()


def test_finishing_shows_progress_and_cancel_keeps_the_recording(make_window, qtbot, tmp_path):
    pipe = SlowFinalPipeline(hold_s=60.0)
    ctl = _controller(tmp_path, pipe)
    win = make_window(ctl)
    win.run_all()
    qtbot.waitUntil(lambda: _state(win) == "RECONSTRUCTING" and pipe.n > 50, timeout=10000)
    win.buttons["stop"].click()
    qtbot.waitUntil(lambda: pipe.entered.is_set() and win.finishing_box.isVisible(), timeout=5000)
    assert not win.buttons["stop"].isEnabled()  # a Stop that does nothing is not offered
    qtbot.waitUntil(lambda: "slow angle step" in win.finishing_step.text(), timeout=3000)
    assert win.finishing_bar.value() == 2 and win.finishing_bar.maximum() == 4
    assert "final angles and volume" in win.finishing_step.text()
    win.cancel_finishing_button.click()
    # bounded by closing the recording, not by the refinement (blocked for 60 s)
    qtbot.waitUntil(lambda: _state(win) == "IDLE", timeout=10000)
    qtbot.waitUntil(lambda: not win.finishing_box.isVisible(), timeout=2000)
    assert not pipe.release.is_set()
    result = ctl.last_result
    assert result.error == "cancelled" and result.recording.path.exists()
    qtbot.waitUntil(lambda: "recording.ome.tif" in win.statusBar().currentMessage(), timeout=5000)
    assert f"saved report.json, recording.ome.tif ({result.recording.frames_written} frames)" \
        in win.log_panel.plain_text()
    pipe.release.set()


def test_close_during_finishing_returns_and_keeps_the_recording(make_window, qtbot, tmp_path):
    pipe = SlowFinalPipeline(hold_s=60.0)
    ctl = _controller(tmp_path, pipe)
    win = make_window(ctl)
    win.run_all()
    qtbot.waitUntil(lambda: _state(win) == "RECONSTRUCTING" and pipe.n > 50, timeout=10000)
    win.buttons["stop"].click()
    qtbot.waitUntil(lambda: pipe.entered.is_set() and _state(win) == "FINISHING", timeout=5000)
    closed = threading.Event()
    win.destroyed.connect(lambda *_: closed.set())
    win.close()  # synchronous: it must not wait for the 60 s refinement
    assert not win.isVisible()
    assert ctl.state == RigState.IDLE and not pipe.release.is_set()
    recording = next((tmp_path / "default-output").glob("run-*/recording.ome.tif"))
    assert recording.stat().st_size > 0
    pipe.release.set()


def test_coverage_agrees_everywhere_and_switches_to_the_refined_angles(make_window, qtbot, tmp_path):
    pipe = _RefiningPipeline(deg_per_frame=2.0)
    ctl = _controller(tmp_path, pipe)
    win = make_window(ctl)
    win.run_all()

    def agree() -> bool:
        cov = ctl.stats()["coverage_deg"]
        win.angle_plot.refresh()
        n = f"{cov:.0f} deg"
        return (n in win.angle_plot.coverage_label.text()
                and win.angle_plot.coverage_bar.format().startswith(f"coverage {cov:.0f} of")
                and (win.volume_view.snapshot is None or n in win.volume_view.title))

    qtbot.waitUntil(lambda: _state(win) == "IDLE" and ctl.last_result is not None, timeout=30000)
    final = float(np.ptp(ctl.last_result.reconstruction.angles_deg))
    qtbot.waitUntil(lambda: win.volume_view.title.startswith("final volume"), timeout=5000)
    assert agree(), (ctl.stats()["coverage_deg"], win.angle_plot.coverage_label.text(),
                     win.angle_plot.coverage_bar.format(), win.volume_view.title)
    assert ctl.stats()["coverage_deg"] == pytest.approx(final)
    assert f"{final:.0f} deg" in win.volume_view.title and "views" in win.volume_view.title
    assert f"coverage {final:.0f} of 360 deg" == win.angle_plot.coverage_bar.format()  # not clamped text
    assert win.angle_plot.final
    # the plot's x axis is the run's wall-clock time since the rotation started
    xs, _ = win.angle_plot.curve.getData()
    t, _a = ctl.angle_trace()
    assert xs[-1] == pytest.approx(t[-1] - ctl.trace_origin_s, rel=1e-6)
    assert xs[0] >= 0.0


def test_runs_go_to_the_configured_output_folder_and_files_are_named(make_window, qtbot, tmp_path):
    out = tmp_path / "my-runs"
    ctl = _controller(tmp_path, FakePipeline(deg_per_frame=2.0))
    win = make_window(ctl, output_dir=str(out))
    assert Path(ctl.output_dir) == out
    assert f"runs are saved under {out.resolve()}" in win.log_panel.plain_text()
    win.run_all()
    qtbot.waitUntil(lambda: _state(win) == "IDLE" and ctl.last_result is not None, timeout=30000)
    run_dir = ctl.last_result.run_dir
    assert run_dir.parent == out and (run_dir / "volume.tif").is_file()
    assert not (tmp_path / "default-output").exists()
    qtbot.waitUntil(lambda: "volume.tif" in win.statusBar().currentMessage(), timeout=3000)
    text = win.log_panel.plain_text()
    assert f"saved volume.tif, angles.csv, report.json, recording.ome.tif" in text and str(run_dir) in text
    # IDLE again: no stale rate, queue or "cell trapped" from the run
    qtbot.waitUntil(lambda: win.status_fps.text() == "camera off", timeout=2000)
    assert not win.status_trapped.isVisibleTo(win) and win.status_queue.text() == ""


def test_closed_loop_switch_and_the_plot_of_command_cell_and_lag(make_window, qtbot, tmp_path):
    """The loop switch reaches the controller (and the next run), the cell's step per frame is
    offered only in closed loop, and the plot shows the commanded angle and the lag beside the
    cell's angle, with the loop's state in words."""
    pipe = FakePipeline(deg_per_frame=0.05)
    ctl = _controller(tmp_path, pipe)
    win = make_window(ctl)
    assert not win.step_spin.isEnabled()
    win.loop_combo.setCurrentIndex(1)  # closed loop
    qtbot.waitUntil(lambda: ctl.config.rotation.loop == "closed", timeout=2000)
    assert win.step_spin.isEnabled() and win.settings.rotation_loop == "closed"
    win.step_spin.setValue(0.4)
    win.step_spin.editingFinished.emit()
    qtbot.waitUntil(lambda: ctl.config.rotation.step_per_frame_deg == 0.4, timeout=2000)
    win.run_all()
    qtbot.waitUntil(lambda: _state(win) == "RECONSTRUCTING" and ctl.loop_status() is not None, timeout=10000)
    def lag_points() -> int:
        _x, lag = win.angle_plot.lag_curve.getData()
        return 0 if lag is None else int(np.isfinite(lag).sum())

    qtbot.waitUntil(lambda: lag_points() > 5, timeout=10000)  # the plot refreshes at 5 Hz
    _t, cmd = win.angle_plot.command_curve.getData()
    assert cmd is not None and np.isfinite(cmd).sum() > 5
    assert win.angle_plot.loop_label.text().startswith("closed loop")
    win.buttons["stop"].click()
    qtbot.waitUntil(lambda: _state(win) == "IDLE", timeout=30000)
    win.loop_combo.setCurrentIndex(0)
    qtbot.waitUntil(lambda: ctl.config.rotation.loop == "open", timeout=2000)
    assert not win.step_spin.isEnabled()
