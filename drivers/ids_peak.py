"""IDS peak camera driver (ids_peak >= 1.6 with ids_peak_ipl): GenICam cameras (uEye+, uEye XCP/XLE, ...).

Why this shape: IDS peak is the GenTL/GenICam stack that replaces the uEye API for newer
cameras. Settings are GenICam nodes on the remote device's node map; frames arrive in
announced buffers on a data stream. :meth:`read_frame` is ``WaitForFinishedBuffer``, one copy
out of the buffer (``BufferToImage(...).get_numpy_*`` + ``copy``) and ``QueueBuffer``. SDK
exceptions are mapped to :mod:`mcf_rotator.errors` with operator-readable text.

The SDK is imported lazily so the app runs without it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mcf_rotator.config import CameraConfig
from mcf_rotator.drivers.vendor_camera import VendorCamera
from mcf_rotator.drivers.protocols import Frame
from mcf_rotator.errors import (
    DeviceBusyError,
    DeviceDisconnectedError,
    DeviceError,
    DeviceNotFoundError,
    FrameTimeoutError,
    SDKNotFoundError,
)

log = logging.getLogger(__name__)

_PIXEL_FORMATS = {8: "Mono8", 10: "Mono10", 12: "Mono12", 16: "Mono16"}


def import_ids_peak() -> tuple[Any, Any]:
    """Return ``(ids_peak, ids_peak_ipl_extension)`` or raise SDKNotFoundError."""
    try:
        from ids_peak import ids_peak, ids_peak_ipl_extension  # type: ignore[import-not-found]
    except ImportError as exc:
        raise SDKNotFoundError(
            "IDS peak camera: the ids_peak Python packages are not usable "
            f"({exc}). Install IDS peak (runtime + GenTL producer) from ids-imaging.com and "
            "`pip install mcf-rotator[ids-peak]` (ids-peak, ids-peak-ipl)."
        ) from exc
    except OSError as exc:
        raise SDKNotFoundError(f"IDS peak camera: the IDS peak runtime failed to load ({exc}); reinstall IDS peak") from exc
    return ids_peak, ids_peak_ipl_extension


def probe() -> str:
    """What check-hardware reports for this driver: packages, GenTL producer and the cameras it sees
    (nothing is opened); raises SDKNotFoundError saying what is missing."""
    peak, _ = import_ids_peak()
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("ids-peak")
    except PackageNotFoundError:
        ver = "?"
    _start_library(peak)
    try:
        n = len(_find_devices(peak))
    finally:
        peak.Library.Close()
    return f"ids-peak {ver}, GenTL producer loaded, {n} camera(s) visible"


def _start_library(peak: Any) -> None:
    """``Library.Initialize`` (reference counted: pair with ``Library.Close``); a failure means a
    broken installation, reported as such."""
    try:
        peak.Library.Initialize()
    except Exception as exc:  # runtime_error when the genericAPI library cannot load
        raise SDKNotFoundError(
            f"IDS peak camera: the IDS peak library failed to start ({exc}); reinstall IDS peak"
        ) from exc


def _find_devices(peak: Any) -> list[Any]:
    """Descriptors of the cameras the GenTL producers see; no producer is a missing SDK part."""
    manager = peak.DeviceManager.Instance()
    try:
        manager.Update()
    except peak.Exception as exc:
        raise _producer_error(exc) from exc
    return list(manager.Devices())


class IDSPeakCamera(VendorCamera):
    """A camera opened through IDS peak; ``config.serial`` or ``config.device_id`` (index) selects it."""

    def __init__(
        self,
        config: CameraConfig | None = None,
        *,
        name: str = "camera",
        n_buffers: int = 8,
        max_consecutive_timeouts: int = 3,
    ) -> None:
        super().__init__(name)
        self.config = config.model_copy() if config is not None else CameraConfig(driver="ids_peak")
        self.n_buffers = max(2, int(n_buffers))
        self.max_consecutive_timeouts = max(1, int(max_consecutive_timeouts))
        self._peak: Any = None
        self._ipl_ext: Any = None
        self._lib_open = False
        self._device: Any = None
        self._nodes: Any = None
        self._stream: Any = None
        self._buffers: list[Any] = []
        self._width = 0
        self._height = 0
        self._exposure_ms = float(self.config.exposure_ms)
        self._frame_rate_hz = float(self.config.frame_rate_hz)
        self._gain = float(self.config.gain)
        self._acquiring = False
        self._want_acquiring = False  # survives a lost device, for reconnect()
        self._index = 0
        self._timeouts = 0
        self.model_name = ""
        self.serial_number = ""

    # -- connection ---------------------------------------------------------------------
    @property
    def _label(self) -> str:
        return f"IDS peak camera {self.config.serial or self.config.device_id}"

    def _connect(self) -> None:
        peak, self._ipl_ext = import_ids_peak()
        self._peak = peak
        try:
            _start_library(peak)
            self._lib_open = True
            descriptor = self._select(_find_devices(peak))
            if not descriptor.IsOpenable(peak.DeviceAccessType_Control):
                raise DeviceBusyError(
                    f"{self._label} ({descriptor.ModelName()}) is in use by another program "
                    "(IDS peak Cockpit, another mcf-rotator?); close it and retry"
                )
            try:
                self._device = descriptor.OpenDevice(peak.DeviceAccessType_Control)
            except peak.BadAccessException as exc:
                raise DeviceBusyError(f"{self._label} is in use by another program ({exc}); close it and retry") from exc
            self.model_name = str(descriptor.ModelName())
            self.serial_number = str(descriptor.SerialNumber())
            self._nodes = self._device.RemoteDevice().NodeMaps()[0]
            self._configure()
            streams = self._device.DataStreams()
            if len(streams) == 0:
                raise DeviceError(f"{self._label}: the camera offers no data stream")
            self._stream = streams[0].OpenDataStream()
        except Exception as exc:
            self._release(quiet=True)
            raise self._map(exc, "opening") from exc

    def _select(self, devices: list[Any]) -> Any:
        if not devices:
            raise DeviceNotFoundError(
                "IDS peak: no camera found. Check the cable/power and that IDS peak Cockpit lists the camera."
            )
        if self.config.serial:
            for d in devices:
                if str(d.SerialNumber()) == self.config.serial.strip():
                    return d
            found = ", ".join(str(d.SerialNumber()) for d in devices)
            raise DeviceNotFoundError(
                f"IDS peak: no camera with serial {self.config.serial!r} (found: {found}); fix camera.serial"
            )
        idx = int(self.config.device_id)
        if idx >= len(devices):
            raise DeviceNotFoundError(
                f"IDS peak: camera index {idx} requested but only {len(devices)} camera(s) attached; fix camera.device_id"
            )
        return devices[idx]

    def _node(self, name: str) -> Any:
        return self._nodes.FindNode(name)

    def _set_clamped(self, name: str, value: float) -> float:
        node = self._node(name)
        lo, hi = float(node.Minimum()), float(node.Maximum())
        node.SetValue(min(max(float(value), lo), hi))
        return float(node.Value())

    def _configure(self) -> None:
        try:  # a crashed session may have left the transport-layer parameters locked
            self._node("TLParamsLocked").SetValue(0)
        except self._peak.Exception as exc:
            log.debug("%s: TLParamsLocked not reset: %s", self.name, exc)
        try:  # start from the camera's default user set, as IDS samples do
            self._node("UserSetSelector").SetCurrentEntry("Default")
            self._node("UserSetLoad").Execute()
            self._node("UserSetLoad").WaitUntilDone()
        except self._peak.Exception as exc:
            log.debug("%s: user set not loaded: %s", self.name, exc)
        self._set_pixel_format(_PIXEL_FORMATS[int(self.config.bit_depth)])
        self._set_roi()
        self._apply_gain(self._gain)
        self._apply_exposure(self._exposure_ms)
        self._apply_frame_rate(self._frame_rate_hz)

    def _set_pixel_format(self, wanted: str) -> None:
        """``PixelFormat`` = ``wanted``; a format the camera lacks is a configuration error, said so."""
        peak = self._peak
        node = self._node("PixelFormat")
        refused = tuple(getattr(peak, n) for n in ("InvalidArgumentException", "NotFoundException",
                                                   "OutOfRangeException") if hasattr(peak, n))
        try:
            node.SetCurrentEntry(wanted)
        except refused as exc:
            offered = _offered_entries(node)
            depths = sorted(b for b, f in _PIXEL_FORMATS.items() if f in offered)
            hint = (f"set camera.bit_depth to {' or '.join(str(b) for b in depths)}" if depths
                    else "set camera.bit_depth to a depth the camera offers")
            raise DeviceError(
                f"{self._label} ({self.model_name or 'camera'}) does not offer pixel format {wanted} "
                f"(camera.bit_depth: {self.config.bit_depth}; offered: {', '.join(offered) or 'unknown'}); "
                f"{hint} in the rig file"
            ) from exc

    def _set_roi(self) -> None:
        if self.config.roi is not None:
            x, y, w, h = (int(v) for v in self.config.roi)
            # offsets first to 0 so any width/height is allowed, then size, then offsets
            self._node("OffsetX").SetValue(self._node("OffsetX").Minimum())
            self._node("OffsetY").SetValue(self._node("OffsetY").Minimum())
            for node, v in (("Width", w), ("Height", h), ("OffsetX", x), ("OffsetY", y)):
                n = self._node(node)
                inc = max(1, int(n.Increment()))
                v = int(n.Minimum()) + ((v - int(n.Minimum())) // inc) * inc
                if not int(n.Minimum()) <= v <= int(n.Maximum()):
                    raise DeviceError(
                        f"{self._label}: ROI {self.config.roi} does not fit the sensor "
                        f"({node} must be {n.Minimum()}..{n.Maximum()})"
                    )
                n.SetValue(v)
        else:
            for node in ("OffsetX", "OffsetY"):
                self._node(node).SetValue(self._node(node).Minimum())
            for node in ("Width", "Height"):
                self._node(node).SetValue(self._node(node).Maximum())
        self._width = int(self._node("Width").Value())
        self._height = int(self._node("Height").Value())

    def _apply_exposure(self, ms: float) -> None:
        self._exposure_ms = self._set_clamped("ExposureTime", ms * 1000.0) / 1000.0

    def _apply_frame_rate(self, hz: float) -> None:
        self._frame_rate_hz = self._set_clamped("AcquisitionFrameRate", hz)

    def _apply_gain(self, gain: float) -> None:
        try:
            self._node("GainSelector").SetCurrentEntry("AnalogAll")
        except self._peak.Exception:
            pass  # cameras with a single gain
        self._gain = self._set_clamped("Gain", gain)

    def _alloc_buffers(self) -> None:
        payload = int(self._node("PayloadSize").Value())
        n = max(self.n_buffers, int(self._stream.NumBuffersAnnouncedMinRequired()))
        for _ in range(n):
            buf = self._stream.AllocAndAnnounceBuffer(payload)
            self._buffers.append(buf)
            self._stream.QueueBuffer(buf)

    def _revoke_buffers(self) -> None:
        if self._stream is None:
            return
        self._stream.Flush(self._peak.DataStreamFlushMode_DiscardAll)
        for buf in list(self._stream.AnnouncedBuffers()):
            self._stream.RevokeBuffer(buf)
        self._buffers.clear()

    def _release(self, quiet: bool) -> None:
        """Stop, revoke, close; each step tolerant (the camera may be unplugged)."""
        peak = self._peak
        if peak is None:
            return
        steps = []
        if self._acquiring:
            steps += [self._stop_stream]
        steps += [self._revoke_buffers]
        for step in steps:
            try:
                step()
            except Exception as exc:
                (log.debug if quiet else log.warning)("%s: %s during close: %s", self.name, step.__name__, exc)
        self._acquiring = False
        self._stream = None
        self._nodes = None
        self._device = None
        if self._lib_open:
            try:
                peak.Library.Close()
            except Exception as exc:
                log.debug("%s: Library.Close: %s", self.name, exc)
            self._lib_open = False

    def _map(self, exc: BaseException, doing: str) -> BaseException:
        """Turn an ids_peak exception into our error hierarchy (ours pass through)."""
        if isinstance(exc, DeviceError) or self._peak is None:
            return exc
        peak = self._peak
        text = f"{self._label}: {doing} failed ({exc})"
        if isinstance(exc, getattr(peak, "BadAccessException", ())):
            return DeviceBusyError(f"{text}; another program (IDS peak Cockpit?) may hold the camera: "
                                   "close it and retry")
        if isinstance(exc, getattr(peak, "IOException", ())):
            return DeviceDisconnectedError(f"{text}; the camera stopped answering: check the cable and reconnect")
        if isinstance(exc, getattr(peak, "Exception", ())):
            return DeviceError(text)
        return exc

    # -- properties -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self._height, self._width)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if int(self.config.bit_depth) == 8 else np.uint16)

    @property
    def bit_depth(self) -> int:
        return int(self.config.bit_depth)

    def _require_open(self) -> None:
        if self._nodes is None:
            raise DeviceDisconnectedError(f"{self._label} is not connected; reconnect it first")

    def _setter(self, prop: str, fn: Any, value: float) -> None:
        with self.lock:
            self._require_open()
            try:
                fn(float(value))
            except Exception as exc:
                raise self._map(exc, f"setting {prop}") from exc
        self.events.property_changed.emit(prop, getattr(self, f"_{prop}"))

    @property
    def exposure_ms(self) -> float:
        return self._exposure_ms

    @exposure_ms.setter
    def exposure_ms(self, value: float) -> None:
        self._setter("exposure_ms", self._apply_exposure, value)

    @property
    def frame_rate_hz(self) -> float:
        return self._frame_rate_hz

    @frame_rate_hz.setter
    def frame_rate_hz(self, value: float) -> None:
        self._setter("frame_rate_hz", self._apply_frame_rate, value)

    @property
    def gain(self) -> float:
        return self._gain

    @gain.setter
    def gain(self, value: float) -> None:
        self._setter("gain", self._apply_gain, value)

    # -- acquisition -------------------------------------------------------------------------
    def start_acquisition(self) -> None:
        with self.lock:
            self._require_open()
            if self._acquiring:
                return
            peak = self._peak
            try:
                self._alloc_buffers()
                self._node("TLParamsLocked").SetValue(1)
                self._stream.StartAcquisition(peak.AcquisitionStartMode_Default, peak.DataStream.INFINITE_NUMBER)
                self._node("AcquisitionStart").Execute()
                self._node("AcquisitionStart").WaitUntilDone()
            except Exception as exc:
                raise self._map(exc, "starting acquisition") from exc
            self._acquiring = True
            self._want_acquiring = True
            self._index = 0
            self._timeouts = 0

    def _stop_stream(self) -> None:
        """Device-side stop, then host-side stream stop; each step runs even if an earlier one
        failed (an unplugged camera rejects node access but the host stream must still stop)."""
        peak = self._peak
        steps = [
            lambda: self._node("AcquisitionStop").Execute(),
            lambda: self._node("AcquisitionStop").WaitUntilDone(),
            lambda: self._stream.KillWait(),
            lambda: self._stream.StopAcquisition(peak.AcquisitionStopMode_Default),
            lambda: self._node("TLParamsLocked").SetValue(0),
        ]
        first_error: BaseException | None = None
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - reported after all steps ran
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def stop_acquisition(self) -> None:
        with self.lock:
            self._want_acquiring = False
            if not self._acquiring:
                return
            self._acquiring = False
            try:
                self._stop_stream()
                self._revoke_buffers()
            except Exception as exc:
                log.warning("%s: stopping acquisition: %s", self.name, exc)

    def read_frame(self, timeout_s: float = 1.0) -> Frame:
        """Next finished buffer; raises FrameTimeoutError / DeviceDisconnectedError."""
        with self.lock:
            if self._stream is None:
                raise DeviceDisconnectedError(f"{self._label} is disconnected; reconnect it to continue")
            if not self._acquiring:
                raise DeviceError(f"{self._label}: read_frame needs start_acquisition() first")
            peak = self._peak
            try:
                buf = self._stream.WaitForFinishedBuffer(max(1, int(timeout_s * 1000)))
            except peak.TimeoutException:
                self._timeouts += 1
                if self._timeouts >= self.max_consecutive_timeouts:
                    self._lost(f"{self._label}: no frame for {self._timeouts} attempts in a row; "
                               "the camera was probably unplugged or lost power. Check the cable and reconnect.")
                raise FrameTimeoutError(
                    f"{self._label}: no frame within {timeout_s:.3g} s (exposure {self._exposure_ms:.3g} ms, "
                    f"{self._frame_rate_hz:.3g} Hz; is a trigger mode active?)"
                ) from None
            except peak.AbortedException:
                raise FrameTimeoutError(f"{self._label}: waiting for a frame was aborted (acquisition stopping)") from None
            except peak.Exception as exc:
                self._lost(f"{self._label} stopped delivering frames ({exc}); it was probably unplugged. "
                           "Reconnect the camera.")
            try:
                if buf.IsIncomplete():
                    self._timeouts += 1
                    if self._timeouts >= self.max_consecutive_timeouts:
                        self._lost(f"{self._label}: {self._timeouts} incomplete transfers in a row; "
                                   "check the cable/link speed and reconnect")
                    raise FrameTimeoutError(
                        f"{self._label}: image transfer incomplete (bandwidth); lower the frame rate or ROI"
                    )
                img = self._ipl_ext.BufferToImage(buf)
                arr = img.get_numpy_2D() if self.dtype == np.uint8 else img.get_numpy_2D_16()
                image = np.array(arr, copy=True)
                timestamp = int(buf.Timestamp_ns()) * 1e-9
                meta = {"camera_frame": int(buf.FrameID()), "clock": "camera"}
            except peak.Exception as exc:
                self._lost(f"{self._label}: reading a frame failed ({exc}); reconnect the camera")
            finally:
                try:
                    if self._stream is not None:
                        self._stream.QueueBuffer(buf)
                except Exception as exc:  # camera vanished between wait and re-queue
                    log.debug("%s: re-queue failed: %s", self.name, exc)
            self._timeouts = 0
            frame = Frame(image=image, index=self._index, timestamp=timestamp, metadata=meta)
            self._index += 1
            return frame

    def describe(self) -> str:
        return (f"IDS peak {self.model_name or 'camera'} serial {self.serial_number or '?'}: "
                f"{self._width}x{self._height} {_PIXEL_FORMATS[self.bit_depth]}, {self._frame_rate_hz:.3g} Hz, "
                f"exposure {self._exposure_ms:.3g} ms, gain x{self._gain:.2f}")


def _producer_error(exc: BaseException) -> SDKNotFoundError:
    """``DeviceManager.Update`` failed: without a GenTL producer (the camera transport layer, a
    ``.cti`` file named by GENICAM_GENTL64_PATH) IDS peak cannot even look for cameras."""
    return SDKNotFoundError(
        f"IDS peak camera: no GenTL producer could be loaded ({exc}). Install IDS peak (its installer "
        "provides the producer and sets GENICAM_GENTL64_PATH; log out and in afterwards), or set "
        "GENICAM_GENTL64_PATH to the folder holding the IDS .cti files."
    )


def _offered_entries(node: Any) -> list[str]:
    """Symbolic names of the entries an enumeration node offers now, best effort (empty when unreadable)."""
    try:
        return [str(e.SymbolicValue()) for e in node.Entries() if e.IsAvailable()]
    except Exception:  # noqa: BLE001 - purely informative
        return []


__all__ = ["IDSPeakCamera", "import_ids_peak"]
