"""Lifecycle shared by the SDK cameras (IDS uEye, IDS peak): release, reconnect, loss, snap.

Subclasses open the SDK in ``_connect``, free everything in ``_release(quiet)`` (safe on a
half-open or vanished camera) and keep ``_acquiring``, ``_want_acquiring``, ``_exposure_ms``
and ``_frame_rate_hz`` up to date; this class turns those into the parts of the Camera
protocol that do not depend on the vendor.
"""

from __future__ import annotations

from mcf_rotator.drivers.base import BaseDevice
from mcf_rotator.drivers.protocols import Frame
from mcf_rotator.errors import DeviceDisconnectedError


class VendorCamera(BaseDevice):
    _acquiring: bool = False
    _want_acquiring: bool = False
    _exposure_ms: float
    _frame_rate_hz: float

    def _release(self, quiet: bool) -> None:  # pragma: no cover - every subclass implements it
        raise NotImplementedError

    def _disconnect(self) -> None:
        self._release(quiet=False)

    def reconnect(self) -> None:
        """Close whatever is left and open again with the same settings (after an unplug)."""
        with self.lock:
            was_acquiring = self._want_acquiring
            self._release(quiet=True)
            self._connected = False
            self.connect()
            if was_acquiring:
                self.start_acquisition()

    def _lost(self, message: str) -> None:
        """The camera is gone: free the SDK side, emit events.error, raise DeviceDisconnectedError."""
        self._release(quiet=True)
        self._fail(message)
        raise DeviceDisconnectedError(message)

    @property
    def is_acquiring(self) -> bool:
        return self._acquiring

    def snap(self) -> Frame:
        """One frame; starts and stops acquisition around it if not already running."""
        timeout = max(1.0, 3 * self._exposure_ms / 1000 + 2 / max(self._frame_rate_hz, 1e-3))
        with self.lock:
            if self._acquiring:
                return self.read_frame(timeout)
            self.start_acquisition()
            try:
                return self.read_frame(timeout)
            finally:
                if self._acquiring:
                    self.stop_acquisition()
