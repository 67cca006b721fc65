"""The shipped YOLO weights load and find/segment simulated cells; fallback; metrics; CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from mcf_rotator.reconstruction.ultralytics_env import setup_ultralytics

setup_ultralytics(threads=1)

from mcf_rotator.reconstruction.detection import ClassicalDetector, Detection, Detector  # noqa: E402
from mcf_rotator.reconstruction.segmentation import ClassicalSegmenter, Segmenter  # noqa: E402
from mcf_rotator.reconstruction.yolo import (  # noqa: E402
    YoloCellDetector,
    average_precision,
    box_iou,
    default_weights_path,
    evaluate_detector,
    make_default_detector,
    make_default_segmenter,
    mask_iou,
)
from mcf_rotator.reconstruction.yolo_dataset import Conditions, Sample, render_sample  # noqa: E402

EASY = Conditions(p_empty=0.0, n_cells=(2, 2), p_crop=0.0, p_border=0.0, contrast=(0.9, 1.2), defocus_px=(0.0, 1.0), electrons_per_count=(4.0, 10.0), debris=(2, 4))


needs_weights = pytest.mark.skipif(
    not default_weights_path().is_file(),
    reason=f"shipped detector weights {default_weights_path().name} not trained yet (mcf-rotator train-detector)",
)


@pytest.fixture(scope="module")
def detector() -> YoloCellDetector:
    return YoloCellDetector(threads=1)


@needs_weights
def test_shipped_weights_are_small() -> None:
    assert default_weights_path().stat().st_size < 10 * 1024 * 1024


@needs_weights
def test_detects_and_segments_simulated_cells(detector: YoloCellDetector) -> None:
    assert isinstance(detector, Detector) and isinstance(detector, Segmenter)
    rng = np.random.default_rng(2024)
    for _ in range(3):
        s = render_sample(rng, (480, 640), EASY)
        dets = detector.detect(s.image)
        assert all(isinstance(d, Detection) for d in dets)
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
        assert len(dets) == len(s.boxes), (len(dets), s.boxes)
        for box, mask in zip(s.boxes, s.masks):
            best = max(dets, key=lambda d: box_iou(d.box, box))
            assert box_iou(best.box, box) > 0.8
            assert best.mask is not None and best.mask.shape == s.image.shape and best.mask.dtype == bool
            assert mask_iou(best.mask, mask) > 0.85


@needs_weights
def test_boxes_only_and_uint16_frames(detector: YoloCellDetector) -> None:
    s = render_sample(np.random.default_rng(7), (480, 640), EASY)
    img16 = (s.image.astype(np.uint16) * 16)  # a 12-bit camera
    dets = detector.detect(img16, with_masks=False)
    assert len(dets) == len(s.boxes) and all(d.mask is None for d in dets)
    with pytest.raises(ValueError):
        detector.detect(np.zeros((4, 4, 4, 4), np.uint8))


@needs_weights
def test_empty_field_gives_no_detection(detector: YoloCellDetector) -> None:
    cond = Conditions(p_empty=1.0, debris=(3, 6), p_crop=0.0)
    for seed in range(3):
        s = render_sample(np.random.default_rng(seed), (480, 640), cond)
        assert not s.boxes
        assert detector.detect(s.image) == []


@needs_weights
def test_segment_crop(detector: YoloCellDetector) -> None:
    s = render_sample(np.random.default_rng(5), (480, 640), EASY)
    x0, y0, x1, y1 = (int(v) for v in s.boxes[0])
    m = 20
    r0, c0 = max(0, y0 - m), max(0, x0 - m)
    crop = s.image[r0 : y1 + m, c0 : x1 + m]
    truth = s.masks[0][r0 : y1 + m, c0 : x1 + m]
    mask = detector.segment(crop)
    assert mask.shape == crop.shape and mask.dtype == bool
    assert mask_iou(mask, truth) > 0.85
    blank = np.full((100, 100), 200, np.uint8)
    assert not detector.segment(blank).any()


@needs_weights
def test_live_boxes_match_predict(detector: YoloCellDetector) -> None:
    """The live path (own letterbox, fused channels-last copy, no prototypes) finds the same boxes."""
    from mcf_rotator.reconstruction.detection import BoxDetector

    assert isinstance(detector, BoxDetector)
    rng = np.random.default_rng(11)
    for shape in ((480, 640), (300, 500), (256, 256), (640, 480)):
        s = render_sample(rng, shape, EASY)
        ref = detector.detect(s.image, with_masks=False)
        live = detector.detect_boxes(s.image)
        assert len(live) == len(ref) == len(s.boxes)
        assert [d.score for d in live] == sorted((d.score for d in live), reverse=True)
        for a, b in zip(live, ref):
            assert a.mask is None
            assert box_iou(a.box, b.box) > 0.99 and abs(a.score - b.score) < 1e-3
            assert 0 <= a.box[0] < a.box[2] <= shape[1] and 0 <= a.box[1] < a.box[3] <= shape[0]
    img16 = (s.image.astype(np.uint16) * 16)  # deeper cameras go through the same 8-bit view
    assert len(detector.detect_boxes(img16)) == len(s.boxes)
    empty = render_sample(np.random.default_rng(0), (480, 640), Conditions(p_empty=1.0, debris=(3, 6), p_crop=0.0))
    assert detector.detect_boxes(empty.image) == []
    with pytest.raises(ValueError):
        detector.detect_boxes(np.zeros((4, 4, 3), np.uint8))
    # the loaded model is untouched: predict still returns masks
    assert detector.detect(s.image)[0].mask is not None


@needs_weights
def test_live_path_falls_back_to_predict(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcf_rotator.reconstruction import yolo

    def broken(model):
        raise RuntimeError("unknown head")

    monkeypatch.setattr(yolo._LiveNet, "from_model", staticmethod(broken))
    det = YoloCellDetector(threads=1)
    s = render_sample(np.random.default_rng(3), (480, 640), EASY)
    ref = det.detect(s.image, with_masks=False)
    live = det.detect_boxes(s.image)
    assert [d.box for d in live] == [d.box for d in ref]


@needs_weights
def test_live_pipeline_with_learned_detector(detector: YoloCellDetector) -> None:
    """Full rig frames through LivePipeline with the YOLO detector on its schedule."""
    from mcf_rotator.config import load_config
    from mcf_rotator.reconstruction.live import LivePipeline, LivePipelineConfig
    from mcf_rotator.simulation.brightfield import CellInstance, render_scene
    from mcf_rotator.simulation.phantom import pose_matrix
    from mcf_rotator.simulation.world import SimulatedWorld

    cfg = load_config()
    world = SimulatedWorld(cfg)
    optics = world.brightfield_optics()
    h, w = cfg.simulation.camera_shape
    centre = (h / 2 + 10.0, w / 2 - 20.0)
    rng = np.random.default_rng(1)
    cell_px = 2 * world.phantom.radius_um / optics.pixel_um
    pipe = LivePipeline(LivePipelineConfig(roi_px=224, volume_size=64, cell_px=cell_px, detector=detector,
                                           detect_every=5))
    for i in range(12):
        img = render_scene((h, w), [CellInstance(world.phantom, pose_matrix(2.0 * i, 1.0), centre)], optics, rng,
                           walls=True).image
        r = pipe.process(img, float(i))
        assert r.ok
        x0, y0, x1, y1 = r.box
        assert x0 < centre[1] < x1 and y0 < centre[0] < y1
        assert np.hypot(r.circle[0] - centre[1], r.circle[1] - centre[0]) < 0.15 * cell_px  # the cell, segmented
    assert pipe.n_detections == 3  # frames 0, 5 and 10


def test_fallback_to_classical_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        det = make_default_detector(tmp_path / "missing.pt")
        seg = make_default_segmenter(tmp_path / "missing.pt")
    assert isinstance(det, ClassicalDetector) and isinstance(seg, ClassicalSegmenter)
    assert "missing.pt" in caplog.text and "classical" in caplog.text
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert isinstance(make_default_detector(bad), ClassicalDetector)
    expected = YoloCellDetector if default_weights_path().is_file() else ClassicalDetector
    assert isinstance(make_default_detector(), expected)


def test_metric_helpers() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 2) == pytest.approx(1.0)
    # one miss ranked above one hit: half the recall at precision 1/2 -> AP 0.25 with 2 cells
    assert average_precision(np.array([0.9, 0.8]), np.array([False, True]), 2) == pytest.approx(0.25)


class _Oracle:
    """Returns the truth (optionally plus one false alarm) to check the scorer itself."""

    conf = 0.5

    def __init__(self, samples: list[Sample], false_alarm: bool) -> None:
        self.samples, self.false_alarm, self.i = samples, false_alarm, 0

    def detect(self, image: np.ndarray, conf: float | None = None) -> list[Detection]:
        s = self.samples[self.i]
        self.i += 1
        out = [Detection(b, 0.9, m) for b, m in zip(s.boxes, s.masks)]
        if self.false_alarm:
            out.append(Detection((0.0, 0.0, 5.0, 5.0), 0.8, None))
        return out


def test_evaluate_scores_an_oracle() -> None:
    rng = np.random.default_rng(3)
    samples = [render_sample(rng, (240, 320), EASY) for _ in range(3)]
    for s in samples:
        s.ignore = [False] * len(s.boxes)
    perfect = evaluate_detector(_Oracle(samples, False), samples)  # type: ignore[arg-type]
    assert perfect.precision == 1.0 and perfect.recall == 1.0 and perfect.map50 == pytest.approx(1.0)
    assert perfect.mask_iou == pytest.approx(1.0)
    noisy = evaluate_detector(_Oracle(samples, True), samples)  # type: ignore[arg-type]
    n = sum(len(s.boxes) for s in samples)
    assert noisy.false_positives == 3 and noisy.precision == pytest.approx(n / (n + 3))


@needs_weights
def test_evaluate_cli_on_a_few_frames(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from mcf_rotator.cli import main

    out_json = tmp_path / "scores.json"
    assert main(["evaluate-detector", "-n", "3", "--threads", "1", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "precision" in text and "mAP50" in text and "ms/frame" in text
    import json

    d = json.loads(out_json.read_text())
    assert d["n_images"] == 3 and 0 <= d["precision"] <= 1
