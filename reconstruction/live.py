"""Per-frame reconstruction pipeline: detect -> crop -> segment -> centre -> track -> back-project.

The rig controller calls :meth:`LivePipeline.process` for every full camera frame in a worker
thread, pulls :meth:`snapshot` for display and calls :meth:`finalize` at the end. Per frame the
crop follows the cell (a trapped cell moves 0.5-5 px: Brownian motion, drift, wobble), is
segmented (enclosing circle for display), resampled to the live grid, tracked there (corners +
LK + slice centroids, :mod:`.tracking`) and back-projected at the live angle. :meth:`finalize`
registers the stored frames again (per-pixel flat field, centre of mass: :mod:`.registration`),
tracks the registered crops, estimates the final angles (:mod:`.final_angles`) and runs the
batch weighted FBP at the camera's resolution.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np

from mcf_rotator.errors import ReconstructionError
from mcf_rotator.reconstruction.detection import AutoSizeDetector, BoxDetector, ClassicalDetector, Detection, Detector, to_gray_float
from mcf_rotator.reconstruction.fbp import fbp
from mcf_rotator.reconstruction.incremental import IncrementalReconstructor, VolumeSnapshot
from mcf_rotator.reconstruction.final_angles import _FairMirrorPairs, angle_confidence, estimate_angles
from mcf_rotator.reconstruction.registration import Registration, cell_radius, disk_mask, register
from mcf_rotator.reconstruction.segmentation import ClassicalSegmenter, Segmenter, border_level, enclosing_circle, outer_contour
from mcf_rotator.reconstruction.tracking import RotationTracker, TrackerConfig

log = logging.getLogger(__name__)

__all__ = ["LivePipelineConfig", "FrameResult", "ReconstructionResult", "LivePipeline", "VolumeSnapshot",
           "estimate_angles", "angle_confidence"]


@dataclass
class LivePipelineConfig:
    """Per-acquisition settings of :class:`LivePipeline`.

    Detection schedule: the full frame goes through the detector on every frame until a cell
    is found (that sizes the crop from the cell and places a fixed field around it, the crop
    plus room for the cell to move), then once every ``detect_every`` frames (default 10, a box
    refresh for display and monitoring: the learned detector's box-only call costs ~15-30 ms on
    one CPU thread, so this keeps it to 2-3 ms per frame). In between, the crop follows the
    cell inside the field frame by frame (centre of mass of its segmented optical depth,
    sub-pixel), as the seed paper's workflow stabilises every frame before tracking. Detectors
    with a cheap box-only path (:class:`~mcf_rotator.reconstruction.detection.BoxDetector`) are
    called through it. The final stage registers the stored field frames again with a per-pixel
    flat field (:mod:`.registration`).
    """

    # crop side around the cell (camera pixels); None: the measured cell diameter x 1.5 + 16 px
    roi_px: int | None = None
    # final reconstruction grid; None: the crop at the camera's resolution (at most max_grid)
    volume_size: int | None = None
    live_size: int = 128  # live preview grid (at most; the crop when smaller)
    angle_grid: int = 128  # the final angle stage bins a cell larger than this to this size
    still_px: float = 0.3  # residual translation (RMS px) under which the cell counts as still
    moving_px: float = 1.0  # over it only the re-centred crops are tried (both in between)
    min_tilt_deg: float = 0.3  # a smaller tilt found is not applied (report: tilt_found_deg)
    max_grid: int = 256  # largest automatic final grid (a larger crop is binned, and the report says so)
    detect_every: int = 10  # frames between full-frame detections once a cell is found (>= 1)
    cell_px: float | None = None  # expected cell diameter (px); None: found by the detector
    direction: int = 1  # sign of the commanded rotation (unobservable in projections)
    nominal_step_deg: float = 1.0
    filter_name: str = "ramp"
    refine: bool = True
    smooth: float = 100.0  # angular-acceleration penalty of the mirror-warped start angles (0: none)
    per_frame: bool = True  # final per-frame angles: moment fit + projection matching (no smoothness)
    match_iterations: int = 8
    min_frames: int = 20
    # re-solve the live angles on a worker thread after this many frames, then whenever the
    # frames have grown 1.5x (the work stays proportional to the sweep; 0: off): all tracks so
    # far (and the mirror symmetry past 180 deg) replace the causal trace, the volume is rebuilt
    resolve_every: int = 32
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
    axis_offset_px: float  # reconstruction-grid pixels (report["axis_offset_px"]: camera pixels)
    tilt_deg: float
    report: dict[str, Any]
    projections: np.ndarray | None = None  # (T, n, n) line integrals the volume was made from


def _lower_thread_priority(nice: int = 10) -> None:
    """Let the calling thread yield the CPU to the per-frame work (Linux: per-thread nice)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


def _binned(stack: np.ndarray, n: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Every image of ``stack`` resampled to (n, n) (the stack itself when it already is)."""
    return stack if n == stack.shape[1] else np.stack([cv2.resize(p, (n, n), interpolation=interpolation)
                                                       for p in stack])


@dataclass
class _Candidate:
    """The angle stage's result on one set of crops (:meth:`LivePipeline._solve`)."""

    full: np.ndarray  # the crops at full resolution
    angles: np.ndarray
    ref: Any
    info: dict[str, Any]
    mirror_deg: float | None  # fair mirror residual of the angles (None: no mirror check)
    grid: int  # side the angle stage ran at


@dataclass
class _Resolved:
    """A worker's re-solve: angles of the first ``len(angles_deg)`` frames and the volume rebuilt
    with them."""

    angles_deg: np.ndarray
    recon: IncrementalReconstructor


def resolve_live_angles(tracker: RotationTracker, projections: list[np.ndarray], shape: tuple[int, int],
                        filter_name: str, cancel: threading.Event | None = None) -> _Resolved | None:
    """Angles of ``projections``' frames from all their tracks; the volume rebuilt with them.

    Why: the live angle only extends the last window's orbit fit, so its scale drifts (tens to
    a hundred degrees over a sweep). The rate from all tracks (:func:`estimate_angles` without
    its orbit-fit rounds and per-frame stage), then, once the sweep passes 180 deg, the mirror
    symmetry (~0.8 s for 160 frames of 128 px), before that the joint orbit fit of all tracks
    (~0.1 s). ``tracker``: a copy no other thread touches (:meth:`RotationTracker.head`).
    ``cancel`` set: returns None at the next stage boundary.
    """
    cancelled = cancel.is_set if cancel is not None else (lambda: False)
    ang, ref, _info = estimate_angles(tracker, np.stack(projections), rounds=0, per_frame=False)
    if ref is None and not cancelled():  # under 180 deg: no mirror pairs; the orbit fit from that rate
        ang = np.asarray(tracker.solve(init_deg=ang), np.float64)
    rec = IncrementalReconstructor(shape, filter_name=filter_name)
    for p, a in zip(projections, ang):
        if cancelled():
            return None
        rec.add(p, float(a))
    return _Resolved(np.asarray(ang, np.float64), rec)


class LivePipeline:
    """Stateful per-frame pipeline; one instance per acquisition.

    The first detection sizes the crop from the cell (:meth:`_place`) and fixes a field around
    it; every frame after that the crop follows the cell inside the field (sub-pixel), the
    field's raw pixels are kept for the final registration (:mod:`.registration`).
    From ``resolve_every`` frames on, each time the frames have grown 1.5x, the live angles are
    re-solved on a worker thread (:func:`resolve_live_angles`); when a re-solve is done the live
    volume is replaced by its rebuild and later frames continue from its last angle (plus the
    tracker's live steps).
    """

    def __init__(self, config: LivePipelineConfig | None = None) -> None:
        self.cfg = config or LivePipelineConfig()
        self.detector = self.cfg.detector or (ClassicalDetector(cell_px=self.cfg.cell_px) if self.cfg.cell_px
                                              else AutoSizeDetector())
        if self.cfg.detect_every < 1:
            raise ReconstructionError(f"detect_every must be >= 1, got {self.cfg.detect_every}")
        self.n_detections = 0  # full-frame detector calls so far
        self.detect_seconds = 0.0  # time spent in them
        self.segmenter = self.cfg.segmenter or ClassicalSegmenter()
        tc = dataclasses.replace(self.cfg.tracker, direction=self.cfg.direction,
                                 nominal_step_deg=self.cfg.nominal_step_deg)
        self._tracker_cfg = tc
        self.tracker = RotationTracker(tc)
        self.recon: IncrementalReconstructor | None = None
        self._field: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 of the stored field
        self._side = 0  # crop side (camera pixels)
        self._n_live = 0  # live grid side
        self.cell_diameter_px: float | None = None
        self._centre: tuple[float, float] | None = None  # (row, col) of the cell in the field
        self._first_centre: tuple[float, float] | None = None  # where the first detection put it
        self._box: tuple[int, int, int, int] | None = None
        self._index = 0
        self._i0: float | None = None
        self.projections: list[np.ndarray] = []  # live crops' line integrals (live grid)
        self.fields: list[np.ndarray] = []  # raw field pixels of every used frame
        self.centres: list[tuple[float, float]] = []  # live cell centre (row, col) in the field
        self.angles: list[float] = []
        self.timestamps: list[float] = []
        self._t_process = 0.0
        self._shift = 0.0  # re-solved minus tracked angle at the last adopted re-solve
        self._resolver: threading.Thread | None = None
        self._resolved: _Resolved | BaseException | None = None
        self._cancel_resolve = threading.Event()
        self.n_resolves = 0  # re-solves adopted so far
        self._resolve_n = 0  # frames in the last re-solve started

    def _place(self, image: np.ndarray, box: tuple[int, int, int, int]) -> None:
        """Size the crop from the detected cell and fix the field (crop + room to move) around it.

        The size is the larger of the box and the extent of the cell's optical depth around the
        box centre (:func:`cell_radius`): a detector often finds only the dense nucleus of a
        faint cell (measured: a 38 px box on a 72 px cell)."""
        h, w = np.shape(image)[:2]
        bx0, by0, bx1, by1 = box
        d = float(max(bx1 - bx0, by1 - by0, 8))
        gray = to_gray_float(image)
        i0 = border_level(gray)
        od = -np.log(np.clip(gray / max(i0, 1e-6), 1e-3, None))[None]
        r = cell_radius(od, np.array([[(by0 + by1) / 2.0, (bx0 + bx1) / 2.0]]), 0.5 * d, level=0.04)
        d = float(min(max(d, 2.0 * r), 0.9 * min(h, w)))
        # generous: a detection can miss a faint rim (measured: 44 px found for a 72 px cell)
        side = int(self.cfg.roi_px or 2 * round((1.5 * d + 16) / 2))
        if side > h or side > w:
            if self.cfg.roi_px:
                raise ReconstructionError(f"ROI {side} px does not fit the {w}x{h} frame")
            side = int(min(h, w)) // 2 * 2
        margin = int(max(12, round(0.25 * d)))
        fh, fw = min(h, side + 2 * margin), min(w, side + 2 * margin)
        cx, cy = (bx0 + bx1) / 2.0, (by0 + by1) / 2.0
        x0 = int(np.clip(round(cx - fw / 2), 0, w - fw))
        y0 = int(np.clip(round(cy - fh / 2), 0, h - fh))
        self._field = (x0, y0, x0 + fw, y0 + fh)
        self._side = side
        self.cell_diameter_px = d
        self._centre = self._first_centre = (cy - y0, cx - x0)
        self._n_live = int(min(side, self.cfg.live_size))
        self.recon = IncrementalReconstructor((self._n_live, self._n_live), filter_name=self.cfg.filter_name)

    @property
    def roi_px(self) -> int:
        """Crop side in camera pixels (0 before the first detection)."""
        return self._side

    def _detect(self, image: np.ndarray) -> list[Detection]:
        """One full-frame detection (box-only path when the detector has one), timed."""
        t0 = time.perf_counter()
        if isinstance(self.detector, BoxDetector):
            dets = self.detector.detect_boxes(image)
        else:
            dets = self.detector.detect(image)
        self.n_detections += 1
        self.detect_seconds += time.perf_counter() - t0
        return dets

    def _follow(self, crop: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        """The cell's centre (row, col) in the field from this frame's crop: the centre of mass
        of its optical depth inside the dilated mask (the live, border-level flat field)."""
        assert self._centre is not None and self._i0 is not None
        od = np.clip(-np.log(np.clip(crop / self._i0, 1e-3, None)), 0.0, None)
        wm = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(np.float32)
        m = od * wm
        tot = float(m.sum())
        c = (self._side - 1) / 2.0
        if tot <= 1e-9 or not np.isfinite(tot):
            return self._centre
        yy, xx = np.indices(m.shape)
        dy, dx = float((m * yy).sum() / tot) - c, float((m * xx).sum() / tot) - c
        lim = 0.25 * self._side  # a jump of more than this in one frame is a segmentation fault
        if np.hypot(dy, dx) > lim:
            return self._centre
        assert self._field is not None
        x0, y0, x1, y1 = self._field
        # the crop may reach past the field (its border pixels are repeated): the cell is followed
        # as long as its centre is inside
        return (float(np.clip(self._centre[0] + dy, 0, (y1 - y0) - 1)),
                float(np.clip(self._centre[1] + dx, 0, (x1 - x0) - 1)))

    def process(self, image: np.ndarray, timestamp: float) -> FrameResult:
        """Process one full camera frame; never raises for a frame without a cell (ok=False).

        Detection follows the schedule of :class:`LivePipelineConfig` (``detect_every``).
        """
        t0 = time.perf_counter()
        idx = self._index
        self._index += 1
        if self._field is None or idx % self.cfg.detect_every == 0:
            dets = self._detect(image)
            if dets:
                self._box = dets[0].box
                if self._field is None:
                    self._place(image, self._box)
            elif self._field is None:
                return FrameResult(idx, None, None, None, None, None, False)
        assert self._field is not None and self._centre is not None and self.recon is not None
        fx0, fy0, fx1, fy1 = self._field
        field = np.asarray(image[fy0:fy1, fx0:fx1])
        if field.ndim == 3:
            field = to_gray_float(field)
        side, c = self._side, (self._side - 1) / 2.0
        cy, cx = self._centre
        crop = cv2.getRectSubPix(to_gray_float(field), (side, side), (cx, cy))
        mask = self.segmenter.segment(crop)
        contour = outer_contour(mask) if mask.any() else None
        if contour is None:
            return FrameResult(idx, self._box, None, None, None, None, False)
        ex, ey, r = enclosing_circle(contour)
        if self._i0 is None:
            self._i0 = border_level(crop)
        ox, oy = cx - c, cy - c  # crop origin in the field
        n = self._n_live
        if side != n:
            small = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA)
            small_mask = cv2.resize(mask.astype(np.uint8), (n, n), interpolation=cv2.INTER_NEAREST).astype(bool)
        else:
            small, small_mask = crop, mask
        # the tracker works on the live grid: the same pixels the live back-projection sees
        angle = self.tracker.update(small, small_mask) + self._shift
        proj = -np.log(np.clip(small / self._i0, 1e-3, None)).astype(np.float32)
        self.projections.append(proj)
        self.fields.append(field.copy())
        self.centres.append((cy, cx))
        self.angles.append(angle)
        self.timestamps.append(float(timestamp))
        self.recon.add(proj, angle)
        self._centre = self._follow(crop, mask)  # where the next frame's crop goes
        self._adopt_resolve()
        n_now, every = len(self.projections), self.cfg.resolve_every
        if every > 0 and self._resolver is None and n_now >= max(every, 1.5 * self._resolve_n):
            self._start_resolve()
        scale = side / n
        origin = np.array([fx0 + ox, fy0 + oy], np.float32)
        feats = (self.tracker.features + 0.5) * np.float32(scale) - 0.5 + origin
        self._t_process += time.perf_counter() - t0
        return FrameResult(idx, self._box, contour + origin, (ex + origin[0], ey + origin[1], r), feats,
                           float(angle), True)

    def _start_resolve(self) -> None:
        """Re-solve the angles of all frames so far on a worker thread (see the class doc)."""
        n = self._resolve_n = len(self.projections)
        args = (self.tracker.head(n), self.projections[:n], (self.recon.h, self.recon.w), self.cfg.filter_name,
                self._cancel_resolve)

        def work() -> None:
            _lower_thread_priority()
            try:
                self._resolved = resolve_live_angles(*args)
            except Exception as exc:  # noqa: BLE001 - a failed preview re-solve must not stop the run
                self._resolved = exc

        # not a daemon: a thread killed at interpreter exit inside native code aborts the process
        self._resolver = threading.Thread(target=work, name="angle-resolve")
        self._resolver.start()

    def wait_resolve(self) -> bool:
        """Wait for a re-solve in flight and adopt it now (tests, benchmarks); True if one was."""
        if self._resolver is None:
            return False
        self._resolver.join()
        n = self.n_resolves
        self._adopt_resolve()
        return self.n_resolves > n

    def close(self) -> None:
        """Stop a re-solve in flight (it ends at its next stage boundary, well under a second
        for the rebuild, a stage of the angle solve otherwise) and wait for it."""
        if self._resolver is not None:
            self._cancel_resolve.set()
            self._resolver.join()
            self._resolver, self._resolved = None, None
            self._cancel_resolve.clear()

    def _adopt_resolve(self) -> None:
        """Swap in a finished re-solve: its volume, caught up with the frames added since."""
        if self._resolver is None or self._resolver.is_alive():
            return
        self._resolver, done, self._resolved = None, self._resolved, None
        if done is None:
            return
        if isinstance(done, BaseException):
            log.warning("live angle re-solve failed: %s", done)
            return
        tracked, n = self.tracker.angles_deg, len(done.angles_deg)
        shift = float(done.angles_deg[-1] - tracked[n - 1])
        if not np.isfinite(shift):
            return
        rec = done.recon
        for i in range(n, len(self.projections)):
            self.angles[i] = tracked[i] + shift
            rec.add(self.projections[i], self.angles[i])
        self.angles[:n] = list(done.angles_deg)
        rec.continue_versions(self.recon.version)
        self.recon, self._shift = rec, shift
        self.n_resolves += 1

    def snapshot(self) -> VolumeSnapshot | None:
        return self.recon.snapshot() if self.recon is not None else None

    def registered(self) -> Registration:
        """The stored fields registered again with a per-pixel flat field (:func:`register`)."""
        if not self.fields:
            raise ReconstructionError("no frames with a cell to register")
        assert self.cell_diameter_px is not None
        side = self.cfg.roi_px or None  # None: sized from the cell measured on the line integrals
        return register(np.stack(self.fields), np.asarray(self.centres), 0.5 * self.cell_diameter_px, side)

    def residual_motion_px(self, reg: Registration) -> float:
        """RMS of the cell's translation (px) once the orbit of its centre of mass about the
        rotation axis is taken out: the vertical spread of the centres of mass (a rotation about
        a vertical axis does not move them vertically) and the lateral residual of a fit
        ``c + a cos(theta) + b sin(theta)`` on the live angles (a rotation about an axis off the
        centre of mass swings it sideways once per turn)."""
        cen = reg.centres
        th = np.deg2rad(np.asarray(self.tracker.angles_deg, np.float64)[: len(cen)])
        design = np.stack([np.ones_like(th), np.cos(th), np.sin(th)], axis=1)
        coef, *_ = np.linalg.lstsq(design, cen[:, 1], rcond=None)
        lateral = cen[:, 1] - design @ coef
        vertical = cen[:, 0] - cen[:, 0].mean()
        return float(np.sqrt(np.mean(lateral ** 2) + np.mean(vertical ** 2)))

    def _fixed_crops(self) -> tuple[np.ndarray, np.ndarray]:
        """Line integrals (T, side, side) of one crop fixed where the cell was first found (no
        resampling, the border level as I0) and the cell masks: the crop of a cell that stays
        still, exactly as the pipeline kept it before per-frame registration."""
        assert self._first_centre is not None and self._i0 is not None
        side, c = self._side, (self._side - 1) / 2.0
        y0 = int(round(self._first_centre[0] - c))
        x0 = int(round(self._first_centre[1] - c))
        crops, masks = [], []
        for f in self.fields:
            fh, fw = f.shape[:2]
            yy, xx = int(np.clip(y0, 0, max(fh - side, 0))), int(np.clip(x0, 0, max(fw - side, 0)))
            crop = to_gray_float(f[yy:yy + side, xx:xx + side])
            if crop.shape != (side, side):  # a field smaller than the crop: pad with the background
                crop = cv2.copyMakeBorder(crop, 0, side - crop.shape[0], 0, side - crop.shape[1],
                                          cv2.BORDER_CONSTANT, value=float(self._i0))
            crops.append(-np.log(np.clip(crop / self._i0, 1e-3, None)).astype(np.float32))
            masks.append(self.segmenter.segment(crop))
        return np.stack(crops), np.stack(masks)

    def _solve(self, full: np.ndarray, masks: np.ndarray | None, radius: float,
               progress: Callable[[str], None] | None) -> _Candidate:
        """The angle stage on one set of crops (binned to ``angle_grid``, tracked again)."""
        side = full.shape[1]
        # binned only where the cell itself is larger than the angle grid: a crop with a wide
        # margin must not cost the cell its pixels
        ga = int(min(side, max(self.cfg.angle_grid, round(side * self.cfg.angle_grid / max(2.0 * radius, 1.0)))))
        ga = min(ga, 2 * self.cfg.angle_grid)
        proj = _binned(full, ga)
        tracker = RotationTracker(self._tracker_cfg)
        if masks is not None:
            small_masks = _binned(masks.astype(np.uint8), ga, cv2.INTER_NEAREST).astype(bool)
        else:
            disk = disk_mask((ga, ga), ((ga - 1) / 2.0, (ga - 1) / 2.0), radius * ga / side)
            small_masks = np.broadcast_to(disk, proj.shape)
        for p, m in zip(proj, small_masks):
            tracker.update(np.exp(-p), m)
        ang, ref, info = estimate_angles(tracker, proj, smooth=self.cfg.smooth, per_frame=self.cfg.per_frame,
                                         match_iterations=self.cfg.match_iterations, progress=progress)
        mirror = None
        if ref is not None:
            mirror = float(_FairMirrorPairs(proj, ref.axis_offset_px, ref.tilt_deg).residuals([ang])[0])
        return _Candidate(full, ang, ref, info, mirror, ga)

    def finalize(self, angles_deg: np.ndarray | None = None,
                 progress: Callable[[str], None] | None = None) -> ReconstructionResult:
        """Final registration, angles (track fit + mirror symmetry) and batch FBP; ``angles_deg``
        (one per used frame) overrides the angles.

        The stored fields are flat-fielded and the cell's centre of mass found in every frame
        (:mod:`.registration`); the residual translation (:meth:`residual_motion_px`) decides
        which crops the angle stage sees: under ``still_px`` one fixed crop (the angle stage
        reads 0.05 px of per-frame jitter as tenths of a degree, and a noisy frame's centre of
        mass carries ~0.1 px), over ``moving_px`` the crops re-centred on every frame's centre
        of mass, in between both, and the angle set whose fair mirror residual is lower wins.
        The angle stage tracks the crops again, binned to at most ``angle_grid`` (its cost
        grows with the square of the side; the angles do not gain from more pixels), and the
        volume is back-projected at ``volume_size`` (default the crop at the camera's
        resolution, binned above ``max_grid``). ``progress`` is called with the name of each
        step as it starts (see :func:`estimate_angles`).
        """
        self.close()  # a preview re-solve still in flight is dropped: the final angles replace it
        n_used = len(self.projections)
        if n_used < self.cfg.min_frames:
            raise ReconstructionError(f"only {n_used} frames with a cell; need at least {self.cfg.min_frames}")
        t0 = time.perf_counter()
        step = progress or (lambda _name: None)
        step("registration: flat field and per-frame centre of mass")
        reg = self.registered()
        motion = self.residual_motion_px(reg)
        # given angles: the registered crops (their axis is the crop centre by construction;
        # a fixed crop's axis would have to be found)
        if angles_deg is not None or not self.cfg.refine or motion >= self.cfg.moving_px:
            kinds = ["registered"]
        elif motion < self.cfg.still_px:
            kinds = ["fixed"]
        else:
            kinds = ["registered", "fixed"]
        report: dict[str, Any] = {"frames_used": n_used, "frames_seen": self._index, "flags": [],
                                  "cell_diameter_px": self.cell_diameter_px,
                                  "registration": dict(reg.report(), residual_motion_px=motion)}
        t_reg = time.perf_counter() - t0
        offset, tilt = 0.0, 0.0
        full = reg.projections
        if angles_deg is not None:
            ang = np.asarray(angles_deg, np.float64)
        elif self.cfg.refine:
            found: dict[str, _Candidate] = {}
            for kind in kinds:
                step(f"tracking the {kind} crops" if len(kinds) > 1 else "tracking the registered frames")
                crops, masks = (reg.projections, None) if kind == "registered" else self._fixed_crops()
                found[kind] = self._solve(crops, masks, reg.radius, progress)
            scored = [k for k in kinds if found[k].mirror_deg is not None]
            kind = min(scored, key=lambda k: found[k].mirror_deg) if scored else kinds[0]
            if len(kinds) > 1:
                report["registration"]["candidates_mirror_deg"] = {k: found[k].mirror_deg for k in kinds}
            best = found[kind]
            report["registration"]["mode"] = ("per-frame centre of mass" if kind == "registered"
                                              else "fixed crop (the cell stayed still)")
            full, ang, ref, info = best.full, best.angles, best.ref, best.info
            report["flags"] += info.pop("flags")
            report.update(info)
            if ref is not None:
                offset, tilt = ref.axis_offset_px * full.shape[1] / best.grid, ref.tilt_deg
                if abs(tilt) < self.cfg.min_tilt_deg:
                    # no clear evidence: under 0.3 deg the top of a 100 px cell moves 0.26 px,
                    # less than the resampling that would undo it costs
                    report["tilt_found_deg"], tilt = tilt, 0.0
                report["mirror_pairs"] = len(ref.anchors)
                report["mirror_match_error"] = ref.match_error
        else:
            ang = np.asarray(self.tracker.angles_deg, np.float64)
        report["registration"].setdefault("mode", "per-frame centre of mass")
        side = full.shape[1]
        report["crop_px"] = side
        t_ang = time.perf_counter() - t0 - t_reg
        if angles_deg is None and self.cfg.refine:
            report["angle_confidence"] = angle_confidence(report, angles_deg=ang)
            level = report["angle_confidence"]["level"]
            if level != "good":
                report["flags"].append(f"angles {level}: " + "; ".join(report["angle_confidence"]["reasons"]))
        coverage = float(np.ptp(ang))
        if coverage < 180.0:
            report["flags"].append(f"partial: angle coverage {coverage:.1f} deg < 180 deg (limited-angle artefacts)")
        weights = "circular" if coverage >= 180.0 else "trapezoid"
        step("filtered back-projection")
        n = int(self.cfg.volume_size or min(side, self.cfg.max_grid))
        if n != side and self.cfg.volume_size is None:
            report["flags"].append(f"crop of {side} px binned to a {n} px grid (set the grid with --size)")
        vproj = _binned(full, n)
        vol = fbp(vproj, ang, axis_offset_px=offset * n / side, tilt_deg=tilt, filter_name=self.cfg.filter_name,
                  weights=weights)
        report.update(
            coverage_deg=coverage,
            axis_offset_px=offset,
            tilt_deg=tilt,
            grid=n,
            voxel_px=side / n,
            timings_s={"per_frame_mean": self._t_process / max(n_used, 1), "finalize": time.perf_counter() - t0,
                       "registration": t_reg, "angles": t_ang,
                       "detect_mean": self.detect_seconds / max(self.n_detections, 1)},
            detections=self.n_detections,
        )
        return ReconstructionResult(vol, ang, offset * n / side, tilt, report, vproj)
