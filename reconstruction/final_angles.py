"""Final angles of a finished sweep: track fit and mirror symmetry, alternated.

:func:`estimate_angles` runs on registered projections (every frame re-centred on the cell's
centre of mass, :mod:`.registration`) and on a :class:`~.tracking.RotationTracker` that has
tracked those same frames. :func:`angle_confidence` says in words how far the result can be
trusted. The research notes behind each step are in docs/angles.md.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mcf_rotator.errors import ReconstructionError
from mcf_rotator.reconstruction.refinement import (
    Refinement,
    _normalise,
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
from mcf_rotator.reconstruction.tracking import RotationTracker, scale_search

__all__ = ["estimate_angles", "angle_confidence", "mirror_checked_share"]

#: threads for the independent steps of :func:`estimate_angles` (orbit-fit members, per-frame
#: starts); two, or one on a single-core machine
ANGLE_THREADS = min(2, os.cpu_count() or 1)


class _FairMirrorPairs:
    """Mirror residuals of competing angle sets on pairs searched around all of them.

    Why: pairs found around one set's angles favour that set, and where it went wrong (a poor
    rate trace: 16 deg off on one benchmark seed) they are wrong too and reject every better
    orbit fit. Each set's wide search (:func:`find_partners`) is done once and kept: the
    starting trace is judged against the rounds of every orbit fit.
    """

    def __init__(self, projections: np.ndarray, offset_px: float, tilt_deg: float) -> None:
        self._bp = bandpass(np.asarray(projections, np.float32))
        self._flat = _normalise(self._bp)
        self._geometry = (float(offset_px), float(tilt_deg))
        self._found: dict[bytes, list[tuple[float, float, float]]] = {}

    def residuals(self, angle_sets: list[np.ndarray]) -> list[float]:
        searches = []
        for a in angle_sets:
            key = np.asarray(a, np.float64).tobytes()
            if key not in self._found:
                self._found[key] = find_partners(self._bp, a, *self._geometry, 30.0, normalised=self._flat)
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


def _parallel(tasks: list[Callable[[], Any]]) -> list[Any]:
    """Run independent steps on up to ``ANGLE_THREADS`` threads; results in the tasks' order.

    Why threads: the steps are numpy / OpenCV / sparse products that release the GIL, and the
    final angle stage otherwise keeps one of the machine's cores idle. Each task only reads
    shared inputs (caches filled twice at worst, with the same values), so the result does not
    depend on the thread count."""
    if ANGLE_THREADS <= 1 or len(tasks) <= 1:
        return [t() for t in tasks]
    with ThreadPoolExecutor(max_workers=min(ANGLE_THREADS, len(tasks)), thread_name_prefix="angles") as pool:
        return list(pool.map(lambda t: t(), tasks))


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
    band_weights: tuple[float, ...] = (1.0, 3.0, 10.0, 100.0),
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
    fits smear the stalls). Four weights: on two threads five members ran as three rounds, four
    run as two, and the accuracy suite lost nothing (docs/angles.md). 5. (``per_frame``) every frame's own
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
    weights = band_weights if rounds > 0 else band_weights[:1]
    member_flags: list[list[str]] = [[] for _ in weights]
    members = _parallel([
        functools.partial(_orbit_rounds, tracker, projections, ang, ref, rounds, smooth, bw, step, fl, judge, warped)
        for bw, fl in zip(weights, member_flags)])
    for fl in member_flags:  # in the members' order, each message once, whichever thread ran first
        info["flags"].extend(m for m in fl if m not in info["flags"])
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
        def per_frame_from(start: np.ndarray, sref: Refinement) -> tuple[float, np.ndarray, Refinement]:
            so, st = sref.axis_offset_px, sref.tilt_deg
            c = moment_angles(projections, start, so, st, order=3, search_deg=25.0, step_deg=0.25)
            c = moment_angles(projections, c, so, st, order=4, search_deg=8.0)
            if match_iterations > 0:
                c = match_projections(projections, c, so, st, iterations=match_iterations, whole_cell=False)[0]
            return match_score(projections, c, so, st), c, sref

        chosen = (starts[0], starts[-1]) if len(starts) > 1 else (starts[0],)
        found = _parallel([functools.partial(per_frame_from, a0, r0) for a0, r0 in chosen])
        best = found[0]
        for cand_found in found[1:]:  # the first start wins a tie, as in a sequential search
            if cand_found[0] > best[0]:
                best = cand_found
        score, cand, cref = best
        # mirror pairs searched widely around both sets (the refinement's own pairs favour its
        # angles, and where it went wrong they are wrong too)
        m0, m1 = _FairMirrorPairs(projections, off, tilt).residuals([ang, cand])
        # how far the per-frame search moved the angles (offset-free): a well-determined sweep
        # stays within a degree or two of its orbit fit; kept or not, a large move says the
        # images pin the angles poorly (evidence for the confidence)
        diff = (cand - cand[0]) - (ang - ang[0])
        moved = float(np.median(np.abs(diff - np.median(diff))))
        info["per_frame"] = {"match_before": base, "match_after": score, "mirror_before_deg": m0,
                             "mirror_after_deg": m1, "moved_deg": moved}
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


def mirror_checked_share(angles_deg: np.ndarray) -> float:
    """Share of the frames that the 180 deg mirror check reaches: those whose angle lies within
    ``coverage - 180`` deg of either end of the sweep (a frame and its partner).

    Why: on a 200 deg sweep only the first and last 20 deg have partners; the pairs pin the total
    rotation, but say nothing about how the angles run in between, where the tracks alone decide
    (two suite sweeps of 200 and 219 deg were 15-20 deg off with a mirror residual under 1 deg).
    From 360 deg of coverage on, every frame is checked (1.0).
    """
    a = np.asarray(angles_deg, np.float64)
    a = a[np.isfinite(a)]
    if a.size < 2:
        return 0.0
    lo, hi = float(a.min()), float(a.max())
    reach = hi - lo - 180.0
    if reach <= 0:
        return 0.0
    return float(np.mean((a <= lo + reach) | (a >= hi - reach)))


def angle_confidence(report: dict[str, Any], good_mirror_deg: float = 1.5, bad_mirror_deg: float = 3.0,
                     bad_match: float = 0.5, angles_deg: np.ndarray | None = None,
                     min_checked_share: float = 0.5, moved_bad_deg: float = 10.0) -> dict[str, Any]:
    """How far the final angles can be trusted, from the evidence the angle stage left in ``report``.

    The mirror residual (deg): how far the 180 deg partners found in the images lie from where
    the angles put them, the one check independent of the tracks; on the accuracy suite it
    follows the angle error (about 1 deg of residual per 1-2 deg of mean error). The match
    (median leave-half-out NCC of every projection with the volume of the others). With
    ``angles_deg`` (the final angles), a sweep whose mirror check reaches under
    ``min_checked_share`` of the frames (:func:`mirror_checked_share`; under 240 deg) is at best
    ``uncertain``. Where the per-frame search moved the angles by more than ``moved_bad_deg``
    (median, offset-free; ``per_frame.moved_deg``) from the track fit, the level drops one step:
    the images then pin the angles poorly whichever set is kept (on the accuracy suite the move
    stayed under 8 deg on 20 of the 21 sweeps within 2.7 deg of the truth, and was over 10 deg
    on 12 of the 16 sweeps 5-417 deg off). Returns the level (``good`` /
    ``uncertain`` / ``unreliable``), the figures and the reasons in words.
    """
    pf = report.get("per_frame") or {}
    rejected = any(str(f).startswith("per-frame angles rejected") for f in report.get("flags", []))
    mirror = pf.get("mirror_before_deg" if rejected else "mirror_after_deg")
    match = pf.get("match_before" if rejected else "match_after")
    reasons: list[str] = []
    level = "good"
    if mirror is None:
        level = "uncertain"
        reasons.append("no 180 deg mirror check (the sweep is under 180 deg or the mirror pairs were not found)")
    elif mirror > bad_mirror_deg:
        level = "unreliable"
        reasons.append(f"the mirror pairs disagree with the angles by {mirror:.1f} deg (over {bad_mirror_deg:g})")
    elif mirror > good_mirror_deg:
        level = "uncertain"
        reasons.append(f"the mirror pairs disagree with the angles by {mirror:.1f} deg")
    checked = None
    if angles_deg is not None:
        checked = mirror_checked_share(angles_deg)
        if mirror is not None and checked < min_checked_share:
            if level == "good":
                level = "uncertain"
            cov = float(np.ptp(np.asarray(angles_deg, np.float64)[np.isfinite(angles_deg)]))
            reasons.append(f"the sweep covers {cov:.0f} deg, so the mirror check reaches only {100 * checked:.0f} % "
                           f"of the frames (all of them from 360 deg on); the angles in between rest on the "
                           f"tracks alone")
    moved = pf.get("moved_deg")
    if moved is not None and np.isfinite(moved) and moved > moved_bad_deg:
        level = "uncertain" if level == "good" else "unreliable"
        reasons.append(f"the per-frame search moved the angles by {moved:.1f} deg from the track fit (over "
                       f"{moved_bad_deg:g}): the images pin them poorly")
    if match is not None and match < bad_match:
        level = "unreliable"
        reasons.append(f"the projections match their own volume poorly (NCC {match:.2f})")
    return {"level": level, "mirror_residual_deg": mirror, "match_ncc": match, "mirror_checked_share": checked,
            "per_frame_moved_deg": moved, "reasons": reasons}
