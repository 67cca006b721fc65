"""Synthetic YOLO dataset: exact truth, label format round trip, folder handling."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mcf_rotator.errors import InputFileError
from mcf_rotator.reconstruction.yolo_dataset import (
    HARD,
    TRAIN,
    Conditions,
    generate_samples,
    label_lines,
    mask_to_polygon,
    polygon_to_mask,
    read_yolo_split,
    render_sample,
    resolve_dataset,
    to_uint8,
    write_yolo_dataset,
)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _box_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_samples_reproducible_and_consistent() -> None:
    a = list(generate_samples(4, seed=3, shape=(240, 320)))
    b = list(generate_samples(4, seed=3, shape=(240, 320)))
    c = list(generate_samples(4, seed=4, shape=(240, 320)))
    for sa, sb in zip(a, b):
        assert np.array_equal(sa.image, sb.image)
    assert any(not np.array_equal(sa.image, sc.image) for sa, sc in zip(a, c))
    for s in a:
        assert s.image.dtype == np.uint8 and s.image.ndim == 2
        assert len(s.masks) == len(s.boxes) == len(s.ignore)
        for m, box in zip(s.masks, s.boxes):
            assert m.shape == s.image.shape and m.any()
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            assert box == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)


def test_cells_are_darker_than_background() -> None:
    """The mask must cover the absorbing cell, not some other region of the frame."""
    cond = Conditions(p_empty=0.0, n_cells=(1, 1), p_crop=0.0, p_border=0.0, debris=(0, 0), p_walls=0.0, phase_halo=(0.0, 0.0))
    s = render_sample(np.random.default_rng(0), (240, 320), cond)
    assert len(s.masks) == 1
    assert s.image[s.masks[0]].mean() < s.image[~s.masks[0]].mean() - 3


def test_polygon_round_trip_keeps_the_mask() -> None:
    m = np.zeros((120, 160), bool)
    yy, xx = np.mgrid[:120, :160]
    m[((yy - 60) / 40.0) ** 2 + ((xx - 70) / 55.0) ** 2 <= 1] = True
    poly = mask_to_polygon(m)
    assert poly is not None and poly.shape[1] == 2
    assert _iou(polygon_to_mask(poly, m.shape), m) > 0.97
    assert mask_to_polygon(np.zeros((10, 10), bool)) is None


def test_to_uint8_scales_deep_frames() -> None:
    img8 = np.full((40, 40), 123, np.uint8)
    assert to_uint8(img8) is img8
    img16 = np.full((40, 40), 3000, np.uint16)
    img16[10:20, 10:20] = 1500
    out = to_uint8(img16)
    assert out.dtype == np.uint8
    assert abs(int(out[0, 0]) - 220) <= 1 and abs(int(out[15, 15]) - 110) <= 1
    with pytest.raises(ValueError):
        to_uint8(np.zeros((2, 3, 4, 5)))


def test_write_and_read_back(tmp_path) -> None:
    data_yaml = write_yolo_dataset(tmp_path / "ds", n_train=5, n_val=3, seed=11, shape=(240, 320))
    cfg = yaml.safe_load(data_yaml.read_text())
    assert cfg["names"] == {0: "cell"} and (tmp_path / "ds").resolve() == tmp_path.joinpath("ds").resolve()
    assert len(list((tmp_path / "ds" / "images" / "train").glob("*.png"))) == 5
    assert len(list((tmp_path / "ds" / "labels" / "val").glob("*.txt"))) == 3
    for line in next((tmp_path / "ds" / "labels" / "train").glob("*.txt")).read_text().splitlines():
        vals = [float(v) for v in line.split()]
        assert vals[0] == 0 and len(vals) % 2 == 1 and all(0 <= v <= 1 for v in vals[1:])
    back = read_yolo_split(tmp_path / "ds", "val")
    truth = list(generate_samples(3, seed=11 + 7919, shape=(240, 320)))
    assert len(back) == 3
    for got, want in zip(back, truth):
        kept = [(m, b) for m, b, ig in zip(want.masks, want.boxes, want.ignore) if not ig]
        assert len(got.masks) == len(kept)
        for gm, gb, (wm, wb) in zip(got.masks, got.boxes, kept):
            assert _box_iou(gb, wb) > 0.9
            assert _iou(gm, wm) > 0.9


def test_label_lines_skip_ignored_slivers() -> None:
    s = render_sample(np.random.default_rng(1), (240, 320), TRAIN)
    s.ignore = [True] * len(s.masks)
    assert label_lines(s) == []


def test_hard_conditions_are_harder() -> None:
    assert HARD.contrast[1] < TRAIN.contrast[1] and HARD.debris[0] > TRAIN.debris[0]
    assert HARD.defocus_px[0] > TRAIN.defocus_px[0]


def test_resolve_dataset_errors_name_the_folder(tmp_path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        resolve_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="images/train"):
        resolve_dataset(tmp_path / "empty")
    (tmp_path / "nolabels" / "images" / "train").mkdir(parents=True)
    import cv2

    cv2.imwrite(str(tmp_path / "nolabels" / "images" / "train" / "a.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(InputFileError, match="no label files"):
        resolve_dataset(tmp_path / "nolabels")
    (tmp_path / "nolabels" / "labels" / "train").mkdir(parents=True)
    (tmp_path / "nolabels" / "labels" / "train" / "a.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n")
    y = resolve_dataset(tmp_path / "nolabels")
    assert yaml.safe_load(y.read_text())["val"] == "images/train"


def _noise_level(image: np.ndarray) -> float:
    """Robust pixel-noise estimate: MAD of the difference of horizontal neighbours."""
    d = np.diff(image.astype(np.float32), axis=1)
    return float(np.median(np.abs(d - np.median(d))))


def test_hard_share_draws_frames_from_the_tough_tails() -> None:
    easy = list(generate_samples(12, seed=5, shape=(120, 160), hard_share=0.0))
    hard = list(generate_samples(12, seed=5, shape=(120, 160), hard_share=1.0))
    same = list(generate_samples(12, seed=5, shape=(120, 160)))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(easy, same))  # default unchanged
    # HARD has few electrons per count and more read noise: noisier frames on the whole
    assert np.median([_noise_level(s.image) for s in hard]) > 1.3 * np.median([_noise_level(s.image) for s in easy])
    with pytest.raises(ValueError, match="hard_share"):
        next(generate_samples(1, seed=0, hard_share=1.5))


def test_parallel_writing_gives_the_same_dataset(tmp_path, monkeypatch) -> None:
    import mcf_rotator.reconstruction.yolo_dataset as ds

    monkeypatch.setattr(ds, "BLOCK", 2)  # 5 train frames -> 3 blocks with their own seeds
    serial = write_yolo_dataset(tmp_path / "a", n_train=5, n_val=1, seed=2, shape=(96, 128))
    parallel = write_yolo_dataset(tmp_path / "b", n_train=5, n_val=1, seed=2, shape=(96, 128), processes=2)
    files = sorted(p.relative_to(serial.parent) for p in serial.parent.rglob("*.*") if p.suffix in (".png", ".txt"))
    assert len(files) == 12
    for rel in files:
        assert (parallel.parent / rel).read_bytes() == (serial.parent / rel).read_bytes(), rel
    # blocks draw from different seeds: frame 2 (block 1) is not frame 0 (block 0) again
    imgs = sorted((serial.parent / "images" / "train").glob("*.png"))
    assert imgs[0].read_bytes() != imgs[2].read_bytes()
