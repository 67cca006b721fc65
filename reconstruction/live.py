"""Per-frame reconstruction pipeline: detect -> crop -> segment -> centre -> track -> back-project.

The rig controller calls :meth:`LivePipeline.process` for every full camera frame in a worker
thread, pulls :meth:`snapshot` for display and calls :meth:`finalize` at the end. Per frame the
ROI crop is segmented (enclosing circle for display), resampled to the reconstruction grid,
tracked there (corners + LK + slice centroids, :mod:`.tracking`) and back-projected at the live
angle. :func:`estimate_angles` then alternates the joint orbit fit of all tracks with the
180 deg mirror refinement (axis offset, tilt, drift-free angle scale), re-solves every frame's
angle on its own (projection-moment consistency, then projection matching against the volume:
no smoothness prior, since a trapped cell turns in stalls and bursts) and the batch weighted
FBP runs on the stored projections with the final angles and axis.
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
from mcf_rotator.reconstruction.detection import BoxDetector, ClassicalDetector, Detection, Detector, to_gray_float
from mcf_rotator.reconstruction.fbp import fbp
from mcf_rotator.reconstruction.incremental import IncrementalReconstructor, VolumeSnapshot
from mcf_rotator.reconstruction.refinement import (
    Refinement,
    bandpass,
    best_partners,
    find_partners,
    match_projections,
    match_score,
    mirror_residual,
    moment_angles,
    periodic_warp,
    refine_angles,
)
from mcf_rotator.reconstruction.segmentation import ClassicalSegmenter, Segmenter, border_level, enclosing_circle, outer_contour
from mcf_rotator.reconstruction.tracking import RotationTracker, TrackerConfig, scale_search

log = logging.getLogger(__name__)

__all__ = ["LivePipelineConfig", "FrameResult", "ReconstructionResult", "LivePipeline", "VolumeSnapshot",
           "estimate_angles"]


class _FairMirrorPairs:
    """Mirror residuals of competing angle sets on pairs searched around all of them.

    Why: pairs found around one set's angles favour that set, and where it went wrong (a poor
    rate trace: 16 deg off on one benchmark seed) they are wrong too and reject every better
    orbit fit. Each set's wide search (:func:`find_partners`) is done once and kept: the
    starting trace is judged against the rounds of every orbit fit.
    """

    def __init__(self, projections: np.ndarray, offset_px: float, tilt_deg: float) -> None:
        self._bp = bandpass(np.asarray(projections, np.float32))
        self._geometry = (float(offset_px), float(tilt_deg))
        self._found: dict[bytes, list[tuple[float, float, float]]] = {}

    def residuals(self, angle_sets: list[np.ndarray]) -> list[float]:
        searches = []
        for a in angle_sets:
            key = np.asarray(a, np.float64).tobytes()
            if key not in self._found:
                self._found[key] = find_partners(self._bp, a, *self._geometry, 30.0)
            searches.append(self._found[key])
        pairs = best_partners(searches)
        return [float(mirror_residual(a, pairs)) for a in angle_sets]


@dataclass
class _OrbitFit:
    """One member of the orbit-fit ensemble in :func:`estimate_angles`."""

    band_weight: float
    angles: np.ndarray
    ref: Refinement | None
    starts: list[tuple[np.ndarray, Refinement]]  # every round's mirror-refined angles and geometry
    rounds_kept: int
    warp: dict[str, Any]


def _orbit_rounds(tracker: RotationTracker, projections: np.ndarray, ang: np.ndarray, ref: Refinement | None,
                  rounds: int, smooth: float, band_weight: float, step: Callable[[str], None],
                  flags: list[str], judge: _FairMirrorPairs | None,
                  warped: dict[bytes, tuple[np.ndarray, dict[str, Any]]]) -> _OrbitFit:
    """Joint orbit fit and mirror refinement, alternated ``rounds`` times from the mirror-refined
    rate trace, then the 180 deg-periodic warp (steps 3-4 of :func:`estimate_angles`).

    A round's angles replace the kept ones only if they agree better with mirror pairs found
    from the images around both (``judge``): short optical-flow tracks can pull the fit off.
    The rounds go on from the latest fit either way (per-frame starts). ``flags`` gets what
    went wrong (each message once). ``warped`` keeps each warp correction by its input angles:
    members that kept no round share the starting trace, whose correction is computed once.
    """
    def flag(msg: str) -> None:
        if msg not in flags:
            flags.append(msg)

    starts = [(ang, ref)] if ref is not None else []
    cur_ref, cur = ref, ang
    kept = 0
    tag = f" (slice-centroid weight {band_weight:g})"
    for r in range(rounds):
        step(f"joint orbit fit, round {r + 1} of {rounds}{tag}")
        fit = tracker.solve(tilt_deg=cur_ref.tilt_deg if cur_ref else None, init_deg=cur, band_weight=band_weight)
        if cur_ref is None:
            ang, kept = fit, r + 1
            break
        try:
            nref = refine_angles(projections, fit, offset0=cur_ref.axis_offset_px, tilt0=cur_ref.tilt_deg,
                                 smooth=smooth)
        except ReconstructionError as exc:
            # the fit lost the mirror partners: keep the last refined angles, not the fit
            flag(f"mirror refinement failed on the fitted angles: {exc}")
            break
        starts.append((nref.angles_deg, nref))
        assert judge is not None
        r_new, r_kept = judge.residuals([nref.angles_deg, ang])
        if r_new < r_kept:
            ref, ang, kept = nref, nref.angles_deg, r + 1
        else:
            flag("orbit-fit round did not improve the mirror pairs")
        cur_ref, cur = nref, nref.angles_deg
    warp: dict[str, Any] = {}
    if ref is not None:
        # the 180 deg-periodic warp that the mirror pairs cannot see, from the rows' centroids
        step(f"180 deg-periodic warp{tag}")
        key = np.asarray(ang, np.float64).tobytes()
        try:
            if key not in warped:
                out, pw = periodic_warp(projections, ang, ref.axis_offset_px, ref.tilt_deg)
                warped[key] = (out, {"harmonics": pw["harmonics"], "amplitude_deg": pw["amplitude_deg"]})
            ang, warp = warped[key]
        except ReconstructionError as exc:
            flag(f"periodic-warp correction skipped: {exc}")
    return _OrbitFit(float(band_weight), np.asarray(ang, np.float64), ref, starts, kept, warp)


def estimate_angles(
    tracker: RotationTracker,
    projections: np.ndarray,
    smooth: float = 100.0,
    rounds: int = 2,
    per_frame: bool = True,
    match_iterations: int = 8,
    min_match: float = 0.85,
    clear_gain: float = 0.02,
    shift_px: float = 2.0,
    band_weights: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0),
    member_tolerance: float = 1.1,
    progress: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, Refinement | None, dict[str, Any]]:
    """Angles of a finished sweep: track fit and mirror symmetry, alternated.

    1. rate: periodogram of all orbit tracks over a uniform trace (robust to a wrong nominal
       step); 2. mirror refinement of that trace (axis offset, tilt, 180 deg partners);
    3. ``rounds`` x (joint orbit fit of all tracks started from the refined angles with the
    mirror tilt, then mirror refinement again; a round is kept only if it agrees better with
    mirror pairs searched around both it and the kept angles, :class:`_FairMirrorPairs`);
    4. the 180 deg-periodic warp the mirror pairs cannot see, from the rows' centroid orbits
    (:func:`periodic_warp`). Steps 3-4 run once for each weight
    of a slice-centroid observation against an optical-flow one in ``band_weights`` and the
    angles are averaged: the flow tracks slide (about 1 px rms off their orbits at the true
    angles), the centroids do not but are noisy on their small orbits (0.5 px on 1.5 px), no
    single weight is best, and each fit ends in its own 180 deg-periodic warp, the mode the data
    hardly constrain. A member whose mirror residual exceeds ``member_tolerance`` times the best
    member's is left out of the average (it went wrong: on stick-slip sweeps the centroid-heavy
    fits smear the stalls). 5. (``per_frame``) every frame's own
    angle, with no smoothness prior (a trapped cell turns in bursts and pauses): the moment
    fit of all rows (:func:`moment_angles`), then projection matching against the volume
    (:func:`match_projections`), from the first and the last round's angles; kept only where
    they match the projections better and the mirror pairs too, or the match clearly
    (``clear_gain``); 6. (``per_frame``) the axis offset fine-tuned by matching (the median
    lateral shift, searched within ``shift_px``, that moves the frames onto their views), then
    one last matching pass that moves every frame, frame 0 included, to its best match (frame
    0's own error would shift every reported angle). Sweeps under 180 deg skip the mirror and
    per-frame steps.
    ``projections`` (T, H, W) line integrals of the same frames the tracker saw. ``progress``
    is called with the name of each step as it starts (they take seconds: shown to the operator).
    Returns (angles deg, last refinement or None, info).
    """
    if not band_weights or min(band_weights) <= 0:
        raise ValueError(f"band_weights must be one or more positive weights, got {band_weights!r}")
    n = len(tracker.angles_deg)
    info: dict[str, Any] = {"flags": []}
    live = np.asarray(tracker.angles_deg, np.float64)
    k, f, u, _v, _w = tracker.observations()
    sign = 1.0 if tracker.cfg.direction >= 0 else -1.0
    trace = sign * np.arange(n, dtype=np.float64)
    if u.size < 10:
        info["flags"].append("too few feature observations; angles from the live estimate")
        return live, None, info
    step = progress or (lambda _name: None)
    step("rotation rate from all tracks")
    g = scale_search(k, f, u, trace, 0.1, 10.0, 241)
    info["rate_deg_per_frame"] = g
    ang = trace * g
    ref: Refinement | None = None
    step("mirror symmetry: axis, tilt, angle scale")
    try:
        ref = refine_angles(projections, ang, smooth=smooth)
        ang = ref.angles_deg
    except ReconstructionError as exc:
        info["flags"].append(f"mirror refinement skipped: {exc}")
    # steps 3-4 once per slice-centroid weight; the members' angles are averaged
    judge = _FairMirrorPairs(projections, ref.axis_offset_px, ref.tilt_deg) if ref is not None else None
    warped: dict[bytes, tuple[np.ndarray, dict[str, Any]]] = {}
    members = [_orbit_rounds(tracker, projections, ang, ref, rounds, smooth, bw, step, info["flags"], judge, warped)
               for bw in (band_weights if rounds > 0 else band_weights[:1])]
    # a member whose angles clearly disagree more with the mirror pairs than the best one's went
    # wrong (on stick-slip sweeps the centroid-heavy fits smear the stalls): left out
    mres: list[float | None] = [None] * len(members)
    used = [True] * len(members)
    if judge is not None:
        res = judge.residuals([m.angles for m in members])
        mres, used = list(res), [r <= member_tolerance * min(res) for r in res]
    info["orbit_fits"] = [{"band_weight": m.band_weight, "rounds_kept": m.rounds_kept, "mirror_residual_deg": r,
                           "averaged": u, **({"periodic_warp": m.warp} if m.warp else {})}
                          for m, r, u in zip(members, mres, used)]
    members = [m for m, u in zip(members, used) if u]
    starts = members[0].starts
    if len(members) > 1:
        stack = np.stack([m.angles - m.angles[0] for m in members])
        ang = stack.mean(axis=0)
        info["orbit_fit_spread_deg"] = float(np.mean(np.abs(stack - ang)))
        refs = [m.ref for m in members if m.ref is not None]
        ref = dataclasses.replace(refs[0], angles_deg=ang,
                                  axis_offset_px=float(np.mean([r.axis_offset_px for r in refs])),
                                  tilt_deg=float(np.mean([r.tilt_deg for r in refs]))) if refs else None
    else:
        ang, ref = members[0].angles, members[0].ref
    if per_frame and ref is not None:
        # kept only if the projections agree better with their volume (median leave-half-out
        # NCC, and at least ``min_match``: below it the match is noise-dominated and the per-frame
        # angles wander) and the mirror pairs, measured from the images alone, agree better
        # too or the match gains clearly (``clear_gain``): a guard against a search that locked
        # on wrong minima. The fine per-frame correction is the last pass below.
        step("per-frame angles: projection moments and matching")
        off, tilt = ref.axis_offset_px, ref.tilt_deg
        base = match_score(projections, ang, off, tilt)
        # coarse (low order, wide search: the start may be off by tens of degrees where the
        # tracks failed) then fine, from the first and the last mirror-refined angles (the search
        # ends in different minima from different starts); the best match wins. Matched on the
        # cell's core, like the moments: from such a start, 8 passes over the whole cell, phase
        # halo included, drifted (simulated rig: 2.0 deg against 0.9 deg on the core)
        best: tuple[float, np.ndarray, Refinement] | None = None
        for start, sref in (starts[0], starts[-1]) if len(starts) > 1 else (starts[0],):
            so, st = sref.axis_offset_px, sref.tilt_deg
            c = moment_angles(projections, start, so, st, order=3, search_deg=25.0, step_deg=0.25)
            c = moment_angles(projections, c, so, st, order=4, search_deg=8.0)
            if match_iterations > 0:
                c = match_projections(projections, c, so, st, iterations=match_iterations, whole_cell=False)[0]
            sc = match_score(projections, c, so, st)
            if best is None or sc > best[0]:
                best = (sc, c, sref)
        assert best is not None
        score, cand, cref = best
        # mirror pairs searched widely around both sets (the refinement's own pairs favour its
        # angles, and where it went wrong they are wrong too)
        m0, m1 = _FairMirrorPairs(projections, off, tilt).residuals([ang, cand])
        info["per_frame"] = {"match_before": base, "match_after": score, "mirror_before_deg": m0,
                             "mirror_after_deg": m1}
        # a clear gain in the match (signal-dominated there) overrides the mirror check, which
        # only holds as far as the imaging keeps the 180 deg mirror symmetry
        if score > max(base, min_match) and (m1 < m0 or score > base + clear_gain):
            ang, ref = cand, cref
        else:
            info["flags"].append(f"per-frame angles rejected (match {score:.4f} vs {base:.4f}, "
                                 f"mirror pairs {m1:.2f} vs {m0:.2f} deg)")
        if match_iterations > 0:
            # the axis, fine-tuned: the median lateral shift that moves the frames onto their
            # matched views (frame by frame a shift trades against the angle, so only the median
            # is used), then one matching pass in which every frame, frame 0 included, moves to
            # its best match
            step("axis fine-tune and last matching pass")
            _, probe = match_projections(projections, ang, ref.axis_offset_px, ref.tilt_deg, iterations=1,
                                         shift_px=shift_px)
            shift = float(np.median(probe["shifts"]))
            info["axis_shift_px"] = shift
            ref = dataclasses.replace(ref, axis_offset_px=ref.axis_offset_px - shift)
            ang, _ = match_projections(projections, ang, ref.axis_offset_px, ref.tilt_deg, iterations=1)
    return ang - ang[0], ref, info


@dataclass
class LivePipelineConfig:
    """Per-acquisition settings of :class:`LivePipeline`.

    Detection schedule: the full frame goes through the detector on every frame until a cell
    is found (that places the fixed ROI), then once every ``detect_every`` frames (default 10,
    a box refresh for display and monitoring: the learned detector's box-only call costs
    ~15-30 ms on one CPU thread, so this keeps it to 2-3 ms per frame and the pipeline above
    100 frames/s on 2 cores). In between, the ROI is reused: the crop must stay fixed on the
    rotation axis for the tomography, and the segmentation of the crop follows the cell every
    frame anyway. Detectors with a cheap box-only path
    (:class:`~mcf_rotator.reconstruction.detection.BoxDetector`) are called through it.
    """

    roi_px: int = 256  # fixed crop side (full-frame pixels)
    volume_size: int = 128  # reconstruction grid (crops are resampled to this)
    detect_every: int = 10  # frames between full-frame detections once a cell is found (>= 1)
    cell_px: float = 140.0
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


def _lower_thread_priority(nice: int = 10) -> None:
    """Let the calling thread yield the CPU to the per-frame work (Linux: per-thread nice)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


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

    From ``resolve_every`` frames on, each time the frames have grown 1.5x, the live angles are
    re-solved on a worker thread (:func:`resolve_live_angles`); when a re-solve is done the live
    volume is replaced by its rebuild and later frames continue from its last angle (plus the
    tracker's live steps).
    """

    def __init__(self, config: LivePipelineConfig | None = None) -> None:
        self.cfg = config or LivePipelineConfig()
        self.detector = self.cfg.detector or ClassicalDetector(cell_px=self.cfg.cell_px)
        if self.cfg.detect_every < 1:
            raise ReconstructionError(f"detect_every must be >= 1, got {self.cfg.detect_every}")
        self.n_detections = 0  # full-frame detector calls so far
        self.detect_seconds = 0.0  # time spent in them
        self.segmenter = self.cfg.segmenter or ClassicalSegmenter()
        tc = dataclasses.replace(self.cfg.tracker, direction=self.cfg.direction,
                                 nominal_step_deg=self.cfg.nominal_step_deg)
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
        self._shift = 0.0  # re-solved minus tracked angle at the last adopted re-solve
        self._resolver: threading.Thread | None = None
        self._resolved: _Resolved | BaseException | None = None
        self._cancel_resolve = threading.Event()
        self.n_resolves = 0  # re-solves adopted so far
        self._resolve_n = 0  # frames in the last re-solve started

    def _place_roi(self, shape: tuple[int, int], cx: float, cy: float) -> tuple[int, int, int, int]:
        r = self.cfg.roi_px
        h, w = shape
        if r > h or r > w:
            raise ReconstructionError(f"ROI {r} px does not fit the {w}x{h} frame")
        x0 = int(np.clip(round(cx - r / 2), 0, w - r))
        y0 = int(np.clip(round(cy - r / 2), 0, h - r))
        return x0, y0, x0 + r, y0 + r

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

    def process(self, image: np.ndarray, timestamp: float) -> FrameResult:
        """Process one full camera frame; never raises for a frame without a cell (ok=False).

        Detection follows the schedule of :class:`LivePipelineConfig` (``detect_every``).
        """
        t0 = time.perf_counter()
        idx = self._index
        self._index += 1
        if self._roi is None or idx % self.cfg.detect_every == 0:
            dets = self._detect(image)
            if dets:
                self._box = dets[0].box
                if self._roi is None:
                    x0, y0, x1, y1 = self._box
                    self._roi = self._place_roi(np.shape(image)[:2], (x0 + x1) / 2, (y0 + y1) / 2)
            elif self._roi is None:
                return FrameResult(idx, None, None, None, None, None, False)
        x0, y0, x1, y1 = self._roi
        crop = to_gray_float(image[y0:y1, x0:x1])  # only the ROI is converted
        mask = self.segmenter.segment(crop)
        contour = outer_contour(mask) if mask.any() else None
        if contour is None:
            return FrameResult(idx, self._box, None, None, None, None, False)
        cx, cy, r = enclosing_circle(contour)
        if self._i0 is None:
            self._i0 = border_level(crop)
        n = self.cfg.volume_size
        if crop.shape[0] != n:
            small = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA)
            small_mask = cv2.resize(mask.astype(np.uint8), (n, n), interpolation=cv2.INTER_NEAREST).astype(bool)
        else:
            small, small_mask = crop, mask
        # the tracker works on the reconstruction grid: the same pixels the refinement and the
        # back-projection see, and 4x fewer than a 256 px crop
        angle = self.tracker.update(small, small_mask) + self._shift
        proj = -np.log(np.clip(small / self._i0, 1e-3, None)).astype(np.float32)
        self.projections.append(proj)
        self.angles.append(angle)
        self.timestamps.append(float(timestamp))
        self.recon.add(proj, angle)
        self._adopt_resolve()
        n_now, every = len(self.projections), self.cfg.resolve_every
        if every > 0 and self._resolver is None and n_now >= max(every, 1.5 * self._resolve_n):
            self._start_resolve()
        scale = crop.shape[0] / n
        feats = (self.tracker.features + 0.5) * np.float32(scale) - 0.5 + np.array([x0, y0], np.float32)
        self._t_process += time.perf_counter() - t0
        return FrameResult(idx, self._box, contour + [x0, y0], (cx + x0, cy + y0, r), feats, float(angle), True)

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
        return self.recon.snapshot()

    def finalize(self, angles_deg: np.ndarray | None = None,
                 progress: Callable[[str], None] | None = None) -> ReconstructionResult:
        """Final angles (track fit + mirror symmetry), batch FBP; ``angles_deg`` overrides them.

        ``progress`` is called with the name of each step as it starts (see :func:`estimate_angles`).
        """
        self.close()  # a preview re-solve still in flight is dropped: the final angles replace it
        n_used = len(self.projections)
        if n_used < self.cfg.min_frames:
            raise ReconstructionError(f"only {n_used} frames with a cell; need at least {self.cfg.min_frames}")
        t0 = time.perf_counter()
        proj = np.stack(self.projections)
        report: dict[str, Any] = {"frames_used": n_used, "frames_seen": self._index, "flags": []}
        offset, tilt = 0.0, 0.0
        if angles_deg is not None:
            ang = np.asarray(angles_deg, np.float64)
        elif self.cfg.refine:
            ang, ref, info = estimate_angles(self.tracker, proj, smooth=self.cfg.smooth, per_frame=self.cfg.per_frame,
                                             match_iterations=self.cfg.match_iterations, progress=progress)
            report["flags"] += info.pop("flags")
            report.update(info)
            if ref is not None:
                offset, tilt = ref.axis_offset_px, ref.tilt_deg
                report["mirror_pairs"] = len(ref.anchors)
                report["mirror_match_error"] = ref.match_error
        else:
            ang = np.asarray(self.tracker.angles_deg, np.float64)
        coverage = float(np.ptp(ang))
        if coverage < 180.0:
            report["flags"].append(f"partial: angle coverage {coverage:.1f} deg < 180 deg (limited-angle artefacts)")
        weights = "circular" if coverage >= 180.0 else "trapezoid"
        if progress is not None:
            progress("filtered back-projection")
        vol = fbp(proj, ang, axis_offset_px=offset, tilt_deg=tilt, filter_name=self.cfg.filter_name, weights=weights)
        report.update(
            coverage_deg=coverage,
            axis_offset_px=offset * self.cfg.roi_px / self.cfg.volume_size,
            tilt_deg=tilt,
            timings_s={"per_frame_mean": self._t_process / max(n_used, 1), "finalize": time.perf_counter() - t0,
                       "detect_mean": self.detect_seconds / max(self.n_detections, 1)},
            detections=self.n_detections,
        )
        return ReconstructionResult(vol, ang, offset, tilt, report)
