"""``mcf-rotator simulate`` writes readable, consistent files."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import tifffile
import torch

from mcf_rotator.cli import main

torch.set_num_threads(1)
cv2.setNumThreads(1)


def _read_angles(path) -> np.ndarray:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["frame", "angle_deg"]
    assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
    return np.array([float(r[1]) for r in rows[1:]])


def test_simulate_physical_rotation_writes_stack_truth_and_angles(tmp_path) -> None:
    out = tmp_path / "stack.tif"
    montage = tmp_path / "montage.png"
    rc = main(["simulate", "--frames", "24", "-o", str(out), "--size", "160", "--seed", "3",
               "--degrees-per-frame", "3", "--truth-size", "16", "--montage", str(montage)])
    assert rc == 0
    with tifffile.TiffFile(out) as tf:
        assert tf.is_imagej
        stack = tf.asarray()
        assert tf.imagej_metadata.get("unit") == "um"
    assert stack.shape == (24, 160, 160) and stack.dtype == np.uint8
    assert stack.std() > 5  # not blank
    # consecutive frames differ (rotating cell + noise)
    assert np.abs(stack[0].astype(float) - stack[12]).mean() > 3
    truth = tifffile.imread(tmp_path / "stack_truth.tif")
    assert truth.shape == (16, 16, 16) and truth.dtype == np.float32 and truth.max() > 0
    with tifffile.TiffFile(tmp_path / "stack_truth.tif") as tf:
        assert tf.imagej_metadata["spacing"] == pytest.approx(12.0 * 1.1 / 16, rel=1e-3)
    angles = _read_angles(tmp_path / "stack_angles.csv")
    assert len(angles) == 24
    assert abs(angles[0]) < 2.0
    steps = np.diff(angles)
    assert steps.mean() == pytest.approx(3.0, abs=0.4)  # physical: follows the command with jitter
    assert steps.std() > 0.01
    assert cv2.imread(str(montage)) is not None


def test_simulate_ideal_uniform_angles_16bit(tmp_path) -> None:
    out = tmp_path / "ideal.tif"
    assert main(["simulate", "--frames", "6", "-o", str(out), "--size", "64", "--ideal",
                 "--truth-size", "8", "--bit-depth", "16", "--no-noise"]) == 0
    stack = tifffile.imread(out)
    assert stack.dtype == np.uint16 and stack.shape == (6, 64, 64)
    np.testing.assert_allclose(_read_angles(tmp_path / "ideal_angles.csv"), np.arange(6) * 60.0)


def test_simulate_reports_bad_arguments(tmp_path, capsys) -> None:
    assert main(["simulate", "--frames", "0", "-o", str(tmp_path / "x.tif")]) == 2
    assert "--frames" in capsys.readouterr().err
    assert main(["simulate", "-o", str(tmp_path / "x.tif"), "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
