"""Per-frame reconstruction pipeline: detect -> crop -> segment -> centre -> track -> back-project.

The rig controller calls :meth:`LivePipeline.process` for every full camera frame in a worker
thread, pulls :meth:`snapshot` for display and calls :meth:`finalize` at the end, which refines
the angles by mirror symmetry and runs the batch weighted FBP on the stored projections.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from mcf_rotator.errors import ReconstructionError
from mcf_rotator.reconstruction.detection import ClassicalDetector, Detector, to_gray_float
from mcf_rotator.reconstruction.fbp import fbp
from mcf_rotator.reconstruction.incremental import IncrementalReconstructor, VolumeSnapshot
from mcf_rotator.reconstruction.refinement import refine_angles
from mcf_rotator.reconstruction.segmentation import ClassicalSegmenter, Segmenter, border_level, enclosing_circle, outer_contour
from mcf_rotator.reconstruction.tracking import RotationTracker, TrackerConfig

__all__ = ["LivePipelineConfig", "FrameResult", "ReconstructionResult", "LivePipeline", "VolumeSnapshot"]


@dataclass
class LivePipelineConfig:
    roi_px: int = 256  # fixed crop side (full-frame pixels)
    volume_size: int = 128  # reconstruction grid (crops are resampled to this)
    detect_every: int = 10
    cell_px: float = 140.0
    direction: int = 1  # sign of the commanded rotation (unobservable in projections)
    nominal_step_deg: float = 1.0
    filter_name: str = "ramp"
    refine: bool = True
    min_frames: int = 20
    detector: Detector | None = None
    segmenter: Segmenter | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass
class FrameResult:
    index: int
    box: tuple[int, int, int, int] | None
    contour: np.ndarray | None
    circle: tuple[float, float, float] | None
    features: np.ndarray | None
    angle_deg: float | None
    ok: bool


@dataclass
class ReconstructionResult:
    volume: np.ndarray  # (H, D, W) float32
    angles_deg: np.ndarray
    axis_offset_px: float
    tilt_deg: float
    report: dict[str, Any]


class LivePipeline:
    """Stateful per-frame pipeline; one instance per acquisition."""

    def __init__(self, config: LivePipelineConfig | None = None) -> None:
        self.cfg = config or LivePipelineConfig()
        self.detector = self.cfg.detector or ClassicalDetector(cell_px=self.cfg.cell_px)
        self.segmenter = self.cfg.segmenter or ClassicalSegmenter()
        tc = self.cfg.tracker
        tc.direction, tc.nominal_step_deg = self.cfg.direction, self.cfg.nominal_step_deg
        self.tracker = RotationTracker(tc)
        n = self.cfg.volume_size
        self.recon = IncrementalReconstructor((n, n), filter_name=self.cfg.filter_name)
        self._roi: tuple[int, int, int, int] | None = None
        self._box: tuple[int, int, int, int] | None = None
        self._index = 0
        self._i0: float | None = None
        self.projections: list[np.ndarray] = []
        self.angles: list[float] = []
        self.timestamps: list[float] = []
        self._t_process = 0.0

    def _place_roi(self, shape: tuple[int, int], cx: float, cy: float) -> tuple[int, int, int, int]:
        r = self.cfg.roi_px
        h, w = shape
        if r > h or r > w:
            raise ReconstructionError(f"ROI {r} px does not fit the {w}x{h} frame")
        x0 = int(np.clip(round(cx - r / 2), 0, w - r))
        y0 = int(np.clip(round(cy - r / 2), 0, h - r))
        return x0, y0, x0 + r, y0 + r

    def process(self, image: np.ndarray, timestamp: float) -> FrameResult:
        """Process one full camera frame; never raises for a frame without a cell (ok=False)."""
        t0 = time.perf_counter()
        idx = self._index
        self._index += 1
        gray = to_gray_float(image)
        if self._roi is None or idx % self.cfg.detect_every == 0:
            dets = self.detector.detect(image)
            if dets:
                self._box = dets[0].box
                if self._roi is None:
                    x0, y0, x1, y1 = self._box
                    self._roi = self._place_roi(gray.shape, (x0 + x1) / 2, (y0 + y1) / 2)
            elif self._roi is None:
                return FrameResult(idx, None, None, None, None, None, False)
        x0, y0, x1, y1 = self._roi
        crop = gray[y0:y1, x0:x1]
        mask = self.segmenter.segment(crop)
        contour = outer_contour(mask) if mask.any() else None
        if contour is None:
            return FrameResult(idx, self._box, None, None, None, None, False)
        cx, cy, r = enclosing_circle(contour)
        if self._i0 is None:
            self._i0 = border_level(crop)
        u8 = np.clip(crop * (200.0 / max(self._i0, 1e-6)), 0, 255).astype(np.uint8)
        angle = self.tracker.update(u8, mask)
        n = self.cfg.volume_size
        small = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA) if crop.shape[0] != n else crop
        proj = -np.log(np.clip(small / self._i0, 1e-3, None)).astype(np.float32)
        self.projections.append(proj)
        self.angles.append(angle)
        self.timestamps.append(float(timestamp))
        self.recon.add(proj, angle)
        feats = self.tracker.features + np.array([x0, y0], np.float32)
        self._t_process += time.perf_counter() - t0
        return FrameResult(idx, self._box, contour + [x0, y0], (cx + x0, cy + y0, r), feats, float(angle), True)

    def snapshot(self) -> VolumeSnapshot | None:
        return self.recon.snapshot()

    def finalize(self, angles_deg: np.ndarray | None = None) -> ReconstructionResult:
        """Refine angles (mirror anchors), batch FBP; ``angles_deg`` overrides tracked angles."""
        n_used = len(self.projections)
        if n_used < self.cfg.min_frames:
            raise ReconstructionError(f"only {n_used} frames with a cell; need at least {self.cfg.min_frames}")
        t0 = time.perf_counter()
        proj = np.stack(self.projections)
        ang = np.asarray(angles_deg if angles_deg is not None else self.tracker.angles_deg[-n_used:], np.float64)
        report: dict[str, Any] = {"frames_used": n_used, "frames_seen": self._index, "flags": []}
        offset, tilt = 0.0, 0.0
        if angles_deg is None and self.cfg.refine:
            try:
                ref = refine_angles(proj, ang)
                ang, offset, tilt = ref.angles_deg, ref.axis_offset_px, ref.tilt_deg
                report["anchors"] = ref.anchors
            except ReconstructionError as exc:
                report["flags"].append(f"angle refinement skipped: {exc}")
        coverage = float(np.ptp(ang))
        if coverage < 180.0:
            report["flags"].append(f"partial: angle coverage {coverage:.1f} deg < 180 deg (limited-angle artefacts)")
        vol = fbp(proj, ang, axis_offset_px=offset, tilt_deg=tilt, filter_name=self.cfg.filter_name)
        report.update(
            coverage_deg=coverage,
            axis_offset_px=offset * self.cfg.roi_px / self.cfg.volume_size,
            tilt_deg=tilt,
            timings_s={"per_frame_mean": self._t_process / max(n_used, 1), "finalize": time.perf_counter() - t0},
        )
        return ReconstructionResult(vol, ang, offset, tilt, report)
