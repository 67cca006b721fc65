"""Detection-quality gate: pure noise is refused with the reason and the evidence, a cell is not.

The gate's functions run on plain data (tiny stacks, hand-written reports); the CLI cases stop
at the gate, before the expensive reconstruction, so each takes well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mcf_rotator.cli import main
from mcf_rotator.reconstruction import quality
from mcf_rotator.simulation.phantom import CellPhantom, projection_stack


def _noise(n: int = 40, hw: int = 64, seed: int = 0, sigma: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(1000.0, sigma, (n, hw, hw)), 0, 65535).astype(np.uint16)


def _cell(n: int = 40, size: int = 96) -> np.ndarray:
    """A brightfield rotation of a phantom cell (as tests/test_recon_cli.py makes them)."""
    od = projection_stack(CellPhantom.random(4), np.linspace(0, 360, n, endpoint=False), size)
    rng = np.random.default_rng(0)
    return np.clip(200 * np.exp(-od * 12) + rng.normal(0, 1, od.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sigma", [30.0, 300.0])
def test_noise_has_no_consistent_cell(sigma: float) -> None:
    ev = quality.frame_evidence(_noise(sigma=sigma))
    assert ev["sampled_frames"] > 10 and ev["consecutive_pairs"] == ev["sampled_with_cell"]
    assert ev["consecutive_correlation"] is None or abs(ev["consecutive_correlation"]) < 0.1
    why = quality.frame_problem(ev)
    assert why is not None and ("no consistent cell" in why or "no cell found" in why)


def test_a_rotating_cell_passes_the_frame_check() -> None:
    ev = quality.frame_evidence(_cell())
    assert ev["sampled_with_cell"] == ev["sampled_frames"]
    assert ev["consecutive_correlation"] > 0.3
    assert ev["detection_scores"]["min"] > 0
    assert quality.frame_problem(ev) is None


def test_frames_without_a_cell_are_counted() -> None:
    ev = {"sampled_frames": 24, "sampled_with_cell": 5, "consecutive_correlation": 0.9, "consecutive_pairs": 5}
    assert quality.frame_problem(ev) == "no cell found in 19 of 24 frames sampled (a cell is needed in at least 50%)"
    flat = quality.frame_evidence(np.full((10, 32, 32), 200, np.uint8))
    assert flat["sampled_with_cell"] == 0 and "no cell found in" in quality.frame_problem(flat)


def test_box_correlation_removes_illumination_tilt() -> None:
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:48, 0:48]
    ramp = 5.0 * yy + 3.0 * xx  # shared by both frames: not evidence of a cell
    a, b = ramp + rng.normal(0, 1, ramp.shape), ramp + rng.normal(0, 1, ramp.shape)
    assert abs(quality.box_correlation(a, b, (0, 0, 48, 48))) < 0.1
    assert quality.box_correlation(a, a, (0, 0, 48, 48)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("conf", "used", "words"),
    [
        ({"level": "unreliable", "match_ncc": 0.01, "mirror_residual_deg": 37.3}, 188,
         ["angles unreliable", "NCC 0.01", "37.3 deg"]),
        ({"level": "unreliable", "match_ncc": 0.89, "mirror_residual_deg": 25.0}, 188, ["angles unreliable", "25.0"]),
        ({"level": "good", "match_ncc": 0.95, "mirror_residual_deg": 0.8}, 30, ["no cell found in 170 of 200"]),
    ],
)
def test_result_problem_names_the_reason(conf: dict, used: int, words: list[str]) -> None:
    reasons = quality.result_problem({"frames_used": used, "frames_total": 200, "angle_confidence": conf})
    text = "; ".join(reasons)
    assert all(w in text for w in words), text


def test_uncertain_but_supported_angles_pass() -> None:
    # measured on a simulated cell: flagged "unreliable" by the 3 deg mirror limit, but a usable volume
    report = {"frames_used": 65, "frames_total": 120,
              "angle_confidence": {"level": "unreliable", "match_ncc": 0.887, "mirror_residual_deg": 5.4}}
    assert quality.result_problem(report) == []
    assert quality.result_problem({"frames_used": 90, "frames_total": 90}) == []  # given angles: no confidence
    verdict = quality.assess(report, {"sampled_frames": 24, "sampled_with_cell": 24,
                                      "consecutive_correlation": 0.7, "consecutive_pairs": 24})
    assert verdict.ok and verdict.as_dict()["used_fraction"] == pytest.approx(65 / 120)


def test_reconstruct_refuses_noise_with_reason_and_evidence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "noise.tif"
    tifffile.imwrite(src, _noise(n=60, hw=96))
    report = tmp_path / "report.json"
    rc = main(["reconstruct", str(src), "-o", str(tmp_path / "v.tif"), "--report", str(report)])
    err = capsys.readouterr().err
    assert rc == 2 and "noise.tif" in err and "no consistent cell" in err and "Traceback" not in err
    assert not (tmp_path / "v.tif").exists()
    q = json.loads(report.read_text())["quality"]
    assert q["ok"] is False and q["reasons"] and q["sampled_frames"] > 0
    assert q["detection_scores"] is not None and abs(q["consecutive_correlation"]) < 0.1


def test_reconstruct_refuses_a_stack_shorter_than_the_angle_stage_needs(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "three.tif"
    tifffile.imwrite(src, _cell(n=3))
    assert main(["reconstruct", str(src), "-o", str(tmp_path / "v.tif")]) == 2
    err = capsys.readouterr().err
    assert "three.tif: holds 3 frames" in err and "at least 20" in err
