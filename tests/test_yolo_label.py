"""Labelling helper: napari polygons <-> YOLO label files (no GUI needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from mcf_rotator.commands.label import (
    ellipse_to_polygon,
    label_lines_to_polygons,
    load_frames,
    polygons_to_label_lines,
    save_labels,
)
from mcf_rotator.errors import InputFileError
from mcf_rotator.reconstruction.yolo_dataset import read_yolo_split, resolve_dataset


def test_polygon_lines_round_trip() -> None:
    poly_rc = np.array([[10.0, 20.0], [10.0, 60.0], [50.0, 60.0], [50.0, 20.0]])
    lines = polygons_to_label_lines([poly_rc, np.zeros((2, 2))], (100, 200))
    assert len(lines) == 1  # degenerate shapes are dropped
    vals = [float(v) for v in lines[0].split()]
    assert vals[:3] == [0, 0.1, 0.1]  # class, x = col / W, y = row / H
    back = label_lines_to_polygons(lines, (100, 200))
    assert np.allclose(back[0], poly_rc, atol=0.01)
    box = label_lines_to_polygons(["0 0.5 0.5 0.2 0.4"], (100, 200))[0]
    assert np.allclose(box.min(0), [30, 80]) and np.allclose(box.max(0), [70, 120])


def test_ellipse_to_polygon_spans_its_box() -> None:
    corners = np.array([[10.0, 10.0], [10.0, 50.0], [30.0, 50.0], [30.0, 10.0]])
    p = ellipse_to_polygon(corners)
    assert np.allclose(p.min(0), [10, 10], atol=0.2) and np.allclose(p.max(0), [30, 50], atol=0.2)


def test_save_labels_gives_a_trainable_dataset(tmp_path: Path) -> None:
    img = np.full((120, 160), 200, np.uint8)
    cv2.circle(img, (80, 60), 30, 120, -1)
    yy, xx = np.mgrid[:120, :160]
    truth = (yy - 60) ** 2 + (xx - 80) ** 2 <= 30**2
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    poly = np.stack([60 + 30.5 * np.sin(t), 80 + 30.5 * np.cos(t)], 1)
    save_labels(tmp_path / "out", "f0", img, [poly], "train")
    save_labels(tmp_path / "out", "f1", img, [], "val")
    assert resolve_dataset(tmp_path / "out") == (tmp_path / "out" / "data.yaml").resolve()
    train = read_yolo_split(tmp_path / "out", "train")
    assert len(train) == 1 and len(train[0].masks) == 1
    m = train[0].masks[0]
    assert (m & truth).sum() / (m | truth).sum() > 0.95
    assert read_yolo_split(tmp_path / "out", "val")[0].masks == []


def test_load_frames_folder_and_tiff(tmp_path: Path) -> None:
    stack = (np.arange(5 * 20 * 30) % 4000).reshape(5, 20, 30).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rec.tif", stack)
    frames = load_frames(tmp_path / "rec.tif", every=2)
    assert [n for n, _ in frames] == ["rec_00000", "rec_00002", "rec_00004"]
    assert all(f.dtype == np.uint8 and f.shape == (20, 30) for _, f in frames)
    (tmp_path / "pngs").mkdir()
    cv2.imwrite(str(tmp_path / "pngs" / "a.png"), np.zeros((8, 8), np.uint8))
    assert [n for n, _ in load_frames(tmp_path / "pngs")] == ["a"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no images"):
        load_frames(tmp_path / "empty")
    with pytest.raises(InputFileError, match="not found"):
        load_frames(tmp_path / "missing.tif")
