"""Embedded napari 3D view of the growing volume plus three orthogonal slices.

napari is embedded through its public API (``QtViewer(ViewerModel())``). A volume repaint
costs ~200 ms on a software GL, so refreshes are coalesced: ``volume_updated`` only marks the
view dirty and a timer (1-5 Hz) uploads the newest snapshot if its version changed.
Contrast limits are set explicitly on every upload (napari would otherwise keep the range
of the first, nearly empty volume).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget


def preview(volume: np.ndarray, max_side: int) -> np.ndarray:
    """Block-mean downsampling so no axis exceeds ``max_side`` (cheap to upload and ray-cast)."""
    f = int(np.ceil(max(volume.shape) / max_side)) if max_side > 0 else 1
    if f <= 1:
        return volume
    h, d, w = (n // f * f for n in volume.shape)
    v = volume[:h, :d, :w]
    return v.reshape(h // f, f, d // f, f, w // f, f).mean(axis=(1, 3, 5), dtype=np.float32)


def contrast_for(volume: np.ndarray) -> tuple[float, float]:
    """(low, high) display range: 0 .. 99.9th percentile of a subsample (robust to streaks)."""
    sub = volume[::2, ::2, ::2] if volume.size > 64**3 else volume
    finite = sub[np.isfinite(sub)]
    if finite.size == 0:
        return (0.0, 1.0)
    hi = float(np.percentile(finite, 99.9))
    lo = min(0.0, float(np.percentile(finite, 0.5)))
    lo = max(lo, 0.0)
    if hi <= lo:
        hi = lo + 1.0
    return (lo, hi)


class OrthoSlices(QWidget):
    """Central slices through the (H, D, W) volume: transverse (D, W), front (H, W), side (H, D)."""

    TITLES = ("transverse (depth x column)", "front (row x column)", "side (row x depth)")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = pg.GraphicsLayoutWidget(self)
        self.items: list[pg.ImageItem] = []
        self.views: list[pg.ViewBox] = []
        for title in self.TITLES:
            self.canvas.addLabel(title, size="8pt")
        self.canvas.nextRow()
        for _ in self.TITLES:
            vb = self.canvas.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
            item = pg.ImageItem(axisOrder="row-major")
            vb.addItem(item)
            self.items.append(item)
            self.views.append(vb)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self._shape: tuple[int, ...] | None = None

    def set_volume(self, volume: np.ndarray, levels: tuple[float, float]) -> None:
        h, d, w = volume.shape
        slices = (volume[h // 2], volume[:, d // 2, :], volume[:, :, w // 2])
        for item, sl in zip(self.items, slices):
            item.setImage(np.ascontiguousarray(sl), levels=levels, autoLevels=False)
        if self._shape != volume.shape:
            self._shape = volume.shape
            for vb in self.views:
                vb.autoRange(padding=0)


class VolumeView(QWidget):
    """napari 3D MIP of the newest volume snapshot + orthogonal slices, refreshed <= refresh_hz."""

    #: live 3D preview resolution: a 64^3 MIP repaints ~8x cheaper than 128^3 on software GL;
    #: the slices and the final (finished) volume are shown at full resolution
    PREVIEW_MAX_SIDE = 64

    def __init__(self, controller: Any, parent: QWidget | None = None, refresh_hz: float = 1.0) -> None:
        super().__init__(parent)
        from napari.components import ViewerModel
        from napari.qt import QtViewer

        self.controller = controller
        self.model = ViewerModel(title="volume", ndisplay=3)
        self.qt_viewer = QtViewer(self.model, show_welcome_screen=False)
        self.layer = None
        self.slices = OrthoSlices(self)
        self.info = QLabel("no volume yet", self)
        self.info.setObjectName("volumeInfo")
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(self.qt_viewer)
        split.addWidget(self.slices)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([460, 260])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(self.info, 1)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        self.shown_version: int | None = None
        self.snapshot: Any = None
        self.contrast: tuple[float, float] = (0.0, 1.0)
        self.refresh_count = 0
        #: (start, end) perf_counter times of each upload, for the stall benchmark
        self.refresh_intervals: list[tuple[float, float]] = []
        self._dirty = True
        self.timer = QTimer(self)
        self.set_refresh_hz(refresh_hz)
        self.timer.timeout.connect(self.refresh)

    def set_refresh_hz(self, hz: float) -> None:
        self.timer.setInterval(int(1000 / min(5.0, max(0.2, hz))))

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def mark_dirty(self, version: int | None = None) -> None:
        """Called on ``volume_updated``: only remember it; the timer coalesces uploads."""
        self._dirty = True

    def refresh(self, force: bool = False, full_resolution: bool = False) -> bool:
        """Upload the newest snapshot if its version changed. Returns True when it did."""
        try:
            snap = self.controller.volume_snapshot()
        except Exception:
            return False
        if snap is None or (not force and snap.version == self.shown_version):
            self._dirty = False
            return False
        t0 = time.perf_counter()
        self.show_snapshot(snap, full_resolution=full_resolution)
        self.refresh_intervals.append((t0, time.perf_counter()))
        self._dirty = False
        return True

    def show_snapshot(self, snap: Any, full_resolution: bool = False) -> None:
        vol = np.asarray(snap.volume, dtype=np.float32)
        lo, hi = contrast_for(vol)
        self.contrast = (lo, hi)
        shown = vol if full_resolution else preview(vol, self.PREVIEW_MAX_SIDE)
        scale = tuple(a / b for a, b in zip(vol.shape, shown.shape))
        if self.layer is None or self.layer.data.shape != shown.shape:
            if self.layer is not None:
                self.model.layers.remove(self.layer)
            self.layer = self.model.add_image(
                shown, name="volume", rendering="mip", colormap="gray", contrast_limits=(lo, hi), scale=scale
            )
            self.model.reset_view()
        else:
            self.layer.data = shown
            self.layer.contrast_limits_range = (min(lo, 0.0), hi)
            self.layer.contrast_limits = (lo, hi)
        self.slices.set_volume(vol, (lo, hi))
        self.snapshot = snap
        self.shown_version = snap.version
        self.refresh_count += 1
        self.info.setText(
            f"volume v{snap.version}: {vol.shape[0]}x{vol.shape[1]}x{vol.shape[2]} (row x depth x column), "
            f"{snap.n_projections} projections, {snap.coverage_deg:.0f} deg"
        )

    def screenshot(self) -> np.ndarray:
        """RGBA of the 3D canvas (as napari renders it)."""
        return np.asarray(self.qt_viewer.screenshot(flash=False))

    def close_viewer(self) -> None:
        """Release napari's GL canvas and model (no leaked widgets)."""
        self.timer.stop()
        try:
            self.qt_viewer.close()
        except Exception:
            pass
        try:
            self.model.layers.clear()
        except Exception:
            pass

    def closeEvent(self, event) -> None:  # noqa: N802
        self.close_viewer()
        super().closeEvent(event)
