"""Tracked angle vs time, the commanded ellipse angle and the lag between them, and the
angular coverage, pulled from the controller at ~5 Hz.

The axes are not auto-ranged: they grow in whole steps (10 s, 90 deg), so a refresh
repaints only the curve; re-laying out and re-drawing both axes on every new point cost
more than the live view's frame.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget


class AnglePlot(QWidget):
    """Cell angle and commanded ellipse angle, the lag (ellipse minus cell, both zero at the
    first frame), a coverage bar with the 180 deg (minimum) and target marks, and the closed
    loop's state in words."""

    #: axis ranges grow in these steps (seconds, degrees)
    TIME_STEP_S = 10.0
    ANGLE_STEP_DEG = 90.0

    def __init__(self, controller: Any, parent: QWidget | None = None, hz: float = 5.0) -> None:
        super().__init__(parent)
        self.controller = controller
        self.plot = pg.PlotWidget(self)
        self.plot.setLabel("bottom", "time since the rotation started (s, wall clock)")
        self.plot.setLabel("left", "cell angle (deg)")
        self.plot.setTitle("live tracked angles")
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.plot.setMenuEnabled(False)
        self.plot.disableAutoRange()
        self._range: tuple[float, float, float, float] | None = None
        self.plot.addLegend(offset=(10, 10))
        self.curve = self.plot.plot([], [], pen=pg.mkPen("#1f77b4", width=2), name="cell")
        self.command_curve = self.plot.plot([], [], pen=pg.mkPen("#ff7f0e", width=1, style=pg.QtCore.Qt.PenStyle.DashLine),
                                            name="ellipse (commanded)")
        self.lag_plot = pg.PlotWidget(self)
        self.lag_plot.setLabel("left", "lag (deg)")
        self.lag_plot.setMenuEnabled(False)
        self.lag_plot.showGrid(x=True, y=True, alpha=0.3)
        self.lag_plot.setXLink(self.plot)
        self.lag_plot.setMaximumHeight(110)
        self.lag_curve = self.lag_plot.plot([], [], pen=pg.mkPen("#d62728", width=1))
        self.loop_label = QLabel("", self)
        self.target = self._target_deg()
        self.min_line = pg.InfiniteLine(pos=180, angle=0, pen=pg.mkPen("#888", style=pg.QtCore.Qt.PenStyle.DashLine))
        self.plot.addItem(self.min_line)
        self.coverage_bar = QProgressBar(self)
        self.coverage_bar.setRange(0, int(self.target))
        self.coverage_bar.setFormat("coverage 0 of 0 deg")
        self.coverage_label = QLabel("coverage: 0 deg (need >= 180)", self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.lag_plot)
        lay.addWidget(self.loop_label)
        lay.addWidget(self.coverage_bar)
        lay.addWidget(self.coverage_label)
        self.n_points = 0
        self.final = False
        self.coverage_deg = 0.0
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / hz))
        self.timer.timeout.connect(self.refresh)

    def _target_deg(self) -> float:
        try:
            return float(self.controller.config.rotation.target_coverage_deg)
        except Exception:
            return 360.0

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def refresh(self) -> None:
        try:
            t, a = self.controller.angle_trace()
        except Exception:
            t, a = np.empty(0), np.empty(0)
        t = np.asarray(t, dtype=float)
        a = np.asarray(a, dtype=float)
        n = min(len(t), len(a))
        final = self._is_final()
        if n != self.n_points or final != self.final:
            self.n_points = n
            self.final = final
            self.plot.setTitle("final (refined) angles" if final else "live tracked angles")
            if n:
                t0 = self._time_origin(t[0])
                step = max(1, n // 4000)  # keep the curve cheap for long runs
                self.curve.setData(t[:n:step] - t0, a[:n:step])
                self._grow_range(float(t[n - 1] - t0), float(np.nanmin(a[:n])), float(np.nanmax(a[:n])))
            else:
                self.curve.setData([], [])
            self._refresh_command(t[:n], a[:n], final)
        self.set_loop_text(loop_text(self.controller))
        self.set_coverage(coverage_of(self.controller, a[:n]))

    def _refresh_command(self, t: np.ndarray, a: np.ndarray, final: bool) -> None:
        """The commanded angle on the cell's time axis, and the lag. After the run the cell's
        curve holds the refined angles on resampled times: the lag is shown for live angles only."""
        try:
            tc, c = self.controller.command_trace()
        except Exception:
            tc, c = np.empty(0), np.empty(0)
        tc, c = np.asarray(tc, float), np.asarray(c, float)
        if not tc.size or not t.size:
            self.command_curve.setData([], [])
            self.lag_curve.setData([], [])
            return
        t0 = self._time_origin(float(min(t[0], tc[0])))
        step = max(1, tc.size // 4000)
        self.command_curve.setData(tc[::step] - t0, c[::step])
        if final:
            self.lag_curve.setData([], [])
            return
        m = min(tc.size, t.size)  # one point per traced frame in both (read a moment apart)
        self.lag_curve.setData(t[:m:step] - t0, (c[:m] - (a[:m] - a[0]))[::step])

    def set_loop_text(self, text: str) -> None:
        if text != self.loop_label.text():
            self.loop_label.setText(text)

    def _time_origin(self, first: float) -> float:
        """Time zero of the x axis: when the rotation started (the run's clock), else the first point."""
        origin = getattr(self.controller, "trace_origin_s", None)
        try:
            return float(origin) if origin is not None and float(origin) <= first else float(first)
        except (TypeError, ValueError):
            return float(first)

    def _is_final(self) -> bool:
        """True when the controller shows a finished run's refined angles."""
        version = getattr(self.controller, "final_volume_version", None)
        return isinstance(version, int)

    def _grow_range(self, t_max: float, a_min: float, a_max: float) -> None:
        """Set the view to whole steps around the data (and the 180 deg mark); no-op if unchanged."""
        x1 = self.TIME_STEP_S * max(1, math.ceil(t_max / self.TIME_STEP_S))
        s = self.ANGLE_STEP_DEG
        y0 = min(0.0, s * math.floor(a_min / s)) if math.isfinite(a_min) else 0.0
        y1 = max(180.0, s * math.ceil(a_max / s)) if math.isfinite(a_max) else 180.0
        rng = (0.0, x1, y0, y1)
        if rng != self._range:
            self._range = rng
            self.plot.setRange(xRange=(0.0, x1), yRange=(y0, y1), padding=0.02)

    def set_coverage(self, coverage_deg: float) -> None:
        """Update bar and label only when what they show changes.

        ``QProgressBar.setValue`` repaints synchronously whenever its text changes, and every
        repaint of the window costs the live view a frame; at 10 Hz with an unchanged value
        that was pure waste.
        """
        self.coverage_deg = coverage_deg
        value = int(min(coverage_deg, self.target))
        fmt = f"coverage {coverage_deg:.0f} of {self.target:.0f} deg"
        if fmt != self.coverage_bar.format():
            self.coverage_bar.setFormat(fmt)  # the number itself, also past the target
        if value != self.coverage_bar.value():
            self.coverage_bar.setValue(value)
        state = "enough for a volume" if coverage_deg >= 180 else "need >= 180"
        text = f"coverage: {coverage_deg:.0f} deg ({state}; target {self.target:.0f})"
        if text != self.coverage_label.text():
            self.coverage_label.setText(text)


def loop_text(controller: Any) -> str:
    """The rotation loop in words: open, or closed with the cell's rate against the set one,
    the lag and what the loop is doing (e.g. "cell not following: ellipse held")."""
    try:
        st = controller.stats()
    except Exception:
        return ""
    if st.get("rotation_loop") != "closed":
        return "open loop: the ellipse turns at the set rate"
    if "loop_state" not in st:
        return str(st.get("loop_message") or "closed loop: waiting for the cell's angle")
    cell = st.get("cell_rate_deg_s")
    lag = st.get("lag_deg")
    rate = f"cell {cell:.1f} of {st.get('set_rate_deg_s', 0.0):.1f} deg/s" if cell is not None else "cell rate -"
    lag_s = f"lag {lag:.1f} deg" if lag is not None else "lag -"
    return f"closed loop: {rate}, {lag_s}; {st.get('loop_message', '')}"


def coverage_of(controller: Any, angles: np.ndarray | None = None) -> float:
    """The one coverage figure every view shows: the controller's (its stopping rule uses it,
    and after a run it is the refined angles' span); the span of ``angles`` if it has none."""
    try:
        cov = controller.stats().get("coverage_deg")
    except Exception:
        cov = None
    if cov is None and angles is not None and len(angles):
        cov = float(np.nanmax(angles) - np.nanmin(angles))
    return float(cov or 0.0)
