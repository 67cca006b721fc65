"""Thread-safe hop from the controller's psygnal events (worker threads) to the Qt GUI thread.

psygnal callbacks run in whichever thread emits. Widgets may only be touched from the GUI
thread, so every controller event is re-emitted as a Qt signal on a QObject that lives in the
GUI thread; Qt's AutoConnection then queues the delivery. Only low-rate events travel this
way (state changes, messages, errors, volume versions); per-frame data is pulled by timers.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject, Signal


class ControllerBridge(QObject):
    """Qt signals mirroring ``RigController.events``; safe to emit from any thread."""

    state_changed = Signal(object, object)
    message = Signal(str, str)
    error = Signal(str)
    volume_updated = Signal(int)
    finished = Signal(object)

    def __init__(self, controller: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self._connections: list[tuple[Any, Any]] = []
        events = getattr(controller, "events", None)
        if events is None:
            return
        pairs = [
            ("state_changed", lambda old, new: self.state_changed.emit(old, new)),
            ("message", lambda level, text: self.message.emit(str(level), str(text))),
            ("error", lambda text: self.error.emit(str(text))),
            ("volume_updated", lambda version: self.volume_updated.emit(int(version))),
            ("finished", lambda result: self.finished.emit(result)),
        ]
        for name, slot in pairs:
            sig = getattr(events, name, None)
            if sig is not None:
                sig.connect(slot)
                self._connections.append((sig, slot))

    def disconnect_all(self) -> None:
        """Stop forwarding (call before the GUI goes away so late worker events are dropped)."""
        for sig, slot in self._connections:
            try:
                sig.disconnect(slot)
            except Exception:  # already gone
                pass
        self._connections.clear()
