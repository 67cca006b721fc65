"""The fakes and drivers checked against the vendors' own Python packages (optional test extra).

pyueye runs its real ctypes wrappers on a stub ``libueye_api`` built with the C compiler;
ids-peak / ids-peak-ipl load without a camera (``Library.Initialize``, ``DeviceManager``), so the
driver meets the real library's "no producer" and "no camera" answers. Each part skips cleanly
when its package (or, for pyueye, a C compiler) is absent; the Holoeye SDK is not on PyPI.
"""

from __future__ import annotations

import ctypes
import importlib.util
import inspect
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drv_fakes as fk  # noqa: E402
import drv_ueye_stub as stub  # noqa: E402

from mcf_rotator.config import CameraConfig  # noqa: E402
from mcf_rotator.drivers.ids_peak import IDSPeakCamera  # noqa: E402
from mcf_rotator.drivers.ueye import UEyeCamera  # noqa: E402
from mcf_rotator.errors import DeviceNotFoundError, SDKNotFoundError  # noqa: E402

needs_pyueye = pytest.mark.skipif(
    importlib.util.find_spec("pyueye") is None or not (shutil.which("gcc") or shutil.which("cc")),
    reason="pyueye (pip install mcf-rotator[hardware-test]) and a C compiler are needed")
needs_ids_peak = pytest.mark.skipif(
    importlib.util.find_spec("ids_peak") is None or importlib.util.find_spec("ids_peak_ipl") is None,
    reason="ids-peak / ids-peak-ipl not installed (pip install mcf-rotator[hardware-test])")


# ======================================================================================
# pyueye
# ======================================================================================
@pytest.fixture(scope="session")
def ueye_stub_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ueye-stub")


@pytest.fixture
def real_ueye(monkeypatch, ueye_stub_dir):
    return stub.import_real_pyueye(monkeypatch, ueye_stub_dir)


def _kind(argtype: type) -> str:
    """The fake's argument kind for one of pyueye's declared ctypes argument types."""
    if argtype is ctypes.c_void_p:
        return "p"
    if issubclass(argtype, ctypes._Pointer):
        return argtype._type_.__name__
    if issubclass(argtype, ctypes.c_void_p):
        return f"{argtype.__name__}="
    if issubclass(argtype, ctypes.c_double):
        return "d"
    return "v"


def _fields(struct: type) -> list[tuple[str, str]]:
    return [(name, getattr(t, "__name__", str(t))) for name, t in struct._fields_]


@needs_pyueye
def test_fake_pyueye_matches_the_real_package(real_ueye):
    mismatched = {k: (v, int(getattr(real_ueye, k))) for k, v in fk.UEYE_CONSTANTS.items()
                  if int(getattr(real_ueye, k)) != v}
    assert not mismatched, f"constants differ (fake, real): {mismatched}"
    for name in fk.UEYE_STRUCTURES:
        fake, real = getattr(fk, name), getattr(real_ueye, name)
        assert ctypes.sizeof(fake) == ctypes.sizeof(real), name
        assert _fields(fake) == _fields(real), name
    for name, kinds in fk.UEYE_SIGNATURES.items():
        bound = getattr(real_ueye, f"_{name}")
        assert tuple(_kind(t) for t in bound.argtypes) == kinds, name
        assert len(inspect.signature(getattr(real_ueye, name)).parameters) == len(kinds), name
    source = Path(inspect.getsourcefile(real_ueye)).read_text(encoding="utf-8", errors="replace")
    deprecated = set(re.findall(r"@deprecated\s*\ndef (\w+)\(", source))
    assert deprecated & set(fk.UEYE_SIGNATURES) == fk.UEYE_DEPRECATED


@needs_pyueye
def test_fake_refuses_exactly_what_the_real_wrappers_refuse(real_ueye, monkeypatch):
    fake = fk.install_pyueye(monkeypatch, fk.FakeUEyeSystem(), real=real_ueye)
    h = real_ueye.HIDS(0)
    cases = [("is_SetColorMode", (h, 6.0)), ("is_GetImageMemPitch", (h, 5)),
             ("is_GetImageMemPitch", (h, ctypes.c_uint(0))), ("is_InitCamera", (5, None))]
    for name, args in cases:
        for module in (real_ueye, fake):
            with pytest.raises((TypeError, ctypes.ArgumentError)):
                getattr(module, name)(*args)


@needs_pyueye
@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_driver_session_through_the_real_pyueye_wrappers(real_ueye, monkeypatch):
    """Every call the driver makes also goes through pyueye's own wrapper (on the stub library):
    argument types the real bindings refuse fail here, and deprecated calls raise."""
    system = fk.FakeUEyeSystem(width=640, height=480)
    fk.install_pyueye(monkeypatch, system, real=real_ueye)
    for kw in ({}, {"bit_depth": 12, "roi": (16, 8, 612, 200)}):
        cam = UEyeCamera(CameraConfig(driver="ueye", frame_rate_hz=50.0, **kw))
        cam.connect()
        cam.start_acquisition()
        frames = [cam.read_frame(0.5) for _ in range(10)]
        h, w = cam.shape
        want = system.frame_pattern(system.frame_no, w, h).astype(cam.dtype)
        cam.stop_acquisition()
        cam.disconnect()
        np.testing.assert_array_equal(frames[-1].image, want)
        assert frames[-1].metadata["clock"] == "camera"
        assert cam.sensor_name == system.sensor and cam.serial_number == system.serial
    assert not system.violations and not system.open


@needs_pyueye
def test_driver_on_the_real_pyueye_with_no_camera(real_ueye):
    """The real wrappers against a library that sees no camera: 'no uEye camera is attached'."""
    with pytest.raises(DeviceNotFoundError, match="no uEye camera is attached"):
        UEyeCamera(CameraConfig(driver="ueye")).connect()


@needs_pyueye
def test_real_pyueye_without_its_library(monkeypatch, tmp_path):
    if any(Path(p, "libueye_api.so").exists() for p in ("/usr/lib", "/usr/local/lib", "/opt/ids/ueye/lib")):
        pytest.skip("an IDS uEye driver is installed on this machine")
    for name in stub._PYUEYE_MODULES:
        if name in sys.modules:
            monkeypatch.delitem(sys.modules, name)
        else:
            monkeypatch.setitem(sys.modules, name, None)
            del sys.modules[name]
    monkeypatch.setenv("PYUEYE_DLL_PATH", str(tmp_path))
    with pytest.raises(SDKNotFoundError, match="cannot load the uEye driver library.*PYUEYE_DLL_PATH"):
        UEyeCamera(CameraConfig(driver="ueye")).connect()


# ======================================================================================
# ids_peak
# ======================================================================================
#: classes and methods the driver calls (and the fake provides), by name
PEAK_API = {
    "Library": ["Initialize", "Close"],
    "DeviceManager": ["Instance", "Update", "Devices"],
    "DeviceDescriptor": ["IsOpenable", "OpenDevice", "ModelName", "SerialNumber"],
    "Device": ["RemoteDevice", "DataStreams"],
    "RemoteDevice": ["NodeMaps"],
    "NodeMap": ["FindNode"],
    "DataStreamDescriptor": ["OpenDataStream"],
    "DataStream": ["AllocAndAnnounceBuffer", "QueueBuffer", "StartAcquisition", "StopAcquisition", "KillWait",
                   "Flush", "AnnouncedBuffers", "RevokeBuffer", "WaitForFinishedBuffer",
                   "NumBuffersAnnouncedMinRequired"],
    "Buffer": ["Timestamp_ns", "FrameID", "IsIncomplete"],
    "IntegerNode": ["SetValue", "Value", "Minimum", "Maximum", "Increment"],
    "FloatNode": ["SetValue", "Value", "Minimum", "Maximum"],
    "EnumerationNode": ["SetCurrentEntry", "CurrentEntry", "Entries"],
    "EnumerationEntryNode": ["SymbolicValue", "IsAvailable"],
    "CommandNode": ["Execute", "WaitUntilDone"],
}


@pytest.fixture
def real_peak():
    from ids_peak import ids_peak, ids_peak_ipl_extension

    return ids_peak, ids_peak_ipl_extension


@needs_ids_peak
def test_fake_ids_peak_matches_the_real_package(real_peak, monkeypatch):
    peak, ext = real_peak
    for name, value in fk.PEAK_CONSTANTS.items():
        assert int(getattr(peak, name)) == value, name
    fake = fk.install_ids_peak(monkeypatch, fk.FakePeakSystem())
    for name, parent in fk.PEAK_EXCEPTIONS.items():
        real_cls, fake_cls = getattr(peak, name), getattr(fake, name)
        assert issubclass(real_cls, peak.Exception) and issubclass(fake_cls, fake.Exception), name
        assert parent in [c.__name__ for c in real_cls.__mro__], (name, parent)
        assert parent in [c.__name__ for c in fake_cls.__mro__], (name, parent)
    # an exception the fake raises is never one the driver would confuse with another
    for a in fk.PEAK_EXCEPTIONS:
        for b in fk.PEAK_EXCEPTIONS:
            assert issubclass(getattr(peak, a), getattr(peak, b)) == issubclass(getattr(fake, a), getattr(fake, b))
    for cls, methods in PEAK_API.items():
        missing = [m for m in methods if not hasattr(getattr(peak, cls), m)]
        assert not missing, f"ids_peak.{cls} lacks {missing}"
    assert fake.DataStream.INFINITE_NUMBER == peak.DataStream.INFINITE_NUMBER
    assert hasattr(ext, "BufferToImage")
    from ids_peak_ipl import ids_peak_ipl

    assert hasattr(ids_peak_ipl.Image, "get_numpy_2D") and hasattr(ids_peak_ipl.Image, "get_numpy_2D_16")


def _library_closed(peak) -> bool:
    try:
        peak.Library.Version()
    except peak.NotInitializedException:
        return True
    return False


@needs_ids_peak
def test_real_ids_peak_without_a_producer(real_peak, monkeypatch):
    peak, _ = real_peak
    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    monkeypatch.delenv("GENICAM_GENTL32_PATH", raising=False)
    with pytest.raises(SDKNotFoundError, match="no GenTL producer.*GENICAM_GENTL64_PATH"):
        IDSPeakCamera(CameraConfig(driver="ids_peak")).connect()
    assert _library_closed(peak)


@needs_ids_peak
def test_real_ids_peak_without_a_camera(real_peak, monkeypatch, tmp_path):
    peak, _ = real_peak
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(tmp_path))  # a producer folder with no camera behind it
    with pytest.raises(DeviceNotFoundError, match="no camera found"):
        IDSPeakCamera(CameraConfig(driver="ids_peak")).connect()
    assert _library_closed(peak)


def test_fakes_warn_like_the_real_pyueye(monkeypatch):
    """Without the real package too, the fake keeps pyueye's deprecations (a warning per call)."""
    system = fk.FakeUEyeSystem()
    ue = fk.install_pyueye(monkeypatch, system)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ue.is_ExitImageQueue(ue.HIDS(1))
    assert [w.category for w in caught] == [DeprecationWarning]
