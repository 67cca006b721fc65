"""Device factory and `mcf-rotator check-hardware` with the fake vendor SDKs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drv_fakes as fk  # noqa: E402

from mcf_rotator.cli import main  # noqa: E402
from mcf_rotator.config import CameraConfig, RigConfig, SLMConfig  # noqa: E402
from mcf_rotator.drivers.factory import ManualTrap, make_camera, make_slm, make_trap  # noqa: E402
from mcf_rotator.errors import ConfigError  # noqa: E402


def test_factory_picks_drivers_without_touching_sdks():
    from mcf_rotator.drivers.holoeye import HoloeyeSLM
    from mcf_rotator.drivers.ids_peak import IDSPeakCamera
    from mcf_rotator.drivers.screen_slm import ScreenSLM
    from mcf_rotator.drivers.ueye import UEyeCamera

    assert isinstance(make_camera(CameraConfig(driver="ueye")), UEyeCamera)
    assert isinstance(make_camera(CameraConfig(driver="ids_peak")), IDSPeakCamera)
    assert isinstance(make_slm(SLMConfig(driver="holoeye_sdk")), HoloeyeSLM)
    assert isinstance(make_slm(SLMConfig(driver="screen")), ScreenSLM)
    assert isinstance(make_trap(RigConfig(trap="manual")), ManualTrap)
    with pytest.raises(ConfigError, match="replay_path"):
        make_camera(CameraConfig(driver="replay"))
    with pytest.raises(ConfigError, match="SimulatedWorld"):
        make_camera(CameraConfig(driver="simulated"))
    with pytest.raises(ConfigError, match="SimulatedWorld"):
        make_slm(SLMConfig(driver="simulated"))


def test_manual_trap_keeps_state_and_emits():
    trap = make_trap("manual")
    seen = []
    trap.events.property_changed.connect(lambda n, v: seen.append((n, v)))
    trap.power_mw = 120.0
    trap.set_enabled(True)
    assert trap.enabled and trap.power_mw == 120.0
    assert seen == [("power_mw", 120.0), ("enabled", True)]
    with pytest.raises(ValueError):
        trap.power_mw = -1


def _rig(tmp_path: Path, camera: str, slm: str) -> Path:
    cfg = {"name": "test rig", "camera": {"driver": camera, "frame_rate_hz": 50.0},
           "slm": {"driver": slm}}
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_check_hardware_passes_with_working_devices(tmp_path, monkeypatch, capsys):
    cam = fk.FakeUEyeSystem(width=640, height=480)
    fk.install_pyueye(monkeypatch, cam)
    holo = fk.FakeHolo()
    fk.install_modules(monkeypatch, fk.make_heds(holo))
    rc = main(["--config", str(_rig(tmp_path, "ueye", "holoeye_sdk")), "check-hardware", "--frames", "5",
               "--hold", "0"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "camera: PASS" in out and "SLM: PASS" in out
    assert "50 Hz on the camera clock" in out
    assert len(holo.shown) == 2 and holo.shown[0].max() > 0 and holo.shown[1].max() == 0
    assert not cam.open and not holo.window_open  # both closed again


def test_check_hardware_reports_readable_failures(tmp_path, monkeypatch, capsys):
    fk.block_modules(monkeypatch, "pyueye", "pyueye.ueye")
    holo = fk.FakeHolo(attached=False)
    fk.install_modules(monkeypatch, fk.make_heds(holo))
    rc = main(["check-hardware", "--config", str(_rig(tmp_path, "ueye", "holoeye_sdk")), "--hold", "0"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "camera: FAIL" in out and "PYUEYE_DLL_PATH" in out
    assert "SLM: FAIL" in out and "no SLM found" in out
    assert "Traceback" not in out


def test_check_hardware_lists_every_driver_and_its_sdk(monkeypatch, capsys):
    """With the default (simulated) rig the listing still names uEye, IDS peak and Holoeye and what each lacks."""
    from mcf_rotator.drivers.catalog import DRIVERS

    fk.block_modules(monkeypatch, "pyueye", "pyueye.ueye")
    peak = fk.FakePeakSystem()
    peak.producer = False
    fk.install_ids_peak(monkeypatch, peak)
    fk.fail_import(monkeypatch, "HEDS", RuntimeError("holoeye_slmdisplaysdk.so: cannot open shared object file"))
    fk.install_modules(monkeypatch, fk.make_slmdisplaysdk(fk.FakeHolo()))
    rc = main(["check-hardware", "--no-camera", "--no-slm"])
    out = capsys.readouterr().out
    assert rc == 0 and "Traceback" not in out
    lines = out.splitlines()
    for d in DRIVERS:
        assert any(f" {d.kind:<6} {d.name:<12} " in line for line in lines), d.name
    row = {d.name: next(i for i, line in enumerate(lines) if f" {d.kind:<6} {d.name:<12} " in line)
           for d in DRIVERS if d.kind != "trap"}
    assert "MISSING" in lines[row["ueye"]] and "pyueye" in lines[row["ueye"] + 1]
    assert "MISSING" in lines[row["ids_peak"]] and "GENICAM_GENTL64_PATH" in lines[row["ids_peak"] + 1]
    assert "ready" in lines[row["holoeye_sdk"]] and "2.x/3.x" in lines[row["holoeye_sdk"] + 1]
    assert lines[row["simulated"]].lstrip().startswith("*")  # the default rig's camera
    assert main(["check-hardware", "--drivers"]) == 0
    assert "rig:" not in capsys.readouterr().out


def test_check_hardware_checks_another_driver_than_the_rig_file(monkeypatch, capsys):
    cam = fk.FakeUEyeSystem(width=320, height=240)
    fk.install_pyueye(monkeypatch, cam)
    rc = main(["check-hardware", "--camera-driver", "ueye", "--no-slm", "--frames", "3"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "camera: driver ueye" in out and "camera: PASS" in out and "320x240" in out
