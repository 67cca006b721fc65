"""The operator's main window: live view, controls, plots, napari volume, log and status.

The window holds no rig logic: buttons call the controller's commands, timers pull its
newest frame/result/snapshot/statistics, and its low-rate events arrive through a
:class:`~mcf_rotator.gui.bridge.ControllerBridge` (queued into the GUI thread). Any exception
raised by a command is shown in the status bar and the log panel; the app never dies of it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtGui import QAction, QFont, QKeySequence
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mcf_rotator.gui import exporting
from mcf_rotator.gui.bridge import ControllerBridge
from mcf_rotator.gui.live_view import LiveView, SmallImageView
from mcf_rotator.gui.log_panel import LogPanel
from mcf_rotator.gui.plots import AnglePlot
from mcf_rotator.gui.responsiveness import collect_and_freeze, freeze_long_lived_heap, thaw_heap
from mcf_rotator.gui.user_settings import UserSettings
from mcf_rotator.gui.volume_view import VolumeView

log = logging.getLogger("mcf_rotator.gui")

#: longest side of the SLM preview (the controller strides the 1920x1080 pattern to it)
SLM_PREVIEW_SIDE = 480

#: states that end a run: objects frozen during it (pipeline, detector) become collectable
RUN_OVER_STATES: frozenset[str] = frozenset({"IDLE", "ERROR"})

#: which command buttons are enabled in which controller state (by RigState name)
ENABLED_IN: dict[str, set[str]] = {
    "trap": {"IDLE"},
    "rotate": {"TRAPPING"},
    "reconstruct": {"ROTATING"},
    "stop": {"TRAPPING", "ROTATING", "RECONSTRUCTING"},
    "reset": {"ERROR"},
}

#: states in which the camera runs (rates, queue and the trapped indicator mean something)
RUNNING_STATES: frozenset[str] = frozenset({"TRAPPING", "ROTATING", "RECONSTRUCTING"})

STATE_COLOURS = {
    "IDLE": "#d0d0d0",
    "TRAPPING": "#9fd3ff",
    "ROTATING": "#b9f0b0",
    "RECONSTRUCTING": "#ffe28a",
    "FINISHING": "#ffc680",
    "ERROR": "#ff8080",
}


class _CommandRelay(QObject):
    """Carries a command's failure from the command thread to the GUI thread."""

    failed = Signal(str, str)  # command name, message


def state_name(state: Any) -> str:
    """RigState enum member -> 'IDLE' etc. (also accepts plain strings)."""
    name = getattr(state, "name", None)
    return str(name if name is not None else state).upper().split(".")[-1]


def stat(get: Callable[..., Any], *keys: str) -> float:
    """First present numeric statistic among ``keys`` (controller versions name them differently)."""
    for k in keys:
        v = get(k, None)
        if v is not None:
            try:
                return float(v)
            except (TypeError, ValueError):
                continue
    return 0.0


def status_texts(state: str, get: Callable[..., Any], view_fps: float) -> tuple[str, str, str, str]:
    """(rates, live-preview skips, queue, recording) texts of the status bar in ``state``.

    Each stage says what it counts: the camera feeds the live preview through a buffer that
    may skip frames when the computer is busy (only from Reconstruct on does anything read
    it), while the recording keeps every frame. Nothing stale is shown when no run is going.
    """
    if state not in RUNNING_STATES and state != "FINISHING":
        return ("camera off", "", "", "")
    rates = f"camera {stat(get, 'fps', 'camera_fps'):.1f} fps | view {view_fps:.1f} fps"
    recorded = int(stat(get, "recorded", "recorded_frames"))
    lost = int(stat(get, "recording_lost"))
    if state == "TRAPPING":
        return (rates, "", "", "not recording yet")
    rec = f"recorded {recorded} frames" + (f" ({lost} LOST)" if lost else "")
    if state == "ROTATING":
        return (rates, "", "", rec)
    skipped = int(stat(get, "preview_skipped", "dropped"))
    kept = "recording kept all" if not lost else "recording lost some"
    preview = f"live preview skipped {skipped} frames; {kept}" if skipped else f"live preview on every frame; {kept}"
    queue = f"preview queue {int(stat(get, 'queue_depth'))}" if state != "FINISHING" else ""
    return (rates if state != "FINISHING" else "camera off", preview, queue, rec)


def _set_text(label: QLabel, text: str) -> bool:
    """Set a label's text only when it changes (a change may re-lay out and repaint the bar)."""
    if label.text() == text:
        return False
    label.setText(text)
    return True


class MainWindow(QMainWindow):
    """Everything the operator needs for one rig controller."""

    def __init__(
        self,
        controller: Any,
        settings: UserSettings | None = None,
        simulated: bool | None = None,
        owns_controller: bool = True,
        start_timers: bool = True,
    ) -> None:
        super().__init__()
        self.controller = controller
        self.settings = settings or UserSettings()
        self.owns_controller = owns_controller
        self._closed = False
        self.error_count = 0
        self.wizard: Any = None
        self._calibration_steps: Any = None
        cfg = getattr(controller, "config", None)
        if simulated is None:
            simulated = bool(getattr(cfg, "is_simulated", False))
        self.simulated = simulated
        self.setWindowTitle(f"mcf-rotator - {getattr(cfg, 'name', 'rig')}" + (" [SIMULATED]" if simulated else ""))
        self.setObjectName("mcfRotatorMainWindow")

        self.bridge = ControllerBridge(controller, self)
        # commands may block (devices connect, models load): run them off the GUI thread. Three
        # lanes, so nothing that must act at once queues behind something slow: the step
        # commands in order; Run all (a sequence that lasts the whole run) on its own; and
        # stop / pause / rate / direction / cancel, which act on the running rig at once
        self._commands = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gui-command")
        self._sequence = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gui-sequence")
        self._urgent = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gui-urgent")
        self._command_relay = _CommandRelay(self)
        self._command_relay.failed.connect(lambda name, text: self.show_error(f"{name} failed: {text}"))
        self._last_error_text: str | None = None
        self._build_ui()
        self._build_menus()
        self._build_status_bar()
        self.apply_output_dir()
        self.bridge.state_changed.connect(self._on_state_changed)
        self.bridge.message.connect(self._on_message)
        self.bridge.error.connect(self._on_error)
        self.bridge.volume_updated.connect(self._on_volume_updated)
        self._freeze_on_first_volume = False
        self.bridge.finished.connect(self._on_finished)

        # owned by the window, so it dies with it (a bare singleShot could fire after deletion)
        self._error_style_timer = QTimer(self)
        self._error_style_timer.setSingleShot(True)
        self._error_style_timer.setInterval(20000)
        self._error_style_timer.timeout.connect(lambda: self.statusBar().setStyleSheet(""))
        self.status_timer = QTimer(self)
        self.status_timer.setInterval(250)
        self.status_timer.timeout.connect(self.refresh_status)
        self._on_state_changed(None, self._current_state())
        if start_timers:
            self.start_timers()

    # ------------------------------------------------------------------ layout
    def _build_ui(self) -> None:
        c = self.controller
        central = QWidget(self)
        outer = QVBoxLayout(central)
        outer.setContentsMargins(4, 4, 4, 4)
        self.banner = QLabel(
            "SIMULATED RIG - no hardware is driven; images come from the simulated microscope", central
        )
        self.banner.setObjectName("simulatedBanner")
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.banner.setStyleSheet("background:#ffcc00; color:#000; font-weight:bold; padding:4px;")
        self.banner.setVisible(self.simulated)
        outer.addWidget(self.banner)

        self.drift_bar = QWidget(central)
        db = QHBoxLayout(self.drift_bar)
        db.setContentsMargins(4, 2, 4, 2)
        self.drift_label = QLabel("", self.drift_bar)
        self.drift_button = QPushButton("Open calibration wizard", self.drift_bar)
        self.drift_button.clicked.connect(self.open_calibration_wizard)
        db.addWidget(self.drift_label, 1)
        db.addWidget(self.drift_button)
        self.drift_bar.setStyleSheet("background:#ffd0d0;")
        self.drift_bar.setVisible(False)
        outer.addWidget(self.drift_bar)

        split = QSplitter(Qt.Orientation.Horizontal, central)
        outer.addWidget(split, 1)

        # left: camera + SLM/beam
        left = QSplitter(Qt.Orientation.Vertical, split)
        self.live_view = LiveView(c, left, fps=self.settings.live_fps)
        left.addWidget(self.live_view)
        self.side_tabs = QTabWidget(left)
        self.slm_view = SmallImageView(lambda: c.slm_image(max_side=SLM_PREVIEW_SIDE), self.side_tabs, hz=2.0,
                                       levels=(0, 255), max_side=SLM_PREVIEW_SIDE)
        self.side_tabs.addTab(self.slm_view, "SLM pattern")
        self.beam_view = SmallImageView(lambda: c.beam_image(), self.side_tabs, hz=2.0, colormap="inferno")
        self.side_tabs.addTab(self.beam_view, "Beam (far field)" + (" - simulated" if self.simulated else ""))
        left.addWidget(self.side_tabs)
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 1)
        split.addWidget(left)

        # middle: napari volume + slices
        self.volume_view = VolumeView(c, split, refresh_hz=self.settings.volume_refresh_hz)
        split.addWidget(self.volume_view)

        # right: controls + plot
        right = QWidget(split)
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self._build_controls(right))
        self.angle_plot = AnglePlot(c, right)
        rl.addWidget(self.angle_plot, 1)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 3)
        split.setStretchFactor(2, 2)
        split.setSizes([620, 560, 420])
        left.setSizes([520, 240])
        self.setCentralWidget(central)

        self.log_panel = LogPanel(self)
        dock = QDockWidget("Log", self)
        dock.setObjectName("logDock")
        dock.setWidget(self.log_panel)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        self.resize(1600, 950)

    def _build_controls(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Rig", parent)
        grid = QGridLayout(box)
        self.state_label = QLabel("IDLE", box)
        self.state_label.setObjectName("stateLabel")
        self.state_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        f = QFont()
        f.setPointSize(14)
        f.setBold(True)
        self.state_label.setFont(f)
        grid.addWidget(self.state_label, 0, 0, 1, 2)
        big = QFont()
        big.setPointSize(13)
        big.setBold(True)
        self.buttons: dict[str, QPushButton] = {}
        specs: list[tuple[str, str, Callable[[], Any], str]] = [
            ("trap", "Trap", lambda: self.controller.trap(), "Ctrl+1"),
            ("rotate", "Rotate", lambda: self.controller.rotate(), "Ctrl+2"),
            ("reconstruct", "Reconstruct", lambda: self.controller.reconstruct(), "Ctrl+3"),
            ("stop", "Stop", lambda: self.controller.stop(), "Esc"),
        ]
        for i, (key, text, fn, shortcut) in enumerate(specs):
            b = QPushButton(text, box)
            b.setObjectName(f"{key}Button")
            b.setFont(big)
            b.setMinimumHeight(48)
            b.setShortcut(QKeySequence(shortcut))
            b.setToolTip(f"{text} ({shortcut})")
            lane = "urgent" if key == "stop" else "commands"
            b.clicked.connect(lambda _=False, k=key, f=fn, ln=lane: self.run_command(k, f, lane=ln))
            self.buttons[key] = b
            grid.addWidget(b, 1 + i // 2, i % 2)
        self.buttons["stop"].setStyleSheet("QPushButton:enabled { background:#e04040; color:white; }")
        self.pause_button = QPushButton("Pause", box)
        self.pause_button.setCheckable(True)
        self.pause_button.toggled.connect(self._on_pause_toggled)
        self.buttons["reset"] = QPushButton("Reset after error", box)
        self.buttons["reset"].clicked.connect(lambda: self.run_command("reset", self.controller.reset))
        grid.addWidget(self.pause_button, 3, 0)
        grid.addWidget(self.buttons["reset"], 3, 1)

        # FINISHING: what the final reconstruction is doing, and a way out that keeps the recording
        self.finishing_box = QWidget(box)
        fl = QVBoxLayout(self.finishing_box)
        fl.setContentsMargins(0, 0, 0, 0)
        self.finishing_bar = QProgressBar(self.finishing_box)
        self.finishing_bar.setObjectName("finishingProgress")
        self.finishing_bar.setRange(0, 4)
        self.finishing_bar.setFormat("finishing: step %v of %m")
        self.finishing_step = QLabel("", self.finishing_box)
        self.finishing_step.setWordWrap(True)
        self.finishing_step.setMinimumHeight(3 * self.finishing_step.fontMetrics().lineSpacing())
        self.cancel_finishing_button = QPushButton("Cancel final reconstruction (keep the recording)", self.finishing_box)
        self.cancel_finishing_button.setObjectName("cancelFinishingButton")
        self.cancel_finishing_button.clicked.connect(self.cancel_finishing)
        fl.addWidget(self.finishing_bar)
        fl.addWidget(self.finishing_step)
        fl.addWidget(self.cancel_finishing_button)
        self.finishing_box.setVisible(False)
        grid.addWidget(self.finishing_box, 5, 0, 1, 2)

        form = QFormLayout()
        rot = getattr(getattr(self.controller, "config", None), "rotation", None)
        self.rate_spin = QDoubleSpinBox(box)
        self.rate_spin.setRange(0.5, 3600.0)
        self.rate_spin.setDecimals(1)
        self.rate_spin.setSuffix(" deg/s")
        self.rate_spin.setValue(float(self.settings.rotation_rate_deg_s or getattr(rot, "rate_deg_s", 30.0)))
        self.direction_combo = QComboBox(box)
        self.direction_combo.addItem("clockwise (+)", 1)
        self.direction_combo.addItem("counter-clockwise (-)", -1)
        direction = self.settings.rotation_direction or getattr(rot, "direction", 1)
        self.direction_combo.setCurrentIndex(0 if direction == 1 else 1)
        self.rate_spin.editingFinished.connect(self.apply_rotation)
        self.direction_combo.currentIndexChanged.connect(lambda _i: self.apply_rotation())
        # open loop: the ellipse turns at the rate; closed loop: it is steered so the cell does
        self.loop_combo = QComboBox(box)
        self.loop_combo.setObjectName("loopCombo")
        self.loop_combo.addItem("open loop (ellipse at the set rate)", "open")
        self.loop_combo.addItem("closed loop (the cell at the set rate)", "closed")
        loop = self.settings.rotation_loop or getattr(rot, "loop", "open")
        self.loop_combo.setCurrentIndex(1 if loop == "closed" else 0)
        self.step_spin = QDoubleSpinBox(box)
        self.step_spin.setObjectName("stepPerFrameSpin")
        self.step_spin.setRange(0.0, 30.0)
        self.step_spin.setDecimals(2)
        self.step_spin.setSingleStep(0.1)
        self.step_spin.setSuffix(" deg/frame")
        self.step_spin.setSpecialValueText("use the rate")  # 0: the rate above sets the target
        step = self.settings.step_per_frame_deg or getattr(rot, "step_per_frame_deg", None) or 0.0
        self.step_spin.setValue(float(step))
        self.step_spin.setToolTip("closed loop: the cell's target step per camera frame instead of deg/s")
        self.step_spin.setEnabled(loop == "closed")
        self.loop_combo.currentIndexChanged.connect(lambda _i: self.apply_loop())
        self.step_spin.editingFinished.connect(self.apply_loop)
        form.addRow("Rotation rate", self.rate_spin)
        form.addRow("Direction", self.direction_combo)
        form.addRow("Rotation loop", self.loop_combo)
        form.addRow("Cell step", self.step_spin)
        grid.addLayout(form, 4, 0, 1, 2)
        if loop != getattr(rot, "loop", "open") or (step or None) != getattr(rot, "step_per_frame_deg", None):
            self.apply_loop()  # the operator's last choice applies to this rig too
        return box

    def _build_menus(self) -> None:
        mb = self.menuBar()
        fm = mb.addMenu("&File")
        self.action_save_volume = self._action(fm, "Save &volume (TIFF)...", self.save_volume_dialog, "Ctrl+S")
        self.action_save_angles = self._action(fm, "Save &angles (CSV)...", self.save_angles_dialog)
        self.action_save_recording = self._action(fm, "Save &recording...", self.save_recording_dialog)
        fm.addSeparator()
        self._action(fm, "&Quit", self.close, "Ctrl+Q")
        rm = mb.addMenu("&Rig")
        self._action(rm, "Run &all (trap, rotate, reconstruct)", self.run_all)
        self.action_settings = self._action(rm, "Hardware && &settings...", self.open_settings_dialog)
        rm.addSeparator()
        cm = mb.addMenu("&Calibration")
        self.action_wizard = self._action(cm, "Calibration &wizard...", self.open_calibration_wizard)
        self.action_drift = self._action(cm, "Check fibre &drift", self.check_drift)
        hm = mb.addMenu("&Help")
        self._action(hm, "&About", self._about)

    def _action(self, menu: Any, text: str, slot: Callable[[], Any], shortcut: str | None = None) -> QAction:
        a = QAction(text, self)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
        a.triggered.connect(lambda _=False: slot())
        menu.addAction(a)
        return a

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.status_state = QLabel("IDLE")
        self.status_fps = QLabel("view 0 fps")
        self.status_dropped = QLabel("")
        self.status_dropped.setObjectName("previewSkipped")
        self.status_dropped.setToolTip(
            "The live preview (tracking and live volume) may skip camera frames when the computer is busy;\n"
            "the recording keeps every frame, and the final volume is made from the recording's frames."
        )
        self.status_queue = QLabel("")
        self.status_recorded = QLabel("")
        self.status_trapped = QLabel("no cell trapped")
        self.status_trapped.setObjectName("trappedIndicator")
        self.status_trapped.setStyleSheet("color:#606060;")
        for w in (self.status_state, self.status_trapped, self.status_fps, self.status_dropped, self.status_queue,
                  self.status_recorded):
            w.setContentsMargins(6, 0, 6, 0)
            sb.addPermanentWidget(w)

    # ------------------------------------------------------------------ timers
    def start_timers(self) -> None:
        self.live_view.start()
        self.slm_view.start()
        self.beam_view.start()
        self.angle_plot.start()
        self.volume_view.start()
        self.status_timer.start()

    def stop_timers(self) -> None:
        for t in (self.live_view, self.slm_view, self.beam_view, self.angle_plot, self.volume_view):
            t.stop()
        self.status_timer.stop()

    def refresh_status(self) -> None:
        try:
            st = self.controller.stats()
            get = st.get if hasattr(st, "get") else (lambda k, d=None: getattr(st, k, d))
        except Exception as exc:
            log.debug("stats unavailable: %s", exc)
            return
        name = state_name(self._current_state())
        for text, label in zip(status_texts(name, get, self.live_view.fps),
                               (self.status_fps, self.status_dropped, self.status_queue, self.status_recorded)):
            _set_text(label, text)
        self.show_trapped(get("trapped", None) if name in RUNNING_STATES else None)
        if name == "FINISHING":
            self.show_finishing_progress()

    def show_finishing_progress(self) -> None:
        """Progress bar and step name of FINISHING (from the controller, if it reports them)."""
        get = getattr(self.controller, "finishing_progress", None)
        if get is None:
            return
        try:
            prog = get()
        except Exception as exc:
            log.debug("finishing progress unavailable: %s", exc)
            return
        stages = list(prog.get("stages") or [])
        stage = int(prog.get("stage") or 0)
        if stages and self.finishing_bar.maximum() != len(stages):
            self.finishing_bar.setRange(0, len(stages))
        if self.finishing_bar.value() != stage:
            self.finishing_bar.setValue(stage)
        title = stages[stage - 1] if 0 < stage <= len(stages) else "starting"
        step = str(prog.get("step") or "")
        _set_text(self.finishing_step, title + (f"\nnow: {step}" if step and step != title else ""))

    def cancel_finishing(self) -> None:
        """Abandon the final reconstruction now; the recording stays in the run folder."""
        cancel = getattr(self.controller, "cancel", None)
        if cancel is None:
            return
        self.cancel_finishing_button.setEnabled(False)
        self.run_command("cancel", cancel, lane="urgent")

    def show_trapped(self, trapped: Any) -> None:
        """Status-bar indicator: is a cell held in the trap (None: the controller does not say)?"""
        if self.status_trapped.isVisibleTo(self) != (trapped is not None):
            self.status_trapped.setVisible(trapped is not None)
        if trapped is None:
            return
        if _set_text(self.status_trapped, "cell trapped" if trapped else "no cell trapped"):
            self.status_trapped.setStyleSheet("color:#007000; font-weight:bold;" if trapped else "color:#606060;")

    # ------------------------------------------------------------------ commands
    def run_all(self) -> bool:
        """Rig > Run all on its own thread: Stop, Pause, rate and direction still act at once."""
        return self.run_command("run all", self.controller.run_all, lane="sequence")

    def run_command(self, name: str, fn: Callable[[], Any], wait: bool = False, lane: str = "commands") -> bool:
        """Queue a controller command on a command thread; failures are shown, never raised.

        ``lane``: "commands" (trap, rotate, reconstruct, reset: in order), "sequence" (Run all)
        or "urgent" (stop, pause, rate, cancel: never behind a slow command or a running run).

        The controller reports its own failures (error event); a command exception is shown
        only when the controller did not already report it (e.g. an invalid transition).
        """
        relay = self._command_relay
        controller = self.controller

        def call() -> bool:
            try:
                fn()
            except Exception as exc:  # shown to the operator
                reported = state_name(getattr(controller, "state", "")) == "ERROR" and getattr(controller, "last_error", None)
                if not reported:
                    try:
                        relay.failed.emit(name, str(exc) or type(exc).__name__)
                    except RuntimeError:  # window already gone
                        pass
                return False
            return True

        if wait:
            return call()
        executor = {"sequence": self._sequence, "urgent": self._urgent}.get(lane, self._commands)
        try:
            executor.submit(call)
        except RuntimeError:  # executor shut down (window closing)
            return call()
        return True

    def apply_rotation(self) -> None:
        rate = float(self.rate_spin.value())
        direction = int(self.direction_combo.currentData())
        self.settings.rotation_rate_deg_s = rate
        self.settings.rotation_direction = direction
        self.run_command("set rotation", lambda: self.controller.set_rotation(rate, direction), lane="urgent")

    def apply_loop(self) -> None:
        """Open or closed loop and the cell's target step per frame (0 = the rate), now and for
        the next run."""
        loop = str(self.loop_combo.currentData())
        step = float(self.step_spin.value()) or None
        self.step_spin.setEnabled(loop == "closed")
        self.settings.rotation_loop = loop
        self.settings.step_per_frame_deg = step
        set_loop = getattr(self.controller, "set_rotation_loop", None)
        if set_loop is not None:
            self.run_command("set rotation loop", lambda: set_loop(loop, step), lane="urgent")

    def _on_pause_toggled(self, paused: bool) -> None:
        self.pause_button.setText("Resume" if paused else "Pause")
        self.run_command("pause" if paused else "resume", self.controller.pause if paused else self.controller.resume,
                         lane="urgent")

    # ------------------------------------------------------------------ events
    def _current_state(self) -> Any:
        return getattr(self.controller, "state", "IDLE")

    def _on_state_changed(self, old: Any, new: Any) -> None:
        name = state_name(new)
        self.state_label.setText(name)
        self.state_label.setStyleSheet(f"background:{STATE_COLOURS.get(name, '#d0d0d0')}; padding:6px;")
        self.status_state.setText(f"state: {name}")
        for key, states in ENABLED_IN.items():
            self.buttons[key].setEnabled(name in states)
        self.pause_button.setEnabled(name in {"ROTATING", "RECONSTRUCTING"})
        if name not in {"ROTATING", "RECONSTRUCTING"} and self.pause_button.isChecked():
            self.pause_button.blockSignals(True)
            self.pause_button.setChecked(False)
            self.pause_button.setText("Pause")
            self.pause_button.blockSignals(False)
        finishing = name == "FINISHING"
        if finishing and not self.finishing_box.isVisible():
            self.finishing_bar.setValue(0)
            self.finishing_step.setText("stopping the rotation and the camera")
            self.cancel_finishing_button.setEnabled(True)
        self.finishing_box.setVisible(finishing)
        if name == "IDLE":  # nothing runs: no stale rates, queue or "cell trapped" from the last run
            self.refresh_status()
        if old is not None:
            self.log_panel.append("INFO", f"state {state_name(old)} -> {name}")
        self._manage_heap(name)

    def _manage_heap(self, state: str) -> None:
        """Keep full gc passes short during a run (see :mod:`~mcf_rotator.gui.responsiveness`).

        ROTATING (trap has built the holograms; the previous run's pipeline was dropped):
        collect once, freeze. RECONSTRUCTING (detector loaded) and the run's first volume
        (its first inference imported what it needs): freeze. IDLE/ERROR: thaw, so the run's
        objects can be collected.
        """
        if state == "ROTATING":
            collect_and_freeze()
        elif state == "RECONSTRUCTING":
            freeze_long_lived_heap()
        elif state in RUN_OVER_STATES:
            thaw_heap()
        self._freeze_on_first_volume = state == "RECONSTRUCTING"

    def _on_volume_updated(self, version: int) -> None:
        """A new snapshot exists (the view's timer uploads it); freeze the heap after the first."""
        self.volume_view.mark_dirty(version)
        if self._freeze_on_first_volume:
            self._freeze_on_first_volume = False
            freeze_long_lived_heap()

    def _on_message(self, level: str, text: str) -> None:
        if level.upper() == "ERROR" and text == self._last_error_text:
            return  # the controller sends errors both as error and as message
        self.log_panel.append(level, text)
        if level.upper() in ("WARNING", "ERROR", "CRITICAL"):
            self.statusBar().showMessage(text, 10000)

    def _on_error(self, text: str) -> None:
        self.show_error(text)

    def show_error(self, text: str) -> None:
        """Status bar (red) + log panel; never a modal box that would stall the rig."""
        self.error_count += 1
        self._last_error_text = text
        self.log_panel.append("ERROR", text)
        self.statusBar().setStyleSheet("QStatusBar { color: #c00000; }")
        self.statusBar().showMessage(f"Error: {text}", 20000)
        self._error_style_timer.start()

    def _on_finished(self, result: Any) -> None:
        """The run ended: show the final volume and say where its files are."""
        from mcf_rotator.controller import saved_files_text

        self.volume_view.refresh(force=True, full_resolution=True)
        self.angle_plot.refresh()
        try:
            text = saved_files_text(result)
        except Exception:  # a controller with another result type: say what we can
            text = f"run finished in {getattr(result, 'run_dir', '?')}"
        if getattr(result, "volume_path", None) is not None:
            self.log_panel.append("INFO", "the final volume (refined angles) is on show; File > Save writes copies")
        self.last_saved_text = text
        self.statusBar().showMessage(text, 60000)

    # ------------------------------------------------------------------ saving
    def _output_dir(self) -> str:
        """Where the Save dialogs open: the last run's folder, else the runs' output folder."""
        run_dir = getattr(self.controller, "run_dir", None)
        if run_dir is not None and Path(run_dir).is_dir():
            return str(run_dir)
        folder = getattr(self.controller, "output_dir", None) or self.settings.output_dir
        return str(folder or getattr(getattr(self.controller.config, "paths", None), "output_dir", "."))

    def apply_output_dir(self) -> None:
        """Runs from now on are saved under the configured output folder (Hardware & settings)."""
        if not hasattr(self.controller, "output_dir"):
            return
        folder = self.settings.output_dir
        if folder:
            self.controller.output_dir = Path(folder).expanduser()
        self.log_panel.append("INFO", f"runs are saved under {Path(self.controller.output_dir).resolve()}")

    def _save(self, what: str, export: Any, path: str | Path) -> bool:
        """Run one exporter; a failure is shown to the operator, never raised."""
        try:
            out = export(self.controller, Path(path))
        except Exception as exc:
            self.show_error(f"saving the {what} failed: {exc}")
            return False
        self.log_panel.append("INFO", f"{what} saved to {out}")
        return True

    def save_volume(self, path: str | Path) -> bool:
        return self._save("volume", exporting.save_volume, path)

    def save_angles(self, path: str | Path) -> bool:
        return self._save("angles", exporting.save_angles, path)

    def save_recording(self, path: str | Path) -> bool:
        return self._save("recording", exporting.save_recording, path)

    def save_volume_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save volume", str(Path(self._output_dir()) / "volume.tif"), "TIFF (*.tif *.tiff)")
        if path:
            self.save_volume(path)

    def save_angles_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save angles", str(Path(self._output_dir()) / "angles.csv"), "CSV (*.csv)")
        if path:
            self.save_angles(path)

    def save_recording_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save recording", str(Path(self._output_dir()) / "recording.ome.tif"), "OME-TIFF (*.ome.tif);;OME-Zarr (*.ome.zarr)")
        if path:
            self.save_recording(path)

    # ------------------------------------------------------------------ dialogs
    def open_settings_dialog(self) -> None:
        from mcf_rotator.gui.settings_dialog import SettingsDialog

        dlg = SettingsDialog(self.settings, self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.accepted.connect(lambda: self._settings_accepted(dlg))
        dlg.open()
        self.settings_dialog = dlg

    def _settings_accepted(self, dlg: Any) -> None:
        self.settings = dlg.result_settings()
        self.settings.save()
        self.apply_output_dir()
        self.live_view.set_fps(self.settings.live_fps)
        self.volume_view.set_refresh_hz(self.settings.volume_refresh_hz)
        self.log_panel.append("INFO", "settings saved; hardware changes apply at the next start")

    def open_calibration_wizard(self) -> Any:
        """Open the calibration wizard (non-modal); errors building it go to the log."""
        from mcf_rotator.gui.wizard import CalibrationWizardDialog, default_calibration_path

        if self.wizard is not None and self.wizard.isVisible():
            self.wizard.raise_()
            return self.wizard
        steps = self._calibration("the calibration wizard")
        if steps is None:
            return None
        self.wizard = CalibrationWizardDialog(steps, self, save_path=default_calibration_path(self.controller))
        self.wizard.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.wizard.destroyed.connect(lambda *_: setattr(self, "wizard", None))
        self.wizard.saved_message.connect(lambda text: self.log_panel.append("INFO", text))
        self.wizard.finished.connect(lambda _r: self.drift_bar.setVisible(False) if self.wizard and self.wizard.saved else None)
        self.wizard.show()
        return self.wizard

    def _calibration(self, what: str) -> Any:
        """The (cached) calibration steps; only while the rig is idle (the trap must be off)."""
        from mcf_rotator.gui.wizard import make_calibration_steps

        if state_name(self._current_state()) not in ("IDLE", "ERROR"):
            self.show_error(f"{what} needs an idle rig: stop the run first")
            return None
        if self._calibration_steps is None:
            try:
                self._calibration_steps = make_calibration_steps(self.controller)
            except Exception as exc:
                self.show_error(f"{what} is unavailable: {exc}")
                return None
        return self._calibration_steps

    def check_drift(self) -> Any:
        """Run the drift check; a failure suggests the wizard ("fibre re-bent?")."""
        from mcf_rotator.gui.wizard import drift_ok

        steps = self._calibration("the drift check")
        if steps is None:
            return None
        try:
            report = steps.drift_check()
        except Exception as exc:
            self.show_error(f"drift check failed to run: {exc}")
            return None
        ok, text = drift_ok(report)
        if ok:
            self.drift_bar.setVisible(False)
            self.log_panel.append("INFO", f"drift check passed: {text}")
        else:
            self.drift_label.setText(f"Drift check failed ({text}) - fibre re-bent? Recalibrate the per-core phases.")
            self.drift_bar.setVisible(True)
            self.log_panel.append("WARNING", f"drift check failed: {text}")
        return report

    def _about(self) -> None:
        from mcf_rotator import __version__

        self.statusBar().showMessage(f"mcf-rotator {__version__}: optical projection tomography on a multi-core-fibre cell rotator", 10000)

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event) -> None:  # noqa: N802
        """Stop devices cleanly (the recording is kept by the controller), then release widgets."""
        if not self._closed:
            self._closed = True
            self.stop_timers()
            self._error_style_timer.stop()
            # never wait for a queued command: Run all lasts the whole run, and shutdown() below
            # makes it end at its next step
            for pool in (self._commands, self._sequence, self._urgent):
                pool.shutdown(wait=False, cancel_futures=True)
            name = state_name(self._current_state())
            if name in ("TRAPPING", "ROTATING"):
                self.run_command("stop", self.controller.stop, wait=True)
            elif name in ("RECONSTRUCTING", "FINISHING"):
                # the final reconstruction takes minutes: close now, keep the recording
                log.warning("window closed while %s: the recording is kept, no final volume", name.lower())
            self.bridge.disconnect_all()
            if self.owns_controller:
                self.run_command("shutdown", self.controller.shutdown, wait=True)
            elif name in ("RECONSTRUCTING", "FINISHING"):
                self.run_command("cancel", getattr(self.controller, "cancel", self.controller.stop), wait=True)
            if self.wizard is not None:
                self.wizard.close()
            self.volume_view.close_viewer()
            self.log_panel.detach()
            self.settings.save()
        super().closeEvent(event)
