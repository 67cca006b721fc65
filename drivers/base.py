"""Shared machinery for device implementations: name, lock, events, connection bookkeeping."""

from __future__ import annotations

import logging
import threading

from mcf_rotator.drivers.protocols import DeviceEvents

log = logging.getLogger(__name__)


class BaseDevice:
    """Implements the non-optical part of the :class:`~mcf_rotator.drivers.protocols.Device` protocol.

    Subclasses implement ``_connect``/``_disconnect``; this class keeps the connected flag,
    serialises calls with ``self.lock`` and emits ``events``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.events = DeviceEvents()
        self.lock = threading.RLock()
        self._connected = False

    # -- protocol -----------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        with self.lock:
            if self._connected:
                return
            self._connect()
            self._connected = True
        self.events.connected.emit()

    def disconnect(self) -> None:
        with self.lock:
            if not self._connected:
                return
            try:
                self._disconnect()
            finally:
                self._connected = False
        self.events.disconnected.emit()

    # -- helpers for subclasses -----------------------------------------------------
    def _connect(self) -> None:  # pragma: no cover - trivial default
        pass

    def _disconnect(self) -> None:  # pragma: no cover - trivial default
        pass

    def _fail(self, message: str) -> None:
        """Mark the device unusable and tell listeners why (does not raise).

        ``message`` is emitted as given; the log line names the device once (drivers' messages
        usually start with the device's name already).
        """
        log.error("%s", message if message.startswith(f"{self.name}:") else f"{self.name}: {message}")
        self._connected = False
        self.events.error.emit(message)

    def _set_property(self, prop: str, value: object) -> None:
        setattr(self, f"_{prop}", value)
        self.events.property_changed.emit(prop, value)

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<{type(self).__name__} {self.name!r} {state}>"
