"""`mcf-rotator demo --headless`: CLI wiring (fast) and the full simulated run (slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mcf_rotator.cli import build_parser, main


def test_demo_registered_with_options() -> None:
    args = build_parser().parse_args(["demo", "--headless", "-o", "out", "--frames", "50", "--seed", "3"])
    assert args.headless and args.frames == 50 and args.seed == 3 and args.output == Path("out")


def test_demo_rejects_too_few_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--headless", "-o", str(tmp_path), "--frames", "5", "--no-progress"]) == 2
    assert "at least 30" in capsys.readouterr().err


@pytest.mark.slow
def test_headless_demo_writes_every_output(tmp_path: Path) -> None:
    import tifffile

    from mcf_rotator.recording import open_recording

    out = tmp_path / "demo"
    assert main(["demo", "--headless", "-o", str(out), "--frames", "200", "--seed", "1", "--no-progress"]) == 0
    for name in ("volume.tif", "angles.csv", "recording.ome.tif", "report.json", "summary.png"):
        assert (out / name).is_file(), name
    with tifffile.TiffFile(out / "volume.tif") as tif:
        assert tif.is_imagej and tif.series[0].ndim == 3 and tif.series[0].dtype.name == "float32"
    rows = list(csv.reader(open(out / "angles.csv")))
    assert rows[0] == ["frame", "angle_deg"] and float(rows[1][1]) == 0.0
    frames, meta = open_recording(out / "recording.ome.tif")
    assert 100 <= len(frames) <= 200 and all("true_angle_deg" in m and "slm_angle_deg" in m for m in meta)
    assert all(len(m["cell_centre_px"]) == 2 for m in meta)  # the simulator's truth, for studying drift
    report = json.loads((out / "report.json").read_text())
    assert report["demo"]["frames_recorded"] == len(frames) and report["n_projections"] == len(rows) - 1
    assert report["demo"]["true_coverage_deg"] >= 300  # the calibrated simulated trap really turned the cell
    # the run went through the quality gate of `reconstruct`, with its evidence, and passed it
    assert report["quality"]["ok"] and report["quality"]["reasons"] == [], report["quality"]
    assert report["quality"]["angle_confidence"]["level"] in ("good", "uncertain")
