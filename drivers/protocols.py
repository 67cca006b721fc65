"""Device protocols: what the rig controller, pipeline and GUI may call on any device.

Modelled on pymmcore-plus: every device has a name, a re-entrant lock (``device.lock``) that
callers hold across multi-step operations, and a psygnal ``events`` group. Events are for
state changes (connected, property changed, error); frames are *pulled* with
:meth:`Camera.read_frame`, never pushed per frame across threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from psygnal import Signal, SignalGroup


class DeviceEvents(SignalGroup):
    """Signals every device emits (from whichever thread changed the state)."""

    connected = Signal()
    disconnected = Signal()
    #: property name, new value
    property_changed = Signal(str, object)
    #: human-readable message; the device is unusable until reconnected
    error = Signal(str)


@dataclass
class Frame:
    """One camera image with its acquisition metadata.

    ``timestamp`` is seconds (camera clock where the camera provides one, else monotonic
    host time); ``index`` counts frames since ``start_acquisition``.
    """

    image: np.ndarray
    index: int
    timestamp: float
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Device(Protocol):
    name: str
    events: DeviceEvents
    lock: threading.RLock

    def connect(self) -> None:
        """Open the device. Raises DeviceError subclasses with operator-readable messages."""

    def disconnect(self) -> None:
        """Release the device. Safe to call twice and after a failure."""

    @property
    def is_connected(self) -> bool: ...


@runtime_checkable
class Camera(Device, Protocol):
    """A frame source: real camera, simulated camera or file replay."""

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the images read_frame returns."""

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def bit_depth(self) -> int: ...

    exposure_ms: float
    frame_rate_hz: float

    def start_acquisition(self) -> None: ...

    def stop_acquisition(self) -> None: ...

    @property
    def is_acquiring(self) -> bool: ...

    def read_frame(self, timeout_s: float = 1.0) -> Frame:
        """Next frame. Raises FrameTimeoutError / DeviceDisconnectedError."""

    def snap(self) -> Frame:
        """One frame outside continuous acquisition."""


@runtime_checkable
class SLM(Device, Protocol):
    """A phase-only spatial light modulator driven by 8-bit grey levels."""

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels, e.g. (1080, 1920) for a PLUTO-2."""

    pixel_pitch_um: float
    refresh_rate_hz: float

    def show_phase(self, phase_rad: np.ndarray) -> None:
        """Display a phase image in radians (wrapped to [0, 2pi) and mapped through the LUT)."""

    def show_grey(self, grey: np.ndarray) -> None:
        """Display an 8-bit image exactly as given."""

    @property
    def current_grey(self) -> np.ndarray | None: ...


@runtime_checkable
class Trap(Device, Protocol):
    """The trapping laser(s) feeding the MCF and the opposing single-mode fibre."""

    power_mw: float

    def set_enabled(self, enabled: bool) -> None: ...

    @property
    def enabled(self) -> bool: ...


@runtime_checkable
class Pump(Device, Protocol):
    """Optional microfluidic pump delivering cells into the capillary."""

    flow_ul_min: float

    def set_running(self, running: bool) -> None: ...
