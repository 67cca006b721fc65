"""Faithful fakes of the vendor SDKs the hardware drivers use, injected through ``sys.modules``.

Each fake follows the vendor's documented call sequence and return codes and *checks* it:
calls out of order fail the way the real SDK fails (error code / exception) and are recorded in
``violations`` so tests can assert a clean sequence. Fault injection (unplug, stall, busy,
window closed) mirrors what the real SDKs report. Time spent inside SDK calls is accumulated in
``sdk_time_s`` so driver overhead can be measured as (driver time - SDK time).

* pyueye (uEye API 4.9x): ``make_pyueye(FakeUEyeSystem)`` -> modules ``pyueye``, ``pyueye.ueye``
* ids_peak 1.x: ``make_ids_peak(FakePeakSystem)`` -> ``ids_peak``, ``ids_peak.ids_peak``,
  ``ids_peak.ids_peak_ipl_extension``
* Holoeye SLM Display SDK 4.x: ``make_heds(FakeHolo)`` -> ``HEDS``, ``hedslib``, ``hedslib.heds_types``
* Holoeye SLM Display SDK 3.x: ``make_slmdisplaysdk(FakeHolo)`` -> ``holoeye``, ``holoeye.slmdisplaysdk``
"""

from __future__ import annotations

import ctypes
import sys
import functools
import time
import types
import warnings
from collections import deque
from typing import Any

import numpy as np

# ======================================================================================
# pyueye
# ======================================================================================
IS_NO_SUCCESS = -1
IS_SUCCESS = 0
IS_INVALID_CAMERA_HANDLE = 1
IS_CANT_OPEN_DEVICE = 3
IS_NO_ACTIVE_IMG_MEM = 108
IS_SEQUENCE_LIST_EMPTY = 112
IS_SEQUENCE_BUF_ALREADY_LOCKED = 117
IS_ALL_DEVICES_BUSY = 120
IS_TIMED_OUT = 122
IS_INVALID_PARAMETER = 125
IS_CAPTURE_RUNNING = 140
IS_BAD_STRUCTURE_SIZE = 158
IS_INVALID_COLOR_FORMAT = 174
IS_TRANSFER_ERROR = 178

#: the constants the driver reads, with pyueye 4.96's values (checked against the real package)
UEYE_CONSTANTS = dict(
    IS_NO_SUCCESS=IS_NO_SUCCESS, IS_SUCCESS=IS_SUCCESS, IS_INVALID_CAMERA_HANDLE=1, IS_INVALID_HANDLE=1,
    IS_CANT_OPEN_DEVICE=3, IS_TIMED_OUT=IS_TIMED_OUT, IS_CAPTURE_RUNNING=IS_CAPTURE_RUNNING,
    IS_TRANSFER_ERROR=IS_TRANSFER_ERROR, IS_ALL_DEVICES_BUSY=IS_ALL_DEVICES_BUSY,
    IS_INVALID_PARAMETER=IS_INVALID_PARAMETER, IS_NO_ACTIVE_IMG_MEM=IS_NO_ACTIVE_IMG_MEM,
    IS_SEQUENCE_LIST_EMPTY=IS_SEQUENCE_LIST_EMPTY, IS_BAD_STRUCTURE_SIZE=IS_BAD_STRUCTURE_SIZE,
    IS_INVALID_COLOR_FORMAT=IS_INVALID_COLOR_FORMAT, IS_INVALID_MODE=101,
    IS_CANT_COMMUNICATE_WITH_DRIVER=17, IS_NO_HARDWARE_INSTALLED=133, IS_CAMERA_NOT_CONNECTED=111,
    IS_SET_DM_DIB=1, IS_CM_MONO8=6, IS_CM_MONO12=26, IS_CM_MONO16=28, IS_CM_MONO10=34,
    IS_AOI_IMAGE_SET_AOI=0x0001, IS_AOI_IMAGE_GET_AOI=0x0002,
    IS_PIXELCLOCK_CMD_GET_NUMBER=1, IS_PIXELCLOCK_CMD_GET_LIST=2, IS_PIXELCLOCK_CMD_GET_RANGE=3,
    IS_PIXELCLOCK_CMD_GET_DEFAULT=4, IS_PIXELCLOCK_CMD_GET=5, IS_PIXELCLOCK_CMD_SET=6,
    IS_EXPOSURE_CMD_GET_EXPOSURE=7, IS_EXPOSURE_CMD_SET_EXPOSURE=12,
    IS_GET_MASTER_GAIN_FACTOR=0x8000, IS_SET_MASTER_GAIN_FACTOR=0x8004,
    IS_DONT_WAIT=0x0000, IS_WAIT=0x0001, IS_FORCE_VIDEO_STOP=0x4000, IS_IGNORE_PARAMETER=-1,
    IS_IMAGE_QUEUE_CMD_INIT=0, IS_IMAGE_QUEUE_CMD_EXIT=1, IS_IMAGE_QUEUE_CMD_WAIT=2,
)
_BPP = {6: 8, 34: 16, 26: 16, 28: 16}
_MAXVAL = {6: 255, 34: 1023, 26: 4095, 28: 65535}


class _Num:
    """pyueye's simple types are ctypes subclasses: fields and arrays of them return objects, not
    Python numbers, so code must call ``int()`` / ``.value`` - as with the real package."""

    __slots__ = ()

    def __int__(self) -> int:
        return int(self.value)

    def __index__(self) -> int:
        return int(self.value)

    def __float__(self) -> float:
        return float(self.value)

    def __eq__(self, other: object) -> bool:
        return self.value == getattr(other, "value", other)

    __hash__ = None  # type: ignore[assignment]


class c_int(_Num, ctypes.c_int):  # noqa: N801 - pyueye spelling
    pass


class c_uint(_Num, ctypes.c_uint):  # noqa: N801
    pass


class c_ushort(_Num, ctypes.c_ushort):  # noqa: N801
    pass


class c_ubyte(_Num, ctypes.c_ubyte):  # noqa: N801
    pass


class c_longlong(_Num, ctypes.c_longlong):  # noqa: N801
    pass


class c_double(_Num, ctypes.c_double):  # noqa: N801
    pass


class c_char(ctypes.c_char):  # noqa: N801
    pass


class c_char_p(ctypes.c_char_p):  # noqa: N801
    pass


class c_mem_p(ctypes.c_void_p):  # noqa: N801 - pyueye spelling
    pass


HIDS = UINT = c_uint
INT = c_int


class IS_RECT(ctypes.Structure):
    _pack_ = 8
    _fields_ = [("s32X", c_int), ("s32Y", c_int), ("s32Width", c_int), ("s32Height", c_int)]


class SENSORINFO(ctypes.Structure):
    _pack_ = 8
    _fields_ = [("SensorID", c_ushort), ("strSensorName", c_char * 32), ("nColorMode", c_char),
                ("nMaxWidth", c_uint), ("nMaxHeight", c_uint), ("bMasterGain", c_int), ("bRGain", c_int),
                ("bGGain", c_int), ("bBGain", c_int), ("bGlobShutter", c_int), ("wPixelSize", c_ushort),
                ("nUpperLeftBayerPixel", c_char), ("Reserved", c_char * 13)]


class BOARDINFO(ctypes.Structure):
    _pack_ = 8
    _fields_ = [("SerNo", c_char * 12), ("ID", c_char * 20), ("Version", c_char * 10), ("Date", c_char * 12),
                ("Select", c_ubyte), ("Type", c_ubyte), ("Reserved", c_char * 8)]


CAMINFO = BOARDINFO


class UEYETIME(ctypes.Structure):
    _pack_ = 8
    _fields_ = [("wYear", c_ushort), ("wMonth", c_ushort), ("wDay", c_ushort), ("wHour", c_ushort),
                ("wMinute", c_ushort), ("wSecond", c_ushort), ("wMilliseconds", c_ushort),
                ("byReserved", c_ubyte * 10)]


class UEYEIMAGEINFO(ctypes.Structure):
    _pack_ = 8
    _fields_ = [("dwFlags", c_uint), ("byReserved1", c_ubyte * 4), ("u64TimestampDevice", c_longlong),
                ("TimestampSystem", UEYETIME), ("dwIoStatus", c_uint), ("wAOIIndex", c_ushort),
                ("wAOICycle", c_ushort), ("u64FrameNumber", c_longlong), ("dwImageBuffers", c_uint),
                ("dwImageBuffersInUse", c_uint), ("dwReserved3", c_uint), ("dwImageHeight", c_uint),
                ("dwImageWidth", c_uint), ("dwHostProcessTime", c_uint), ("bySequencerIndex", c_ubyte),
                ("byReserved2", c_ubyte * 3), ("dwFocusValue", c_uint), ("bFocusing", c_int),
                ("dwReserved4", c_uint)]


class IMAGEQUEUEWAITBUFFER(ctypes.Structure):
    _pack_ = 8
    _fields_ = [("timeout", c_uint), ("ppcMem", ctypes.POINTER(c_char_p)), ("pnMemId", ctypes.POINTER(c_int))]


UEYE_STRUCTURES = ("IS_RECT", "SENSORINFO", "CAMINFO", "UEYETIME", "UEYEIMAGEINFO", "IMAGEQUEUEWAITBUFFER")

# Argument kinds of pyueye 4.96's wrappers (``_bind(name, argtypes, ...)``), checked against the real
# package: "v" a value (int or any simple ctypes object; ``_value_cast``), "p" ``c_void_p`` (any ctypes
# object or None; ``_pointer_cast``), "d" a value of a c_double, and a type name: the wrapper passes
# ``byref(arg)``, so ``arg`` must be an instance of that pyueye type.
UEYE_SIGNATURES: dict[str, tuple[str, ...]] = {
    "is_GetNumberOfCameras": ("c_int",),
    "is_InitCamera": ("c_uint", "p"),
    "is_GetSensorInfo": ("v", "SENSORINFO"),
    "is_GetCameraInfo": ("v", "BOARDINFO"),
    "is_ResetToDefault": ("v",),
    "is_SetDisplayMode": ("v", "v"),
    "is_SetColorMode": ("v", "v"),
    "is_AOI": ("v", "v", "p", "v"),
    "is_PixelClock": ("v", "v", "p", "v"),
    "is_SetFrameRate": ("v", "d", "c_double"),
    "is_Exposure": ("v", "v", "p", "v"),
    "is_SetHWGainFactor": ("v", "v", "v"),
    "is_AllocImageMem": ("v", "v", "v", "v", "c_mem_p", "c_int"),
    "is_AddToSequence": ("v", "c_mem_p=", "v"),
    "is_GetImageMemPitch": ("v", "c_int"),
    "is_InquireImageMem": ("v", "c_mem_p=", "v", "c_int", "c_int", "c_int", "c_int"),
    "is_SetImageMem": ("v", "c_mem_p=", "v"),
    "is_ImageQueue": ("v", "v", "p", "v"),
    "is_InitImageQueue": ("v", "v"),
    "is_WaitForNextImage": ("v", "v", "c_mem_p", "c_int"),
    "is_ExitImageQueue": ("v",),
    "is_CaptureVideo": ("v", "v"),
    "is_StopLiveVideo": ("v", "v"),
    "is_GetImageInfo": ("v", "v", "UEYEIMAGEINFO", "v"),
    "is_UnlockSeqBuf": ("v", "v", "c_mem_p="),
    "is_ClearSequence": ("v",),
    "is_FreeImageMem": ("v", "c_mem_p=", "v"),
    "is_ExitCamera": ("v",),
}
#: pyueye 4.96 wraps these in ``@deprecated``: a DeprecationWarning per call
UEYE_DEPRECATED = frozenset({"is_InitImageQueue", "is_WaitForNextImage", "is_ExitImageQueue"})


def _check_ueye_args(ue: Any, name: str, args: tuple) -> None:
    """Raise what pyueye's wrapper would raise for these arguments (TypeError / ctypes.ArgumentError)."""
    kinds = UEYE_SIGNATURES[name]
    if len(args) != len(kinds):
        raise TypeError(f"{name}() takes {len(kinds)} positional arguments but {len(args)} were given")
    for i, (kind, arg) in enumerate(zip(kinds, args, strict=True), start=1):
        if kind == "v":
            ok = isinstance(arg, (int, ctypes._SimpleCData)) and not isinstance(arg, ctypes.c_double)
        elif kind == "d":
            ok = isinstance(arg, (int, float, ctypes._SimpleCData))
        elif kind == "p":
            ok = arg is None or isinstance(arg, (ctypes._SimpleCData, ctypes.Structure, ctypes.Array,
                                                 ctypes._Pointer))
        elif kind.endswith("="):  # passed by value as that pointer type (argtypes c_mem_p)
            ok = isinstance(arg, (getattr(ue, kind[:-1]), int)) or arg is None
        else:
            ok = isinstance(arg, getattr(ue, kind))
        if not ok:
            raise ctypes.ArgumentError(f"{name}: argument {i}: {type(arg).__name__} where pyueye needs {kind}")


class FakeUEyeSystem:
    """One host with zero or one uEye camera; state machine of the uEye API."""

    def __init__(self, width: int = 1280, height: int = 1024, serial: str = "4103000001",
                 attached: bool = True, sensor: str = "UI306xCP-M") -> None:
        self.sensor_w, self.sensor_h = width, height
        self.serial, self.sensor = serial, sensor
        self.attached = attached
        self.in_use_elsewhere = False
        self.driver_running = True
        self.fail_mode: str | None = None  # "error" | "silent" after unplug
        self.stall_next = 0
        self.transfer_errors_next = 0
        self.calls: list[str] = []
        self.violations: list[str] = []
        self.sdk_time_s = 0.0
        self.fill_time_s = 0.0
        #: pixel formats the sensor offers (uEye colour-mode numbers); others are refused
        self.color_modes = set(_BPP)
        self._reset_camera()

    def _reset_camera(self) -> None:
        self.open = False
        self.handle = 0
        self.color_mode = 6
        self.aoi = [0, 0, self.sensor_w, self.sensor_h]
        self.pixel_clock = 30
        self.fps = 10.0
        self.exposure_ms = 10.0
        self.gain_factor = 100
        self.mems: dict[int, tuple[Any, int, int, int, int]] = {}  # id -> (buffer, w, h, bpp, pitch)
        self.active_mem = 0  # is_SetImageMem; 0 = none
        self.sequence: list[int] = []
        self.locked: set[int] = set()
        self.queue = False
        self.live = False
        self.frame_no = 0
        self._next_id = 1
        self._seq_pos = 0
        self.frame_time_last: dict[int, int] = {}

    # -- fault injection ---------------------------------------------------------------
    def unplug(self, mode: str = "error") -> None:
        """Camera disappears: waits fail ("error": IS_NO_SUCCESS) or just time out ("silent")."""
        self.attached = False
        self.fail_mode = mode

    def replug(self) -> None:
        self.attached = True
        self.fail_mode = None
        self._reset_camera()

    # -- helpers -----------------------------------------------------------------------------
    def max_fps(self) -> float:
        return self.pixel_clock * 1e6 / (self.aoi[2] * self.aoi[3] * 1.08)

    def pitch_for(self, w: int, bpp: int) -> int:
        return ((w * bpp // 8) + 7) // 8 * 8  # uEye pads lines to 8 bytes

    def frame_pattern(self, n: int, w: int, h: int) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w]
        return ((yy * 3 + xx + n * 5) % (_MAXVAL[self.color_mode] + 1)).astype(np.uint16)


def make_pyueye(system: FakeUEyeSystem, real: Any = None) -> tuple[types.ModuleType, types.ModuleType]:
    """Modules ``pyueye`` and ``pyueye.ueye`` bound to ``system``.

    With ``real`` (the real ``pyueye.ueye`` loaded on a stub library) the fake takes its types,
    structures and constants from it and first passes every call through the real wrapper, so
    an argument the real ctypes bindings reject fails here too.
    """
    s = system
    ue = types.ModuleType("pyueye.ueye")
    src: Any = real if real is not None else sys.modules[__name__]
    for k, v in UEYE_CONSTANTS.items():
        setattr(ue, k, getattr(real, k) if real is not None else v)
    for k in ("c_int", "c_uint", "c_double", "c_mem_p", "c_char_p", *UEYE_STRUCTURES, "BOARDINFO"):
        setattr(ue, k, getattr(src, k))
    ue.HIDS = ue.UINT = ue.uint = ue.c_uint
    ue.INT = ue.int = ue.c_int
    ue.double = ue.c_double
    ue.sizeof = getattr(real, "sizeof", ctypes.sizeof)

    def api(fn):
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(*args):
            t0 = time.perf_counter()  # the checks below are the SDK's (wrapper) time, not the driver's
            try:
                if name in UEYE_DEPRECATED:
                    warnings.warn(f"Call to deprecated function {name}.", DeprecationWarning, stacklevel=2)
                _check_ueye_args(ue, name, args)
                if real is not None:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)  # already warned above
                        getattr(real, name)(*args)  # the stub ignores the call; the wrapper checks the types
                s.calls.append(name)
                return fn(*args)
            finally:
                s.sdk_time_s += time.perf_counter() - t0
        setattr(ue, name, wrapper)
        return wrapper

    def ok_handle(h) -> bool:
        valid = s.open and int(h.value if hasattr(h, "value") else h) == s.handle and s.attached
        if not valid and s.open and s.attached:
            s.violations.append("call with a wrong handle")
        return valid

    @api
    def is_GetNumberOfCameras(pn):
        if not s.driver_running:
            return 17
        pn.value = 1 if s.attached else 0
        return IS_SUCCESS

    @api
    def is_InitCamera(h, hwnd):
        if not s.driver_running:
            return 17
        if not s.attached:
            return IS_CANT_OPEN_DEVICE
        if s.in_use_elsewhere or s.open:
            return IS_CANT_OPEN_DEVICE
        if int(h.value) not in (0, 1):
            return IS_CANT_OPEN_DEVICE
        s.open = True
        s.handle = 1
        h.value = 1
        return IS_SUCCESS

    @api
    def is_GetSensorInfo(h, info):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        info.strSensorName = s.sensor.encode()
        info.nMaxWidth, info.nMaxHeight = s.sensor_w, s.sensor_h
        return IS_SUCCESS

    @api
    def is_GetCameraInfo(h, info):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        info.SerNo = s.serial.encode()
        return IS_SUCCESS

    @api
    def is_ResetToDefault(h):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if s.live:
            return IS_CAPTURE_RUNNING
        s.color_mode, s.aoi = 6, [0, 0, s.sensor_w, s.sensor_h]
        return IS_SUCCESS

    @api
    def is_SetDisplayMode(h, mode):
        return IS_SUCCESS if ok_handle(h) else IS_INVALID_CAMERA_HANDLE

    @api
    def is_SetColorMode(h, mode):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        mode = int(mode)
        if mode not in _BPP:
            return IS_INVALID_PARAMETER
        if mode not in s.color_modes:
            return IS_INVALID_COLOR_FORMAT
        if s.mems:
            s.violations.append("color mode changed after allocating image memory")
        s.color_mode = mode
        return IS_SUCCESS

    @api
    def is_AOI(h, cmd, rect, size):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if int(size) != ctypes.sizeof(ue.IS_RECT):
            return IS_BAD_STRUCTURE_SIZE
        if cmd == ue.IS_AOI_IMAGE_GET_AOI:
            rect.s32X, rect.s32Y, rect.s32Width, rect.s32Height = s.aoi
            return IS_SUCCESS
        if cmd == ue.IS_AOI_IMAGE_SET_AOI:
            x, y, w, hh = (int(v) for v in (rect.s32X, rect.s32Y, rect.s32Width, rect.s32Height))
            if s.live:
                return IS_CAPTURE_RUNNING
            if w < 32 or hh < 4 or w % 4 or hh % 2 or x < 0 or y < 0 or x + w > s.sensor_w or y + hh > s.sensor_h:
                return IS_INVALID_PARAMETER
            s.aoi = [x, y, w, hh]
            return IS_SUCCESS
        return IS_INVALID_PARAMETER

    @api
    def is_PixelClock(h, cmd, param, size):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if cmd == ue.IS_PIXELCLOCK_CMD_GET_RANGE:
            if size != 3 * ctypes.sizeof(ctypes.c_uint):
                return 158
            param[0], param[1], param[2] = 5, 86, 1
            return IS_SUCCESS
        if cmd == ue.IS_PIXELCLOCK_CMD_SET:
            if not 5 <= int(param.value) <= 86:
                return IS_INVALID_PARAMETER
            s.pixel_clock = int(param.value)
            s.fps = min(s.fps, s.max_fps())
            return IS_SUCCESS
        if cmd == ue.IS_PIXELCLOCK_CMD_GET:
            param.value = s.pixel_clock
            return IS_SUCCESS
        return IS_INVALID_PARAMETER

    @api
    def is_SetFrameRate(h, fps, new_fps):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        s.fps = max(0.5, min(float(getattr(fps, "value", fps)), s.max_fps()))
        s.exposure_ms = min(s.exposure_ms, 1000.0 / s.fps)
        new_fps.value = s.fps
        return IS_SUCCESS

    @api
    def is_Exposure(h, cmd, param, size):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if size != ctypes.sizeof(ctypes.c_double):
            return 158
        if cmd == ue.IS_EXPOSURE_CMD_SET_EXPOSURE:
            s.exposure_ms = max(0.01, min(float(param.value), 1000.0 / s.fps))
            return IS_SUCCESS
        if cmd == ue.IS_EXPOSURE_CMD_GET_EXPOSURE:
            param.value = s.exposure_ms
            return IS_SUCCESS
        return IS_INVALID_PARAMETER

    @api
    def is_SetHWGainFactor(h, cmd, factor):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if cmd == ue.IS_SET_MASTER_GAIN_FACTOR:
            s.gain_factor = int(max(100, min(int(factor), 1000)))
        return s.gain_factor

    @api
    def is_AllocImageMem(h, w, hh, bpp, mem, mid):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        w, hh, bpp = int(w), int(hh), int(bpp)
        if bpp != _BPP[s.color_mode]:
            s.violations.append(f"AllocImageMem with {bpp} bits/pixel for color mode {s.color_mode}")
        pitch = s.pitch_for(int(w), int(bpp))
        buf = ctypes.create_string_buffer(pitch * int(hh))
        i = s._next_id
        s._next_id += 1
        s.mems[i] = (buf, int(w), int(hh), int(bpp), pitch)
        mem.value = ctypes.addressof(buf)
        mid.value = i
        return IS_SUCCESS

    def mem_id(mem, mid) -> int | None:
        """The id of a memory the camera allocated, if ``mem`` / ``mid`` name it consistently."""
        i = int(getattr(mid, "value", mid))
        addr = getattr(mem, "value", mem)
        return i if i in s.mems and ctypes.addressof(s.mems[i][0]) == addr else None

    @api
    def is_AddToSequence(h, mem, mid):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        i = mem_id(mem, mid)
        if i is None:
            return IS_NO_SUCCESS
        s.sequence.append(i)
        return IS_SUCCESS

    @api
    def is_SetImageMem(h, mem, mid):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        i = mem_id(mem, mid)
        if i is None:
            return IS_INVALID_PARAMETER
        s.active_mem = i
        return IS_SUCCESS

    @api
    def is_GetImageMemPitch(h, pitch):
        """Pitch of the *active* memory (is_SetImageMem); sequence memories are not active."""
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if s.active_mem not in s.mems:
            return IS_NO_ACTIVE_IMG_MEM
        pitch.value = s.mems[s.active_mem][4]
        return IS_SUCCESS

    @api
    def is_InquireImageMem(h, mem, mid, px, py, pbits, ppitch):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        i = mem_id(mem, mid)
        if i is None:
            return IS_INVALID_PARAMETER
        _, w, hh, bpp, pitch = s.mems[i]
        px.value, py.value, pbits.value, ppitch.value = w, hh, bpp, pitch
        return IS_SUCCESS

    def queue_init() -> int:
        if not s.sequence:
            return IS_SEQUENCE_LIST_EMPTY
        s.queue = True
        return IS_SUCCESS

    @api
    def is_InitImageQueue(h, mode):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        return queue_init()

    @api
    def is_ImageQueue(h, cmd, param, size):
        cmd = int(cmd)
        if cmd == ue.IS_IMAGE_QUEUE_CMD_EXIT:
            if not s.open:
                return IS_INVALID_CAMERA_HANDLE
            s.queue = False
            return IS_SUCCESS
        if cmd == ue.IS_IMAGE_QUEUE_CMD_WAIT:
            if int(size) != ctypes.sizeof(ue.IMAGEQUEUEWAITBUFFER) or param is None:
                return IS_BAD_STRUCTURE_SIZE
            ret, i = next_image(h)
            if ret == IS_SUCCESS:
                ctypes.cast(param.ppcMem, ctypes.POINTER(ctypes.c_void_p))[0] = ctypes.addressof(s.mems[i][0])
                param.pnMemId[0] = i
            return ret
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if cmd == ue.IS_IMAGE_QUEUE_CMD_INIT:
            return queue_init()
        return IS_INVALID_PARAMETER

    @api
    def is_CaptureVideo(h, wait):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if not s.sequence:
            return IS_SEQUENCE_LIST_EMPTY
        if s.live:
            return IS_CAPTURE_RUNNING
        s.live = True
        return IS_SUCCESS

    @api
    def is_StopLiveVideo(h, wait):
        if not s.open:
            return IS_INVALID_CAMERA_HANDLE
        s.live = False
        return IS_SUCCESS

    def next_image(h) -> tuple[int, int]:
        """The image queue's wait: (return code, id of the memory now locked for the caller)."""
        if not s.attached:
            return (IS_TIMED_OUT if s.fail_mode == "silent" else IS_NO_SUCCESS), 0
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE, 0
        if not s.queue:
            s.violations.append("waiting for an image without an image queue")
            return IS_NO_SUCCESS, 0
        if s.stall_next > 0:
            s.stall_next -= 1
            return IS_TIMED_OUT, 0
        if s.transfer_errors_next > 0:
            s.transfer_errors_next -= 1
            return IS_TRANSFER_ERROR, 0
        if not s.live:
            return IS_TIMED_OUT, 0
        free = [i for i in s.sequence if i not in s.locked]
        if not free:
            s.violations.append("all sequence buffers locked (UnlockSeqBuf missing)")
            return IS_TIMED_OUT, 0
        i = free[s._seq_pos % len(free)]
        s._seq_pos += 1
        s.frame_no += 1
        t_fill = time.perf_counter()
        _fill(s, i)
        dt_fill = time.perf_counter() - t_fill
        s.sdk_time_s -= dt_fill  # the sensor's work, not the SDK's
        s.fill_time_s += dt_fill
        s.frame_time_last[i] = s.frame_no
        s.locked.add(i)
        return IS_SUCCESS, i

    @api
    def is_WaitForNextImage(h, timeout_ms, pmem, pid):
        ret, i = next_image(h)
        if ret == IS_SUCCESS:
            pmem.value = ctypes.addressof(s.mems[i][0])
            pid.value = i
        return ret

    @api
    def is_GetImageInfo(h, mid, info, size):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if int(size) != ctypes.sizeof(ue.UEYEIMAGEINFO):
            return IS_BAD_STRUCTURE_SIZE
        n = s.frame_time_last.get(int(mid.value if hasattr(mid, "value") else mid))
        if n is None:
            return IS_INVALID_PARAMETER
        info.u64FrameNumber = n
        info.u64TimestampDevice = int(round(n * 1e7 / s.fps))  # 0.1 us ticks
        info.dwImageWidth, info.dwImageHeight = s.aoi[2], s.aoi[3]
        return IS_SUCCESS

    @api
    def is_UnlockSeqBuf(h, num, mem):
        if not s.open:
            return IS_INVALID_CAMERA_HANDLE
        for i in list(s.locked):
            if ctypes.addressof(s.mems[i][0]) == mem.value:
                s.locked.discard(i)
                return IS_SUCCESS
        s.violations.append("UnlockSeqBuf on a buffer that is not locked")
        return IS_NO_SUCCESS

    @api
    def is_ExitImageQueue(h):
        if not s.open:
            return IS_INVALID_CAMERA_HANDLE
        s.queue = False
        return IS_SUCCESS

    @api
    def is_ClearSequence(h):
        if not s.open:
            return IS_INVALID_CAMERA_HANDLE
        s.sequence.clear()
        return IS_SUCCESS

    @api
    def is_FreeImageMem(h, mem, mid):
        if not s.open:
            return IS_INVALID_CAMERA_HANDLE
        if int(mid.value) in s.sequence:
            s.violations.append("FreeImageMem of memory still in the sequence")
        s.mems.pop(int(mid.value), None)
        return IS_SUCCESS

    @api
    def is_ExitCamera(h):
        if not s.open:
            return IS_INVALID_CAMERA_HANDLE
        if s.live:
            s.violations.append("ExitCamera while live")
        s._reset_camera()
        return IS_SUCCESS

    def get_data(image_mem, x, y, bits, pitch, copy=False):
        """pyueye.ueye.get_data: the image memory as a 1-D uint8 array (y * pitch bytes)."""
        t0 = time.perf_counter()
        arr = np.ctypeslib.as_array((ctypes.c_ubyte * (int(y) * int(pitch))).from_address(image_mem.value))
        out = arr.copy() if copy else arr
        s.sdk_time_s += time.perf_counter() - t0
        return out

    ue.get_data = get_data
    pkg = types.ModuleType("pyueye")
    pkg.__path__ = []  # a package
    pkg.ueye = ue
    return pkg, ue


_BASES: dict[tuple, np.ndarray] = {}


def _base(w: int, h: int, dtype: Any) -> np.ndarray:
    """``(3 y + x)`` pattern, cached: per frame the fake sensor only adds an offset (cheap)."""
    key = (w, h, np.dtype(dtype).str)
    if key not in _BASES:
        yy, xx = np.mgrid[0:h, 0:w]
        _BASES[key] = ((yy * 3 + xx) % (np.iinfo(dtype).max + 1)).astype(dtype)
    return _BASES[key]


def write_pattern(out: np.ndarray, n: int, maxval: int) -> None:
    """out = (3 y + x + 5 n) mod (maxval + 1); maxval + 1 is a power of two."""
    h, w = out.shape
    np.add(_base(w, h, out.dtype), (n * 5) % (maxval + 1), out=out, casting="unsafe")
    if maxval != np.iinfo(out.dtype).max:
        np.bitwise_and(out, maxval, out=out)


def _fill(s: FakeUEyeSystem, i: int) -> None:
    buf, w, h, bpp, pitch = s.mems[i]
    raw = np.ctypeslib.as_array((ctypes.c_ubyte * (pitch * h)).from_address(ctypes.addressof(buf))).reshape(h, pitch)
    view = raw[:, :w] if bpp == 8 else raw[:, : 2 * w].view("<u2")
    write_pattern(view, s.frame_no, _MAXVAL[s.color_mode])


def install_pyueye(monkeypatch: Any, system: FakeUEyeSystem, real: Any = None) -> types.ModuleType:
    """Put the fake pyueye into ``sys.modules`` (see :func:`make_pyueye` for ``real``)."""
    pkg, ue = make_pyueye(system, real)
    monkeypatch.setitem(sys.modules, "pyueye", pkg)
    monkeypatch.setitem(sys.modules, "pyueye.ueye", ue)
    return ue


# ======================================================================================
# ids_peak
# ======================================================================================
#: ids_peak 1.17 exception classes the fake raises -> the class each derives from (the real
#: hierarchy; checked against the installed package): all derive from ``ids_peak.Exception``
PEAK_EXCEPTIONS: dict[str, str] = {
    "TimeoutException": "Exception", "AbortedException": "Exception", "BadAccessException": "Exception",
    "NotFoundException": "Exception", "OutOfRangeException": "Exception", "InternalErrorException": "Exception",
    "NotInitializedException": "LibraryNotInitializedException", "IOException": "Exception",
    "InvalidArgumentException": "InvalidParameterException", "CTILoadingException": "Exception",
    "NotAvailableException": "Exception", "NotImplementedException": "Exception",
}
#: GenICam integer nodes (IntegerNode.SetValue takes int64 only); the others the driver sets are floats
PEAK_INTEGER_NODES = frozenset({"Width", "Height", "OffsetX", "OffsetY", "PayloadSize", "TLParamsLocked"})
#: enum values the driver passes (real ids_peak 1.17 values)
PEAK_CONSTANTS: dict[str, int] = {
    "DeviceAccessType_Control": 3, "DeviceAccessType_ReadOnly": 2, "AcquisitionStartMode_Default": 0,
    "AcquisitionStopMode_Default": 0, "DataStreamFlushMode_DiscardAll": 4,
    "NodeAccessStatus_NotAvailable": 1, "NodeAccessStatus_ReadWrite": 4,
}


class FakePeakSystem:
    """Host with IDS peak cameras; holds the GenTL-side state the fake modules act on."""

    def __init__(self, cameras: list[dict] | None = None) -> None:
        self.cameras = cameras if cameras is not None else [
            {"serial": "4108000001", "model": "U3-3800CP-M-GL", "w": 1936, "h": 1096}]
        self.lib_refs = 0
        self.opened: set[str] = set()
        self.in_use_elsewhere: set[str] = set()
        self.unplugged: dict[str, str] = {}  # serial -> "error" | "silent"
        self.stall_next = 0
        self.incomplete_next = 0
        #: False: no GenTL producer (GENICAM_GENTL64_PATH unset) - DeviceManager.Update() raises
        self.producer = True
        self.violations: list[str] = []
        self.sdk_time_s = 0.0
        self.fill_time_s = 0.0
        self.fake_cameras: dict[str, Any] = {}

    def replug(self, serial: str) -> None:
        """Camera comes back power-cycled: default node values, no open handle."""
        self.unplugged.pop(serial, None)
        self.opened.discard(serial)
        info = next(c for c in self.cameras if c["serial"] == serial)
        self.fake_cameras[serial].__init__(info)


def make_ids_peak(system: FakePeakSystem) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """Modules ``ids_peak`` (package), ``ids_peak.ids_peak`` and ``ids_peak.ids_peak_ipl_extension``."""
    S = system
    m = types.ModuleType("ids_peak.ids_peak")

    class CommonException(Exception):  # ids_peak_common.exceptions.CommonException
        pass

    class PeakException(CommonException):  # ids_peak.exceptions.Exception
        pass

    made: dict[str, type] = {"Exception": PeakException}

    def exception_class(name: str) -> type:
        if name not in made:  # intermediate classes (e.g. InvalidParameterException) derive from Exception
            made[name] = type(name, (exception_class(PEAK_EXCEPTIONS.get(name, "Exception")),), {})
        return made[name]

    for name in PEAK_EXCEPTIONS:
        setattr(m, name, exception_class(name))
    m.Exception = PeakException
    TimeoutException, BadAccessException = made["TimeoutException"], made["BadAccessException"]
    NotFoundException, OutOfRangeException = made["NotFoundException"], made["OutOfRangeException"]
    InternalErrorException, IOException = made["InternalErrorException"], made["IOException"]
    NotInitializedException = made["NotInitializedException"]
    InvalidArgumentException = made["InvalidArgumentException"]
    for k, v in PEAK_CONSTANTS.items():
        setattr(m, k, v)

    def timed(fn):
        @functools.wraps(fn)
        def w(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                S.sdk_time_s += time.perf_counter() - t0
        return w

    def need_lib():
        if S.lib_refs <= 0:
            raise NotInitializedException("Library not initialized: call Library.Initialize()")

    class Library:
        @staticmethod
        def Initialize():
            S.lib_refs += 1

        @staticmethod
        def Close():
            if S.lib_refs <= 0:
                S.violations.append("Library.Close without Initialize")
            S.lib_refs -= 1

    class Node:
        def __init__(self, cam, name, value=0.0, lo=0.0, hi=1e9, inc=1, entries=None, command=False,
                     locked_while_acq=False):
            self.cam, self.name, self._v, self.lo, self.hi, self.inc = cam, name, value, lo, hi, inc
            self.entries, self.command, self.locked_while_acq = entries, command, locked_while_acq

        @property
        def integer(self) -> bool:
            return self.name in PEAK_INTEGER_NODES

        def _alive(self):
            if self.cam.gone:  # SetValue & co: "IOException: a communication error, e.g. disconnected"
                raise IOException(f"GC_ERR_IO: device {self.cam.serial} not reachable")

        def Value(self):
            self._alive()
            if self.name == "PayloadSize":
                return self.cam.payload()
            if self.name in ("Width", "Height", "OffsetX", "OffsetY"):
                return int(self._v)
            return self._v

        def Minimum(self):
            return self.lo

        def Maximum(self):
            self._alive()
            if self.name == "AcquisitionFrameRate":
                return self.cam.max_fps()
            if self.name == "ExposureTime":
                return 1e6 / self.cam.nodes["AcquisitionFrameRate"]._v
            if self.name == "Width":
                return self.cam.w - int(self.cam.nodes["OffsetX"]._v)
            if self.name == "Height":
                return self.cam.h - int(self.cam.nodes["OffsetY"]._v)
            if self.name == "OffsetX":
                return self.cam.w - int(self.cam.nodes["Width"]._v)
            if self.name == "OffsetY":
                return self.cam.h - int(self.cam.nodes["Height"]._v)
            return self.hi

        def Increment(self):
            return self.inc

        @timed
        def SetValue(self, v):
            if self.integer and not isinstance(v, int):  # SWIG: IntegerNode.SetValue(int64_t)
                raise TypeError(f"in method 'IntegerNode_SetValue', argument 2 of type 'int64_t' ({self.name}={v!r})")
            if not self.integer and not isinstance(v, (int, float)):
                raise TypeError(f"in method 'FloatNode_SetValue', argument 2 of type 'double' ({self.name}={v!r})")
            self._alive()
            if self.locked_while_acq and self.cam.nodes["TLParamsLocked"]._v:
                raise BadAccessException(f"{self.name} is not writeable while TLParamsLocked")
            if not self.lo <= v <= self.Maximum() + 1e-9:
                raise OutOfRangeException(f"{self.name}={v} out of range [{self.lo}, {self.Maximum()}]")
            if self.inc and isinstance(self.inc, int) and self.inc > 1 and (int(v) - int(self.lo)) % self.inc:
                raise OutOfRangeException(f"{self.name}={v} not a multiple of {self.inc}")
            self._v = v
            if self.name == "AcquisitionFrameRate":
                ex = self.cam.nodes["ExposureTime"]
                ex._v = min(ex._v, 1e6 / v)

        def SetCurrentEntry(self, e):
            self._alive()
            if e not in self.entries:  # the real SDK: InvalidArgumentException, not NotFoundException
                raise InvalidArgumentException(
                    f"Error-Code: 5 (PEAK_RETURN_CODE_INVALID_ARGUMENT) | Error-Description: "
                    f"There is no entry with symbolic value {e} in {self.name}")
            if self.locked_while_acq and self.cam.nodes["TLParamsLocked"]._v:
                raise BadAccessException(f"{self.name} is not writeable while TLParamsLocked")
            self._v = e

        def CurrentEntry(self):
            return self._v

        def Entries(self):
            return [EntryNode(e) for e in self.entries or []]

        def Execute(self):
            self._alive()
            if self.name == "AcquisitionStart":
                if not self.cam.nodes["TLParamsLocked"]._v:
                    S.violations.append("AcquisitionStart without TLParamsLocked=1")
                self.cam.streaming = True
            elif self.name == "AcquisitionStop":
                self.cam.streaming = False

        def WaitUntilDone(self):
            return None

    class EntryNode:
        def __init__(self, symbolic: str) -> None:
            self.symbolic = symbolic

        def SymbolicValue(self):
            return self.symbolic

        def IsAvailable(self):
            return True

    class Camera:
        def __init__(self, info):
            self.serial, self.model, self.w, self.h = info["serial"], info["model"], info["w"], info["h"]
            self.streaming = False
            self.frame_id = 0
            n = self.nodes = {}
            lw = dict(locked_while_acq=True)
            n["Width"] = Node(self, "Width", self.w, 16, self.w, 8, **lw)
            n["Height"] = Node(self, "Height", self.h, 4, self.h, 2, **lw)
            n["OffsetX"] = Node(self, "OffsetX", 0, 0, 0, 8, **lw)
            n["OffsetY"] = Node(self, "OffsetY", 0, 0, 0, 2, **lw)
            n["PixelFormat"] = Node(self, "PixelFormat", "Mono8", entries=["Mono8", "Mono10", "Mono12"], **lw)
            n["ExposureTime"] = Node(self, "ExposureTime", 10000.0, 20.0, 1e6, 0.0)
            n["AcquisitionFrameRate"] = Node(self, "AcquisitionFrameRate", 30.0, 1.0, 1e9, 0.0)
            n["GainSelector"] = Node(self, "GainSelector", "AnalogAll", entries=["AnalogAll", "DigitalAll"])
            n["Gain"] = Node(self, "Gain", 1.0, 1.0, 4.0, 0.0)
            n["PayloadSize"] = Node(self, "PayloadSize", 0)
            n["TLParamsLocked"] = Node(self, "TLParamsLocked", 0, 0, 1, 1)
            for c in ("AcquisitionStart", "AcquisitionStop", "UserSetLoad"):
                n[c] = Node(self, c, command=True)
            n["UserSetSelector"] = Node(self, "UserSetSelector", "Default", entries=["Default", "UserSet0"])

        @property
        def gone(self):
            return self.serial in S.unplugged

        def bpp(self):
            return 1 if self.nodes["PixelFormat"]._v == "Mono8" else 2

        def payload(self):
            return int(self.nodes["Width"]._v) * int(self.nodes["Height"]._v) * self.bpp()

        def max_fps(self):
            return 5.0e8 / (int(self.nodes["Width"]._v) * int(self.nodes["Height"]._v))

    cams = {c["serial"]: Camera(c) for c in S.cameras}
    S.fake_cameras = cams

    class NodeMap:
        def __init__(self, cam):
            self.cam = cam

        @timed
        def FindNode(self, name):
            if name not in self.cam.nodes:
                raise NotFoundException(f"node {name} not found")
            return self.cam.nodes[name]

    class Buffer:
        def __init__(self, size):
            self.data = np.zeros(size, np.uint8)
            self.w = self.h = 0
            self.ts = 0
            self.fid = 0
            self.incomplete = False

        def Size(self):
            return self.data.size

        def Width(self):
            return self.w

        def Height(self):
            return self.h

        def Timestamp_ns(self):
            return self.ts

        def FrameID(self):
            return self.fid

        def IsIncomplete(self):
            return self.incomplete

    class DataStream:
        INFINITE_NUMBER = 0xFFFFFFFFFFFFFFFF

        def __init__(self, cam):
            self.cam = cam
            self.announced: list[Buffer] = []
            self.queued: deque[Buffer] = deque()
            self.running = False

        def NumBuffersAnnouncedMinRequired(self):
            return 3

        @timed
        def AllocAndAnnounceBuffer(self, size):
            if self.running:
                S.violations.append("announce while acquisition is running")
            b = Buffer(size)
            self.announced.append(b)
            return b

        @timed
        def QueueBuffer(self, b):
            if b not in self.announced:
                raise BadAccessException("buffer not announced")
            if b in self.queued:
                S.violations.append("buffer queued twice")
                return
            self.queued.append(b)

        def StartAcquisition(self, mode, n):
            if self.cam.gone:
                raise InternalErrorException("device lost")
            if not self.announced:
                raise BadAccessException("no buffers announced")
            self.running = True

        def StopAcquisition(self, mode):
            if self.cam.streaming and not self.cam.gone:
                S.violations.append("StopAcquisition on the stream before AcquisitionStop on the device")
            self.running = False

        def KillWait(self):
            pass

        def Flush(self, mode):
            if self.running:
                S.violations.append("Flush while running")
            self.queued.clear()

        def AnnouncedBuffers(self):
            return list(self.announced)

        def RevokeBuffer(self, b):
            if self.running:
                raise BadAccessException("revoke while running")
            self.announced.remove(b)

        @timed
        def WaitForFinishedBuffer(self, timeout_ms):
            cam = self.cam
            if cam.gone:
                if S.unplugged[cam.serial] == "silent":
                    raise TimeoutException("wait timed out")
                raise InternalErrorException("GC_ERR_IO: device removed")
            if not self.running or not cam.streaming:
                raise TimeoutException("wait timed out (acquisition not running)")
            if S.stall_next > 0:
                S.stall_next -= 1
                raise TimeoutException("wait timed out")
            if not self.queued:
                S.violations.append("no buffer queued (QueueBuffer missing)")
                raise TimeoutException("wait timed out")
            b = self.queued.popleft()
            cam.frame_id += 1
            t_fill = time.perf_counter()
            w, h = int(cam.nodes["Width"]._v), int(cam.nodes["Height"]._v)
            maxv = {"Mono8": 255, "Mono10": 1023, "Mono12": 4095}[cam.nodes["PixelFormat"]._v]
            view = (b.data[: w * h] if cam.bpp() == 1 else b.data[: 2 * w * h].view("<u2")).reshape(h, w)
            write_pattern(view, cam.frame_id, maxv)
            dt_fill = time.perf_counter() - t_fill
            S.sdk_time_s -= dt_fill  # sensor work, not SDK
            S.fill_time_s += dt_fill
            b.w, b.h, b.fid = w, h, cam.frame_id
            b.ts = int(cam.frame_id * 1e9 / cam.nodes["AcquisitionFrameRate"]._v)
            b.incomplete = S.incomplete_next > 0
            S.incomplete_next = max(0, S.incomplete_next - 1)
            return b

    class DataStreamDescriptor:
        def __init__(self, cam):
            self.cam = cam

        def OpenDataStream(self):
            return DataStream(self.cam)

    class RemoteDevice:
        def __init__(self, cam):
            self.cam = cam

        def NodeMaps(self):
            return [NodeMap(self.cam)]

    class Device:
        def __init__(self, cam):
            self.cam = cam

        def RemoteDevice(self):
            return RemoteDevice(self.cam)

        def DataStreams(self):
            return [DataStreamDescriptor(self.cam)]

    class DeviceDescriptor:
        def __init__(self, cam):
            self.cam = cam

        def ModelName(self):
            return self.cam.model

        def SerialNumber(self):
            return self.cam.serial

        def DisplayName(self):
            return f"{self.cam.model} ({self.cam.serial})"

        def IsOpenable(self, access):
            return self.cam.serial not in S.in_use_elsewhere and self.cam.serial not in S.opened

        def OpenDevice(self, access):
            need_lib()
            if not self.IsOpenable(access):
                raise BadAccessException("GC_ERR_ACCESS_DENIED: device opened by another process")
            S.opened.add(self.cam.serial)
            return Device(self.cam)

    class DeviceManager:
        _inst = None

        def __init__(self):
            self.devices: list[DeviceDescriptor] = []

        @classmethod
        def Instance(cls):
            need_lib()
            if cls._inst is None:
                cls._inst = cls()
            return cls._inst

        def Update(self):
            need_lib()
            if not S.producer:
                raise NotFoundException(
                    "Error-Code: 11 (PEAK_RETURN_CODE_NOT_FOUND) | Error-Description: GENICAM_GENTL64_PATH "
                    "environment variable not found! Please set this to the path of the CTIs.")
            S.opened &= set(cams)  # released handles are GC'd; tests clear explicitly
            self.devices = [DeviceDescriptor(c) for c in cams.values() if c.serial not in S.unplugged]

        def Devices(self):
            return list(self.devices)

    m.Library, m.DeviceManager, m.DataStream = Library, DeviceManager, DataStream

    ext = types.ModuleType("ids_peak.ids_peak_ipl_extension")

    class IplImage:
        def __init__(self, buf):
            self.buf = buf

        def get_numpy_2D(self):
            b = self.buf
            return b.data[: b.w * b.h].reshape(b.h, b.w)

        def get_numpy_2D_16(self):
            b = self.buf
            return b.data[: 2 * b.w * b.h].view("<u2").reshape(b.h, b.w)

    @timed
    def BufferToImage(buf):
        return IplImage(buf)

    ext.BufferToImage = BufferToImage
    pkg = types.ModuleType("ids_peak")
    pkg.__path__ = []
    pkg.ids_peak, pkg.ids_peak_ipl_extension = m, ext
    return pkg, m, ext


def install_ids_peak(monkeypatch: Any, system: FakePeakSystem) -> types.ModuleType:
    import sys

    pkg, m, ext = make_ids_peak(system)
    monkeypatch.setitem(sys.modules, "ids_peak", pkg)
    monkeypatch.setitem(sys.modules, "ids_peak.ids_peak", m)
    monkeypatch.setitem(sys.modules, "ids_peak.ids_peak_ipl_extension", ext)
    return m


# ======================================================================================
# Holoeye SLM Display SDK
# ======================================================================================
# heds_errorcodes of SDK 4.x (the numbering is shared with 3.x)
HEDSERR_NoError = 0
HEDSERR_NoSLMConnected = 1
HEDSERR_InvalidDataPointer = 5
HEDSERR_UnsupportedDataFormat = 8
HEDSERR_OutOfVideoMemory = 11
HEDSERR_InvalidHandle = 12
HEDSERR_InvalidSLMWindow = 37
HEDSERR_LibraryVersionMismatch = 44


class FakeHolo:
    """One Holoeye SLM (e.g. PLUTO-2) behind either SDK flavour.

    ``sdk_minor``: the installed 4.x library's minor version (``SDK.Init(4, m)`` with a larger
    ``m`` asserts). ``env_set``: HEDS_3_2_PYTHON is set (3.x ``SLMInstance()`` raises
    RuntimeError otherwise). ``max_handles``: data handles the GPU holds before
    ``loadImageData`` fails with HEDSERR_OutOfVideoMemory. ``window_assertion``: with no SLM,
    ``SLM.Init`` raises the SDK's window AssertionError instead of returning the error object.
    """

    def __init__(self, width: int = 1920, height: int = 1080, attached: bool = True, sdk_minor: int = 1,
                 *, env_set: bool = True, max_handles: int = 32, window_assertion: bool = False,
                 show_image_data: bool = True) -> None:
        self.width, self.height, self.attached, self.sdk_minor = width, height, attached, sdk_minor
        self.env_set, self.max_handles, self.window_assertion = env_set, max_handles, window_assertion
        self.show_image_data = show_image_data  # SDK 4.x has SLM.showImageData (no handle needed)
        self.sdk_initialised = False
        self.window_open = False
        self.live_handles = 0
        self.shown: list[np.ndarray] = []
        self.violations: list[str] = []

    def close_window_by_user(self) -> None:
        """The operator closes the SLM window via the SDK's tray icon."""
        self.window_open = False

    def _show(self, data: Any) -> int:
        if not self.window_open:
            return HEDSERR_NoSLMConnected
        arr = np.asarray(data)
        if arr.ndim != 2 or arr.dtype != np.uint8:
            return HEDSERR_UnsupportedDataFormat
        if arr.shape != (self.height, self.width):
            self.violations.append(f"data {arr.shape} shown with PresentAutomatic would be centred, not 1:1")
        self.shown.append(arr.copy())
        return HEDSERR_NoError


_HEDS_TEXT = {0: "No error.", 1: "The given SLM window does not exist.", 8: "Unsupported data format.",
              11: "Data transfer into video memory failed. Please release unused data handles and try again.",
              12: "The current handle is invalid.", 37: "The SLM window ID is invalid.",
              44: "The library (.dll or .so file) has an API incompatible version."}


def make_heds(holo: FakeHolo) -> dict[str, types.ModuleType]:
    """SDK 4.x modules: ``HEDS``, ``hedslib``, ``hedslib.heds_types``."""
    types_mod = types.ModuleType("hedslib.heds_types")
    for k, v in dict(HEDSERR_NoError=HEDSERR_NoError, HEDSERR_NoSLMConnected=HEDSERR_NoSLMConnected,
                     HEDSERR_UnsupportedDataFormat=HEDSERR_UnsupportedDataFormat,
                     HEDSERR_OutOfVideoMemory=HEDSERR_OutOfVideoMemory, HEDSERR_InvalidHandle=HEDSERR_InvalidHandle,
                     HEDSERR_InvalidSLMWindow=HEDSERR_InvalidSLMWindow,
                     HEDSERR_LibraryVersionMismatch=HEDSERR_LibraryVersionMismatch,
                     HEDSDTFMT_INT_U8=0, HEDSSHF_PresentAutomatic=0).items():
        setattr(types_mod, k, v)
    hedslib = types.ModuleType("hedslib")
    hedslib.__path__ = []
    hedslib.heds_types = types_mod

    heds = types.ModuleType("HEDS")

    class SDK:
        @staticmethod
        def Init(major: int, minor: int) -> int:
            # the SDK's convenience API asserts instead of returning the mismatch code
            assert major == 4 and minor <= holo.sdk_minor, _HEDS_TEXT[HEDSERR_LibraryVersionMismatch]
            holo.sdk_initialised = True
            return HEDSERR_NoError

        @staticmethod
        def ErrorString(code: int) -> str:
            return _HEDS_TEXT.get(int(code), f"Unknown error {code}")

    class Window:
        def close(self) -> int:
            if not holo.window_open:
                return HEDSERR_NoSLMConnected
            holo.window_open = False
            return HEDSERR_NoError

    class SLMDataHandle:
        """Holds video memory until release(); there is no __del__, as in the SDK."""

        def __init__(self, arr):
            self.arr = arr
            self.released = False
            holo.live_handles += 1

        def show(self) -> int:
            if self.released:
                return HEDSERR_InvalidHandle
            return holo._show(self.arr)

        def release(self) -> int:
            if self.released:
                return HEDSERR_InvalidHandle
            self.released = True
            holo.live_handles -= 1
            return HEDSERR_NoError

    class SLMObj:
        def __init__(self, code):
            self._code = code

        def errorCode(self) -> int:
            return self._code

        def width_px(self) -> int:
            return holo.width

        def height_px(self) -> int:
            return holo.height

        def loadImageData(self, data):
            if not holo.window_open:
                return HEDSERR_NoSLMConnected, None
            arr = np.asarray(data)
            if arr.dtype != np.uint8 or arr.ndim != 2:
                return HEDSERR_UnsupportedDataFormat, None
            if holo.live_handles >= holo.max_handles:
                return HEDSERR_OutOfVideoMemory, None
            return HEDSERR_NoError, SLMDataHandle(arr.copy())

        def window(self) -> Window:
            return Window()

    def showImageData(self, data) -> int:  # noqa: N802 - SDK spelling
        return holo._show(data)

    class SLM:
        @staticmethod
        def Init(preselect: str = "", openPreview: bool = True, previewScale: float = 1.0) -> SLMObj:  # noqa: N803
            if not holo.sdk_initialised:
                holo.violations.append("SLM.Init before SDK.Init")
                return SLMObj(HEDSERR_InvalidSLMWindow)
            if not holo.attached:  # the SLM window never opened
                assert not holo.window_assertion, _HEDS_TEXT[HEDSERR_InvalidSLMWindow]
                return SLMObj(HEDSERR_InvalidSLMWindow)
            holo.window_open = True
            return SLMObj(HEDSERR_NoError)

    if holo.show_image_data:
        SLMObj.showImageData = showImageData
    heds.SDK, heds.SLM, heds.SLMDataHandle = SDK, SLM, SLMDataHandle
    return {"HEDS": heds, "hedslib": hedslib, "hedslib.heds_types": types_mod}


def make_slmdisplaysdk(holo: FakeHolo) -> dict[str, types.ModuleType]:
    """SDK 3.x modules: ``holoeye``, ``holoeye.slmdisplaysdk``."""
    sdk = types.ModuleType("holoeye.slmdisplaysdk")

    class ErrorCode:
        NoError = HEDSERR_NoError
        NoSLMConnected = HEDSERR_NoSLMConnected
        UnsupportedDataFormat = HEDSERR_UnsupportedDataFormat

    class SLMInstance:
        def __init__(self):
            if not holo.env_set:
                raise RuntimeError("HEDS_3_2_PYTHON environment variable is not set; "
                                   "cannot find the SLM Display SDK library")
            self.width_px = 0
            self.height_px = 0

        def requiresVersion(self, v: int) -> bool:  # noqa: N802
            return v <= 3

        def open(self) -> int:
            if not holo.attached:
                return HEDSERR_NoSLMConnected
            holo.window_open = True
            self.width_px, self.height_px = holo.width, holo.height
            return HEDSERR_NoError

        def showData(self, data, flags: int = 0) -> int:  # noqa: N802
            return holo._show(data)

        def errorString(self, code: int) -> bytes:  # noqa: N802 - SDK 3.x returns bytes
            return _HEDS_TEXT.get(int(code), f"Unknown error {code}").encode()

        def utilsSLMPreviewShow(self, *a) -> int:  # noqa: N802
            return HEDSERR_NoError

        def close(self) -> None:
            holo.window_open = False

    sdk.ErrorCode, sdk.SLMInstance = ErrorCode, SLMInstance
    pkg = types.ModuleType("holoeye")
    pkg.__path__ = []
    pkg.slmdisplaysdk = sdk
    return {"holoeye": pkg, "holoeye.slmdisplaysdk": sdk}


def fail_import(monkeypatch: Any, name: str, exc: BaseException) -> None:
    """Make ``import name`` raise ``exc`` the way a vendor module does when its library cannot
    load (``import HEDS`` raises RuntimeError, not ImportError)."""
    import importlib.abc
    import importlib.util

    class _Loader(importlib.abc.Loader):
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            raise exc

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            return importlib.util.spec_from_loader(fullname, _Loader()) if fullname == name else None

    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Finder(), *sys.meta_path])


def install_modules(monkeypatch: Any, modules: dict[str, types.ModuleType]) -> None:
    import sys

    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)


def block_modules(monkeypatch: Any, *names: str) -> None:
    """Make ``import name`` fail like a missing package."""
    import sys

    for name in names:
        monkeypatch.setitem(sys.modules, name, None)
