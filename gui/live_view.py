"""Live camera view with pipeline overlays, plus small image views for the SLM and the beam.

Data is pulled: a QTimer asks the controller for its newest frame and result and draws only
when the frame index changed, so a slow GUI never slows the camera (frames are simply
skipped). Levels are fixed (from the camera bit depth) so no per-frame histogram is computed.
The view's rate counts frames actually painted (a frame replaced before the next repaint is
not counted), which is what the operator sees.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import QObject, QRectF, Qt, QTimer, Signal
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from mcf_rotator.gui.scalebars import MicronScaleBar

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)


class FpsMeter:
    """Displayed-frames-per-second over a sliding window."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self.count = 0

    def tick(self, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        self._times.append(now)
        self.count += 1
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    @property
    def fps(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class _PaintNotifyingImageItem(pg.ImageItem):
    """ImageItem that calls ``on_paint`` after each paint (to count frames really shown)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_paint: Callable[[], None] | None = None

    def paint(self, p: Any, *args: Any) -> None:
        super().paint(p, *args)
        if self.on_paint is not None:
            self.on_paint()


class _ImageCanvas(pg.GraphicsLayoutWidget):
    """A locked-aspect ViewBox with one ImageItem (y down, like the camera)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewbox = self.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image_item = _PaintNotifyingImageItem(axisOrder="row-major")
        self.viewbox.addItem(self.image_item)
        self._shape: tuple[int, ...] | None = None

    def show_image(self, image: np.ndarray, levels: tuple[float, float] | None) -> None:
        """Show ``image`` with fixed ``levels`` (None: its own min..max)."""
        if levels is None:
            lo, hi = float(np.min(image)), float(np.max(image))
            levels = (lo, hi if hi > lo else lo + 1.0)
        shown: tuple[float, float] | None = levels
        if image.dtype == np.uint8 and tuple(levels) == (0.0, 255.0):
            # identity levels: without them pyqtgraph hands the bytes to Qt as Grayscale8
            # instead of building a 256-entry colour table and an indexed image at every paint
            shown = None
        self.image_item.setImage(image, levels=shown, autoLevels=False, autoDownsample=False)
        if self._shape != image.shape:
            self._shape = image.shape
            self.viewbox.autoRange(padding=0)


#: what the live view's overlays mean (the colours of the items below)
OVERLAY_LEGEND_HTML = (
    "<span style='color:#00b000'>&#9632; green box</span>: cell found &nbsp; "
    "<span style='color:#d000d0'>&#9632; magenta</span>: its outline &nbsp; "
    "<span style='color:#00a0e0'>&#9632; cyan dashed</span>: enclosing circle (centre) &nbsp; "
    "<span style='color:#c0a000'>&#9632; yellow</span>: features tracked for the angle"
)

STARTUP_HINT = "Camera off.\nPress Trap (Ctrl+1) to start the camera and the trap,\nor Rig > Run all."


def _object_pixel_um(controller: Any) -> float | None:
    """Size of one camera pixel in the sample (um), from the rig config, if it says."""
    try:
        return float(controller.config.optics.object_pixel_um)
    except (AttributeError, TypeError, ValueError):
        return None


class LiveView(QWidget):
    """Camera image at 30-60 Hz with detection box, contour, enclosing circle and features."""

    def __init__(
        self,
        controller: Any,
        parent: QWidget | None = None,
        fps: float = 40.0,
        levels: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(parent)
        self.controller = controller
        self.canvas = _ImageCanvas(self)
        self.legend = QLabel(OVERLAY_LEGEND_HTML, self)
        self.legend.setObjectName("overlayLegend")
        self.legend.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas, 1)
        lay.addWidget(self.legend)
        vb = self.canvas.viewbox
        # start-up hint over the (black) canvas until the first frame arrives
        self.hint = QLabel(STARTUP_HINT, self.canvas)
        self.hint.setObjectName("liveHint")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setStyleSheet("color:#e0e0e0; background:transparent; font-size:13pt;")
        self.hint.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.scale_bar = MicronScaleBar(vb)
        self.pixel_um = _object_pixel_um(controller)
        self.box_item = pg.PlotCurveItem(pen=pg.mkPen("#00ff00", width=2))
        self.contour_item = pg.PlotCurveItem(pen=pg.mkPen("#ff00ff", width=1.5))
        self.circle_item = pg.QtWidgets.QGraphicsEllipseItem()
        self.circle_item.setPen(pg.mkPen("#00c0ff", width=1.5, style=Qt.PenStyle.DashLine))
        self.features_item = pg.ScatterPlotItem(size=6, pen=pg.mkPen("#ffff00"), brush=None, symbol="o")
        for item in (self.box_item, self.contour_item, self.circle_item, self.features_item):
            item.setZValue(10)
            vb.addItem(item)
        self.levels = levels if levels is not None else self._default_levels()
        #: frames painted (not merely handed to the image item) per second
        self.meter = FpsMeter()
        self.last_index: int | None = None
        self._painted_index: int | None = None
        self.canvas.image_item.on_paint = self._on_image_painted
        self.last_result_index: int | None = None
        self.on_frame: Callable[[Any], None] | None = None
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self.refresh)
        self.set_fps(fps)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self.hint.setGeometry(self.canvas.rect())

    def _default_levels(self) -> tuple[float, float]:
        bits = 8
        try:
            bits = int(self.controller.config.camera.bit_depth)
        except Exception:
            pass
        return (0.0, float(2**bits - 1))

    def set_fps(self, fps: float) -> None:
        self.timer.setInterval(max(1, int(round(1000.0 / max(1.0, fps)))))

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    @property
    def fps(self) -> float:
        return self.meter.fps

    def refresh(self) -> None:
        """Pull the newest frame/result; draw only what changed."""
        try:
            frame = self.controller.latest_frame()
        except Exception:
            frame = None
        if frame is not None and frame.index != self.last_index:
            image = frame.image
            # integer frames: fixed levels from the bit depth; float frames scale themselves
            self.canvas.show_image(image, self.levels if image.dtype.kind in "ui" else None)
            if self.last_index is None:
                self.hint.setVisible(False)
            if self.pixel_um:
                self.scale_bar.set_pixel(self.pixel_um, int(image.shape[1]))
            self.last_index = frame.index
            if self.on_frame is not None:
                self.on_frame(frame)
        try:
            result = self.controller.latest_result()
        except Exception:
            result = None
        idx = getattr(result, "index", None) if result is not None else None
        if result is None:
            if self.last_result_index is not None:
                self.clear_overlays()
        elif idx != self.last_result_index:
            self.draw_overlays(result)
        self.last_result_index = idx

    def _on_image_painted(self) -> None:
        """Count a frame once, when it first reaches the screen."""
        if self.last_index is not None and self.last_index != self._painted_index:
            self._painted_index = self.last_index
            self.meter.tick()

    def clear_overlays(self) -> None:
        self.box_item.setData([], [])
        self.contour_item.setData([], [])
        self.circle_item.setVisible(False)
        self.features_item.setData([], [])

    def draw_overlays(self, result: Any) -> None:
        """Draw a FrameResult (full-frame pixel coordinates, xy)."""
        box = getattr(result, "box", None)
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            self.box_item.setData([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])
        else:
            self.box_item.setData([], [])
        contour = getattr(result, "contour", None)
        if contour is not None and len(contour) > 1:
            c = np.asarray(contour, dtype=float)
            c = np.vstack([c, c[:1]])
            self.contour_item.setData(c[:, 0], c[:, 1])
        else:
            self.contour_item.setData([], [])
        circle = getattr(result, "circle", None)
        if circle is not None:
            cx, cy, r = (float(v) for v in circle)
            self.circle_item.setRect(QRectF(cx - r, cy - r, 2 * r, 2 * r))
            self.circle_item.setVisible(True)
        else:
            self.circle_item.setVisible(False)
        feats = getattr(result, "features", None)
        if feats is not None and len(feats):
            f = np.asarray(feats, dtype=float)
            self.features_item.setData(f[:, 0], f[:, 1])
        else:
            self.features_item.setData([], [])


class _Delivery(QObject):
    ready = Signal(object)


class SmallImageView(QWidget):
    """A pulled, slowly refreshed image (SLM grey levels, simulated far-field beam).

    The source may be expensive (the simulated SLM converts phase to grey levels on demand,
    ~150 ms for 1920x1080), so it is called on a worker thread and only the downsampled
    image is handed to the GUI thread. Hidden views are not refreshed.
    """

    def __init__(
        self,
        source: Callable[[], np.ndarray | None],
        parent: QWidget | None = None,
        hz: float = 2.0,
        levels: tuple[float, float] | None = None,
        max_side: int = 480,
        colormap: str | None = None,
    ) -> None:
        super().__init__(parent)
        self.source = source
        self.levels = levels
        self.max_side = max_side
        self.canvas = _ImageCanvas(self)
        if colormap:
            try:
                self.canvas.image_item.setColorMap(pg.colormap.get(colormap))
            except Exception:
                pass
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self.has_image = False
        self._busy = False
        self._last_id: int | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-fetch")
        self._delivery = _Delivery()
        self._delivery.ready.connect(self._show)
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / hz))
        self.timer.timeout.connect(self.refresh)

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _fetch(self) -> None:
        try:
            img = self.source()
            if img is not None and id(img) != self._last_id:
                self._last_id = id(img)
                img = np.asarray(img)
                step = max(1, int(np.ceil(max(img.shape[:2]) / self.max_side)))
                img = np.ascontiguousarray(img[::step, ::step]) if step > 1 else img.copy()
                self._delivery.ready.emit(img)
        except Exception:  # a failing preview is not worth an error: the controller reports device errors
            pass
        finally:
            self._busy = False

    def refresh(self) -> None:
        if not self.isVisible() or self._busy:
            return  # hidden tab (the simulated beam costs CPU) or previous fetch still running
        self._busy = True
        try:
            self._pool.submit(self._fetch)
        except RuntimeError:  # stopped
            self._busy = False

    def _show(self, img: np.ndarray) -> None:
        self.canvas.show_image(img, self.levels)
        self.has_image = True
