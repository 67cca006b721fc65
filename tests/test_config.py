"""Rig configuration: defaults load, bad files give messages that name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcf_rotator.config import RigConfig, default_config_path, load_config
from mcf_rotator.errors import ConfigError


def test_default_config_is_fully_simulated() -> None:
    cfg = load_config()
    assert cfg.camera.driver == "simulated"
    assert cfg.slm.driver == "simulated"
    assert cfg.is_simulated
    assert default_config_path().is_file()


def test_round_trip_yaml_and_json(tmp_path: Path) -> None:
    cfg = RigConfig(name="bench rig")
    cfg.rotation.rate_deg_s = 12.5
    for suffix in (".yaml", ".json"):
        path = tmp_path / f"rig{suffix}"
        cfg.save(path)
        again = load_config(path)
        assert again.name == "bench rig"
        assert again.rotation.rate_deg_s == 12.5


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml.*not found"):
        load_config(path)


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("camera: [driver: ueye\n")
    with pytest.raises(ConfigError, match="broken.yaml.*not valid YAML"):
        load_config(path)


def test_invalid_values_list_every_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "camera:\n  driver: webcam\n  exposure_ms: -1\nslm:\n  pixel_pitch_um: 0\nunknown_key: 3\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "bad.yaml" in msg
    assert "camera.driver" in msg
    assert "camera.exposure_ms" in msg
    assert "slm.pixel_pitch_um" in msg
    assert "unknown_key" in msg
    assert "4 problem" in msg


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "rig.yaml"
    path.write_text("fibre:\n  core_map: cores.csv\ncamera:\n  driver: replay\n  replay_path: run.tif\n")
    cfg = load_config(path)
    assert cfg.fibre.core_map == tmp_path / "sub" / "cores.csv"
    assert cfg.camera.replay_path == tmp_path / "sub" / "run.tif"


def test_simulated_copy_switches_every_device() -> None:
    cfg = RigConfig()
    cfg.camera.driver = "ueye"
    cfg.slm.driver = "screen"
    sim = cfg.simulated()
    assert (sim.camera.driver, sim.slm.driver, sim.trap) == ("simulated", "simulated", "simulated")
    assert cfg.camera.driver == "ueye"  # original untouched
