"""Persisted user settings never block start-up; the settings dialog validates the rig file."""

from __future__ import annotations

import logging

import pytest

from mcf_rotator.config import RigConfig
from mcf_rotator.gui.user_settings import UserSettings, apply_device_modes


def test_roundtrip(tmp_path):
    path = tmp_path / "sub" / "s.json"
    s = UserSettings(camera_mode="simulated", live_fps=50.0, rotation_direction=-1)
    assert s.save(path)
    back = UserSettings.load(path)
    assert back.camera_mode == "simulated" and back.live_fps == 50.0 and back.rotation_direction == -1


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", '{"camera_mode": "laser"}', '{"live_fps": -3}', b"\xff\xfe\x00"],
)
def test_corrupt_settings_fall_back_with_warning(tmp_path, caplog, content):
    path = tmp_path / "s.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with caplog.at_level(logging.WARNING):
        s = UserSettings.load(path)
    assert s == UserSettings()
    assert "using defaults" in caplog.text


def test_unknown_keys_ignored(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"live_fps": 30, "from_a_newer_version": 1}')
    assert UserSettings.load(path).live_fps == 30


def test_unwritable_location_does_not_raise(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert UserSettings().save(blocker / "s.json") is False


def test_device_modes():
    cfg = RigConfig()
    cfg.camera.driver = "ueye"
    cfg.slm.driver = "screen"
    mixed = apply_device_modes(cfg, UserSettings(camera_mode="simulated"))
    assert mixed.camera.driver == "simulated" and mixed.slm.driver == "screen"
    assert cfg.camera.driver == "ueye"  # the original is untouched
    allsim = apply_device_modes(cfg, UserSettings(), simulate=True)
    assert (allsim.camera.driver, allsim.slm.driver, allsim.trap) == ("simulated", "simulated", "simulated")


@pytest.mark.gui
def test_settings_dialog_rejects_bad_config(qtbot, tmp_path):
    from mcf_rotator.gui.settings_dialog import SettingsDialog

    bad = tmp_path / "rig.yaml"
    bad.write_text("camera:\n  exposure_ms: -1\n")
    dlg = SettingsDialog(UserSettings())
    qtbot.addWidget(dlg)
    dlg.config_edit.setText(str(bad))
    dlg.mode_boxes["slm_mode"].setCurrentIndex(dlg.mode_boxes["slm_mode"].findData("simulated"))
    dlg._try_accept()
    assert dlg.result() == 0 and "exposure_ms" in dlg.error_label.text()
    good = tmp_path / "ok.yaml"
    RigConfig().save(good)
    dlg.config_edit.setText(str(good))
    dlg.fps_spin.setValue(33)
    dlg._try_accept()
    assert dlg.result() == dlg.DialogCode.Accepted
    s = dlg.result_settings()
    assert s.config_path == str(good) and s.slm_mode == "simulated" and s.live_fps == 33
