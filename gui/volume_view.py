"""Embedded napari 3D view of the growing volume plus three orthogonal slices.

napari is embedded through its public API (``QtViewer(ViewerModel())``). A volume repaint
costs ~200 ms on a software GL, so refreshes are coalesced: ``volume_updated`` only marks the
view dirty and a timer (1-5 Hz) uploads the newest snapshot if its version changed.
Contrast limits are set explicitly on every upload (napari would otherwise keep the range
of the first, nearly empty volume).

Two costs are kept off the rest of the window:

* the timer's uploads are prepared (downsampled preview, display range, slices) on a worker
  thread; the GUI thread only hands the result to napari and the slice images;
* the napari viewer is its own native window. A GL widget inside a top-level makes Qt
  compose the *whole* top-level with OpenGL on every repaint; on a software GL that costs
  tens of ms per live-view frame. As a native child only its own area is composed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QSlider, QSplitter, QVBoxLayout, QWidget

from mcf_rotator.gui.plots import coverage_of
from mcf_rotator.gui.scalebars import MicronScaleBar

#: what the volume panel says before the first volume exists
VOLUME_HINT = ("No volume yet: Trap, Rotate, then Reconstruct (or Rig > Run all). "
               "The live volume grows here while the cell turns; the final one replaces it at the end.")


def preview(volume: np.ndarray, max_side: int) -> np.ndarray:
    """Block-mean downsampling so no axis exceeds ``max_side`` (cheap to upload and ray-cast)."""
    f = int(np.ceil(max(volume.shape) / max_side)) if max_side > 0 else 1
    if f <= 1:
        return volume
    h, d, w = (n // f * f for n in volume.shape)
    v = volume[:h, :d, :w]
    return v.reshape(h // f, f, d // f, f, w // f, f).mean(axis=(1, 3, 5), dtype=np.float32)


def contrast_for(volume: np.ndarray) -> tuple[float, float]:
    """(low, high) display range: 0 .. 99.9th percentile of a subsample (robust to streaks).

    The low end is 0, not a percentile: attenuation is never negative, so FBP's negative
    ringing is clipped to black instead of lifting the background to grey.
    """
    sub = volume[::2, ::2, ::2] if volume.size > 64**3 else volume
    finite = sub[np.isfinite(sub)]
    if finite.size == 0:
        return (0.0, 1.0)
    hi = float(np.percentile(finite, 99.9))
    return (0.0, hi if hi > 0.0 else 1.0)


@dataclass(frozen=True)
class PreparedVolume:
    """What one upload shows, computed without Qt (so it can be made on a worker thread)."""

    snapshot: Any
    shape: tuple[int, int, int]  # full-resolution (H, D, W)
    shown: np.ndarray  # what napari ray-casts (preview or full resolution)
    scale: tuple[float, float, float]  # napari scale so the preview spans the full volume
    contrast: tuple[float, float]
    slices: tuple[np.ndarray, np.ndarray, np.ndarray]  # full-resolution central slices


def prepare_volume(snap: Any, max_side: int) -> PreparedVolume:
    """Preview, display range and central slices of a snapshot (``max_side`` <= 0: full size)."""
    vol = np.asarray(snap.volume, dtype=np.float32)
    contrast = contrast_for(vol)
    shown = preview(vol, max_side) if max_side > 0 else vol
    scale = tuple(a / b for a, b in zip(vol.shape, shown.shape))
    h, d, w = vol.shape
    slices = tuple(np.ascontiguousarray(s) for s in (vol[h // 2], vol[:, d // 2, :], vol[:, :, w // 2]))
    return PreparedVolume(snap, vol.shape, shown, scale, contrast, slices)  # type: ignore[arg-type]


class _Delivery(QObject):
    """Carries a prepared volume from the worker thread to the GUI thread (queued)."""

    ready = Signal(object)


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
        self.scale_bars: list[MicronScaleBar] = []
        for _ in self.TITLES:
            vb = self.canvas.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
            item = pg.ImageItem(axisOrder="row-major")
            vb.addItem(item)
            self.items.append(item)
            self.views.append(vb)
            self.scale_bars.append(MicronScaleBar(vb))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self._shape: tuple[Any, ...] | None = None

    def set_slices(self, slices: tuple[np.ndarray, ...], levels: tuple[float, float],
                   voxel_um: float | None = None) -> None:
        """Show the three (already extracted) central slices with fixed levels (and um bars)."""
        for item, sl, bar in zip(self.items, slices, self.scale_bars):
            item.setImage(np.ascontiguousarray(sl), levels=levels, autoLevels=False)
            if voxel_um:
                bar.set_pixel(voxel_um, int(sl.shape[1]))
        shape = tuple(sl.shape for sl in slices)
        if self._shape != shape:
            self._shape = shape
            for vb in self.views:
                vb.autoRange(padding=0)


def volume_title(snap: Any, final: bool, coverage_deg: float) -> str:
    """Plain title of a volume: what it is, from how many views, over how much rotation.

    ``coverage_deg`` is the run's one coverage figure (as in the angle plot's bar and text);
    the final volume's is the span of its refined angles.
    """
    n = int(getattr(snap, "n_projections", 0) or 0)
    if final:
        return f"final volume: {n} views, {coverage_deg:.0f} deg (refined angles)"
    return f"live volume: {n} views, {coverage_deg:.0f} deg"


class VolumeView(QWidget):
    """napari 3D MIP of the newest volume snapshot + orthogonal slices, refreshed <= refresh_hz."""

    #: live 3D preview resolution (a 128^3 volume is block-averaged by 3 to 42^3): on a software
    #: GL the MIP repaint blocks the GUI thread ~230 ms at 64^3 and ~130 ms at 42^3 (2 busy
    #: cores); the slices and the final (finished) volume are shown at full resolution
    PREVIEW_MAX_SIDE = 48

    def __init__(self, controller: Any, parent: QWidget | None = None, refresh_hz: float = 1.0) -> None:
        super().__init__(parent)
        from napari.components import ViewerModel
        from napari.qt import QtViewer

        self.controller = controller
        self.model = ViewerModel(title="volume", ndisplay=3)
        self.qt_viewer = QtViewer(self.model, show_welcome_screen=False)
        # own native window: only the viewer's area is GL-composed when it repaints, not the
        # whole main window at every live-view frame (see the module docstring)
        self.qt_viewer.setAttribute(Qt.WidgetAttribute.WA_NativeWindow)
        #: the volume layer once a snapshot was shown (None before)
        self.layer = None
        self._make_layer()
        self.slices = OrthoSlices(self)
        self.info = QLabel(VOLUME_HINT, self)
        self.info.setObjectName("volumeInfo")
        self.info.setWordWrap(True)
        self.voxel_um: float | None = None
        self.title = ""
        self._shown_shape: tuple[int, int, int] = (0, 0, 0)
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
        # contrast: the display maximum as a share of the automatic one (99.9th percentile)
        row = QHBoxLayout()
        self.contrast_label = QLabel("display maximum 100 % of auto", self)
        self.contrast_slider = QSlider(Qt.Orientation.Horizontal, self)
        self.contrast_slider.setObjectName("contrastSlider")
        self.contrast_slider.setRange(5, 200)
        self.contrast_slider.setValue(100)
        self.contrast_slider.setToolTip("Lower it to see faint structure, raise it to tame bright streaks; "
                                        "the colour bar in the 3D view shows the limits.")
        self.contrast_slider.valueChanged.connect(self._on_contrast_changed)
        row.addWidget(self.contrast_label)
        row.addWidget(self.contrast_slider, 1)
        lay.addLayout(row)
        self._auto_contrast: tuple[float, float] = (0.0, 1.0)
        self._slices_shown: tuple[np.ndarray, ...] | None = None
        lay.addWidget(split, 1)
        self.shown_version: int | None = None
        self.snapshot: Any = None
        self.contrast: tuple[float, float] = (0.0, 1.0)
        self.refresh_count = 0
        #: (start, end) perf_counter times of each napari upload, for the stall benchmark
        self.refresh_intervals: list[tuple[float, float]] = []
        self._dirty = True
        self._preparing: int | None = None  # snapshot version being prepared on the worker
        self._generation = 0  # bumped by every synchronous upload: older async results are stale
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="volume-prepare")
        self._delivery = _Delivery()
        self._delivery.ready.connect(self._show_prepared)
        self.timer = QTimer(self)
        self.set_refresh_hz(refresh_hz)
        self.timer.timeout.connect(self.refresh_async)

    def set_refresh_hz(self, hz: float) -> None:
        self.timer.setInterval(int(1000 / min(5.0, max(0.2, hz))))

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def mark_dirty(self, version: int | None = None) -> None:
        """Called on ``volume_updated``: only remember it; the timer coalesces uploads."""
        self._dirty = True

    def _newest_snapshot(self) -> Any:
        try:
            return self.controller.volume_snapshot()
        except Exception:  # a controller without a volume yet (or mid-reset): nothing to show
            return None

    def refresh(self, force: bool = False, full_resolution: bool = False) -> bool:
        """Upload the newest snapshot now if its version changed. Returns True when it did."""
        snap = self._newest_snapshot()
        if snap is None or (not force and snap.version == self.shown_version):
            self._dirty = False
            return False
        self.show_snapshot(snap, full_resolution)
        self._dirty = False
        return True

    def refresh_async(self) -> bool:
        """Timer tick: prepare the newest snapshot on the worker; it is shown when ready.

        At most one preparation is in flight, so a slow worker skips versions instead of
        queueing them. Returns True when a preparation was started.
        """
        self.update_title()
        snap = self._newest_snapshot()
        if snap is None or snap.version == self.shown_version or self._preparing is not None:
            return False
        self._preparing = snap.version
        try:
            self._pool.submit(self._prepare, snap, self._generation)
        except RuntimeError:  # closing
            self._preparing = None
            return False
        return True

    def _prepare(self, snap: Any, generation: int) -> None:
        """Worker thread: compute the upload and hand it to the GUI thread."""
        try:
            prepared = prepare_volume(snap, self.PREVIEW_MAX_SIDE)
        except Exception:  # a bad snapshot must not kill the worker; the next tick retries
            prepared = None
        try:
            self._delivery.ready.emit((generation, prepared))
        except RuntimeError:  # view already deleted
            pass

    def _show_prepared(self, delivered: tuple[int, PreparedVolume | None]) -> None:
        generation, prepared = delivered
        self._preparing = None
        if prepared is None or generation != self._generation:
            return  # failed, or a synchronous upload (e.g. the final volume) came in between
        self._apply(prepared)
        self._dirty = False

    def _apply(self, prepared: PreparedVolume) -> None:
        """GUI thread: hand a prepared volume to napari and the slices (timed for the benchmark)."""
        t0 = time.perf_counter()
        voxel = self._voxel_um()
        scale = tuple(f * (voxel or 1.0) for f in prepared.scale)
        self._auto_contrast = prepared.contrast
        contrast = self._scaled_contrast()
        self._set_layer(prepared.shown, contrast, scale, "um" if voxel else "pixel")
        self.refresh_intervals.append((t0, time.perf_counter()))
        self.contrast = contrast
        self._slices_shown = prepared.slices
        self.slices.set_slices(prepared.slices, contrast, voxel)
        snap = prepared.snapshot
        self.snapshot = snap
        self.shown_version = snap.version
        self.refresh_count += 1
        self.voxel_um = voxel
        self._shown_shape = prepared.shape
        self.update_title()

    def update_title(self) -> None:
        """Title line from the run's current coverage (it can drop when the live angles are
        re-solved), so it never disagrees with the angle plot's bar and text for long."""
        snap = self.snapshot
        if snap is None:
            return
        self.title = volume_title(snap, self._is_final(snap), coverage_of(self.controller))
        h, d, w = self._shown_shape
        voxel = self.voxel_um
        size = f"{h} x {d} x {w} voxels" + (f" of {voxel:.2f} um" if voxel else "")
        text = f"{self.title} ({size}; row x depth x column)"
        if text != self.info.text():
            self.info.setText(text)

    def _scaled_contrast(self) -> tuple[float, float]:
        lo, hi = self._auto_contrast
        return (lo, lo + (hi - lo) * self.contrast_slider.value() / 100.0)

    def _on_contrast_changed(self, value: int) -> None:
        """Operator moved the contrast slider: re-level the 3D view and the slices now."""
        self.contrast_label.setText(f"display maximum {value} % of auto")
        if self.snapshot is None:
            return
        lo, hi = self.contrast = self._scaled_contrast()
        self._layer.contrast_limits_range = (min(lo, 0.0), max(hi, self._auto_contrast[1]))
        self._layer.contrast_limits = (lo, hi)
        if self._slices_shown is not None:
            self.slices.set_slices(self._slices_shown, (lo, hi), self.voxel_um)

    def _voxel_um(self) -> float | None:
        """Voxel size of the volume on show, from the controller (None when it cannot say)."""
        get = getattr(self.controller, "volume_voxel_um", None)
        if get is None:
            return None
        try:
            v = float(get())
        except Exception:
            return None
        return v if v > 0 else None

    def _is_final(self, snap: Any) -> bool:
        return getattr(self.controller, "final_volume_version", None) == getattr(snap, "version", -1)

    def _make_layer(self) -> None:
        """The one volume layer, made (empty) with the viewer: napari's first draw of a volume
        layer compiles its shaders, ~0.5 s on a software GL, which then happens at start-up
        instead of in the middle of a run. Every upload replaces its data in place."""
        self._layer = self.model.add_image(
            np.zeros((2, 2, 2), np.float32), name="volume", rendering="mip", colormap="gray",
            contrast_limits=(0.0, 1.0),
        )
        # what napari / Fiji users expect on a volume: a scale bar, axes, a colour bar
        self.model.scale_bar.visible = False  # shown with the first volume (in um)
        self.model.axes.visible = True
        self.model.axes.labels = True
        self.model.dims.axis_labels = ("row", "depth", "column")
        try:
            self._layer.colorbar.visible = True
        except AttributeError:  # a napari without layer colour bars
            pass

    def _set_layer(self, shown: np.ndarray, contrast: tuple[float, float], scale: tuple[float, ...],
                   units: str = "pixel") -> None:
        """Replace the layer's data, scale (um per shown voxel) and display range in place."""
        lo, hi = contrast
        layer = self._layer
        reshaped = layer.data.shape != shown.shape or not np.allclose(tuple(layer.scale), tuple(scale))
        layer.data = shown
        self.model.scale_bar.visible = True
        if reshaped:
            layer.scale = scale
            try:
                layer.units = (units,) * 3
            except Exception:  # older napari: the scale bar then shows plain units
                pass
        layer.contrast_limits_range = (min(lo, 0.0), max(hi, self._auto_contrast[1]))
        layer.contrast_limits = (lo, hi)
        if reshaped:
            self.model.reset_view()
        self.layer = layer

    def show_snapshot(self, snap: Any, full_resolution: bool = False) -> None:
        """Show ``snap`` now (synchronously, on the GUI thread); pending async uploads are dropped."""
        self._generation += 1
        self._apply(prepare_volume(snap, 0 if full_resolution else self.PREVIEW_MAX_SIDE))

    def screenshot(self) -> np.ndarray:
        """RGBA of the 3D canvas (as napari renders it)."""
        return np.asarray(self.qt_viewer.screenshot(flash=False))

    def close_viewer(self) -> None:
        """Release the worker, napari's GL canvas and model (no leaked widgets)."""
        self.timer.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
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
