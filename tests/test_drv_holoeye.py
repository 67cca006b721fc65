"""Holoeye SDK SLM driver (SDK 4.x HEDS and 3.x slmdisplaysdk fakes) and the phase LUT."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drv_fakes as fk  # noqa: E402

from mcf_rotator.config import SLMConfig  # noqa: E402
from mcf_rotator.drivers.holoeye import HoloeyeSLM, PhaseLUT, load_lut_file  # noqa: E402
from mcf_rotator.drivers.protocols import SLM  # noqa: E402
from mcf_rotator.errors import (  # noqa: E402
    ConfigError,
    DeviceDisconnectedError,
    DeviceError,
    DeviceNotFoundError,
    SDKNotFoundError,
)
from mcf_rotator.holography.mcf import phase_to_grey  # noqa: E402

CFG = SLMConfig(driver="holoeye_sdk", width=1920, height=1080, two_pi_grey=200)


def ramp(shape=(1080, 1920)) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (xx * 0.013 + yy * 0.021) % (4 * np.pi) - np.pi  # wraps several times, negative too


@pytest.fixture(params=["heds", "slmdisplaysdk"])
def sdk(request, monkeypatch):
    holo = fk.FakeHolo()
    if request.param == "heds":
        fk.install_modules(monkeypatch, fk.make_heds(holo))
        fk.block_modules(monkeypatch, "holoeye", "holoeye.slmdisplaysdk")
    else:
        fk.block_modules(monkeypatch, "HEDS", "hedslib", "hedslib.heds_types")
        fk.install_modules(monkeypatch, fk.make_slmdisplaysdk(holo))
    return request.param, holo


def test_show_phase_applies_two_pi_grey(sdk):
    api, holo = sdk
    slm = HoloeyeSLM(CFG)
    assert isinstance(slm, SLM)
    slm.connect()
    assert slm.api_in_use == api
    phase = ramp()
    slm.show_phase(phase)
    assert len(holo.shown) == 1
    np.testing.assert_array_equal(holo.shown[0], phase_to_grey(phase, 200))
    assert holo.shown[0].max() <= 200
    np.testing.assert_array_equal(slm.current_grey, holo.shown[0])
    grey = np.arange(1080 * 1920, dtype=np.uint32).reshape(1080, 1920).astype(np.uint8)
    slm.show_grey(grey)
    np.testing.assert_array_equal(holo.shown[1], grey)
    with pytest.raises(ValueError, match="does not match"):
        slm.show_grey(np.zeros((10, 10), np.uint8))
    slm.disconnect()
    assert not holo.window_open and not holo.violations


def test_window_closed_emits_error_then_reconnect(sdk):
    api, holo = sdk
    slm = HoloeyeSLM(CFG)
    slm.connect()
    errors = []
    slm.events.error.connect(errors.append)
    slm.show_grey(np.full((1080, 1920), 7, np.uint8))
    holo.close_window_by_user()
    with pytest.raises(DeviceDisconnectedError, match="closed"):
        slm.show_grey(np.full((1080, 1920), 9, np.uint8))
    assert len(errors) == 1 and not slm.is_connected
    with pytest.raises(DeviceDisconnectedError):
        slm.show_grey(np.full((1080, 1920), 9, np.uint8))
    slm.reconnect()
    assert slm.is_connected
    np.testing.assert_array_equal(holo.shown[-1], 7)  # the last pattern is restored
    slm.disconnect()


def test_not_found_and_size_mismatch(sdk):
    api, holo = sdk
    holo.attached = False
    with pytest.raises(DeviceNotFoundError, match="no SLM found"):
        HoloeyeSLM(CFG).connect()
    holo.attached = True
    with pytest.raises(DeviceError, match="1920x1080.*1280x1024"):
        HoloeyeSLM(CFG.model_copy(update={"width": 1280, "height": 1024})).connect()
    assert not holo.window_open  # closed again after the failure


def test_sdk_missing(monkeypatch):
    fk.block_modules(monkeypatch, "HEDS", "hedslib", "hedslib.heds_types", "holoeye", "holoeye.slmdisplaysdk")
    with pytest.raises(SDKNotFoundError, match="slm.driver: screen"):
        HoloeyeSLM(CFG).connect()


def test_heds_version_mismatch(monkeypatch):
    """SDK 4.x asserts on a version mismatch; the user gets SDKNotFoundError with the fix, not an AssertionError."""
    holo = fk.FakeHolo(sdk_minor=0)  # installed SDK 4.0 cannot serve the 4.1 API
    fk.install_modules(monkeypatch, fk.make_heds(holo))
    with pytest.raises(SDKNotFoundError, match=r"cannot serve API 4\.1.*4\.1 or newer"):
        HoloeyeSLM(CFG, api="heds").connect()


@pytest.mark.parametrize("assertion", [False, True])
def test_heds_no_slm_ends_in_invalid_window(monkeypatch, assertion):
    """With no SLM, SLM.Init gives HEDSERR_InvalidSLMWindow (or asserts on the window): 'no SLM found'."""
    holo = fk.FakeHolo(attached=False, window_assertion=assertion)
    fk.install_modules(monkeypatch, fk.make_heds(holo))
    with pytest.raises(DeviceNotFoundError, match="no SLM found.*HDMI"):
        HoloeyeSLM(CFG, api="heds").connect()


def test_heds_library_failing_at_import_falls_back_to_3x(monkeypatch):
    """`import HEDS` raises RuntimeError when its library cannot load; api auto must still try 3.x."""
    holo = fk.FakeHolo()
    fk.fail_import(monkeypatch, "HEDS", RuntimeError("holoeye_slmdisplaysdk.so: cannot open shared object file"))
    fk.install_modules(monkeypatch, fk.make_slmdisplaysdk(holo))
    slm = HoloeyeSLM(CFG)
    slm.connect()
    assert slm.api_in_use == "slmdisplaysdk"
    slm.disconnect()
    fk.block_modules(monkeypatch, "holoeye", "holoeye.slmdisplaysdk")
    with pytest.raises(SDKNotFoundError, match="library did not load.*cannot open shared object") as err:
        HoloeyeSLM(CFG).connect()
    assert "slm.driver: screen" in str(err.value)


def test_3x_without_its_environment_variable(monkeypatch):
    """SDK 3.x: SLMInstance() raises RuntimeError when HEDS_3_2_PYTHON is unset."""
    fk.block_modules(monkeypatch, "HEDS", "hedslib", "hedslib.heds_types")
    fk.install_modules(monkeypatch, fk.make_slmdisplaysdk(fk.FakeHolo(env_set=False)))
    with pytest.raises(SDKNotFoundError, match="HEDS_3_2_PYTHON"):
        HoloeyeSLM(CFG).connect()


def test_3x_error_strings_are_decoded(monkeypatch):
    """SDK 3.x errorString returns bytes; messages must read as text, not b'...'."""
    fk.block_modules(monkeypatch, "HEDS", "hedslib", "hedslib.heds_types")
    holo = fk.FakeHolo(attached=False)
    fk.install_modules(monkeypatch, fk.make_slmdisplaysdk(holo))
    with pytest.raises(DeviceNotFoundError) as err:
        HoloeyeSLM(CFG).connect()
    assert "The given SLM window does not exist." in str(err.value) and "b'" not in str(err.value)
    holo.attached = True
    slm = HoloeyeSLM(CFG)
    slm.connect()
    holo.close_window_by_user()
    with pytest.raises(DeviceDisconnectedError) as err:
        slm.show_grey(np.zeros((1080, 1920), np.uint8))
    assert "b'" not in str(err.value)


@pytest.mark.parametrize("show_image_data", [True, False])
def test_heds_data_handles_are_not_leaked(monkeypatch, show_image_data):
    """A 60 Hz stream must not keep one data handle per frame (handles have release(), no __del__)."""
    holo = fk.FakeHolo(max_handles=8, show_image_data=show_image_data)
    fk.install_modules(monkeypatch, fk.make_heds(holo))
    slm = HoloeyeSLM(CFG, api="heds")
    slm.connect()
    for k in range(30):  # more frames than the SDK can hold handles
        slm.show_grey(np.full((1080, 1920), k, np.uint8))
        assert holo.live_handles <= 1
    assert len(holo.shown) == 30 and int(holo.shown[-1][0, 0]) == 29
    slm.disconnect()
    assert holo.live_handles == 0 and not holo.violations


@pytest.mark.parametrize("two_pi_grey", [255, 213, 1])
def test_linear_lut_matches_phase_to_grey(two_pi_grey):
    rng = np.random.default_rng(1)
    phase = np.concatenate([rng.uniform(-20, 20, 5000), np.arange(-2, 3) * np.pi,
                            (np.arange(257) / 256 + 0.5 / 256) * 2 * np.pi])  # rounding boundaries
    np.testing.assert_array_equal(PhaseLUT(two_pi_grey)(phase), phase_to_grey(phase, two_pi_grey))


def test_lut_file_formats_and_mapping(tmp_path):
    table = (255 - np.arange(256)).astype(np.uint8)  # an inverted response
    (tmp_path / "one.txt").write_text("# measured\n" + "\n".join(str(v) for v in table))
    (tmp_path / "two.csv").write_text("\n".join(f"{i},{v}" for i, v in enumerate(table)))
    np.save(tmp_path / "lut.npy", table)
    for name in ("one.txt", "two.csv", "lut.npy"):
        np.testing.assert_array_equal(load_lut_file(tmp_path / name), table)
    lut = PhaseLUT(table=table)
    phase = ramp((40, 50))
    np.testing.assert_array_equal(lut(phase), 255 - phase_to_grey(phase, 255))
    (tmp_path / "bad.txt").write_text("1 2 3")
    with pytest.raises(ConfigError, match="256"):
        load_lut_file(tmp_path / "bad.txt")
    with pytest.raises(ConfigError, match="not found"):
        load_lut_file(tmp_path / "missing.txt")
    cfg = SLMConfig(driver="screen", lut_path=tmp_path / "one.txt")
    np.testing.assert_array_equal(PhaseLUT.from_config(cfg).table, table)
