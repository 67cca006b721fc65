"""Live view, volume view and angle plot on stub controllers: what they count and when they draw."""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@dataclass
class Frame:
    image: np.ndarray
    index: int


@dataclass
class Snapshot:
    version: int
    volume: np.ndarray
    n_projections: int = 10
    coverage_deg: float = 30.0


class StubController:
    """Hands out whatever the test put in (no threads)."""

    def __init__(self) -> None:
        self.frame: Frame | None = None
        self.snap: Snapshot | None = None
        self.trace: tuple[np.ndarray, np.ndarray] = (np.empty(0), np.empty(0))

    def latest_frame(self) -> Frame | None:
        return self.frame

    def latest_result(self) -> Any:
        return None

    def volume_snapshot(self) -> Snapshot | None:
        return self.snap

    def angle_trace(self) -> tuple[np.ndarray, np.ndarray]:
        return self.trace

    def stats(self) -> dict[str, Any]:
        return {}


def _ball(n: int, level: float) -> np.ndarray:
    z, y, x = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j, -1 : 1 : n * 1j]
    return (level * (x**2 + y**2 + z**2 < 0.4)).astype(np.float32)


def test_live_view_counts_frames_painted_not_frames_set(qtbot) -> None:
    from mcf_rotator.gui.live_view import LiveView

    ctrl = StubController()
    view = LiveView(ctrl)
    qtbot.addWidget(view)
    view.resize(320, 240)
    view.show()
    qtbot.waitExposed(view)
    rng = np.random.default_rng(0)
    for index in (1, 2):  # two frames handed over before the view could repaint
        ctrl.frame = Frame(rng.integers(0, 255, (60, 80), dtype=np.uint8), index)
        view.refresh()
    assert view.last_index == 2 and view.meter.count == 0
    qtbot.waitUntil(lambda: view.meter.count == 1, timeout=3000)
    view.canvas.image_item.update()  # repainting the same frame does not count again
    qtbot.wait(100)
    assert view.meter.count == 1
    # an 8-bit frame with the full 0..255 range is drawn without a colour table
    assert view.canvas.image_item.getLevels() is None


def test_volume_view_prepares_off_thread_and_drops_stale_results(qtbot) -> None:
    from mcf_rotator.gui.volume_view import VolumeView

    ctrl = StubController()
    view = VolumeView(ctrl)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitExposed(view)
    ctrl.snap = Snapshot(1, _ball(32, 2.0))
    assert view.refresh_async()
    assert not view.refresh_async()  # one preparation at a time
    qtbot.waitUntil(lambda: view.shown_version == 1, timeout=10000)
    assert view.layer is not None and tuple(view.layer.contrast_limits) == pytest.approx(view.contrast)
    assert view.slices.items[0].image.shape == (32, 32)
    assert len(view.refresh_intervals) == 1
    # a synchronous upload (the finished volume) wins over a preview still being prepared
    ctrl.snap = Snapshot(2, _ball(32, 3.0))
    assert view.refresh_async()
    view.show_snapshot(Snapshot(3, _ball(32, 4.0)), full_resolution=True)
    qtbot.waitUntil(lambda: view._preparing is None, timeout=10000)
    qtbot.wait(50)
    assert view.shown_version == 3
    view.close_viewer()


def test_angle_plot_axes_grow_in_steps(qtbot) -> None:
    from mcf_rotator.gui.plots import AnglePlot

    ctrl = StubController()
    plot = AnglePlot(ctrl)
    qtbot.addWidget(plot)
    ctrl.trace = (np.linspace(100.0, 104.0, 50), np.linspace(0.0, 120.0, 50))
    plot.refresh()
    (x0, x1), (y0, y1) = plot.plot.getViewBox().viewRange()
    assert x0 <= 0.0 and 10.0 <= x1 < 11.0 and y0 <= 0.0 and 180.0 <= y1 < 190.0
    ctrl.trace = (np.linspace(100.0, 125.0, 80), np.linspace(0.0, 200.0, 80))
    plot.refresh()
    (x0, x1), (y0, y1) = plot.plot.getViewBox().viewRange()
    assert 30.0 <= x1 < 31.0 and 270.0 <= y1 < 280.0
    assert plot.n_points == 80


def test_interpreter_is_tuned_for_the_gui_thread() -> None:
    from mcf_rotator.gui.app import _ensure_app
    from mcf_rotator.gui.responsiveness import GUI_SWITCH_INTERVAL_S, freeze_long_lived_heap

    _ensure_app()
    assert sys.getswitchinterval() <= GUI_SWITCH_INTERVAL_S
    before = gc.get_freeze_count()
    keep = [[] for _ in range(10)]  # new tracked objects: frozen by the call
    freeze_long_lived_heap()
    assert gc.get_freeze_count() >= before + len(keep)


class _UmController(StubController):
    """Says its voxel and pixel sizes, its coverage and which snapshot is the final one."""

    class config:  # noqa: N801
        class optics:  # noqa: N801
            object_pixel_um = 0.1

        class camera:  # noqa: N801
            bit_depth = 8

        class rotation:  # noqa: N801
            target_coverage_deg = 360.0

    final_volume_version: int | None = None

    def volume_voxel_um(self) -> float:
        return 0.25

    def stats(self) -> dict[str, Any]:
        return {"coverage_deg": 123.4}


def test_volume_view_titles_units_scale_bars_and_contrast(qtbot) -> None:
    from mcf_rotator.gui.volume_view import VolumeView

    ctrl = _UmController()
    view = VolumeView(ctrl)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitExposed(view)
    assert view.info.text().startswith("No volume yet")  # start-up hint, not a blank panel
    view.show_snapshot(Snapshot(7, _ball(32, 2.0), n_projections=32), full_resolution=True)
    # plain title with the run's one coverage figure, not an internal version counter
    assert view.title == "live volume: 32 views, 123 deg" and "v7" not in view.info.text()
    assert "0.25 um" in view.info.text()
    assert tuple(view.layer.scale) == pytest.approx((0.25, 0.25, 0.25))  # napari in um
    assert view.model.scale_bar.visible and view.model.axes.visible and view.layer.colorbar.visible
    bar = view.slices.scale_bars[0]
    assert bar.bar is not None and bar.bar.text.toPlainText().strip().endswith(" um")
    assert bar.length_um / 0.25 == pytest.approx(bar.bar.size)  # bar length in voxels
    # contrast slider: half the automatic display maximum on the 3D view and the slices
    auto_hi = view.contrast[1]
    view.contrast_slider.setValue(50)
    assert view.layer.contrast_limits[1] == pytest.approx(auto_hi / 2)
    assert view.slices.items[0].getLevels()[1] == pytest.approx(auto_hi / 2)
    ctrl.final_volume_version = 8
    view.show_snapshot(Snapshot(8, _ball(32, 2.0), n_projections=32), full_resolution=True)
    assert view.title.startswith("final volume: 32 views, 123 deg")
    view.close_viewer()


def test_live_view_hint_legend_and_um_scale_bar(qtbot) -> None:
    from mcf_rotator.gui.live_view import LiveView

    ctrl = _UmController()
    view = LiveView(ctrl)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitExposed(view)
    assert view.hint.isVisible() and "Trap" in view.hint.text()
    for words in ("green box", "magenta", "cyan dashed", "yellow"):
        assert words in view.legend.text()
    ctrl.frame = Frame(np.full((240, 320), 128, np.uint8), 1)
    view.refresh()
    assert not view.hint.isVisible()
    bar = view.scale_bar
    assert bar.length_um == 5.0 and bar.bar.size == pytest.approx(50.0)  # 320 px x 0.1 um: a 5 um bar
    assert bar.bar.text.toPlainText().strip() == "5 um"


def test_nice_scale_bar_lengths() -> None:
    from mcf_rotator.gui.scalebars import nice_length_um

    assert nice_length_um(32.0) == 5.0
    assert nice_length_um(100.0) == 20.0
    assert nice_length_um(2.0) == 0.5


def test_scale_bar_resizes_in_place(qtbot) -> None:
    import pyqtgraph as pg

    from mcf_rotator.gui.scalebars import MicronScaleBar

    w = pg.GraphicsLayoutWidget()
    qtbot.addWidget(w)
    vb = w.addViewBox()
    bar = MicronScaleBar(vb)
    bar.set_pixel(0.1, 320)
    first = bar.bar
    bar.set_pixel(0.5, 320)  # a final volume with another voxel size
    assert bar.bar is first and bar.length_um == 50.0 and bar.bar.size == pytest.approx(100.0)
    assert bar.bar.text.toPlainText().strip() == "50 um"


def test_volume_title_follows_the_run_coverage_between_uploads(qtbot) -> None:
    from mcf_rotator.gui.volume_view import VolumeView

    ctrl = _UmController()
    view = VolumeView(ctrl)
    qtbot.addWidget(view)
    view.show_snapshot(Snapshot(1, _ball(16, 1.0), n_projections=20), full_resolution=True)
    assert "123 deg" in view.title
    ctrl.stats = lambda: {"coverage_deg": 99.0}  # the live angles were re-solved: coverage dropped
    view.refresh_async()  # a timer tick without a new snapshot
    assert view.title == "live volume: 20 views, 99 deg"
    view.close_viewer()
