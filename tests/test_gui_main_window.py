"""Main window against a small fake controller implementing the RigController contract.

The fake emits its events from a worker thread (like the real controller), so these tests
also check the thread bridge. Run under Xvfb (pytest-xvfb): napari needs GL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from mcf_rotator.controller import ControllerEvents, RigState

pytestmark = pytest.mark.gui


# the real state enum and event group: the fake differs from the controller only in behaviour
State = RigState
Events = ControllerEvents


@dataclass
class Frame:
    image: np.ndarray
    index: int
    timestamp: float
    metadata: dict = field(default_factory=dict)


@dataclass
class Result:
    index: int
    box: tuple
    contour: np.ndarray
    circle: tuple
    features: np.ndarray
    angle_deg: float
    ok: bool = True


@dataclass
class Snapshot:
    version: int
    volume: np.ndarray
    n_projections: int
    coverage_deg: float


class FakeConfig:
    name = "fake rig"
    is_simulated = True

    class camera:  # noqa: N801
        bit_depth = 8

    class rotation:  # noqa: N801
        rate_deg_s = 30.0
        direction = 1
        target_coverage_deg = 360.0

    class paths:  # noqa: N801
        output_dir = "."

    class optics:  # noqa: N801
        object_pixel_um = 0.1


class FakeController:
    """Frames at ~100 Hz from a thread; a volume grows while 'reconstructing'."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.config = FakeConfig()
        self.events = Events()
        self.state = State.IDLE
        self.fail_on = fail_on
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._result: Result | None = None
        self._snap: Snapshot | None = None
        self._t: list[float] = []
        self._a: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _set_state(self, new: State) -> None:
        old, self.state = self.state, new
        # emitted from a worker thread, like the real controller
        threading.Thread(target=self.events.state_changed.emit, args=(old, new)).start()

    def _cmd(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_on:
            raise RuntimeError(f"simulated {name} failure")

    def trap(self) -> None:
        self._cmd("trap")
        self._set_state(State.TRAPPING)

    def rotate(self) -> None:
        self._cmd("rotate")
        self._set_state(State.ROTATING)

    def reconstruct(self) -> None:
        self._cmd("reconstruct")
        self._set_state(State.RECONSTRUCTING)

    def run_all(self) -> None:
        self._cmd("run_all")

    def stop(self) -> None:
        self._cmd("stop")
        self._set_state(State.IDLE)

    def pause(self) -> None:
        self._cmd("pause")

    def resume(self) -> None:
        self._cmd("resume")

    def reset(self) -> None:
        self._cmd("reset")
        self._set_state(State.IDLE)

    def set_rotation(self, rate: float, direction: int) -> None:
        self.calls.append(f"set_rotation({rate:g},{direction})")

    def shutdown(self) -> None:
        self.calls.append("shutdown")
        self._stop.set()
        self._thread.join(2)

    def latest_frame(self) -> Frame | None:
        return self._frame

    def latest_result(self) -> Result | None:
        return self._result

    def volume_snapshot(self) -> Snapshot | None:
        return self._snap

    def angle_trace(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return np.array(self._t), np.array(self._a)

    def stats(self) -> dict[str, Any]:
        return {"fps": 100.0, "dropped": 3, "queue_depth": 1, "recorded": len(self._t), "coverage_deg": (self._a[-1] if self._a else 0.0)}

    def slm_image(self, max_side: int | None = None) -> np.ndarray:
        return self._slm

    def beam_image(self) -> np.ndarray:
        return self._beam

    _slm = (np.arange(1080 * 1920) % 256).astype(np.uint8).reshape(1080, 1920)
    _beam = np.random.default_rng(0).random((64, 64))

    def _run(self) -> None:
        yy, xx = np.mgrid[:240, :320]
        z, y, x = np.mgrid[-1:1:32j, -1:1:32j, -1:1:32j]
        ball = (x**2 + y**2 + z**2 < 0.4).astype(np.float32)
        i = 0
        version = 0
        t0 = time.perf_counter()
        while not self._stop.is_set():
            i += 1
            cx, cy = 160 + 10 * np.sin(i / 20), 120
            img = (200 - 120 * (((xx - cx) ** 2 + (yy - cy) ** 2) < 30**2)).astype(np.uint8)
            self._frame = Frame(img, i, time.perf_counter())
            if self.state in (State.ROTATING, State.RECONSTRUCTING):
                ang = 3.0 * len(self._a)
                with self._lock:
                    self._t.append(time.perf_counter() - t0)
                    self._a.append(ang)
                th = np.linspace(0, 2 * np.pi, 40)
                self._result = Result(
                    i, (cx - 35, cy - 35, cx + 35, cy + 35),
                    np.c_[cx + 30 * np.cos(th), cy + 30 * np.sin(th)], (cx, cy, 31.0),
                    np.array([[cx, cy], [cx + 5, cy + 5]]), ang,
                )
            if self.state == State.RECONSTRUCTING and i % 10 == 0:
                version += 1
                self._snap = Snapshot(version, ball * min(1.0, version / 5), version * 10, 3.0 * len(self._a))
                self.events.volume_updated.emit(version)
            if self.state == State.RECONSTRUCTING and i % 50 == 0:
                self.events.message.emit("WARNING", "fake pipeline warning")
            time.sleep(0.01)


@pytest.fixture
def settings_file(tmp_path, monkeypatch):
    path = tmp_path / "gui_settings.json"
    monkeypatch.setenv("MCF_ROTATOR_SETTINGS", str(path))
    return path


@pytest.fixture
def window_factory(qtbot, settings_file):
    from mcf_rotator.gui.main_window import MainWindow

    made = []

    def make(**kw):
        ctrl = FakeController(**kw)
        win = MainWindow(ctrl)
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        made.append((win, ctrl))
        return win, ctrl

    yield make
    for win, ctrl in made:
        win.close()
        ctrl.shutdown()


def _state(win) -> str:
    return win.state_label.text()


def test_trap_rotate_reconstruct_renders_everything(window_factory, qtbot):
    win, ctrl = window_factory()
    assert win.banner.isVisible()
    assert win.buttons["trap"].isEnabled() and not win.buttons["rotate"].isEnabled()
    qtbot.waitUntil(lambda: win.live_view.last_index is not None, timeout=5000)

    qtbot.mouseClick(win.buttons["trap"], pytest.importorskip("qtpy.QtCore").Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _state(win) == "TRAPPING", timeout=3000)
    assert not win.buttons["trap"].isEnabled() and win.buttons["rotate"].isEnabled()
    win.buttons["rotate"].click()
    qtbot.waitUntil(lambda: _state(win) == "ROTATING", timeout=3000)
    win.buttons["reconstruct"].click()
    qtbot.waitUntil(lambda: _state(win) == "RECONSTRUCTING", timeout=3000)
    assert ctrl.calls[:3] == ["trap", "rotate", "reconstruct"]

    # overlays follow the pipeline result
    qtbot.waitUntil(lambda: win.live_view.circle_item.isVisible(), timeout=3000)
    xs, _ys = win.live_view.box_item.getData()
    assert len(xs) == 5
    # volume reaches napari with explicit contrast and the slices
    qtbot.waitUntil(lambda: win.volume_view.shown_version is not None and win.volume_view.shown_version >= 3, timeout=10000)
    layer = win.volume_view.layer
    assert layer is not None and layer.data.shape == (32, 32, 32)
    assert layer.contrast_limits[1] > layer.contrast_limits[0]
    assert tuple(layer.contrast_limits) == pytest.approx(win.volume_view.contrast)
    assert win.volume_view.slices.items[0].image.shape == (32, 32)
    # plots, status bar, SLM/beam views
    qtbot.waitUntil(lambda: win.angle_plot.n_points > 5, timeout=3000)
    # drops are named by stage: the live preview may skip frames, the recording keeps them all
    qtbot.waitUntil(lambda: "live preview skipped 3 frames; recording kept all" in win.status_dropped.text(),
                    timeout=3000)
    assert "preview queue 1" in win.status_queue.text()
    qtbot.waitUntil(lambda: win.slm_view.has_image, timeout=3000)
    assert not win.beam_view.has_image  # hidden tab is not refreshed
    win.side_tabs.setCurrentWidget(win.beam_view)
    qtbot.waitUntil(lambda: win.beam_view.has_image, timeout=3000)
    assert win.slm_view.canvas.image_item.image.shape[1] <= 480  # downsampled for display
    qtbot.waitUntil(lambda: "fake pipeline warning" in win.log_panel.plain_text(), timeout=5000)
    assert win.live_view.meter.count > 5


def test_rotation_controls_call_controller(window_factory, qtbot):
    win, ctrl = window_factory()
    win.rate_spin.setValue(45.0)
    win.rate_spin.editingFinished.emit()
    win.direction_combo.setCurrentIndex(1)
    qtbot.waitUntil(lambda: len(ctrl.calls) >= 2, timeout=3000)
    assert "set_rotation(45,1)" in ctrl.calls
    assert "set_rotation(45,-1)" in ctrl.calls
    assert win.settings.rotation_direction == -1


def test_command_error_is_shown_not_raised(window_factory, qtbot):
    win, ctrl = window_factory(fail_on="trap")
    win.buttons["trap"].click()
    qtbot.waitUntil(lambda: win.error_count == 1, timeout=3000)
    assert "simulated trap failure" in win.statusBar().currentMessage()
    assert "simulated trap failure" in win.log_panel.plain_text()
    assert _state(win) == "IDLE"
    # an error event from a worker thread also lands in status + log
    threading.Thread(target=ctrl.events.error.emit, args=("camera unplugged",)).start()
    qtbot.waitUntil(lambda: "camera unplugged" in win.log_panel.plain_text(), timeout=3000)
    assert win.error_count == 2
    assert "camera unplugged" in win.statusBar().currentMessage()
    # the same error also sent as a message is not logged twice
    ctrl.events.message.emit("error", "camera unplugged")
    qtbot.wait(50)
    assert win.log_panel.plain_text().count("camera unplugged") == 1


def test_error_state_enables_reset(window_factory, qtbot):
    win, ctrl = window_factory()
    ctrl._set_state(State.ERROR)
    qtbot.waitUntil(lambda: _state(win) == "ERROR", timeout=3000)
    assert win.buttons["reset"].isEnabled() and not win.buttons["trap"].isEnabled()
    win.buttons["reset"].click()
    qtbot.waitUntil(lambda: _state(win) == "IDLE", timeout=3000)


def test_close_during_run_stops_and_shuts_down(window_factory, qtbot, settings_file):
    win, ctrl = window_factory()
    win.buttons["trap"].click()
    qtbot.waitUntil(lambda: _state(win) == "TRAPPING", timeout=3000)
    win.close()
    assert ctrl.calls[-2:] == ["stop", "shutdown"]
    assert not win.live_view.timer.isActive() and not win.volume_view.timer.isActive()
    assert settings_file.exists()  # settings persisted on close


def test_save_volume_and_angles(window_factory, qtbot, tmp_path):
    import tifffile

    win, ctrl = window_factory()
    assert not win.save_volume(tmp_path / "none.tif")  # nothing yet: error shown, no crash
    win.buttons["trap"].click()
    qtbot.waitUntil(lambda: _state(win) == "TRAPPING", timeout=3000)
    win.buttons["rotate"].click()
    qtbot.waitUntil(lambda: _state(win) == "ROTATING", timeout=3000)
    win.buttons["reconstruct"].click()
    qtbot.waitUntil(lambda: ctrl.volume_snapshot() is not None and len(ctrl._a) > 3, timeout=5000)
    assert win.save_volume(tmp_path / "v.tif")
    vol = tifffile.imread(tmp_path / "v.tif")
    assert vol.dtype == np.float32 and vol.shape == (32, 32, 32)
    assert win.save_angles(tmp_path / "a.csv")
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0] == "frame,angle_deg" and lines[1].startswith("0,")


def test_no_leaked_top_level_widgets(qtbot, settings_file):
    from qtpy.QtWidgets import QApplication

    from mcf_rotator.gui.main_window import MainWindow

    ctrl = FakeController()
    win = MainWindow(ctrl)
    win.show()
    qtbot.waitExposed(win)
    win.close()
    win.deleteLater()
    qtbot.wait(50)
    QApplication.processEvents()
    visible = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
    assert visible == []
    assert "shutdown" in ctrl.calls


def test_trapped_indicator_follows_controller_stats(window_factory, qtbot):
    win, ctrl = window_factory()
    ctrl.state = State.TRAPPING  # the indicator only means something while the camera runs
    win.refresh_status()
    assert not win.status_trapped.isVisibleTo(win)  # this controller does not report it
    flag = {"trapped": False}
    base = ctrl.stats
    ctrl.stats = lambda: {**base(), **flag}
    win.refresh_status()
    assert win.status_trapped.isVisibleTo(win) and win.status_trapped.text() == "no cell trapped"
    flag["trapped"] = True
    qtbot.waitUntil(lambda: win.status_trapped.text() == "cell trapped", timeout=3000)
    # at IDLE nothing stale stays: no "cell trapped", no rates
    ctrl.state = State.IDLE
    win.refresh_status()
    assert not win.status_trapped.isVisibleTo(win)
    assert win.status_fps.text() == "camera off" and win.status_dropped.text() == ""


def test_heap_is_frozen_during_a_run_and_thawed_after(window_factory, qtbot):
    import gc

    win, ctrl = window_factory()
    win.buttons["trap"].click()
    qtbot.waitUntil(lambda: _state(win) == "TRAPPING", timeout=3000)
    win.buttons["rotate"].click()
    qtbot.waitUntil(lambda: _state(win) == "ROTATING", timeout=3000)
    assert gc.get_freeze_count() > 0  # full gc passes skip the long-lived heap while acquiring
    win.buttons["reconstruct"].click()
    qtbot.waitUntil(lambda: _state(win) == "RECONSTRUCTING", timeout=3000)
    win.buttons["stop"].click()
    qtbot.waitUntil(lambda: _state(win) == "IDLE", timeout=3000)
    assert gc.get_freeze_count() == 0  # the run's objects (reference cycles) can be collected again
