"""Log panel: Python logging and controller messages, shown in the GUI thread."""

from __future__ import annotations

import logging
import time

from qtpy.QtCore import QObject, Signal
from qtpy.QtGui import QColor, QTextCharFormat
from qtpy.QtWidgets import QPlainTextEdit, QVBoxLayout, QWidget

_COLOURS = {
    "DEBUG": "#808080",
    "INFO": "#202020",
    "WARNING": "#b06000",
    "ERROR": "#c00000",
    "CRITICAL": "#c00000",
}


class _Relay(QObject):
    record = Signal(str, str, str)  # level, formatted text, bare message (for de-duplication)


class QtLogHandler(logging.Handler):
    """logging.Handler that hands records to the GUI thread through a queued Qt signal."""

    def __init__(self, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.relay = _Relay()
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.relay.record.emit(record.levelname, self.format(record), record.getMessage())
        except RuntimeError:  # relay deleted while a worker thread still logs
            pass


class LogPanel(QWidget):
    """Read-only, bounded log view; attaches a handler to the ``mcf_rotator`` logger.

    Controller messages arrive both as events and as log records (warnings and errors);
    a line repeating one shown within ``DEDUP_S`` seconds is dropped.
    """

    MAX_LINES = 2000
    DEDUP_S = 2.0

    def __init__(self, parent: QWidget | None = None, logger_name: str = "mcf_rotator") -> None:
        super().__init__(parent)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(self.MAX_LINES)
        self.text.setObjectName("logText")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.text)
        self._logger = logging.getLogger(logger_name)
        self.handler = QtLogHandler()
        self.handler.relay.record.connect(lambda lvl, text, key: self.append(lvl, text, key))
        self._logger.addHandler(self.handler)
        self._recent: dict[str, float] = {}

    def append(self, level: str, text: str, key: str | None = None) -> None:
        """Add one line (GUI thread only)."""
        level = level.upper()
        now = time.monotonic()
        key = key or text
        if now - self._recent.get(key, -1e9) < self.DEDUP_S:
            return
        if len(self._recent) > 200:
            self._recent = {k: t for k, t in self._recent.items() if now - t < self.DEDUP_S}
        self._recent[key] = now
        fmt = QTextCharFormat()
        fmt.setForeground(QColor(_COLOURS.get(level, "#202020")))
        cursor = self.text.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        stamp = time.strftime("%H:%M:%S")
        if self.text.document().characterCount() > 1:
            cursor.insertBlock()
        cursor.insertText(f"{stamp} {level:<7} {text}", fmt)
        self.text.setTextCursor(cursor)
        self.text.ensureCursorVisible()

    def plain_text(self) -> str:
        return self.text.toPlainText()

    def detach(self) -> None:
        """Remove the logging handler (the panel is going away)."""
        self._logger.removeHandler(self.handler)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.detach()
        super().closeEvent(event)
