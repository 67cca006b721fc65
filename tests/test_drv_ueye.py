"""IDS uEye driver against a fake pyueye that follows the uEye API's call sequence and codes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drv_fakes as fk  # noqa: E402

from mcf_rotator.config import CameraConfig  # noqa: E402
from mcf_rotator.drivers.protocols import Camera  # noqa: E402
from mcf_rotator.drivers.ueye import UEyeCamera  # noqa: E402
from mcf_rotator.errors import (  # noqa: E402
    DeviceBusyError,
    DeviceDisconnectedError,
    DeviceError,
    DeviceNotFoundError,
    FrameTimeoutError,
    SDKNotFoundError,
)


@pytest.fixture
def system(monkeypatch):
    s = fk.FakeUEyeSystem(width=1280, height=1024)
    fk.install_pyueye(monkeypatch, s)
    return s


def make(**kw) -> UEyeCamera:
    cfg = CameraConfig(driver="ueye", **{k: v for k, v in kw.items() if k in CameraConfig.model_fields})
    return UEyeCamera(cfg, **{k: v for k, v in kw.items() if k not in CameraConfig.model_fields})


def expected(system: fk.FakeUEyeSystem, n: int, w: int, h: int) -> np.ndarray:
    return system.frame_pattern(n, w, h)


def test_open_configure_capture_close_follows_the_sdk_sequence(system):
    cam = make(exposure_ms=4.0, frame_rate_hz=50.0, gain=2.0)
    assert isinstance(cam, Camera)
    cam.connect()
    assert cam.shape == (1024, 1280) and cam.dtype == np.uint8 and cam.bit_depth == 8
    assert cam.pixel_clock_mhz == 86  # fastest clock by default
    assert cam.frame_rate_hz == pytest.approx(50.0)
    assert cam.exposure_ms == pytest.approx(4.0)
    assert cam.gain == pytest.approx(2.0)
    assert system.gain_factor == 200
    cam.start_acquisition()
    frames = [cam.read_frame(0.5) for _ in range(20)]  # more frames than buffers: unlock must work
    for i, f in enumerate(frames):
        assert f.index == i
        np.testing.assert_array_equal(f.image, expected(system, i + 1, 1280, 1024).astype(np.uint8))
        assert f.metadata["clock"] == "camera"
    # timestamps from the camera clock (0.1 us ticks), one frame period apart
    dt = np.diff([f.timestamp for f in frames])
    np.testing.assert_allclose(dt, 1 / 50.0, rtol=1e-6)
    # the copy must not alias SDK memory that the camera overwrites later
    first = frames[0].image.copy()
    cam.read_frame(0.5)
    np.testing.assert_array_equal(frames[0].image, first)
    cam.stop_acquisition()
    cam.disconnect()
    assert not system.open and not system.mems and not system.violations
    order = [c for c in system.calls if c in ("is_InitCamera", "is_SetColorMode", "is_AllocImageMem",
                                              "is_ImageQueue", "is_CaptureVideo", "is_ExitCamera")]
    assert order[0] == "is_InitCamera" and order[-1] == "is_ExitCamera"
    assert order.index("is_SetColorMode") < order.index("is_AllocImageMem") < order.index("is_ImageQueue")
    assert not set(system.calls) & fk.UEYE_DEPRECATED


def test_mono12_roi_with_padded_pitch(system):
    cam = make(bit_depth=12, roi=(100, 50, 1004, 200))  # 1004*2 bytes -> padded pitch
    cam.connect()
    assert system.aoi == [100, 50, 1004, 200]
    assert cam.shape == (200, 1004) and cam.dtype == np.uint16
    f = cam.snap()
    assert not cam.is_acquiring
    assert f.image.shape == (200, 1004) and f.image.flags.c_contiguous
    np.testing.assert_array_equal(f.image, expected(system, 1, 1004, 200))
    assert f.image.max() <= 4095
    cam.disconnect()
    assert not system.violations


def test_setters_talk_to_the_camera_and_emit(system):
    cam = make(frame_rate_hz=20)
    cam.connect()
    seen = []
    cam.events.property_changed.connect(lambda n, v: seen.append((n, v)))
    cam.exposure_ms = 37.5
    assert system.exposure_ms == pytest.approx(37.5) and cam.exposure_ms == pytest.approx(37.5)
    cam.frame_rate_hz = 50.0  # exposure gets clamped by the camera to the frame period
    assert system.fps == pytest.approx(50.0)
    assert cam.exposure_ms == pytest.approx(20.0)
    cam.pixel_clock_mhz = 5  # slow clock limits the frame rate
    assert cam.frame_rate_hz < 5.0
    cam.gain = 3.0
    assert system.gain_factor == 300
    assert [n for n, _ in seen] == ["exposure_ms", "frame_rate_hz", "pixel_clock_mhz", "gain"]
    cam.disconnect()


def test_bad_roi_is_readable(system):
    cam = make(roi=(0, 0, 5000, 10))
    with pytest.raises(DeviceError, match="region of interest"):
        cam.connect()
    assert not system.open  # released after the failure


def test_sdk_missing_mentions_pyueye_dll_path(monkeypatch, tmp_path):
    fk.block_modules(monkeypatch, "pyueye", "pyueye.ueye")
    with pytest.raises(SDKNotFoundError, match="PYUEYE_DLL_PATH"):
        make().connect()
    # pyueye installed but its driver library missing: importing pyueye itself fails
    monkeypatch.delitem(sys.modules, "pyueye")
    monkeypatch.delitem(sys.modules, "pyueye.ueye")
    pkg = tmp_path / "pyueye"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('libueye_api.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SDKNotFoundError, match="PYUEYE_DLL_PATH") as err:
        make().connect()
    assert "libueye_api.so" in str(err.value)


def test_no_camera_busy_and_driver_not_running(system):
    system.attached = False
    with pytest.raises(DeviceNotFoundError, match="no uEye camera is attached"):
        make().connect()
    system.attached = True
    system.in_use_elsewhere = True
    with pytest.raises(DeviceBusyError, match="in use by another program"):
        make().connect()
    system.in_use_elsewhere = False
    system.driver_running = False
    with pytest.raises(SDKNotFoundError, match="driver is not running"):
        make().connect()


def test_serial_mismatch(system):
    with pytest.raises(DeviceNotFoundError, match="serial"):
        make(serial="999").connect()
    assert not system.open


def test_unplug_mid_run_raises_disconnected_emits_error_and_reconnects(system):
    cam = make()
    cam.connect()
    errors = []
    cam.events.error.connect(errors.append)
    cam.start_acquisition()
    cam.read_frame(0.1)
    system.unplug("error")
    with pytest.raises(DeviceDisconnectedError, match="unplugged"):
        cam.read_frame(0.1)
    assert len(errors) == 1 and "unplugged" in errors[0]
    assert not cam.is_connected
    with pytest.raises(DeviceDisconnectedError):
        cam.read_frame(0.1)
    system.replug()
    cam.reconnect()
    assert cam.is_connected and cam.is_acquiring
    f = cam.read_frame(0.1)
    assert f.index == 0 and f.image.shape == (1024, 1280)
    cam.disconnect()
    assert not system.violations


def test_timeouts_then_disconnected_after_a_few_in_a_row(system):
    cam = make(max_consecutive_timeouts=3)
    cam.connect()
    errors = []
    cam.events.error.connect(errors.append)
    cam.start_acquisition()
    system.stall_next = 2
    for _ in range(2):
        with pytest.raises(FrameTimeoutError, match="no frame within"):
            cam.read_frame(0.01)
    assert cam.read_frame(0.01).index == 0  # a good frame resets the count
    assert not errors
    system.transfer_errors_next = 1
    with pytest.raises(FrameTimeoutError, match="transfer failed"):
        cam.read_frame(0.01)
    assert cam.read_frame(0.01).index == 1
    system.unplug("silent")  # camera gone but the SDK only says "timed out"
    for _ in range(2):
        with pytest.raises(FrameTimeoutError):
            cam.read_frame(0.01)
    with pytest.raises(DeviceDisconnectedError, match="3 attempts in a row"):
        cam.read_frame(0.01)
    assert len(errors) == 1


def test_driver_overhead_per_frame(system, record_property):
    """Driver time beyond the SDK's own calls (wait + copy); reported, loosely bounded."""
    cam = make()
    cam.connect()
    cam.start_acquisition()
    for _ in range(5):
        cam.read_frame(0.5)
    n = 100
    results = []
    for _ in range(3):  # best of 3: the shared test machine is noisy
        system.sdk_time_s = system.fill_time_s = 0.0
        t0 = time.perf_counter()
        for _ in range(n):
            cam.read_frame(0.5)
        total = time.perf_counter() - t0
        # the fake sensor's pattern generation is hardware work: neither SDK nor driver
        results.append(1000 * (total - system.sdk_time_s - system.fill_time_s) / n)
    overhead_ms = min(results)
    record_property("ueye_overhead_ms_per_frame", overhead_ms)
    print(f"\nuEye driver overhead: {overhead_ms:.3f} ms/frame at 1280x1024 mono8 "
          f"(SDK incl. copy {1000 * system.sdk_time_s / n:.3f} ms/frame)")
    cam.disconnect()
    assert overhead_ms < 5.0  # generous: shared CI cores; the target (<= 1 ms) is reported



@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_image_queue_api_without_deprecation_warnings(system):
    """pyueye deprecates is_InitImageQueue / is_WaitForNextImage / is_ExitImageQueue (a warning per
    frame, an exception under -W error): the driver uses is_ImageQueue."""
    cam = make()
    cam.connect()
    cam.start_acquisition()
    for _ in range(12):
        cam.read_frame(0.5)
    cam.stop_acquisition()
    cam.disconnect()
    assert "is_ImageQueue" in system.calls
    assert not set(system.calls) & fk.UEYE_DEPRECATED and not system.violations


def test_pitch_is_read_without_an_active_image_memory(system):
    """is_GetImageMemPitch needs an active memory (IS_NO_ACTIVE_IMG_MEM otherwise); none is active in
    sequence capture, so the driver asks the memory itself."""
    cam = make(roi=(0, 0, 1004, 100), bit_depth=8)  # 1004 bytes a line: padded to 1008
    cam.connect()
    assert cam._pitch == 1008 and "is_GetImageMemPitch" not in system.calls
    np.testing.assert_array_equal(cam.snap().image, expected(system, 1, 1004, 100).astype(np.uint8))
    cam.disconnect()


def test_fake_rejects_what_the_real_wrappers_reject(system):
    """pyueye's ctypes bindings refuse floats for ints and non-ctypes objects for pointers; so does the fake."""
    import ctypes

    ue = sys.modules["pyueye.ueye"]
    h = ue.HIDS(0)
    with pytest.raises(ctypes.ArgumentError):
        ue.is_SetColorMode(h, 6.0)
    with pytest.raises(ctypes.ArgumentError):
        ue.is_GetImageMemPitch(h, 5)  # needs a c_int to write into
    with pytest.raises(TypeError):
        ue.is_ExitCamera(h, 0)


def test_pixel_format_the_sensor_lacks(system):
    system.color_modes = {6}  # a mono8-only sensor
    with pytest.raises(DeviceError, match=r"does not offer mono12.*camera\.bit_depth"):
        make(bit_depth=12).connect()
    assert not system.open
