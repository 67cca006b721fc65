"""Angle refinement from the mirror symmetry of parallel projections.

Why: optical-flow angles drift (features slide, a few percent of undercount is typical), but a
parallel projection obeys an exact symmetry: the view at ``theta + 180`` is the view at
``theta`` mirrored about the projected rotation axis. So every frame ``t`` of a sweep longer than
180 deg has a partner ``t'`` (fractional, between two frames) with ``theta(t') - theta(t) = 180``.

Steps (all on band-passed optical-depth crops, so the match is sharp):

1. axis: the mirror line (column ``(W-1)/2 + offset``, in-plane ``tilt``) that best maps frames
   onto their partners; mirroring about it is ``fliplr``, a shift of ``2 * offset`` columns and a
   rotation by ``2 * tilt``;
2. partners: for every frame, normalised cross-correlation of its mirror image with the frames
   whose tracked angle lies near ``theta(t) + 180``; a parabola through the best three gives the
   sub-frame position;
3. time-warp: the tracked angles get a smooth correction (piecewise linear in the frame index,
   least squares with a smoothness penalty) that satisfies all ``+180`` constraints. Errors that
   repeat every 180 deg are invisible to the symmetry; the penalty leaves them to the tracker.

The 180 deg-periodic part of the error (a warp ``w`` with ``w(theta + 180) = w(theta)``, which
turns every mirror pair by the same amount: a stretched volume) is taken out by
:func:`periodic_warp`: every row's centroid must run on a pure sinusoid of the true angle
(first Helgason-Ludwig moment), and a few harmonics of ``2 theta`` are fitted to make it so.

Per-frame angles (no smoothness prior; the rig's cell stalls and bursts):
:func:`moment_angles` (Helgason-Ludwig consistency of every row's projection moments) and
:func:`match_projections` (each frame against reprojections of the volume of the other frames).
:func:`mirror_residual` checks angles against the mirror pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from mcf_rotator.errors import ReconstructionError

__all__ = ["Refinement", "bandpass", "mirror_image", "find_partners", "estimate_axis", "warp_angles", "refine_angles",
           "mirror_residual", "best_partners", "moment_angles", "match_projections", "row_centroids", "periodic_warp",
           "common_partners"]


@dataclass
class Refinement:
    """Refined angles (deg) and the rotation axis found by the mirror symmetry."""

    angles_deg: np.ndarray
    axis_offset_px: float
    tilt_deg: float
    anchors: list[tuple[float, float]]  # (frame, fractional partner frame) pairs 180 deg apart
    match_error: float  # median 1 - NCC of the partner matches
    scale: float = 1.0  # refined / tracked total rotation
    info: dict = field(default_factory=dict)


def bandpass(images: np.ndarray, low: float = 1.0, high: float = 6.0) -> np.ndarray:
    """Difference of Gaussians of each (H, W) image: keeps cell texture, drops noise and shading."""
    a = np.asarray(images, np.float32)
    out = np.empty_like(a)
    for i, im in enumerate(a.reshape(-1, *a.shape[-2:])):
        out.reshape(-1, *a.shape[-2:])[i] = cv2.GaussianBlur(im, (0, 0), low) - cv2.GaussianBlur(im, (0, 0), high)
    return out


@lru_cache(maxsize=64)
def _reflection(shape: tuple[int, int], offset_px: float, tilt_deg: float) -> np.ndarray:
    """2x3 affine map of the reflection about the axis line (its own inverse; cached: every frame
    of a search is mirrored about the same line). Read-only."""
    h, w = shape
    t = np.deg2rad(tilt_deg)
    p = np.array([[-np.cos(2 * t), -np.sin(2 * t)], [-np.sin(2 * t), np.cos(2 * t)]])
    p0 = np.array([(w - 1) / 2.0 + offset_px, (h - 1) / 2.0])
    m = np.hstack([p, (p0 - p @ p0)[:, None]])
    m.flags.writeable = False
    return m


def mirror_image(image: np.ndarray, offset_px: float = 0.0, tilt_deg: float = 0.0) -> np.ndarray:
    """Mirror ``image`` about the rotation axis (column (W-1)/2 + offset, tilted as pose_matrix)."""
    img = np.asarray(image, np.float32)
    m = _reflection(img.shape[:2], float(offset_px), float(tilt_deg))
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _normalise(images: np.ndarray) -> np.ndarray:
    a = np.asarray(images, np.float64).reshape(len(images), -1)
    a = a - a.mean(axis=1, keepdims=True)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _subframe(scores: np.ndarray, k: int) -> float:
    """Parabolic peak position around index k of a sampled score curve."""
    if 0 < k < scores.size - 1:
        s0, s1, s2 = scores[k - 1], scores[k], scores[k + 1]
        den = s0 - 2 * s1 + s2
        if den < 0:
            return k + float(np.clip(0.5 * (s0 - s2) / den, -0.5, 0.5))
    return float(k)


def find_partners(
    bp: np.ndarray, angles_deg: np.ndarray, offset_px: float, tilt_deg: float, search_deg: float = 12.0,
    step: int = 1, period_deg: float = 180.0, normalised: np.ndarray | None = None,
) -> np.ndarray:
    """(frame, partner frame (fractional), NCC) rows for frames that have a +180 deg partner.

    ``bp`` band-passed projections (T, H, W); ``angles_deg`` tracked angles (monotone, any sign).
    Candidates lie within ``search_deg`` of the tracked ``theta(t) + 180``; a match at the edge
    of the search window is rejected (the true one may lie outside). ``period_deg=360`` finds
    the same view one turn later instead (no mirroring): on sweeps over 360 deg these pairs also
    reach the last frames, which have no +180 partner of their own. ``normalised``: the rows of
    ``_normalise(bp)``, passed by callers that search the same stack several times (it is the
    largest array the search makes).
    """
    a = np.asarray(angles_deg, np.float64)
    sgn = 1.0 if a[-1] >= a[0] else -1.0
    s = sgn * (a - a[0])
    flat = _normalise(bp) if normalised is None else normalised
    same_view = bool(np.isclose(np.mod(period_deg, 360.0), 0.0))  # a full turn: no mirroring
    rows = []
    for t in range(0, len(s), step):
        target = s[t] + period_deg
        if target > s[-1] - 0.1 * search_deg:  # a peak inside the window is still required
            break
        near = np.flatnonzero(np.abs(s - target) <= search_deg)
        if near.size < 3:
            continue
        lo, hi = int(near[0]), int(near[-1]) + 1  # contiguous even where noisy angles step back
        view = bp[t] if same_view else mirror_image(bp[t], offset_px, tilt_deg)
        m = _normalise(view[None])[0]
        sc = flat[lo:hi] @ m  # a slice: no copy of the candidates
        k = int(np.argmax(sc))
        if k == 0 or k == hi - lo - 1:
            continue
        rows.append((t, lo + _subframe(sc, k), float(sc[k])))
    return np.array(rows, np.float64).reshape(-1, 3)


def _interp_image(bp: np.ndarray, f: float) -> np.ndarray:
    i = int(np.floor(f))
    w = f - i
    return bp[i] if w <= 0 or i + 1 >= len(bp) else (1 - w) * bp[i] + w * bp[i + 1]


def estimate_axis(bp: np.ndarray, pairs: np.ndarray, offset0: float = 0.0, tilt0: float = 0.0,
                  n_pairs: int = 24) -> tuple[float, float]:
    """Axis (offset px, tilt deg) maximising the mirror NCC over the best ``n_pairs`` pairs.

    Coordinate search (offset then tilt, shrinking steps) on the summed NCC with sub-frame
    interpolated partners.
    """
    if len(pairs) == 0:
        raise ReconstructionError("no mirror pairs to estimate the rotation axis")
    best = pairs[np.argsort(-pairs[:, 2])[:n_pairs]]
    idx = np.linspace(0, len(best) - 1, min(len(best), n_pairs)).astype(int)
    sel = best[idx]
    targets = _normalise(np.stack([_interp_image(bp, f) for f in sel[:, 1]]))
    srcs = [bp[int(t)] for t in sel[:, 0]]

    scores: dict[tuple[float, float], float] = {}

    def score(off: float, tilt: float) -> float:
        # memoised: the coordinate search asks for the current point once per direction
        key = (off, tilt)
        if key not in scores:
            m = _normalise(np.stack([mirror_image(s, off, tilt) for s in srcs]))
            scores[key] = float(np.sum(m * targets))
        return scores[key]

    off, tilt = offset0, tilt0
    for d_off, d_tilt in ((1.0, 1.0), (0.25, 0.25), (0.06, 0.06)):
        for _ in range(8):
            moved = False
            for do, dt in ((d_off, 0), (-d_off, 0), (0, d_tilt), (0, -d_tilt)):
                if score(off + do, tilt + dt) > score(off, tilt) + 1e-9:
                    off, tilt, moved = off + do, tilt + dt, True
                    break
            if not moved:
                break
    # sub-step: parabolas along each axis
    for axis in (0, 1):
        h = 0.06
        pts = [(off - h, tilt), (off, tilt), (off + h, tilt)] if axis == 0 else [(off, tilt - h), (off, tilt), (off, tilt + h)]
        s0, s1, s2 = (score(*p) for p in pts)
        den = s0 - 2 * s1 + s2
        if den < 0:
            d = float(np.clip(0.5 * (s0 - s2) / den, -1, 1)) * h
            off, tilt = (off + d, tilt) if axis == 0 else (off, tilt + d)
    return off, tilt


def warp_angles(angles_deg: np.ndarray, pairs: np.ndarray, knot_every: int = 8, smooth: float = 1.0,
                period_deg: float = 180.0) -> np.ndarray:
    """Tracked angles corrected by a smooth piecewise-linear warp so partners are 180 deg apart.

    Unknowns: the correction ``e`` at knots every ``knot_every`` frames (``e(0) = 0``);
    constraints ``e(t') - e(t) = 180 - (theta(t') - theta(t))`` for every pair (a fourth column
    of ``pairs``, where given, holds that pair's own period: 360 for full-turn pairs), and a penalty
    ``smooth * (e_{k+1} - 2 e_k + e_{k-1})`` on the correction's curvature (trust the tracked
    increments locally; beyond the last pair the corrected rate carries on).
    """
    a = np.asarray(angles_deg, np.float64)
    n = a.size
    sgn = 1.0 if a[-1] >= a[0] else -1.0
    s = sgn * (a - a[0])
    knots = np.arange(0, n - 1 + knot_every, knot_every, dtype=np.float64)
    knots[-1] = max(knots[-1], n - 1)
    nk = knots.size

    def basis(f: np.ndarray) -> np.ndarray:
        f = np.clip(np.asarray(f, np.float64), 0, knots[-1])
        j = np.clip(np.searchsorted(knots, f, side="right") - 1, 0, nk - 2)
        w = (f - knots[j]) / (knots[j + 1] - knots[j])
        b = np.zeros((f.size, nk))
        b[np.arange(f.size), j] = 1 - w
        b[np.arange(f.size), j + 1] += w
        return b

    frames = np.arange(n, dtype=np.float64)
    if len(pairs):
        t, tp = pairs[:, 0], pairs[:, 1]
        rows = basis(tp) - basis(t)
        per = pairs[:, 3] if pairs.shape[1] > 3 else np.full(len(pairs), period_deg)
        rhs = per - (np.interp(tp, frames, s) - np.interp(t, frames, s))
        wts = np.clip(pairs[:, 2], 0.05, 1.0) if pairs.shape[1] > 2 else np.ones(len(pairs))
        rows, rhs = rows * wts[:, None], rhs * wts
    else:
        rows, rhs = np.zeros((0, nk)), np.zeros(0)
    d = (np.eye(nk, k=2) - 2 * np.eye(nk, k=1) + np.eye(nk))[:-2] * smooth  # curvature: extrapolates the rate
    a_mat = np.vstack([rows, d])[:, 1:]  # e(0) = 0
    b_vec = np.concatenate([rhs, np.zeros(d.shape[0])])
    e, *_ = np.linalg.lstsq(a_mat, b_vec, rcond=None)
    corr = basis(frames) @ np.concatenate([[0.0], e])
    out = s + corr
    # keep it monotone: the cell does not reverse between frames unless the tracker says so
    inc = np.diff(out)
    tracked_inc = np.diff(s)
    inc = np.where(np.sign(inc) == np.sign(tracked_inc), inc, 0.1 * tracked_inc)
    out = np.concatenate([[0.0], np.cumsum(inc)])
    return a[0] + sgn * out


def smooth_angles(angles_deg: np.ndarray, lam: float = 10.0) -> np.ndarray:
    """Whittaker smoother: ``argmin |a - angles|^2 + lam |D2 a|^2`` (second differences).

    Why: a trapped cell turns smoothly (viscous drag, constant drive, sub-degree Brownian
    jitter) while per-frame angle estimates are noisy; penalising the angular acceleration
    removes the noise without biasing the rate. ``lam = 0`` returns the input.
    """
    a = np.asarray(angles_deg, np.float64)
    n = a.size
    if lam <= 0 or n < 3:
        return a.copy()
    from scipy.sparse import diags, identity
    from scipy.sparse.linalg import spsolve

    d = diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n))
    out = spsolve((identity(n) + lam * (d.T @ d)).tocsc(), a)
    return out - out[0] + a[0]


def centroid_axis(projections: np.ndarray) -> float:
    """Coarse axis offset (px from the centre column): the mean mass centroid over the sweep.

    The centroid of a parallel projection orbits the axis (``c + A cos(theta - phi)``), so its
    average over the sweep is the axis to within a fraction of ``A``.
    """
    p = np.clip(np.asarray(projections, np.float64), 0, None)
    w = p.shape[-1]
    m0 = p.sum(axis=(1, 2))
    cx = (p.sum(axis=1) @ np.arange(w)) / np.maximum(m0, 1e-12)
    return float(np.mean(cx[m0 > 0]) - (w - 1) / 2.0) if np.any(m0 > 0) else 0.0


def refine_angles(
    projections: np.ndarray,
    angles_deg: np.ndarray,
    window_deg: float = 12.0,
    offset0: float | None = None,
    tilt0: float = 0.0,
    iterations: int = 2,
    smooth: float = 0.0,
) -> Refinement:
    """Refine tracked angles by the 180 deg mirror symmetry; estimate axis offset and tilt.

    ``projections`` (T, H, W): line integrals (-log I/I0) of crops centred on the cell (the
    axis near the centre column). Needs a sweep of at least 180 deg plus a few frames.
    ``smooth`` > 0 applies :func:`smooth_angles` (rotation assumed smooth) after the warp.
    """
    p = np.asarray(projections, np.float32)
    a = np.asarray(angles_deg, np.float64)
    if p.ndim != 3 or len(p) != a.size:
        raise ReconstructionError(f"{a.size} angles for projections of shape {p.shape}")
    cov = abs(a[-1] - a[0])
    if cov < 180.0 + 0.25 * window_deg:
        raise ReconstructionError(f"angle coverage {cov:.0f} deg is under 180 deg; no mirror partners")
    bp = bandpass(p)
    off = centroid_axis(p) if offset0 is None else float(offset0)
    tilt = tilt0
    # coarse axis on smoother images (the fine texture decorrelates a few pixels off the axis)
    # and a wide search: the tracked angles may be off by 10 % (18 deg at 180)
    coarse = bandpass(p, 2.0, 8.0)
    n_coarse, n_bp = _normalise(coarse), _normalise(bp)  # each searched several times below
    cur = a.copy()
    pairs = find_partners(coarse, a, off, tilt, 2.5 * window_deg, step=2, normalised=n_coarse)
    if len(pairs) >= 3:
        off, tilt = estimate_axis(coarse, pairs, off, tilt)
        pairs = find_partners(coarse, a, off, tilt, 2.5 * window_deg, step=1, normalised=n_coarse)
        if len(pairs) >= 3:
            cur = warp_angles(a, pairs)
    pairs = np.zeros((0, 3))
    for it in range(iterations):
        pairs = find_partners(bp, cur, off, tilt, window_deg, step=1 if it == iterations - 1 else 3, normalised=n_bp)
        if len(pairs) < 3:
            raise ReconstructionError("too few mirror partners found; is the sweep over 180 deg?")
        off, tilt = estimate_axis(bp, pairs, off, tilt)
        pairs = find_partners(bp, cur, off, tilt, window_deg, normalised=n_bp)
        if len(pairs) < 3:
            raise ReconstructionError("too few mirror partners found after the axis fit")
        both = pairs
        if it == iterations - 1 and abs(cur[-1] - cur[0]) > 360.0 + window_deg:
            # full-turn pairs reach the frames after the last mirror partner
            turn = find_partners(bp, cur, off, tilt, window_deg, period_deg=360.0, normalised=n_bp)
            if len(turn):
                both = np.vstack([np.c_[pairs, np.full(len(pairs), 180.0)], np.c_[turn, np.full(len(turn), 360.0)]])
        cur = smooth_angles(warp_angles(a, both), smooth)
    err = float(np.median(1.0 - pairs[:, 2]))
    scale = float((cur[-1] - cur[0]) / (a[-1] - a[0])) if a[-1] != a[0] else 1.0
    anchors = [(float(t), float(tp)) for t, tp, _ in pairs]
    return Refinement(cur, float(off), float(tilt), anchors, err, scale, {"n_pairs": len(pairs)})


def mirror_residual(angles_deg: np.ndarray, anchors: list[tuple[float, float]]) -> float:
    """Mean |theta(t') - theta(t) - 180| (deg) over mirror pairs (t, fractional t').

    The pairs come from the images' mirror symmetry, independently of any angle estimate: a
    check on angles that were not fitted to them.
    """
    a = np.asarray(angles_deg, np.float64)
    if not len(anchors) or a.size < 2:
        return float("nan")
    an = np.asarray(anchors, np.float64)
    sgn = 1.0 if a[-1] >= a[0] else -1.0
    d = np.interp(an[:, 1], np.arange(a.size), a) - np.interp(an[:, 0], np.arange(a.size), a)
    return float(np.mean(np.abs(sgn * d - 180.0)))


def common_partners(projections: np.ndarray, angle_sets: list[np.ndarray], offset_px: float, tilt_deg: float,
                    search_deg: float = 30.0) -> list[tuple[float, float]]:
    """Mirror pairs that judge competing angle sets fairly: per frame, the best partner found
    within ``search_deg`` of any set's prediction.

    Why: pairs found around one set's angles favour that set (a search that starts wrong can
    lock on a wrong partner and then agree with itself); the best normalised correlation over
    the union of the wide windows does not depend on which set is right.
    """
    bp = bandpass(np.asarray(projections, np.float32))
    flat = _normalise(bp)
    return best_partners([find_partners(bp, a, offset_px, tilt_deg, search_deg, normalised=flat) for a in angle_sets])


def best_partners(searches: list[list[tuple[float, float, float]]]) -> list[tuple[float, float]]:
    """Per frame, the partner with the best match over several :func:`find_partners` searches
    ((frame, fractional partner, NCC) each): the pairs of :func:`common_partners`."""
    best: dict[int, tuple[float, float]] = {}
    for found in searches:
        for t, tp, ncc in found:
            if int(t) not in best or ncc > best[int(t)][1]:
                best[int(t)] = (float(tp), float(ncc))
    return [(float(t), tp) for t, (tp, _) in sorted(best.items())]


# --------------------------------------------------------------------------- projection matching
def match_projections(
    projections: np.ndarray,
    angles_deg: np.ndarray,
    axis_offset_px: float = 0.0,
    tilt_deg: float = 0.0,
    iterations: int = 8,
    search_deg: tuple[float, ...] = (3.0,),
    step_deg: float = 0.5,
    filter_name: str = "hann",
    blur_px: float = 1.0,
    highpass_px: float = 3.0,
    shift_px: float = 0.0,
    shift_step_px: float = 0.5,
    whole_cell: bool = True,
) -> tuple[np.ndarray, dict]:
    """Per-frame angles by projection matching: reproject the FBP volume, pick each frame's angle.

    Why: the tracked (and mirror-warped) angles carry the smoothness of their priors, while the
    trapped cell turns in bursts and pauses. Every frame is compared (normalised correlation)
    with reprojections of the current reconstruction on an angle grid (``step_deg``) within
    ``search_deg`` of its current angle; a parabola through the best three gives the sub-step
    angle. Frames are split into two interleaved halves and each half is matched against the
    volume of the other (a frame's own back-projection would pull the match to its current
    angle), the second half against the first half's new angles (Gauss-Seidel; updating both
    at once makes their relative offset oscillate). The start's median angle is kept (gauge):
    frame 0, the reference of every reported angle, is matched like any other frame (were it
    the gauge, its own error would shift all the others).
    Images are compared after a ``blur_px`` Gaussian and with the ``highpass_px`` Gaussian
    subtracted (the granules carry the angle; the smooth body barely does).
    ``shift_px`` > 0 also searches a lateral shift of every frame (within +-``shift_px`` on a
    ``shift_step_px`` grid, the peak refined by a parabola); ``info["shifts"]`` holds the shift
    (px) that moves each frame onto its matched view: a cell drawn ``d`` px right of the given
    axis gives ``-d``. Frame by frame a shift trades against the angle (0.3 px reads as about
    1 deg for a granule 15 px from the axis, and a slow drift is absorbed by the volume), so use
    the shifts together: their median corrects the axis offset. ``whole_cell=False`` compares
    only the cell's core (the window of :func:`moment_angles`; see :func:`_cell_extent`).

    Known limit: warps of the angles periodic in 180 deg (``a sin 2theta + b cos 2theta``,
    ...) are seen only weakly (the volume adapts to them), so the result keeps part of the
    start's warp: start from :func:`moment_angles`. ``iterations=0`` only scores the given
    angles. Returns (angles deg, info with the per-frame best NCC ``scores``).
    """
    from mcf_rotator.reconstruction.fbp import BackProjector, fbp, undo_tilt

    p = np.asarray(projections, np.float32)
    a = np.asarray(angles_deg, np.float64).copy()
    n, h, w = p.shape
    axis_col = (w - 1) / 2.0 + axis_offset_px
    pt = undo_tilt(p, tilt_deg, axis_col)
    # rows and columns the cell occupies (the rest is background and costs time)
    r0, r1, halfw = _cell_extent(pt, axis_col, whole_cell)
    half = int(np.ceil(halfw)) + 2
    c0 = int(np.floor(axis_col)) - half
    c1 = c0 + 2 * half + 1
    pad_l, pad_r = max(0, -c0), max(0, c1 - w)
    sub = np.pad(pt[:, r0:r1], ((0, 0), (0, 0), (pad_l, pad_r)))[:, :, c0 + pad_l : c1 + pad_l]
    off = axis_col - (c0 + (c1 - c0 - 1) / 2.0)

    def prep(img: np.ndarray) -> np.ndarray:
        out = cv2.GaussianBlur(img, (0, 0), blur_px) if blur_px > 0 else img
        return out - cv2.GaussianBlur(img, (0, 0), highpass_px) if highpass_px > 0 else out

    sub_m = np.stack([prep(s) for s in sub])
    ncol = sub.shape[2]
    grid = np.arange(0.0, 360.0, step_deg)
    op = BackProjector(grid, ncol, ncol, off, np.full(grid.size, 2.0), circle=True)
    fwd, keep = op.matrix.T.tocsr(), op.pixels  # forward projector of the in-circle pixels
    halves = [np.arange(0, n, 2), np.arange(1, n, 2)]
    info: dict = {"scores": None, "crop": (int(r0), int(r1), int(c0), int(c1))}
    score = np.zeros(n)
    shift = np.zeros(n)
    k_max = int(np.floor(max(shift_px, 0.0) / shift_step_px + 1e-9)) if shift_step_px > 0 else 0
    shifts = shift_step_px * np.arange(-k_max, k_max + 1, dtype=np.float64)
    for it in range(max(iterations, 1)):
        # iterations == 0: only score the given angles (window 0)
        win = search_deg[min(it, len(search_deg) - 1)] if iterations > 0 else 0.0
        new = a.copy()
        for k in range(2):
            src, dst = halves[1 - k], halves[k]
            cur = new if iterations > 0 else a
            vol = fbp(sub[src], cur[src], axis_offset_px=off, weights="circular", filter_name=filter_name, size=ncol)
            pix = vol.reshape(vol.shape[0], -1)  # (H', size*size)
            # only the grid angles some frame of this half searches are reprojected (scoring
            # alone needs one per frame, not the whole grid); each row of the sparse product is
            # the same sum either way, so the values do not change
            m = int(round(win / step_deg))
            cands = {int(t): (np.round(a[t] / step_deg) + np.arange(-m, m + 1)) * step_deg for t in dst}
            gis = {t: np.rint(np.mod(c, 360.0) / step_deg).astype(int) % grid.size for t, c in cands.items()}
            need = np.unique(np.concatenate(list(gis.values()))) if gis else np.zeros(0, int)
            if need.size > 0.75 * grid.size:
                need, rows_fwd = np.arange(grid.size), fwd
            else:
                rows_fwd = fwd[(need[:, None] * ncol + np.arange(ncol)).ravel()]
            where = np.full(grid.size, -1)
            where[need] = np.arange(need.size)
            reproj = rows_fwd @ np.ascontiguousarray(pix[:, keep].T)  # (needed * ncol, H')
            reproj = reproj.reshape(need.size, ncol, -1).transpose(0, 2, 1).reshape(need.size, -1)
            if blur_px > 0 or highpass_px > 0:
                reproj = np.stack([prep(r.reshape(-1, ncol)).ravel() for r in reproj])
            rc = reproj - reproj.mean(axis=1, keepdims=True)
            rc /= np.maximum(np.linalg.norm(rc, axis=1, keepdims=True), 1e-12)
            for t in dst:
                cand, gi = cands[int(t)], where[gis[int(t)]]
                sc = np.stack([(rc[gi] @ x) for x in _shifted(sub_m[t], shifts)])  # (shifts, angles)
                i, j = np.unravel_index(int(np.argmax(sc)), sc.shape)
                score[t] = sc[i, j]
                new[t] = cand[j] + step_deg * (_subframe(sc[i], j) - j)
                shift[t] = shifts[i] + shift_step_px * (_subframe(sc[:, j], i) - i)
        if iterations > 0:
            info["matched"] = new.copy()  # before the gauge shift
            a = new - np.median(new - a)
    info["scores"] = score
    info["shifts"] = shift
    return a, info


def _shifted(image: np.ndarray, shifts: np.ndarray) -> list[np.ndarray]:
    """The (filtered) image moved right by each of ``shifts`` px, each flattened, centred, unit norm.

    Linear interpolation; the border is the filtered background (zero), so a shift brings no
    edge into view."""
    out = []
    h, w = image.shape
    for dx in shifts:
        img = image if dx == 0 else cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, 0]]), (w, h),
                                                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        x = img.ravel().astype(np.float64)
        x = x - x.mean()
        out.append(x / max(float(np.linalg.norm(x)), 1e-12))
    return out


def match_score(projections: np.ndarray, angles_deg: np.ndarray, axis_offset_px: float = 0.0,
                tilt_deg: float = 0.0) -> float:
    """Median leave-half-out match (NCC) of the projections with their volume at these angles:
    the yardstick for choosing between angle sets (no search, :func:`match_projections`)."""
    return float(np.median(match_projections(projections, angles_deg, axis_offset_px, tilt_deg,
                                             iterations=0)[1]["scores"]))


def _edge_level(profile: np.ndarray) -> float:
    """Background level of a 1D profile from its two ends (the outer sixteenth on each side)."""
    k = max(2, profile.size // 16)
    return float(np.median(np.concatenate([profile[:k], profile[-k:]])))


def _cell_extent(p: np.ndarray, axis_col: float, whole_cell: bool = True) -> tuple[int, int, float]:
    """(first row, last row + 1, half width in columns about the axis) of the cell in a stack.

    ``whole_cell``: the background level comes from the crop's edges, so the window holds all
    of the cell, however much of the crop it covers (projection matching: a cut window makes the
    volume miss the cell's outer parts and the matched angles drift by a 180 deg-periodic warp,
    9 deg in 8 iterations measured from the true angles). Otherwise the level is the median
    column, which lies inside a cell covering over half the crop: a tighter window about the
    cell's core (projection moments weight column ``s`` by ``s**k``, so a faint rim, a phase
    halo or debris at the window's edge would dominate them).
    """
    m = np.abs(np.asarray(p, np.float32)).mean(axis=0)
    prof_r = m.mean(axis=1)
    prof_c = m.mean(axis=0)
    level = _edge_level if whole_cell else np.median
    br, bc = level(prof_r), level(prof_c)
    rows = np.flatnonzero(prof_r - br > 0.2 * (prof_r.max() - br))
    cols = np.flatnonzero(prof_c - bc > 0.1 * (prof_c.max() - bc))
    h, w = m.shape
    if rows.size == 0 or cols.size == 0:
        return 0, h, (w - 1) / 2.0
    half = max(abs(cols[0] - axis_col), abs(cols[-1] - axis_col)) + 2.0
    return int(max(0, rows[0] - 1)), int(min(h, rows[-1] + 2)), float(min(half, (w - 1) / 2.0))


def _trig_design(th: np.ndarray, order: int) -> np.ndarray:
    cols = [np.ones_like(th)]
    for j in range(1, order + 1):
        cols += [np.cos(j * th), np.sin(j * th)]
    return np.stack(cols, 1)


def moment_angles(
    projections: np.ndarray,
    angles_deg: np.ndarray,
    axis_offset_px: float = 0.0,
    tilt_deg: float = 0.0,
    order: int = 4,
    search_deg: float = 8.0,
    step_deg: float = 0.1,
    iterations: int = 8,
) -> np.ndarray:
    """Per-frame angles from the Helgason-Ludwig consistency of every row's projection moments.

    Why: the k-th moment ``sum_s s^k P(row, s, theta)`` of a parallel projection about the axis
    is a trigonometric polynomial of degree k in theta (harmonics k, k-2, ...), whatever the cell
    looks like. Fitting those polynomials for every row and moment and re-solving each frame's
    angle (grid search within ``search_deg``) needs no smoothness of the rotation and no tracks;
    it breaks the 180 deg-periodic warps the mirror symmetry cannot see. Alternates coefficient
    fit (linear least squares, per-series noise weights) and per-frame angle search (all
    frames, the mean change removed); the result is shifted so frame 0 keeps its angle.
    Returns angles (deg).
    """
    from mcf_rotator.reconstruction.fbp import undo_tilt

    a = np.asarray(angles_deg, np.float64)
    n, h, w = np.shape(projections)
    axis_col = (w - 1) / 2.0 + axis_offset_px
    p = undo_tilt(np.asarray(projections, np.float32), tilt_deg, axis_col).astype(np.float64)
    r0, r1, half = _cell_extent(p, axis_col, whole_cell=False)
    s = (np.arange(w) - axis_col) / max(half, 1.0)
    cm = np.abs(s) <= 1.0
    pb = p[:, r0:r1][:, :, cm]
    sb = s[cm]
    y = np.stack([pb @ sb**k for k in range(order + 1)], 2).reshape(n, -1)  # (T, rows * moments)
    kk = np.tile(np.arange(order + 1), r1 - r0)
    allowed = np.ones((2 * order + 1, kk.size), bool)
    for j in range(1, order + 1):
        allowed[2 * j - 1] = allowed[2 * j] = (j <= kk) & ((kk - j) % 2 == 0)
    th = np.deg2rad(a - a[0])
    offs = np.deg2rad(np.arange(-search_deg, search_deg + 0.5 * step_deg, step_deg))
    for _ in range(iterations):
        dm = _trig_design(th, order)
        # all harmonics up to ``order`` in the fit (an axis or drift error mixes the moments'
        # orders); the search model keeps only those the moment can have
        c = np.where(allowed, np.linalg.lstsq(dm, y, rcond=None)[0], 0.0)
        res = y - dm @ c
        wt = 1.0 / np.maximum((res**2).mean(axis=0), 1e-18)
        new = th.copy()
        for t in range(n):
            cand = th[t] + offs
            d = _trig_design(cand, order) @ c - y[t]
            new[t] = cand[int(np.argmin((d * d) @ wt))]
        new -= np.mean(new - th)  # frame 0 is searched too (it may be the odd one out)
        if np.max(np.abs(new - th)) < 1e-9:
            break
        th = new
    return a[0] + np.rad2deg(th - th[0])


# --------------------------------------------------------------------------- periodic warp
def row_centroids(projections: np.ndarray, axis_offset_px: float = 0.0, tilt_deg: float = 0.0,
                  min_mass: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Centroid column (about the axis) of every cell row in every frame, and its noise.

    Why: the first moment of a parallel projection row divided by its (constant) mass runs on
    ``c + a cos(theta) + b sin(theta)`` exactly, whatever the cell looks like, and needs no
    tracking. Rows holding under ``min_mass`` of the heaviest row's mass are left out; columns
    beyond the cell's extent too (they add only noise). Returns (centroids (T, R), per-row
    noise (R,) from the second differences over frames, robust to a few outliers).
    """
    from mcf_rotator.reconstruction.fbp import undo_tilt

    p = np.asarray(projections, np.float32)
    if p.ndim != 3 or len(p) < 5:
        raise ReconstructionError(f"need a (T >= 5, H, W) projection stack, got shape {p.shape}")
    w = p.shape[2]
    axis_col = (w - 1) / 2.0 + axis_offset_px
    pt = undo_tilt(p, tilt_deg, axis_col).astype(np.float64)
    # the whole width the cell ever covers (a window that clips the cell at some angles
    # bends the orbits), judged on the mean profile over the sweep (background: zero mean)
    prof = pt.mean(axis=(0, 1))
    cols = np.flatnonzero(prof > 0.02 * max(float(prof.max()), 1e-12))
    s = np.arange(w) - axis_col
    half = (max(abs(cols[0] - axis_col), abs(cols[-1] - axis_col)) if cols.size else w / 2.0) + 3.0
    cm = np.abs(s) <= half
    sub = pt[:, :, cm]
    m0 = sub.sum(axis=2)
    mean_mass = m0.mean(axis=0)
    rows = mean_mass > min_mass * max(float(mean_mass.max()), 1e-12)
    if rows.sum() < 3:
        raise ReconstructionError("fewer than 3 rows carry the cell; no row centroids")
    cen = (sub[:, rows] @ s[cm]) / np.where(np.abs(m0[:, rows]) > 1e-9, m0[:, rows], 1e-9)
    d2 = np.diff(cen, 2, axis=0)
    sig = np.median(np.abs(d2 - np.median(d2, axis=0)), axis=0) / (0.6745 * np.sqrt(6.0))
    return cen, np.maximum(sig, 1e-6)


def _orbit_chi2(cen: np.ndarray, sig: np.ndarray, th: np.ndarray) -> np.ndarray:
    """Noise-weighted residuals of per-row ``c + a cos + b sin`` least-squares fits (T * R,).

    No shift per frame shared by all rows: it would also soak up the cell's own centroid orbit,
    and with it most of what shows the warp (tried: the warp then goes undetected).
    """
    d = _trig_design(th, 1)
    coef, *_ = np.linalg.lstsq(d, cen, rcond=None)
    return ((cen - d @ coef) / sig).ravel()


def periodic_warp(
    projections: np.ndarray,
    angles_deg: np.ndarray,
    axis_offset_px: float = 0.0,
    tilt_deg: float = 0.0,
    max_harmonics: int = 6,
    penalty: float = 6.0,
) -> tuple[np.ndarray, dict]:
    """Remove the 180 deg-periodic angle warp that the mirror symmetry cannot see.

    Why: any warp with ``w(theta + 180) = w(theta)`` keeps every mirror pair 180 deg apart
    (it reconstructs a stretched cell), and optical-flow tracks are too short to fix it. Every
    row's centroid is a pure sinusoid of the true angle (:func:`row_centroids`): the warp
    ``sum_j a_j cos(2 j theta) + b_j sin(2 j theta)`` (j = 1..J) that makes all rows' centroid
    series most sinusoidal is fitted by nonlinear least squares (the per-row orbits solved
    linearly inside). ``J`` runs 0..``max_harmonics`` and is chosen by the noise-weighted
    residual plus ``penalty`` per parameter: a harmonic pair must lower the chi-square by 12
    (``p ~ 0.25 %`` for pure noise; the per-row noise is itself estimated), so a warp is applied
    only where the rows really show one. A nearly round, centred cell has small centroid orbits
    and shows only large warps. Frame 0 keeps its angle. Returns (angles deg, info: harmonics,
    amplitude, chi2 per J).
    """
    from scipy.optimize import least_squares

    a = np.asarray(angles_deg, np.float64)
    if a.size != len(projections):
        raise ReconstructionError(f"{a.size} angles for {len(projections)} projections")
    cen, sig = row_centroids(projections, axis_offset_px, tilt_deg)
    th0 = np.deg2rad(a - a[0])
    pen = float(penalty)

    def warped(x: np.ndarray) -> np.ndarray:
        j = np.arange(1, x.size // 2 + 1)[:, None]
        return th0 + x[0::2] @ np.cos(2 * j * th0) + x[1::2] @ np.sin(2 * j * th0)

    def folds(x: np.ndarray) -> bool:
        """The warp would turn the cell backwards (d warped / d theta under 0.2)."""
        j = np.arange(1, x.size // 2 + 1)[:, None]
        grid = np.linspace(0.0, np.pi, 181)
        slope = 1.0 + (2 * j[:, 0] * x[1::2]) @ np.cos(2 * j * grid) - (2 * j[:, 0] * x[0::2]) @ np.sin(2 * j * grid)
        return bool(np.min(slope) < 0.2)

    def resid(x: np.ndarray) -> np.ndarray:
        return _orbit_chi2(cen, sig, warped(x))

    best_x = np.zeros(0)
    chi = [float(np.sum(resid(best_x) ** 2))]
    best = chi[0]
    x0 = np.zeros(0)
    for j in range(1, max(int(max_harmonics), 0) + 1):
        x0 = np.concatenate([x0, [0.0, 0.0]])
        sol = least_squares(resid, x0, method="lm", x_scale=0.01)
        x0 = sol.x
        chi.append(float(np.sum(sol.fun**2)))
        if chi[-1] + pen * 2 * j < best and not folds(sol.x):
            best, best_x = chi[-1] + pen * 2 * j, sol.x
    th = warped(best_x)
    out = a[0] + np.rad2deg(th - th[0])
    amp = float(np.rad2deg(np.max(np.abs(th - th0 - np.mean(th - th0))))) if best_x.size else 0.0
    return out, {"harmonics": int(best_x.size // 2), "amplitude_deg": amp, "chi2": chi, "n_obs": int(cen.size)}
