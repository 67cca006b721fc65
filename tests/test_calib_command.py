"""``mcf-rotator calibrate``: simulated rig and saved-image modes, errors leave old records alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from mcf_rotator.calibration.offaxis import rms_phase_error
from mcf_rotator.calibration.record import CalibrationRecord, latest_record
from mcf_rotator.cli import main
from mcf_rotator.holography.mcf import MCFGeometry
from mcf_rotator.simulation.fibre import SimulatedFibre
from mcf_rotator.simulation.hologram_camera import HologramOptics, render_hologram

torch.set_num_threads(1)

GEO = MCFGeometry(MCFGeometry.hexagonal().core_positions_um, fibre_id="default-hex61")
OPTICS = HologramOptics(shape=(320, 320), facet_um_per_px=0.5)


def _hologram(tmp_path: Path, name: str, **optics) -> tuple[Path, np.ndarray]:
    from dataclasses import replace

    fibre = SimulatedFibre(GEO, seed=9)
    img, _ = render_hologram(GEO, fibre.distortion, fibre.amplitudes, replace(OPTICS, **optics),
                             np.random.default_rng(1))
    path = tmp_path / name
    tifffile.imwrite(path, img)
    return path, fibre.distortion


def _records(folder: Path) -> list[Path]:
    return sorted(folder.glob("calibration-*.json"))


def test_simulated_rig_calibration_saves_a_verified_record(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cal"
    assert main(["calibrate", "--simulate", "--out", str(out), "--verify", "--rebend", "3"]) == 0
    (path,) = _records(out)
    rec = CalibrationRecord.load(path)
    assert rec.n_cores == 61 and rec.fit_quality["verified"]
    assert rec.residual_rms_rad is not None and rec.residual_rms_rad < 0.05
    assert rec.fit_quality["sim_error_piston_tilt_rms_rad"] < 0.05
    assert "residual" in capsys.readouterr().out


def test_image_mode_retrieves_the_correction(tmp_path: Path) -> None:
    img, distortion = _hologram(tmp_path, "holo.tif")
    out = tmp_path / "cal"
    assert main(["calibrate", "--image", str(img), "--facet-um-per-px", "0.5", "--out", str(out)]) == 0
    (path,) = _records(out)
    rec = CalibrationRecord.load(path)
    assert rec.fit_quality["source_image"].endswith("holo.tif")
    # correction = -distortion up to piston and tilt (tilt: far-field shift, see the wizard).
    # Without --carrier the side-band with fx > 0 is taken: the simulated carrier has fx > 0.
    err = rms_phase_error(rec.correction, -distortion, remove_tilt=True, positions=GEO.core_positions_um)
    assert err < 0.05


@pytest.mark.parametrize(
    ("optics", "args", "message"),
    [
        ({"reference_blocked": True}, ["--facet-um-per-px", "0.5"], "carrier"),
        ({"saturation": 3.0}, ["--facet-um-per-px", "0.5", "--full-scale", "4095"], "saturated"),
        ({}, ["--facet-um-per-px", "0.8"], "core map does not match"),
        ({}, [], "facet-um-per-px"),
    ],
)
def test_image_mode_errors_exit_2_and_keep_previous(tmp_path: Path, capsys, optics, args, message) -> None:
    out = tmp_path / "cal"
    out.mkdir()
    old = CalibrationRecord("default-hex61", [0.0] * 61, (0.2, 0.2), residual_rms_rad=0.01)
    old_path = old.save(out)
    before = old_path.read_text()
    img, _ = _hologram(tmp_path, "bad.tif", **optics)
    assert main(["calibrate", "--image", str(img), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert _records(out) == [old_path] and old_path.read_text() == before
    assert latest_record(out).calibration_id == old.calibration_id


def test_wrong_core_map_in_config_is_rejected(tmp_path: Path, capsys) -> None:
    img, _ = _hologram(tmp_path, "holo.tif")
    cfg = tmp_path / "rig.yaml"
    cfg.write_text("fibre:\n  rings: 3\n  fibre_id: small-fibre\n")  # 37 cores: not the imaged fibre
    out = tmp_path / "cal"
    code = main(["calibrate", "--config", str(cfg), "--image", str(img), "--facet-um-per-px", "0.5",
                 "--out", str(out)])
    assert code == 2
    assert "core map does not match" in capsys.readouterr().err
    assert _records(out) == []


def test_missing_image_is_an_input_error(tmp_path: Path, capsys) -> None:
    code = main(["calibrate", "--image", str(tmp_path / "none.tif"), "--facet-um-per-px", "0.5",
                 "--out", str(tmp_path / "cal")])
    assert code == 2 and "file not found" in capsys.readouterr().err
    assert _records(tmp_path / "cal") == []
