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
import functools
import time
import types
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
IS_SEQUENCE_LIST_EMPTY = 112
IS_SEQUENCE_BUF_ALREADY_LOCKED = 117
IS_ALL_DEVICES_BUSY = 120
IS_TIMED_OUT = 122
IS_INVALID_PARAMETER = 125
IS_CAPTURE_RUNNING = 140
IS_TRANSFER_ERROR = 178

_UEYE_CONSTANTS = dict(
    IS_NO_SUCCESS=IS_NO_SUCCESS, IS_SUCCESS=IS_SUCCESS, IS_INVALID_CAMERA_HANDLE=1, IS_INVALID_HANDLE=1,
    IS_CANT_OPEN_DEVICE=3, IS_TIMED_OUT=IS_TIMED_OUT, IS_CAPTURE_RUNNING=IS_CAPTURE_RUNNING,
    IS_TRANSFER_ERROR=IS_TRANSFER_ERROR, IS_ALL_DEVICES_BUSY=IS_ALL_DEVICES_BUSY,
    IS_INVALID_PARAMETER=IS_INVALID_PARAMETER,
    IS_SET_DM_DIB=1, IS_CM_MONO8=6, IS_CM_MONO12=26, IS_CM_MONO16=28, IS_CM_MONO10=34,
    IS_AOI_IMAGE_SET_AOI=0x0001, IS_AOI_IMAGE_GET_AOI=0x0002,
    IS_PIXELCLOCK_CMD_GET_NUMBER=1, IS_PIXELCLOCK_CMD_GET_LIST=2, IS_PIXELCLOCK_CMD_GET_RANGE=3,
    IS_PIXELCLOCK_CMD_GET_DEFAULT=4, IS_PIXELCLOCK_CMD_GET=5, IS_PIXELCLOCK_CMD_SET=6,
    IS_EXPOSURE_CMD_GET_EXPOSURE=7, IS_EXPOSURE_CMD_SET_EXPOSURE=12,
    IS_GET_MASTER_GAIN_FACTOR=0x8000, IS_SET_MASTER_GAIN_FACTOR=0x8004,
    IS_DONT_WAIT=0x0000, IS_WAIT=0x0001, IS_FORCE_VIDEO_STOP=0x4000, IS_IGNORE_PARAMETER=-1,
)
_BPP = {6: 8, 34: 16, 26: 16, 28: 16}
_MAXVAL = {6: 255, 34: 1023, 26: 4095, 28: 65535}


class HIDS(ctypes.c_uint):
    pass


class INT(ctypes.c_int):
    pass


class UINT(ctypes.c_uint):
    pass


class c_double(ctypes.c_double):  # noqa: N801 - pyueye spelling
    pass


class c_mem_p(ctypes.c_void_p):  # noqa: N801 - pyueye spelling
    pass


class IS_RECT(ctypes.Structure):
    _fields_ = [("s32X", ctypes.c_int), ("s32Y", ctypes.c_int), ("s32Width", ctypes.c_int),
                ("s32Height", ctypes.c_int)]


class SENSORINFO(ctypes.Structure):
    _fields_ = [("SensorID", ctypes.c_ushort), ("strSensorName", ctypes.c_char * 32),
                ("nColorMode", ctypes.c_char), ("nMaxWidth", ctypes.c_uint), ("nMaxHeight", ctypes.c_uint),
                ("bMasterGain", ctypes.c_int), ("wPixelSize", ctypes.c_ushort), ("Reserved", ctypes.c_char * 32)]


class CAMINFO(ctypes.Structure):
    _fields_ = [("SerNo", ctypes.c_char * 12), ("ID", ctypes.c_char * 20), ("Version", ctypes.c_char * 10),
                ("Date", ctypes.c_char * 12), ("Select", ctypes.c_ubyte), ("Type", ctypes.c_ubyte),
                ("Reserved", ctypes.c_char * 8)]


class UEYEIMAGEINFO(ctypes.Structure):
    _fields_ = [("dwFlags", ctypes.c_uint), ("byReserved1", ctypes.c_ubyte * 4),
                ("u64TimestampDevice", ctypes.c_ulonglong), ("TimestampSystem", ctypes.c_ubyte * 16),
                ("dwIoStatus", ctypes.c_uint), ("wAOIIndex", ctypes.c_ushort), ("wAOICycle", ctypes.c_ushort),
                ("u64FrameNumber", ctypes.c_ulonglong), ("dwImageBuffers", ctypes.c_uint),
                ("dwImageBuffersInUse", ctypes.c_uint), ("dwReserved3", ctypes.c_uint),
                ("dwImageHeight", ctypes.c_uint), ("dwImageWidth", ctypes.c_uint)]


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


def make_pyueye(system: FakeUEyeSystem) -> tuple[types.ModuleType, types.ModuleType]:
    """Modules ``pyueye`` and ``pyueye.ueye`` bound to ``system``."""
    s = system
    ue = types.ModuleType("pyueye.ueye")
    for k, v in _UEYE_CONSTANTS.items():
        setattr(ue, k, v)
    ue.HIDS, ue.INT, ue.int, ue.UINT, ue.uint = HIDS, INT, INT, UINT, UINT
    ue.double, ue.c_mem_p = c_double, c_mem_p
    ue.IS_RECT, ue.SENSORINFO, ue.CAMINFO, ue.UEYEIMAGEINFO = IS_RECT, SENSORINFO, CAMINFO, UEYEIMAGEINFO
    ue.sizeof = ctypes.sizeof

    def api(fn):
        @functools.wraps(fn)
        def wrapper(*args):
            t0 = time.perf_counter()
            s.calls.append(fn.__name__)
            try:
                return fn(*args)
            finally:
                s.sdk_time_s += time.perf_counter() - t0
        setattr(ue, fn.__name__, wrapper)
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
        if mode not in _BPP:
            return IS_INVALID_PARAMETER
        if s.mems:
            s.violations.append("color mode changed after allocating image memory")
        s.color_mode = mode
        return IS_SUCCESS

    @api
    def is_AOI(h, cmd, rect, size):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if size != ctypes.sizeof(IS_RECT):
            return 158  # IS_BAD_STRUCTURE_SIZE
        if cmd == ue.IS_AOI_IMAGE_GET_AOI:
            rect.s32X, rect.s32Y, rect.s32Width, rect.s32Height = s.aoi
            return IS_SUCCESS
        if cmd == ue.IS_AOI_IMAGE_SET_AOI:
            x, y, w, hh = rect.s32X, rect.s32Y, rect.s32Width, rect.s32Height
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
        s.fps = max(0.5, min(float(fps.value), s.max_fps()))
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

    @api
    def is_AddToSequence(h, mem, mid):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if int(mid.value) not in s.mems or ctypes.addressof(s.mems[int(mid.value)][0]) != mem.value:
            return IS_NO_SUCCESS
        s.sequence.append(int(mid.value))
        return IS_SUCCESS

    @api
    def is_GetImageMemPitch(h, pitch):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if not s.mems:
            return 108  # IS_NO_ACTIVE_IMG_MEM
        pitch.value = next(iter(s.mems.values()))[4]
        return IS_SUCCESS

    @api
    def is_InitImageQueue(h, mode):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if not s.sequence:
            return IS_SEQUENCE_LIST_EMPTY
        s.queue = True
        return IS_SUCCESS

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

    @api
    def is_WaitForNextImage(h, timeout_ms, pmem, pid):
        if not s.attached:
            return IS_TIMED_OUT if s.fail_mode == "silent" else IS_NO_SUCCESS
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if not s.queue:
            s.violations.append("WaitForNextImage without is_InitImageQueue")
            return IS_NO_SUCCESS
        if s.stall_next > 0:
            s.stall_next -= 1
            return IS_TIMED_OUT
        if s.transfer_errors_next > 0:
            s.transfer_errors_next -= 1
            return IS_TRANSFER_ERROR
        if not s.live:
            return IS_TIMED_OUT
        free = [i for i in s.sequence if i not in s.locked]
        if not free:
            s.violations.append("all sequence buffers locked (UnlockSeqBuf missing)")
            return IS_TIMED_OUT
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
        pmem.value = ctypes.addressof(s.mems[i][0])
        pid.value = i
        return IS_SUCCESS

    @api
    def is_GetImageInfo(h, mid, info, size):
        if not ok_handle(h):
            return IS_INVALID_CAMERA_HANDLE
        if size != ctypes.sizeof(UEYEIMAGEINFO):
            return 158
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


def install_pyueye(monkeypatch: Any, system: FakeUEyeSystem) -> types.ModuleType:
    pkg, ue = make_pyueye(system)
    monkeypatch.setitem(__import__("sys").modules, "pyueye", pkg)
    monkeypatch.setitem(__import__("sys").modules, "pyueye.ueye", ue)
    return ue


# ======================================================================================
# ids_peak
# ======================================================================================
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

    class PeakException(Exception):
        pass

    class TimeoutException(PeakException):
        pass

    class AbortedException(PeakException):
        pass

    class BadAccessException(PeakException):
        pass

    class NotFoundException(PeakException):
        pass

    class OutOfRangeException(PeakException):
        pass

    class InternalErrorException(PeakException):
        pass

    class NotInitializedException(PeakException):
        pass

    for cls in (TimeoutException, AbortedException, BadAccessException, NotFoundException,
                OutOfRangeException, InternalErrorException, NotInitializedException):
        setattr(m, cls.__name__, cls)
    m.Exception = PeakException
    m.DeviceAccessType_Control = 3
    m.DeviceAccessType_ReadOnly = 2
    m.AcquisitionStartMode_Default = 1
    m.AcquisitionStopMode_Default = 1
    m.DataStreamFlushMode_DiscardAll = 4

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

        def _alive(self):
            if self.cam.gone:
                raise InternalErrorException(f"GC_ERR_IO: device {self.cam.serial} not reachable")

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
            if e not in self.entries:
                raise NotFoundException(f"entry {e} not in {self.name}")
            if self.locked_while_acq and self.cam.nodes["TLParamsLocked"]._v:
                raise BadAccessException(f"{self.name} is not writeable while TLParamsLocked")
            self._v = e

        def CurrentEntry(self):
            return self._v

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
HEDSERR_NoError = 0
HEDSERR_NoSLMConnected = 1
HEDSERR_InvalidDataPointer = 5
HEDSERR_UnsupportedDataFormat = 8
HEDSERR_WrongAPIVersion = 30  # stands for the SDK's version-mismatch code


class FakeHolo:
    """One Holoeye SLM (e.g. PLUTO-2) behind either SDK flavour."""

    def __init__(self, width: int = 1920, height: int = 1080, attached: bool = True, sdk_minor: int = 1) -> None:
        self.width, self.height, self.attached, self.sdk_minor = width, height, attached, sdk_minor
        self.sdk_initialised = False
        self.window_open = False
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


_HEDS_TEXT = {0: "No error.", 1: "The given SLM instance does not exist.", 8: "Unsupported data format.",
              30: "The SDK version requested is not supported by this library."}


def make_heds(holo: FakeHolo) -> dict[str, types.ModuleType]:
    """SDK 4.x modules: ``HEDS``, ``hedslib``, ``hedslib.heds_types``."""
    types_mod = types.ModuleType("hedslib.heds_types")
    types_mod.HEDSERR_NoError = HEDSERR_NoError
    types_mod.HEDSERR_NoSLMConnected = HEDSERR_NoSLMConnected
    types_mod.HEDSERR_UnsupportedDataFormat = HEDSERR_UnsupportedDataFormat
    types_mod.HEDSDTFMT_INT_U8 = 1
    types_mod.HEDSSHF_PresentAutomatic = 0
    hedslib = types.ModuleType("hedslib")
    hedslib.__path__ = []
    hedslib.heds_types = types_mod

    heds = types.ModuleType("HEDS")

    class SDK:
        @staticmethod
        def Init(major: int, minor: int) -> int:
            if major != 4 or minor > holo.sdk_minor:
                return HEDSERR_WrongAPIVersion
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

    class DataHandle:
        def __init__(self, arr):
            self.arr = arr

        def show(self) -> int:
            return holo._show(self.arr)

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
            return HEDSERR_NoError, DataHandle(arr.copy())

        def window(self) -> Window:
            return Window()

    class SLM:
        @staticmethod
        def Init(preselect: str = "", openPreview: bool = False, previewScale: float = 0.0) -> SLMObj:  # noqa: N803
            if not holo.sdk_initialised:
                holo.violations.append("SLM.Init before SDK.Init")
                return SLMObj(HEDSERR_NoSLMConnected)
            if not holo.attached:
                return SLMObj(HEDSERR_NoSLMConnected)
            holo.window_open = True
            return SLMObj(HEDSERR_NoError)

    heds.SDK, heds.SLM = SDK, SLM
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

        def errorString(self, code: int) -> str:  # noqa: N802
            return _HEDS_TEXT.get(int(code), f"Unknown error {code}")

        def utilsSLMPreviewShow(self, *a) -> int:  # noqa: N802
            return HEDSERR_NoError

        def close(self) -> None:
            holo.window_open = False

    sdk.ErrorCode, sdk.SLMInstance = ErrorCode, SLMInstance
    pkg = types.ModuleType("holoeye")
    pkg.__path__ = []
    pkg.slmdisplaysdk = sdk
    return {"holoeye": pkg, "holoeye.slmdisplaysdk": sdk}


def install_modules(monkeypatch: Any, modules: dict[str, types.ModuleType]) -> None:
    import sys

    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)


def block_modules(monkeypatch: Any, *names: str) -> None:
    """Make ``import name`` fail like a missing package."""
    import sys

    for name in names:
        monkeypatch.setitem(sys.modules, name, None)
