"""IDS uEye camera driver (pyueye, uEye API 4.9x).

Why this shape: the uEye API is a C API with integer return codes; every call goes through
:meth:`UEyeCamera._call`, which turns a code into an operator-readable
:class:`~mcf_rotator.errors.DeviceError` subclass. Frames are captured continuously into a ring
of driver-owned image memories (``is_AllocImageMem`` + ``is_AddToSequence``) with the image
queue enabled (``is_ImageQueue(IS_IMAGE_QUEUE_CMD_INIT)``), so :meth:`read_frame` is one
``is_ImageQueue(IS_IMAGE_QUEUE_CMD_WAIT)``, one copy out of the locked buffer
(``ueye.get_data(copy=True)``) and one ``is_UnlockSeqBuf``. pyueye marks the older
``is_InitImageQueue`` / ``is_WaitForNextImage`` / ``is_ExitImageQueue`` deprecated (a warning per
call, an exception under ``-W error``), so they are not used.

``pyueye`` is imported lazily: ``import pyueye`` itself fails when the IDS driver library is
missing (it reads ``PYUEYE_DLL_PATH``), and the rest of the app must work without it.
"""

from __future__ import annotations

import ctypes
import logging
import time
from typing import Any

import numpy as np

from mcf_rotator.config import CameraConfig
from mcf_rotator.drivers.protocols import Frame
from mcf_rotator.drivers.vendor_camera import VendorCamera
from mcf_rotator.errors import (
    DeviceBusyError,
    DeviceDisconnectedError,
    DeviceError,
    DeviceNotFoundError,
    FrameTimeoutError,
    SDKNotFoundError,
)

log = logging.getLogger(__name__)

#: uEye return codes (uEye.h); looked up by number so an old pyueye lacking a name still works
IS_NO_SUCCESS = -1
IS_SUCCESS = 0
IS_INVALID_CAMERA_HANDLE = 1
IS_IO_REQUEST_FAILED = 2
IS_CANT_OPEN_DEVICE = 3
IS_CANT_COMMUNICATE_WITH_DRIVER = 17
IS_INVALID_MODE = 101
IS_NO_ACTIVE_IMG_MEM = 108
IS_CAMERA_NOT_CONNECTED = 111
IS_INVALID_DEVICE_ID = 118
IS_ALL_DEVICES_BUSY = 120
IS_TIMED_OUT = 122
IS_INVALID_PARAMETER = 125
IS_OUT_OF_MEMORY = 127
IS_NO_HARDWARE_INSTALLED = 133
IS_CAPTURE_RUNNING = 140
IS_INVALID_COLOR_FORMAT = 174
IS_TRANSFER_ERROR = 178
IS_STARTER_FW_UPLOAD_NEEDED = 184
IS_DEVICE_ALREADY_PAIRED = 197

_CODE_TEXT = {
    IS_NO_SUCCESS: "general failure",
    IS_INVALID_CAMERA_HANDLE: "invalid camera handle (camera closed or unplugged)",
    IS_IO_REQUEST_FAILED: "I/O request to the camera failed",
    IS_CANT_OPEN_DEVICE: "camera cannot be opened",
    IS_CANT_COMMUNICATE_WITH_DRIVER: "no uEye driver loaded",
    IS_CAMERA_NOT_CONNECTED: "camera not connected",
    IS_INVALID_DEVICE_ID: "invalid camera id",
    IS_ALL_DEVICES_BUSY: "all cameras are in use",
    IS_TIMED_OUT: "timed out",
    IS_INVALID_PARAMETER: "parameter out of range for this sensor",
    IS_OUT_OF_MEMORY: "out of memory",
    IS_NO_HARDWARE_INSTALLED: "no uEye hardware installed",
    IS_CAPTURE_RUNNING: "a capture is still running",
    IS_INVALID_MODE: "mode not supported by this camera",
    IS_NO_ACTIVE_IMG_MEM: "no active image memory",
    IS_INVALID_COLOR_FORMAT: "pixel format not supported by this camera",
    IS_TRANSFER_ERROR: "image transfer failed",
    IS_STARTER_FW_UPLOAD_NEEDED: "camera needs a starter-firmware upload (open IDS Camera Manager once)",
    IS_DEVICE_ALREADY_PAIRED: "camera already paired with another program",
}

#: codes after which the camera is gone, not merely slow
_GONE_CODES = {
    IS_NO_SUCCESS,
    IS_INVALID_CAMERA_HANDLE,
    IS_IO_REQUEST_FAILED,
    IS_CAMERA_NOT_CONNECTED,
    IS_CANT_COMMUNICATE_WITH_DRIVER,
}

#: codes with which is_SetColorMode refuses a pixel format the sensor does not offer
_FORMAT_REFUSED = {IS_INVALID_COLOR_FORMAT, IS_INVALID_PARAMETER, IS_INVALID_MODE}

#: is_ImageQueue commands (uEye.h IMAGE_QUEUE_CMD)
IS_IMAGE_QUEUE_CMD_INIT = 0
IS_IMAGE_QUEUE_CMD_EXIT = 1
IS_IMAGE_QUEUE_CMD_WAIT = 2

_COLOR_MODES = {8: ("IS_CM_MONO8", 8), 10: ("IS_CM_MONO10", 16), 12: ("IS_CM_MONO12", 16), 16: ("IS_CM_MONO16", 16)}


class CallFailedError(DeviceError):
    """A uEye call returned a failure code; ``code`` lets callers react to specific refusals."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = int(code)


def import_pyueye() -> Any:
    """Import ``pyueye.ueye`` or raise SDKNotFoundError saying what to install or set."""
    try:
        from pyueye import ueye  # type: ignore[import-not-found]
    except ImportError as exc:
        text = str(exc)
        if getattr(exc, "name", None) == "pyueye" and "PYUEYE_DLL_PATH" not in text:
            raise SDKNotFoundError(
                "IDS uEye camera: the Python package pyueye is not installed. Install it with "
                "`pip install mcf-rotator[pyueye]` and install the IDS Software Suite (uEye driver); "
                "if the driver is installed in a non-standard folder set PYUEYE_DLL_PATH to the "
                "folder holding ueye_api_64.dll (Windows) or libueye_api.so (Linux)."
            ) from exc
        raise SDKNotFoundError(
            "IDS uEye camera: pyueye cannot load the uEye driver library "
            f"({text}). Install the IDS Software Suite (uEye driver) or set PYUEYE_DLL_PATH to "
            "the folder holding ueye_api_64.dll (Windows) or libueye_api.so (Linux)."
        ) from exc
    except OSError as exc:  # ctypes could not load the library
        raise SDKNotFoundError(
            f"IDS uEye camera: the uEye driver library failed to load ({exc}). "
            "Reinstall the IDS Software Suite or point PYUEYE_DLL_PATH at the folder holding it."
        ) from exc
    return ueye


def probe() -> str:
    """What check-hardware reports for this driver: pyueye and the library it loaded, without
    opening a camera; raises SDKNotFoundError saying what is missing."""
    ue = import_pyueye()
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("pyueye")
    except PackageNotFoundError:
        ver = "?"
    n = ue.INT()
    ret = int(ue.is_GetNumberOfCameras(n))
    if ret == IS_SUCCESS:
        cams = f"{int(n.value)} camera(s) attached"
    else:
        cams = f"camera count unavailable ({_CODE_TEXT.get(ret, f'code {ret}')})"
    return f"pyueye {ver}, uEye library {getattr(ue, 'get_dll_file', '?')}, {cams}"


class UEyeCamera(VendorCamera):
    """IDS uEye USB/GigE camera in continuous capture (mono8 / mono10/12/16 into uint16).

    ``config.device_id`` is the uEye *camera id* (0 = first free camera); ``config.serial``
    is checked after opening. ``pixel_clock_mhz=None`` picks the fastest clock the camera
    offers, so the configured frame rate is reachable; lower it if transfers fail.
    """

    def __init__(
        self,
        config: CameraConfig | None = None,
        *,
        name: str = "camera",
        n_buffers: int = 8,
        max_consecutive_timeouts: int = 3,
        pixel_clock_mhz: int | None = None,
    ) -> None:
        super().__init__(name)
        self.config = config.model_copy() if config is not None else CameraConfig(driver="ueye")
        self.n_buffers = max(2, int(n_buffers))
        self.max_consecutive_timeouts = max(1, int(max_consecutive_timeouts))
        self._ueye: Any = None
        self._h: Any = None
        self._mems: list[tuple[Any, Any]] = []
        self._width = 0
        self._height = 0
        self._bits_alloc = 8
        self._pitch = 0
        self._exposure_ms = float(self.config.exposure_ms)
        self._frame_rate_hz = float(self.config.frame_rate_hz)
        self._gain = float(self.config.gain)
        self._pixel_clock_mhz: int | None = pixel_clock_mhz
        self._acquiring = False
        self._want_acquiring = False  # survives a lost device, for reconnect()
        self._index = 0
        self._timeouts = 0
        self._last_camera_frame: int | None = None
        self._dropped = 0
        self.sensor_name = ""
        self.serial_number = ""

    # -- SDK plumbing ---------------------------------------------------------------
    def _code_text(self, code: int) -> str:
        return _CODE_TEXT.get(int(code), f"uEye error code {int(code)}")

    def _call(self, fn_name: str, *args: Any, what: str) -> int:
        """Call ``ueye.<fn_name>`` and raise a readable DeviceError on a failure code."""
        ret = int(getattr(self._ueye, fn_name)(*args))
        if ret == IS_SUCCESS:
            return ret
        text = f"IDS uEye camera {self.config.device_id}: {what} failed ({self._code_text(ret)})"
        if ret in _GONE_CODES:
            raise DeviceDisconnectedError(text + "; check the cable and reconnect the camera")
        raise CallFailedError(text, ret)

    def _queue_cmd(self, name: str) -> Any:
        """An ``IS_IMAGE_QUEUE_CMD_*`` value from pyueye (its enum), else the uEye.h number."""
        return getattr(self._ueye, f"IS_IMAGE_QUEUE_CMD_{name}",
                       {"INIT": IS_IMAGE_QUEUE_CMD_INIT, "EXIT": IS_IMAGE_QUEUE_CMD_EXIT,
                        "WAIT": IS_IMAGE_QUEUE_CMD_WAIT}[name])

    # -- connection -------------------------------------------------------------------
    def _connect(self) -> None:
        ue = self._ueye = import_pyueye()
        cam_id = int(self.config.device_id)
        h = ue.HIDS(cam_id)
        ret = int(ue.is_InitCamera(h, None))
        if ret != IS_SUCCESS:
            self._raise_open_error(ret, cam_id)
        self._h = h
        try:
            self._configure()
        except Exception:
            self._release(quiet=True)
            raise

    def _raise_open_error(self, ret: int, cam_id: int) -> None:
        ue = self._ueye
        n = ue.INT()
        n_cams = int(n.value) if int(ue.is_GetNumberOfCameras(n)) == IS_SUCCESS else -1
        where = f"IDS uEye camera id {cam_id}"
        if ret in (IS_CANT_COMMUNICATE_WITH_DRIVER, IS_NO_HARDWARE_INSTALLED):
            raise SDKNotFoundError(
                f"{where}: the uEye driver is not running ({self._code_text(ret)}). Start the "
                "IDS uEye camera service / daemon (ueyeusbd or ueyeethd) and check PYUEYE_DLL_PATH."
            )
        if ret in (IS_ALL_DEVICES_BUSY, IS_DEVICE_ALREADY_PAIRED):
            raise DeviceBusyError(
                f"{where} is in use by another program (uEye Cockpit, another mcf-rotator?); close it and retry"
            )
        if n_cams == 0:
            raise DeviceNotFoundError(
                f"{where}: no uEye camera is attached. Check the USB/GigE cable and that IDS "
                "Camera Manager lists the camera."
            )
        if ret in (IS_CANT_OPEN_DEVICE, IS_INVALID_DEVICE_ID, IS_INVALID_CAMERA_HANDLE):
            raise DeviceBusyError(
                f"{where} cannot be opened although {n_cams} uEye camera(s) are attached: it is in "
                "use by another program, or the camera id is wrong (set camera.device_id to the id "
                "IDS Camera Manager shows, or 0 for the first free camera)"
            )
        raise DeviceError(f"{where}: opening failed ({self._code_text(ret)})")

    def _configure(self) -> None:
        ue, h = self._ueye, self._h
        sinfo = ue.SENSORINFO()
        self._call("is_GetSensorInfo", h, sinfo, what="reading sensor info")
        cinfo = ue.CAMINFO()
        self._call("is_GetCameraInfo", h, cinfo, what="reading camera info")
        self.sensor_name = _text(sinfo.strSensorName)
        self.serial_number = _text(cinfo.SerNo)
        if self.config.serial and self.config.serial.strip() != self.serial_number:
            raise DeviceNotFoundError(
                f"IDS uEye camera id {self.config.device_id} has serial {self.serial_number!r}, "
                f"not the configured {self.config.serial!r}; fix camera.serial or camera.device_id"
            )
        self._call("is_ResetToDefault", h, what="resetting to defaults")
        self._call("is_SetDisplayMode", h, ue.IS_SET_DM_DIB, what="selecting memory mode")
        mode_name, self._bits_alloc = _COLOR_MODES[int(self.config.bit_depth)]
        try:
            self._call("is_SetColorMode", h, getattr(ue, mode_name), what=f"setting pixel format {mode_name}")
        except CallFailedError as exc:
            if exc.code not in _FORMAT_REFUSED:
                raise
            raise DeviceError(
                f"IDS uEye camera {self.config.device_id} ({self.sensor_name or 'sensor'}) does not offer "
                f"mono{self.config.bit_depth} ({self._code_text(exc.code)}); set camera.bit_depth in the rig "
                "file to a depth the sensor supports (8 works on every uEye camera)"
            ) from exc
        self._set_aoi()
        self._set_pixel_clock(self._pixel_clock_mhz)
        self._apply_frame_rate(self._frame_rate_hz)
        self._apply_exposure(self._exposure_ms)
        self._apply_gain(self._gain)
        self._alloc_memories()

    def _set_aoi(self) -> None:
        ue, h = self._ueye, self._h
        rect = ue.IS_RECT()
        if self.config.roi is not None:
            x, y, w, hh = self.config.roi
            rect.s32X, rect.s32Y, rect.s32Width, rect.s32Height = int(x), int(y), int(w), int(hh)
            self._call("is_AOI", h, ue.IS_AOI_IMAGE_SET_AOI, rect, ue.sizeof(rect),
                       what=f"setting the region of interest {self.config.roi}")
        self._call("is_AOI", h, ue.IS_AOI_IMAGE_GET_AOI, rect, ue.sizeof(rect), what="reading the AOI")
        self._width, self._height = int(rect.s32Width), int(rect.s32Height)

    def _set_pixel_clock(self, mhz: int | None) -> None:
        ue, h = self._ueye, self._h
        rng = (ue.UINT * 3)()
        self._call("is_PixelClock", h, ue.IS_PIXELCLOCK_CMD_GET_RANGE, rng, ue.sizeof(rng),
                   what="reading the pixel-clock range")
        lo, hi = _num(rng[0]), _num(rng[1])
        target = hi if mhz is None else min(max(int(mhz), lo), hi)
        val = ue.UINT(target)
        self._call("is_PixelClock", h, ue.IS_PIXELCLOCK_CMD_SET, val, ue.sizeof(val),
                   what=f"setting the pixel clock to {target} MHz")
        self._pixel_clock_mhz = target

    def _apply_frame_rate(self, hz: float) -> None:
        ue = self._ueye
        new = ue.double()
        self._call("is_SetFrameRate", self._h, ue.double(float(hz)), new, what=f"setting frame rate {hz} Hz")
        self._frame_rate_hz = float(new.value)

    def _apply_exposure(self, ms: float) -> None:
        ue = self._ueye
        val = ue.double(float(ms))
        self._call("is_Exposure", self._h, ue.IS_EXPOSURE_CMD_SET_EXPOSURE, val, ue.sizeof(val),
                   what=f"setting exposure {ms} ms")
        got = ue.double()
        self._call("is_Exposure", self._h, ue.IS_EXPOSURE_CMD_GET_EXPOSURE, got, ue.sizeof(got),
                   what="reading exposure")
        self._exposure_ms = float(got.value)

    def _apply_gain(self, gain: float) -> None:
        """Master gain as a factor (1.0 = unity); uEye takes it in hundredths."""
        ue = self._ueye
        ret = int(ue.is_SetHWGainFactor(self._h, ue.IS_SET_MASTER_GAIN_FACTOR, int(round(gain * 100))))
        if ret < 0:
            raise DeviceError(f"IDS uEye camera {self.config.device_id}: setting gain {gain} failed")
        self._gain = ret / 100.0

    def _alloc_memories(self) -> None:
        ue, h = self._ueye, self._h
        for _ in range(self.n_buffers):
            mem, mid = ue.c_mem_p(), ue.int()
            self._call("is_AllocImageMem", h, self._width, self._height, self._bits_alloc, mem, mid,
                       what="allocating image memory")
            self._mems.append((mem, mid))
            self._call("is_AddToSequence", h, mem, mid, what="adding image memory to the sequence")
        # is_GetImageMemPitch needs an *active* memory (is_SetImageMem, else IS_NO_ACTIVE_IMG_MEM);
        # in sequence capture none is active, so ask the memory itself
        mem, mid = self._mems[0]
        x, y, bits, pitch = ue.INT(), ue.INT(), ue.INT(), ue.INT()
        self._call("is_InquireImageMem", h, mem, mid, x, y, bits, pitch, what="reading the image pitch")
        self._pitch = int(pitch.value)
        self._call("is_ImageQueue", h, self._queue_cmd("INIT"), None, 0, what="enabling the image queue")

    def _release(self, quiet: bool) -> None:
        """Undo everything _connect did; used by disconnect and after failures (camera maybe gone)."""
        ue, h = self._ueye, self._h
        if h is None:
            return
        steps: list[tuple[str, tuple]] = [
            ("is_StopLiveVideo", (h, ue.IS_FORCE_VIDEO_STOP)),
            ("is_ImageQueue", (h, self._queue_cmd("EXIT"), None, 0)),
            ("is_ClearSequence", (h,)),
        ]
        steps += [("is_FreeImageMem", (h, mem, mid)) for mem, mid in self._mems]
        steps.append(("is_ExitCamera", (h,)))
        for fn, args in steps:
            try:
                ret = int(getattr(ue, fn)(*args))
                if ret != IS_SUCCESS and not quiet:
                    log.warning("%s: %s returned %s", self.name, fn, self._code_text(ret))
            except Exception as exc:  # the camera may already be gone
                log.debug("%s: %s raised %s", self.name, fn, exc)
        self._mems.clear()
        self._h = None
        self._acquiring = False

    # -- properties ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self._height, self._width)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self._bits_alloc == 8 else np.uint16)

    @property
    def bit_depth(self) -> int:
        return int(self.config.bit_depth)

    @property
    def exposure_ms(self) -> float:
        return self._exposure_ms

    @exposure_ms.setter
    def exposure_ms(self, value: float) -> None:
        with self.lock:
            self._require_open()
            self._apply_exposure(float(value))
        self.events.property_changed.emit("exposure_ms", self._exposure_ms)

    @property
    def frame_rate_hz(self) -> float:
        return self._frame_rate_hz

    @frame_rate_hz.setter
    def frame_rate_hz(self, value: float) -> None:
        with self.lock:
            self._require_open()
            self._apply_frame_rate(float(value))
            # uEye clamps exposure to the new frame period; report what the camera now uses
            self._apply_exposure(self._exposure_ms)
        self.events.property_changed.emit("frame_rate_hz", self._frame_rate_hz)

    @property
    def gain(self) -> float:
        return self._gain

    @gain.setter
    def gain(self, value: float) -> None:
        with self.lock:
            self._require_open()
            self._apply_gain(float(value))
        self.events.property_changed.emit("gain", self._gain)

    @property
    def pixel_clock_mhz(self) -> int | None:
        return self._pixel_clock_mhz

    @pixel_clock_mhz.setter
    def pixel_clock_mhz(self, value: int) -> None:
        with self.lock:
            self._require_open()
            self._set_pixel_clock(int(value))
            self._apply_frame_rate(self._frame_rate_hz)
        self.events.property_changed.emit("pixel_clock_mhz", self._pixel_clock_mhz)

    def _require_open(self) -> None:
        if self._h is None:
            raise DeviceDisconnectedError(
                f"IDS uEye camera {self.config.device_id} is not connected; reconnect it first"
            )

    # -- acquisition ----------------------------------------------------------------------
    def start_acquisition(self) -> None:
        with self.lock:
            self._require_open()
            if self._acquiring:
                return
            self._call("is_CaptureVideo", self._h, self._ueye.IS_DONT_WAIT, what="starting live capture")
            self._acquiring = True
            self._want_acquiring = True
            self._index = 0
            self._timeouts = 0
            self._last_camera_frame = None
            self._dropped = 0

    def stop_acquisition(self) -> None:
        with self.lock:
            self._want_acquiring = False
            if not self._acquiring or self._h is None:
                self._acquiring = False
                return
            self._acquiring = False
            ret = int(self._ueye.is_StopLiveVideo(self._h, self._ueye.IS_FORCE_VIDEO_STOP))
            if ret != IS_SUCCESS:
                log.warning("%s: stopping capture: %s", self.name, self._code_text(ret))

    def read_frame(self, timeout_s: float = 1.0) -> Frame:
        """Next frame from the image queue; raises FrameTimeoutError / DeviceDisconnectedError."""
        with self.lock:
            if self._h is None:
                raise DeviceDisconnectedError(
                    f"IDS uEye camera {self.config.device_id} is disconnected; reconnect it to continue"
                )
            if not self._acquiring:
                raise DeviceError("IDS uEye camera: read_frame needs start_acquisition() first")
            ue, h = self._ueye, self._h
            pmem, mid = ue.c_mem_p(), ue.INT()
            wait = _wait_buffer(ue, max(1, int(timeout_s * 1000)), pmem, mid)
            ret = int(ue.is_ImageQueue(h, self._queue_cmd("WAIT"), wait, ue.sizeof(wait)))
            if ret != IS_SUCCESS:
                self._handle_wait_failure(ret, timeout_s)
            try:
                self._timeouts = 0
                raw = ue.get_data(pmem, self._width, self._height, self._bits_alloc, self._pitch, copy=True)
                image = _to_image(raw, self._height, self._width, self._pitch, self._bits_alloc)
                info = ue.UEYEIMAGEINFO()
                meta: dict[str, Any] = {}
                if int(ue.is_GetImageInfo(h, mid, info, ue.sizeof(info))) == IS_SUCCESS:
                    timestamp = int(info.u64TimestampDevice) * 1e-7  # 0.1 us ticks
                    cam_frame = int(info.u64FrameNumber)
                    if self._last_camera_frame is not None and cam_frame > self._last_camera_frame + 1:
                        self._dropped += cam_frame - self._last_camera_frame - 1
                    self._last_camera_frame = cam_frame
                    meta = {"camera_frame": cam_frame, "dropped_by_camera": self._dropped, "clock": "camera"}
                else:
                    timestamp = time.monotonic()
                    meta = {"clock": "host"}
            finally:
                ue.is_UnlockSeqBuf(h, ue.IS_IGNORE_PARAMETER, pmem)
            frame = Frame(image=image, index=self._index, timestamp=timestamp, metadata=meta)
            self._index += 1
            return frame

    def _handle_wait_failure(self, ret: int, timeout_s: float) -> None:
        cam = f"IDS uEye camera {self.config.device_id}"
        if ret in (IS_TIMED_OUT, IS_TRANSFER_ERROR):
            self._timeouts += 1
            if self._timeouts >= self.max_consecutive_timeouts:
                self._lost(
                    f"{cam}: no frame for {self._timeouts} attempts in a row (last: {self._code_text(ret)}); "
                    "the camera was probably unplugged or lost power. Check the cable and reconnect."
                )
            if ret == IS_TRANSFER_ERROR:
                raise FrameTimeoutError(
                    f"{cam}: image transfer failed (USB/GigE bandwidth); lower the pixel clock or frame rate"
                )
            raise FrameTimeoutError(
                f"{cam}: no frame within {timeout_s:.3g} s (exposure {self._exposure_ms:.3g} ms, "
                f"{self._frame_rate_hz:.3g} Hz; is a hardware trigger configured?)"
            )
        self._lost(f"{cam} stopped delivering frames ({self._code_text(ret)}); it was probably unplugged. "
                   "Reconnect the camera.")

    def describe(self) -> str:
        """One line for check-hardware and logs."""
        return (f"IDS uEye {self.sensor_name or 'camera'} serial {self.serial_number or '?'}: "
                f"{self._width}x{self._height} mono{self.bit_depth}, pixel clock {self._pixel_clock_mhz} MHz, "
                f"{self._frame_rate_hz:.3g} Hz, exposure {self._exposure_ms:.3g} ms, gain x{self._gain:.2f}")


def _wait_buffer(ue: Any, timeout_ms: int, pmem: Any, mid: Any) -> Any:
    """``IMAGEQUEUEWAITBUFFER`` pointing at ``pmem`` / ``mid``; the SDK writes the frame's memory there.

    The pointer fields are cast to the structure's own field types (pyueye declares ``ppcMem`` as a
    pointer to its ``c_char_p``, not to ``c_mem_p``), so the real ctypes wrappers accept them.
    """
    wait = ue.IMAGEQUEUEWAITBUFFER()
    fields = dict(type(wait)._fields_)
    wait.timeout = int(timeout_ms)
    wait.ppcMem = ctypes.cast(ctypes.pointer(pmem), fields["ppcMem"])
    wait.pnMemId = ctypes.cast(ctypes.pointer(mid), fields["pnMemId"])
    return wait


def _num(value: Any) -> int:
    """ctypes arrays of subclassed simple types return objects, not ints."""
    return int(getattr(value, "value", value))


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).split(b"\x00", 1)[0].decode("ascii", "replace").strip()
    return str(value).strip()


def _to_image(raw: np.ndarray, height: int, width: int, pitch: int, bits_alloc: int) -> np.ndarray:
    """View the SDK's 1-D byte copy as (H, W) pixels, dropping row padding (no second copy if none)."""
    buf = np.asarray(raw).reshape(-1).view(np.uint8)[: height * pitch].reshape(height, pitch)
    if bits_alloc == 8:
        img = buf[:, :width]
    else:
        img = buf[:, : 2 * width].view("<u2")
    return img if img.flags.c_contiguous else np.ascontiguousarray(img)
