"""Tracked angle vs time and angular coverage, pulled from the controller at ~10 Hz."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget


class AnglePlot(QWidget):
    """Angle trace plus a coverage bar with the 180 deg (minimum) and target marks."""

    def __init__(self, controller: Any, parent: QWidget | None = None, hz: float = 10.0) -> None:
        super().__init__(parent)
        self.controller = controller
        self.plot = pg.PlotWidget(self)
        self.plot.setLabel("bottom", "time", units="s")
        self.plot.setLabel("left", "tracked angle (deg)")
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.plot.setMenuEnabled(False)
        self.curve = self.plot.plot([], [], pen=pg.mkPen("#1f77b4", width=2))
        self.target = self._target_deg()
        self.min_line = pg.InfiniteLine(pos=180, angle=0, pen=pg.mkPen("#888", style=pg.QtCore.Qt.PenStyle.DashLine))
        self.plot.addItem(self.min_line)
        self.coverage_bar = QProgressBar(self)
        self.coverage_bar.setRange(0, int(self.target))
        self.coverage_bar.setFormat("coverage %v / %m deg")
        self.coverage_label = QLabel("coverage: 0 deg (need >= 180)", self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.coverage_bar)
        lay.addWidget(self.coverage_label)
        self.n_points = 0
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
        if n != self.n_points:
            self.n_points = n
            if n:
                t0 = t[0]
                step = max(1, n // 4000)  # keep the curve cheap for long runs
                self.curve.setData(t[:n:step] - t0, a[:n:step])
            else:
                self.curve.setData([], [])
        cov = None
        try:
            cov = self.controller.stats().get("coverage_deg")
        except Exception:
            cov = None
        if cov is None and n:
            cov = float(np.nanmax(a[:n]) - np.nanmin(a[:n]))
        self.set_coverage(float(cov or 0.0))

    def set_coverage(self, coverage_deg: float) -> None:
        self.coverage_deg = coverage_deg
        self.coverage_bar.setValue(int(min(coverage_deg, self.target)))
        state = "enough for a volume" if coverage_deg >= 180 else "need >= 180"
        self.coverage_label.setText(f"coverage: {coverage_deg:.0f} deg ({state}; target {self.target:.0f})")
