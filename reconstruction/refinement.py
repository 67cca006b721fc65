"""Angle refinement from the mirror symmetry of parallel projections.

The view at ``theta + 180`` is the view at ``theta`` mirrored about the projected rotation axis;
the view at ``theta + 360`` is the same view. Matching the (mirrored) first projection against
the sweep pins the frames at 180 and 360 deg to a fraction of a frame, and the registration
that aligns ``fliplr(view_0)`` with the 180 deg view gives the axis: mirroring about a line at
column ``(W-1)/2 + offset`` tilted by ``tilt`` equals ``fliplr`` followed by a shift of
``2 * offset`` columns and an in-plane rotation by ``2 * tilt``. Between anchors the tracked
angles are rescaled piecewise linearly (optical flow drifts; anchors do not).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import minimize_scalar

from mcf_rotator.errors import ReconstructionError


@dataclass
class Refinement:
    angles_deg: np.ndarray
    axis_offset_px: float
    tilt_deg: float
    anchors: list[tuple[float, float]]  # (fractional frame index, angle deg)
    match_error: float


def _rotate(img: np.ndarray, deg: float, centre: tuple[float, float]) -> np.ndarray:
    m = cv2.getRotationMatrix2D(centre, deg, 1.0)
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR)


def _shift_x(img: np.ndarray, dx: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, 0]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR)


def _err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))


def register_mirror(ref: np.ndarray, view: np.ndarray, mirrored: bool = True) -> tuple[float, float, float]:
    """Best (dx, rot_deg, error) aligning (mirrored) ``ref`` to ``view`` by x-shift + rotation."""
    a = np.ascontiguousarray(ref[:, ::-1] if mirrored else ref, dtype=np.float32)
    b = np.asarray(view, np.float32)
    h, w = a.shape
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    win = cv2.createHanningWindow((w, h), cv2.CV_32F)
    dx = cv2.phaseCorrelate(a, b, win)[0][0]

    def cost_rot(r: float) -> float:
        return _err(_shift_x(_rotate(a, r, centre), dx), b)

    rot = minimize_scalar(cost_rot, bounds=(-6, 6), method="bounded", options={"xatol": 0.02}).x
    ar = _rotate(a, rot, centre)
    dx = minimize_scalar(lambda d: _err(_shift_x(ar, d), b), bounds=(dx - 2, dx + 2), method="bounded",
                         options={"xatol": 0.01}).x
    return float(dx), float(rot), _err(_shift_x(ar, dx), b)


def _subframe_min(errors: dict[int, float]) -> float:
    """Fractional index of the minimum of a sampled error curve (parabola through 3 points)."""
    k = min(errors, key=errors.get)
    if k - 1 in errors and k + 1 in errors:
        e0, e1, e2 = errors[k - 1], errors[k], errors[k + 1]
        den = e0 - 2 * e1 + e2
        if den > 0:
            return k + float(np.clip(0.5 * (e0 - e2) / den, -0.5, 0.5))
    return float(k)


def find_match(projections: np.ndarray, ref_index: int, target_deg: float, angles_deg: np.ndarray,
               mirrored: bool, window_deg: float = 40.0) -> tuple[float, float]:
    """Fractional frame index whose view matches (mirrored) frame ``ref_index``; and its error.

    Candidates: frames whose tracked angle lies within ``window_deg`` of ``target_deg``.
    """
    ref = projections[ref_index]
    a = ref[:, ::-1] if mirrored else ref
    cand = np.flatnonzero(np.abs(angles_deg - target_deg) <= window_deg)
    if cand.size < 3:
        raise ReconstructionError(f"no frames near {target_deg:.0f} deg to anchor the angle scale")
    # coarse: mirrored ref shifted by phase correlation, mean squared error
    errors: dict[int, float] = {}
    win = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    a32 = np.ascontiguousarray(a, np.float32)
    for i in cand:
        b = np.asarray(projections[i], np.float32)
        dx = cv2.phaseCorrelate(a32, b, win)[0][0]
        errors[int(i)] = _err(_shift_x(a32, dx), b)
    # the true match is a sharp dip (about one frame wide) on a broad background: rank frames by
    # their error relative to the frames two steps away
    dip = {i: errors[i] / (0.5 * (errors[i - 2] + errors[i + 2])) for i in errors if i - 2 in errors and i + 2 in errors}
    if not dip:
        raise ReconstructionError(f"too few frames near {target_deg:.0f} deg to anchor the angle scale")
    k = min(dip, key=dip.get)
    if k == cand[0] or k == cand[-1]:
        raise ReconstructionError(f"the {target_deg:.0f} deg mirror match lies at the edge of the search window")
    return _subframe_min({i: errors[i] for i in (k - 1, k, k + 1)}), errors[k]


def refine_angles(projections: np.ndarray, angles_deg: np.ndarray, window_deg: float = 40.0) -> Refinement:
    """Rescale tracked angles between mirror anchors; estimate axis offset and tilt.

    ``projections`` (T, H, W) line integrals (-log I/I0) of a centred, fixed crop.
    """
    p = np.stack([cv2.GaussianBlur(np.asarray(v, np.float32), (0, 0), 1.0) for v in projections])
    a = np.asarray(angles_deg, np.float64)
    sign = 1.0 if a[-1] >= a[0] else -1.0
    s = a * sign
    if s.max() < 180 - window_deg / 2:
        raise ReconstructionError(f"angle coverage {s.max():.0f} deg is under 180 deg; cannot anchor the sweep")
    anchors = [(0.0, 0.0)]
    i180, e180 = find_match(p, 0, 180.0, s, True, window_deg)
    anchors.append((i180, 180.0))
    k = int(round(i180))
    dx, rot, _ = register_mirror(p[0], p[k], True)
    if s.max() >= 360 - window_deg / 4:
        try:
            i360, _ = find_match(p, 0, 360.0, s, False, window_deg)
            if i360 > i180 + 1:
                anchors.append((i360, 360.0))
        except ReconstructionError:
            pass
    # piecewise linear map tracked -> refined through the anchors (extrapolate last segment)
    idx = np.arange(len(s), dtype=np.float64)
    tr_at = [np.interp(f, idx, s) for f, _ in anchors]
    ref = np.array([v for _, v in anchors])
    tr_at = np.array(tr_at)
    out = np.interp(s, tr_at, ref)
    lo, hi = s > tr_at[-1], s < tr_at[0]
    slope = (ref[-1] - ref[-2]) / (tr_at[-1] - tr_at[-2])
    out[lo] = ref[-1] + (s[lo] - tr_at[-1]) * slope
    out[hi] = (s[hi] - tr_at[0]) * slope
    return Refinement(out * sign, dx / 2.0, -rot / 2.0, anchors, e180)
