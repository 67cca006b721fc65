"""Hardware selection (simulated vs real per device), rig config file and display rates."""

from __future__ import annotations

import copy
from pathlib import Path

from qtpy.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from mcf_rotator.errors import ConfigError
from mcf_rotator.gui.user_settings import UserSettings

MODES = [("as in the rig config", "config"), ("simulated", "simulated"), ("real hardware", "real")]


class SettingsDialog(QDialog):
    """Edits a copy of :class:`UserSettings`; the caller saves on accept."""

    def __init__(self, settings: UserSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Hardware and settings")
        self._settings = copy.deepcopy(settings)
        form = QFormLayout()
        self.config_edit = QLineEdit(settings.config_path or "", self)
        self.config_edit.setPlaceholderText("default rig (fully simulated)")
        browse = QPushButton("Browse...", self)
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.config_edit, 1)
        row.addWidget(browse)
        form.addRow("Rig config file", row)
        self.mode_boxes: dict[str, QComboBox] = {}
        for key, label in (("camera_mode", "Camera"), ("slm_mode", "SLM"), ("trap_mode", "Trap laser")):
            box = QComboBox(self)
            for text, value in MODES:
                box.addItem(text, value)
            box.setCurrentIndex(max(0, box.findData(getattr(settings, key))))
            self.mode_boxes[key] = box
            form.addRow(label, box)
        self.fps_spin = QDoubleSpinBox(self)
        self.fps_spin.setRange(5, 120)
        self.fps_spin.setValue(settings.live_fps)
        self.fps_spin.setSuffix(" Hz")
        form.addRow("Live view refresh", self.fps_spin)
        self.volume_spin = QDoubleSpinBox(self)
        self.volume_spin.setRange(0.2, 5.0)
        self.volume_spin.setSingleStep(0.5)
        self.volume_spin.setValue(settings.volume_refresh_hz)
        self.volume_spin.setSuffix(" Hz")
        form.addRow("Volume refresh", self.volume_spin)
        self.output_edit = QLineEdit(settings.output_dir or "", self)
        form.addRow("Output folder", self.output_edit)
        self.error_label = QLabel("", self)
        self.error_label.setStyleSheet("color:#c00000")
        self.error_label.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        self.buttons.accepted.connect(self._try_accept)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(QLabel("Device changes take effect the next time the application starts.", self))
        lay.addWidget(self.error_label)
        lay.addWidget(self.buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Rig configuration", self.config_edit.text(), "Rig config (*.yaml *.yml *.json)")
        if path:
            self.config_edit.setText(path)

    def _try_accept(self) -> None:
        """Validate the config file before accepting so a typo is caught now, not at start-up."""
        text = self.config_edit.text().strip()
        if text:
            from mcf_rotator.config import load_config

            try:
                load_config(Path(text))
            except ConfigError as exc:
                self.error_label.setText(str(exc))
                return
        self.accept()

    def result_settings(self) -> UserSettings:
        s = copy.deepcopy(self._settings)
        s.config_path = self.config_edit.text().strip() or None
        for key, box in self.mode_boxes.items():
            setattr(s, key, box.currentData())
        s.live_fps = float(self.fps_spin.value())
        s.volume_refresh_hz = float(self.volume_spin.value())
        s.output_dir = self.output_edit.text().strip() or None
        return s
