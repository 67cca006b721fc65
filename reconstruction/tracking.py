"""Rotation-angle tracking: Shi-Tomasi corners, pyramidal Lucas-Kanade, joint orbit fit.

Why not per-frame mean flow: in a transmission (parallel) projection a point (x, y, z) of the
cell shows at column ``u = c + x cos(theta) + z sin(theta)``; features on the back of the cell
move opposite to those on the front and features near the limb stand still, so the flow of a
frame says little about its angle. Every tracked feature instead runs on its own orbit
``u_k(t) = c(t) + p_k cos(theta_t) + q_k sin(theta_t)`` (own radius ``hypot(p, q)`` and phase);
the axis column ``c`` is shared by all features, and that, with the orbits' curvature, is what
fixes the angle scale. :func:`fit_orbits` solves all angles, the axis (piecewise linear in time:
it drifts slowly with the cell) and all orbits jointly by robust Gauss-Newton; tracks that do
not fit an orbit (stuck on an outline, swapped between overlapping granules) are gated out.

Observations:

- LK tracks of corners on the high-passed optical depth ``d - blur(d)`` (granules and nucleoli
  dominate; the static outlines of body and nucleus fade), detected inside the eroded cell mask,
  with a forward-backward check; dropped when lost or when they leave the eroded mask (limb and
  its halo); new corners fill empty parts of the mask every few frames;
- slice centroids: the optical-depth centroid of each band of rows is exactly such an orbit
  (first Helgason-Ludwig moment), never lost and never sliding - it anchors the fit against the
  slow drift of optical-flow features. Its weight against an LK observation (``band_weight``)
  has no single best value (flow tracks slide ~1 px, centroids are noisy on orbits of ~1.5 px):
  ``final_angles.estimate_angles`` averages the fits of several weights.

:func:`scale_search` (a periodogram over the rotation rate) gives a starting trace that does not
depend on the nominal step. An in-plane tilt of the rotation axis makes features move along a
tilted line; positions are projected on the normal of the axis (tilt from the feature motion,
or the mirror estimate of ``refinement``). The sign of the rotation is unobservable in parallel
projections (a transparent cell turning +theta looks like its mirror image turning -theta): it
comes from ``direction``. The live (per-frame) estimate is a causal approximation refitted every
``refit_every`` frames; the final angles come from :meth:`RotationTracker.solve` alternated with
the mirror refinement (``final_angles.estimate_angles``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.ndimage import gaussian_filter1d
from scipy.sparse.linalg import spsolve

__all__ = [
    "TrackerConfig",
    "RotationTracker",
    "highpass_depth",
    "slice_centroids",
    "scale_search",
    "fit_orbits",
    "estimate_tilt",
]


@dataclass
class TrackerConfig:
    """Feature and window parameters (pixels of the tracked crop, degrees)."""

    max_features: int = 200
    min_features: int = 80
    quality: float = 0.01
    min_distance: int = 4
    block_size: int = 5
    win_size: int = 7
    levels: int = 2
    fb_max_px: float = 1.0
    highpass_sigma: float = 2.0
    erode_frac: float = 0.25  # of the mask's equivalent radius: off the limb and its halo
    redetect_every: int = 3
    band_px: int = 4  # rows per slice-centroid band
    band_weight: float = 1.0
    gate: float = 2.0  # drop tracks whose rms exceeds gate x median
    huber_px: float = 0.7
    min_span_deg: float = 5.0
    centre_sigma: float = 0.0
    refit_every: int = 32
    live_window: int = 96
    live_iters: int = 4
    live_frame_fit: bool = False  # per-frame Gauss-Newton on the last orbits (else: last step)
    batch_iters: int = 15
    min_track_frames: int = 12
    scale_after_deg: float = float("inf")  # live rate search after this nominal rotation (off)
    nominal_step_deg: float = 1.0
    direction: int = 1


# --------------------------------------------------------------------------- image
def highpass_depth(image: np.ndarray, background: float, sigma: float = 3.0) -> np.ndarray:
    """High-passed optical depth ``d - G_sigma * d`` with ``d = -log(I / background)`` (float32).

    Texture (granules, nucleoli) survives; smooth body and nucleus shading, which does not turn
    with the cell in a trackable way, is removed.
    """
    i = np.asarray(image, np.float32)
    d = -np.log(np.maximum(i, 0.5) * np.float32(1.0 / max(float(background), 1e-6)))
    return d - cv2.GaussianBlur(d, (0, 0), sigma)


def _eroded(mask: np.ndarray, frac: float) -> np.ndarray:
    m = mask.astype(np.uint8)
    r = max(2, int(round(frac * np.sqrt(max(int(m.sum()), 1) / np.pi))))
    return cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))


# --------------------------------------------------------------------------- geometry
def slice_centroids(depth: np.ndarray, mask: np.ndarray, band: int = 4, min_mass: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optical-depth centroid of each band of ``band`` image rows inside the (dilated) cell mask.

    Why: the first moment of a parallel projection row is exactly ``M0 * (c + p cos + q sin)``
    (Helgason-Ludwig), so each slice's centroid runs on an orbit like a point feature but never
    slides, merges or gets lost. Returns (band index, centroid column, band centre row) for
    bands holding at least ``min_mass`` of the heaviest band's mass.
    """
    d = np.asarray(depth, np.float32)
    h, w = d.shape
    nb = h // band
    m = cv2.dilate(np.asarray(mask, np.uint8), np.ones((5, 5), np.uint8)) if mask is not None else np.ones_like(d, np.uint8)
    rb = (d * m)[: nb * band].reshape(nb, band, w).sum(axis=1)
    m0 = rb.sum(axis=1)
    m1 = rb @ np.arange(w, dtype=np.float32)
    ok = m0 > min_mass * max(float(m0.max()), 1e-12)
    idx = np.flatnonzero(ok)
    return idx, (m1[ok] / m0[ok]).astype(np.float64), idx * band + (band - 1) / 2.0


def _fit_sinusoids(kk: np.ndarray, nk: int, theta: np.ndarray, u: np.ndarray) -> float:
    """Residual sum of squares of per-track ``a + p cos + q sin`` fits (vectorised 3x3 solves)."""
    cols = (np.ones_like(theta), np.cos(theta), np.sin(theta))
    a = np.empty((nk, 3, 3))
    b = np.empty((nk, 3))
    for i in range(3):
        b[:, i] = np.bincount(kk, cols[i] * u, nk)
        for j in range(i, 3):
            a[:, i, j] = a[:, j, i] = np.bincount(kk, cols[i] * cols[j], nk)
    a += np.eye(3) * 1e-6
    x = np.linalg.solve(a, b[..., None])[..., 0]
    r = u - (x[kk, 0] + x[kk, 1] * cols[1] + x[kk, 2] * cols[2])
    return float(r @ r)


def scale_search(track: np.ndarray, frame: np.ndarray, u: np.ndarray, nominal_deg: np.ndarray,
                 lo: float = 0.2, hi: float = 5.0, n: int = 161) -> float:
    """Scale ``g`` of the angle trace ``g * nominal_deg`` that best explains all tracks as orbits.

    A periodogram over the rotation rate: every track is fitted by ``a + p cos + q sin`` of the
    scaled angles (its own centre, radius and phase) and the summed residual is minimised on a
    log grid. Needs a sweep long enough to show the orbits' curvature (tens of degrees).
    """
    _, kk = np.unique(track, return_inverse=True)
    nk = int(kk.max()) + 1 if kk.size else 0
    nom = np.deg2rad(np.asarray(nominal_deg, np.float64))[frame]
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), n))
    costs = [_fit_sinusoids(kk, nk, g * nom, u) for g in grid]
    k = int(np.argmin(costs))
    if 0 < k < n - 1:  # parabola in log-scale
        c0, c1, c2 = costs[k - 1], costs[k], costs[k + 1]
        den = c0 - 2 * c1 + c2
        step = np.log(grid[1] / grid[0])
        if den > 0:
            return float(grid[k] * np.exp(np.clip(0.5 * (c0 - c2) / den, -0.5, 0.5) * step))
    return float(grid[k])


def _axis_basis(frame: np.ndarray, nt: int, knot_every: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Piecewise-linear axis column over frames: (knot index, knot index + 1, weight, n knots)."""
    step = max(1, int(knot_every))
    nknots = max(2, int(np.ceil((nt - 1) / step)) + 1)
    pos = np.asarray(frame, np.float64) / step
    j = np.clip(np.floor(pos).astype(int), 0, nknots - 2)
    return j, j + 1, pos - j, nknots


def _solve_axis_orbits(frame: np.ndarray, kk: np.ndarray, nt: int, nk: int, cs: np.ndarray, sn: np.ndarray,
                       u: np.ndarray, w: np.ndarray, th: np.ndarray, min_span_deg: float, knot_every: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares for the axis column (piecewise linear in time, knots every
    ``knot_every`` frames) and the orbits (p_k, q_k) at fixed angles.

    Why piecewise linear: the axis only drifts slowly, and a per-frame axis trades off against
    the orbits of short tracks (a slow mode that lets the angles wander). Tracks spanning less
    than ``min_span_deg`` are left out (p = q = 0, ok False). Returns (axis per frame, p, q, ok,
    axis knots).
    """
    tmin = np.full(nk, np.inf)
    tmax = np.full(nk, -np.inf)
    np.minimum.at(tmin, kk, th[frame])
    np.maximum.at(tmax, kk, th[frame])
    ok = np.rad2deg(tmax - tmin) >= min_span_deg
    use = ok[kk] & (w > 0)
    n = int(use.sum())
    j0, j1, fw, nkn = _axis_basis(frame[use], nt, knot_every)
    k, ww = kk[use], np.sqrt(w[use])
    rows = np.repeat(np.arange(n), 4)
    cols = np.stack([j0, j1, nkn + 2 * k, nkn + 2 * k + 1], 1).ravel()
    vals = (np.stack([1 - fw, fw, cs[use], sn[use]], 1) * ww[:, None]).ravel()
    a = sp.csr_matrix((vals, (rows, cols)), shape=(n, nkn + 2 * nk))
    ata = (a.T @ a).tocsc() + sp.identity(nkn + 2 * nk, format="csc") * 1e-8
    x = spsolve(ata, a.T @ (u[use] * ww))
    b0, b1, bw, _ = _axis_basis(np.arange(nt), nt, knot_every)
    c = x[:nkn][b0] * (1 - bw) + x[:nkn][b1] * bw
    p = np.where(ok, x[nkn::2], 0.0)
    q = np.where(ok, x[nkn + 1 :: 2], 0.0)
    return c, p, q, ok, x[:nkn]


def _gauss_newton_step(frame: np.ndarray, kk: np.ndarray, nt: int, nk: int, cs: np.ndarray, sn: np.ndarray,
                       p: np.ndarray, q: np.ndarray, r: np.ndarray, w: np.ndarray, knot_every: int
                       ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One damped Gauss-Newton step of ``u = c(t) + p cos(theta) + q sin(theta)`` in all unknowns.

    Unknowns: angles of frames 1.. (frame 0 is the gauge), axis knots, orbits. Returns
    (angle steps (nt,), knot steps, (dp, dq)).
    """
    use = w > 0
    n = int(use.sum())
    f, k, ww = frame[use], kk[use], np.sqrt(w[use])
    j0, j1, fw, nkn = _axis_basis(f, nt, knot_every)
    d = -p[k] * sn[use] + q[k] * cs[use]
    ncol = nt + nkn + 2 * nk
    rows = np.repeat(np.arange(n), 5)
    cols = np.stack([f, nt + j0, nt + j1, nt + nkn + 2 * k, nt + nkn + 2 * k + 1], 1).ravel()
    vals = (np.stack([d, 1 - fw, fw, cs[use], sn[use]], 1) * ww[:, None]).ravel()
    a = sp.csr_matrix((vals, (rows, cols)), shape=(n, ncol))
    ata = (a.T @ a).tocsc()
    diag = ata.diagonal()
    damp = np.maximum(diag, 1e-6) * 1e-3
    damp[0] = 1e12  # gauge: frame 0 keeps its angle
    x = spsolve((ata + sp.diags(damp)).tocsc(), a.T @ (r[use] * ww))
    return x[:nt], x[nt : nt + nkn], (x[nt + nkn :: 2], x[nt + nkn + 1 :: 2])


def fit_orbits(
    track: np.ndarray,
    frame: np.ndarray,
    u: np.ndarray,
    init_deg: np.ndarray,
    weight: np.ndarray | None = None,
    n_iter: int = 30,
    gate: float = 2.0,
    huber_px: float = 0.7,
    min_span_deg: float = 5.0,
    centre_sigma: float = 0.0,
    v: np.ndarray | None = None,
    axis_knot_frames: int = 40,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Joint robust fit of per-frame angles and axis column to orbit tracks.

    Model ``u = c_t + p_k cos(theta_t) + q_k sin(theta_t)`` for observation (track k, frame t):
    every track has its own orbit (p_k, q_k), every frame its angle and axis column (the axis is
    shared, which is what fixes the angle scale). Linear solve for axis and orbits at the starting
    angles, then damped Gauss-Newton on all unknowns jointly (sparse normal equations); tracks whose rms residual exceeds ``gate``
    times the median are dropped (stuck on outlines, swapped granules), single observations are
    Huber-weighted. The axis column is piecewise linear in time (knots every
    ``axis_knot_frames``); ``centre_sigma`` > 0 smooths it further (frames).
    With ``v`` (the coordinate along the axis of each observation) a small residual tilt of the
    axis is fitted too (``u -> u + tilt * v``, radians; ``info["tilt_deg"]``): an unmodelled tilt
    gives every track a constant offset and biases the angles.
    Returns (angles deg with frame 0 = 0, axis column per frame, per-track info).
    """
    nt = len(init_deg)
    uk, kk = np.unique(track, return_inverse=True)
    nk = uk.size
    th = np.deg2rad(np.asarray(init_deg, np.float64)).copy()
    th -= th[0]
    wk = np.ones(u.size) if weight is None else np.asarray(weight, np.float64)
    cnt = np.bincount(frame, minlength=nt)
    c = np.bincount(frame, u, nt) / np.maximum(cnt, 1)
    if np.any(cnt == 0):
        have = np.flatnonzero(cnt > 0)
        c = np.interp(np.arange(nt), have, c[have]) if have.size else c
    w_obs = wk.copy()
    p = q = np.zeros(nk)
    good = ok = np.zeros(nk, bool)
    b0, b1, bw, nkn = _axis_basis(np.arange(nt), nt, axis_knot_frames)
    knots = np.zeros(nkn)
    tilt = 0.0
    u0 = u
    if v is not None:
        vc = np.asarray(v, np.float64) - (np.bincount(frame, v, nt) / np.maximum(cnt, 1))[frame]
    for it in range(n_iter):
        u = u0 + tilt * v if v is not None else u0
        cs, sn = np.cos(th[frame]), np.sin(th[frame])
        if it == 0:
            # axis and orbits given the starting angles: a linear least-squares problem
            c, p, q, ok, knots = _solve_axis_orbits(frame, kk, nt, nk, cs, sn, u, wk, th, min_span_deg,
                                                    axis_knot_frames)
        r = u - c[frame] - p[kk] * cs - q[kk] * sn
        rms = np.sqrt(np.bincount(kk, wk * r * r, nk) / np.maximum(np.bincount(kk, wk, nk), 1e-12))
        med = float(np.median(rms[ok])) if ok.any() else 1.0
        good = ok & (rms < max(gate * med, 0.2))
        ar = np.abs(r)
        w_obs = wk * np.where(ar < huber_px, 1.0, huber_px / np.maximum(ar, 1e-12)) * good[kk]
        # joint Gauss-Newton step on angles, axis knots and orbits (sparse normal equations):
        # alternating updates crawl along the slow modes (angle scale / smooth warps)
        dth, dknots, dpq = _gauss_newton_step(frame, kk, nt, nk, cs, sn, p, q, r, w_obs, axis_knot_frames)
        th = th + np.clip(dth, -0.1, 0.1)
        th -= th[0]
        knots = knots + dknots
        p, q = p + dpq[0] * good, q + dpq[1] * good
        c = knots[b0] * (1 - bw) + knots[b1] * bw
        if centre_sigma > 0:
            c = gaussian_filter1d(c, centre_sigma, mode="nearest")
        if v is not None and it >= 2:
            vc_r = u0 + tilt * v - c[frame] - p[kk] * np.cos(th[frame]) - q[kk] * np.sin(th[frame])
            den = float(np.sum(w_obs * vc * vc))
            if den > 0:
                tilt -= float(np.clip(np.sum(w_obs * vc * vc_r) / den, -0.01, 0.01))
        if it > 2 and float(np.max(np.abs(dth))) < 1e-6:
            break
    return np.rad2deg(th), c, {"ids": uk, "p": p, "q": q, "good": good, "tilt_deg": float(np.rad2deg(tilt))}


def estimate_tilt(uv: np.ndarray) -> tuple[float, float, float]:
    """Second moments (sum du^2, sum du dv, sum dv^2) of feature motion for the axis tilt.

    ``uv`` (K, T, 2): the same K features over T frames. Frame-to-frame motion, with the common
    (lateral drift) part removed, runs along ``(cos tilt, sin tilt)``: ``tilt = atan2(suv, suu)``
    (the vertical jitter of LK is larger than the horizontal one's effect on this slope).
    """
    d = np.diff(uv, axis=1)
    d = d - d.mean(axis=0, keepdims=True)
    return float(np.sum(d[..., 0] ** 2)), float(np.sum(d[..., 0] * d[..., 1])), float(np.sum(d[..., 1] ** 2))


# --------------------------------------------------------------------------- tracker
def _observations(
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    tilt_deg: float,
    band_weight: float,
    first: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flatten stored frames into (track id, frame, u across the axis, v along it, weight) arrays.

    LK tracks keep their (>= 0) ids, slice bands get ids ``-1 - band``. Positions are projected
    on the normal of the (tilted) rotation axis: ``u = cos(tilt) x + sin(tilt) y``.
    """
    t = np.deg2rad(tilt_deg)
    c, s = np.cos(t), np.sin(t)
    ks, fs, us, vs, ws = [], [], [], [], []
    for f, (ids, pts, bidx, bu, bv) in enumerate(frames[first:], start=0):
        ks += [ids, -1 - bidx]
        fs += [np.full(ids.size + bidx.size, f)]
        us += [c * pts[:, 0] + s * pts[:, 1], c * bu + s * bv]
        vs += [-s * pts[:, 0] + c * pts[:, 1], -s * bu + c * bv]
        ws += [np.ones(ids.size), np.full(bidx.size, band_weight)]
    if not ks:
        z = np.zeros(0)
        return z.astype(np.int64), z.astype(np.int64), z, z, z
    return (np.concatenate(ks).astype(np.int64), np.concatenate(fs).astype(np.int64), np.concatenate(us),
            np.concatenate(vs), np.concatenate(ws))


def _long_tracks(obs: tuple[np.ndarray, ...], min_frames: int) -> tuple[np.ndarray, ...]:
    """Observations of tracks seen in at least ``min_frames`` frames."""
    k = obs[0]
    if not k.size:
        return obs
    _, inv, cnt = np.unique(k, return_inverse=True, return_counts=True)
    keep = cnt[inv] >= min_frames
    return tuple(a[keep] for a in obs)


class RotationTracker:
    """Per-frame cumulative signed angle of a rotating cell from crops and cell masks.

    ``update(crop, mask)`` takes the crop's intensity (any dtype, background > 0) and a bool
    cell mask; it returns the live angle estimate (deg), refitted every ``refit_every`` frames
    over the recent ``live_window`` frames. :meth:`solve` re-estimates all angles from all
    tracks at once (better than the causal live estimates; the pipeline uses it at the end).
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.cfg = config or TrackerConfig()
        self.angles_deg: list[float] = []
        # per frame: LK ids (sorted), LK xy (P, 2), band index, band centroid column, band row
        self.frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._prev: np.ndarray | None = None
        self._pts = np.zeros((0, 2), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._birth: list[int] = []
        self._next_id = 0
        self._gain: float | None = None
        self._i0: float | None = None
        self._tilt_stats = np.zeros(3)
        self._sign = 1.0 if self.cfg.direction >= 0 else -1.0
        self._step = self._sign * abs(self.cfg.nominal_step_deg)
        self._scaled = False
        self._models: dict[int, tuple[float, float]] = {}
        self._centre: float | None = None
        self._tilt_fit = 0.0
        self.fit_tilt_deg = 0.0

    # ------------------------------------------------------------------ properties
    @property
    def features(self) -> np.ndarray:
        """Current feature positions (P, 2) xy in crop pixels."""
        return self._pts.copy()

    @property
    def tilt_deg(self) -> float:
        """In-plane tilt of the rotation axis from the feature motion (deg, pose_matrix sign)."""
        suu, suv, svv = self._tilt_stats
        return float(np.rad2deg(np.arctan2(suv, suu))) if suu > 0 else 0.0

    @property
    def n_tracks(self) -> int:
        return self._next_id

    def head(self, n: int) -> RotationTracker:
        """A copy holding the first ``n`` frames, to :meth:`solve` on another thread while this
        one goes on tracking (frame records are shared read-only; lists and stats are copied)."""
        t = copy.copy(self)
        t.frames = self.frames[:n]
        t.angles_deg = list(self.angles_deg[:n])
        t._tilt_stats = self._tilt_stats.copy()
        t._models = dict(self._models)
        return t

    # ------------------------------------------------------------------ image
    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img = np.asarray(image, np.float32)
        if self._i0 is None:
            h, w = img.shape
            b = max(1, min(4, min(h, w) // 8))
            edge = np.concatenate([img[:b].ravel(), img[-b:].ravel(), img[:, :b].ravel(), img[:, -b:].ravel()])
            self._i0 = float(np.median(edge))
        depth = -np.log(np.maximum(img, 0.5) * np.float32(1.0 / max(self._i0, 1e-6)))
        hp = depth - cv2.GaussianBlur(depth, (0, 0), self.cfg.highpass_sigma)
        if self._gain is None:
            self._gain = 30.0 / max(float(np.std(hp)), 1e-4)
        return depth, cv2.convertScaleAbs(hp, alpha=self._gain, beta=128.0)

    def _detect(self, img: np.ndarray, allowed: np.ndarray, frame: int) -> None:
        need = self.cfg.max_features - len(self._pts)
        if need <= 0:
            return
        m = allowed.copy()
        for x, y in self._pts:
            cv2.circle(m, (int(round(x)), int(round(y))), self.cfg.min_distance, 0, -1)
        new = cv2.goodFeaturesToTrack(img, need, self.cfg.quality, self.cfg.min_distance, mask=m,
                                      blockSize=self.cfg.block_size)
        if new is None:
            return
        new = new.reshape(-1, 2).astype(np.float32)
        ids = np.arange(self._next_id, self._next_id + len(new))
        self._next_id += len(new)
        self._birth += [frame] * len(new)
        self._pts = np.concatenate([self._pts, new])
        self._ids = np.concatenate([self._ids, ids])

    # ------------------------------------------------------------------ per frame
    def update(self, image: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Track one crop; returns the cumulative angle (deg) of this frame (live estimate)."""
        cfg = self.cfg
        frame = len(self.angles_deg)
        depth, img = self._prepare(image)
        if mask is None or not np.any(mask):
            mask = None
            allowed = np.full(img.shape, 255, np.uint8)
        else:
            allowed = _eroded(mask, cfg.erode_frac) * np.uint8(255)
        prev_pts, prev_ids = self._pts, self._ids
        if self._prev is not None and len(self._pts):
            lk = dict(winSize=(cfg.win_size, cfg.win_size), maxLevel=cfg.levels,
                      criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01))
            p0 = self._pts.reshape(-1, 1, 2)
            p1, st, _ = cv2.calcOpticalFlowPyrLK(self._prev, img, p0, None, **lk)
            pb, st2, _ = cv2.calcOpticalFlowPyrLK(img, self._prev, p1, None, **lk)
            p1 = p1.reshape(-1, 2)
            fb = np.linalg.norm(pb.reshape(-1, 2) - self._pts, axis=1)
            good = (st.ravel() == 1) & (st2.ravel() == 1) & (fb < cfg.fb_max_px)
            h, w = allowed.shape
            xi = np.clip(np.rint(p1[:, 0]).astype(int), 0, w - 1)
            yi = np.clip(np.rint(p1[:, 1]).astype(int), 0, h - 1)
            good &= allowed[yi, xi] > 0
            self._pts, self._ids = p1[good].astype(np.float32), self._ids[good]
            if good.sum() >= 3:
                self._tilt_stats += estimate_tilt(np.stack([prev_pts[good], self._pts], axis=1).astype(np.float64))
        bidx, bu, bv = slice_centroids(depth, mask if mask is not None else np.ones(depth.shape, np.uint8), cfg.band_px)
        self.frames.append((self._ids.copy(), self._pts.astype(np.float64), bidx, bu, bv))
        angle = self._live_angle(frame)
        self.angles_deg.append(angle)
        self._prev = img
        if frame == 0 or len(self._pts) < cfg.min_features or frame % cfg.redetect_every == 0:
            self._detect(img, allowed, frame)
            # features found now start their track in this frame
            self.frames[-1] = (self._ids.copy(), self._pts.astype(np.float64), bidx, bu, bv)
        if frame > 0 and frame % cfg.refit_every == 0:
            self._refit(frame)
        return self.angles_deg[-1]

    def _live_angle(self, e: int) -> float:
        """Angle of frame ``e`` from the orbit models of the last refit (2x2 Gauss-Newton on
        axis column and angle), else the previous step repeated."""
        if e == 0:
            return 0.0
        if not self._step_ok(self._step):
            self._step = self._sign * abs(self.cfg.nominal_step_deg)
        guess = self.angles_deg[-1] + self._step
        if not self.cfg.live_frame_fit or not self._models or self._centre is None:
            return guess
        k, f, u, _v, w = _observations(self.frames[e:], self.tilt_deg, self.cfg.band_weight)
        sel = np.array([int(i) in self._models for i in k], bool)
        if sel.sum() < 4:
            return guess
        pq = np.array([self._models[int(i)] for i in k[sel]])
        u, w = u[sel], w[sel]
        th, c = np.deg2rad(guess), self._centre
        for _ in range(4):
            cs, sn = np.cos(th), np.sin(th)
            r = u - c - pq[:, 0] * cs - pq[:, 1] * sn
            ww = w * np.where(np.abs(r) < self.cfg.huber_px, 1.0, self.cfg.huber_px / np.maximum(np.abs(r), 1e-9))
            d = -pq[:, 0] * sn + pq[:, 1] * cs
            a = np.array([[ww.sum(), ww @ d], [ww @ d, ww @ (d * d)]])
            if np.linalg.det(a) <= 1e-9 * max(a[0, 0] * a[1, 1], 1e-12):
                return guess
            dc, dth = np.linalg.solve(a, [ww @ r, ww @ (d * r)])
            c, th = c + dc, th + float(np.clip(dth, -0.1, 0.1))
        angle = float(np.rad2deg(th))
        step = angle - self.angles_deg[-1]
        if not self._step_ok(step):
            return guess
        self._step, self._centre = step, c
        return angle

    def _step_ok(self, step: float) -> bool:
        """A live step is plausible: the commanded sign, within 0.2-3x the nominal step."""
        nom = abs(self.cfg.nominal_step_deg)
        return self._sign * step > 0 and (nom <= 0 or 0.2 * nom <= abs(step) <= 3.0 * nom)

    def _refit(self, e: int) -> None:
        """Refit orbits and angles over the recent window (warm start); scale search once the
        live trace spans enough rotation to show the orbits' curvature."""
        cfg = self.cfg
        s = max(0, e - cfg.live_window + 1)
        live = np.asarray(self.angles_deg[s : e + 1], np.float64)
        k, f, u, v, w = _long_tracks(_observations(self.frames[s : e + 1], self.tilt_deg, cfg.band_weight),
                                     cfg.min_track_frames)
        if u.size < 10:
            return
        if not self._scaled and abs(live[-1] - live[0]) >= cfg.scale_after_deg:
            g = scale_search(k, f, u, live - live[0], 0.5, 2.0, 49)  # the nominal step is within 2x
            allang = np.asarray(self.angles_deg, np.float64) * g
            self.angles_deg = list(allang)
            live = allang[s : e + 1]
            self._step *= g
            self._scaled = True
        th, c, info = fit_orbits(k, f, u, live - live[0], w, n_iter=cfg.live_iters, gate=cfg.gate,
                                 huber_px=cfg.huber_px, min_span_deg=cfg.min_span_deg, centre_sigma=cfg.centre_sigma, v=v)
        self._tilt_fit = self.tilt_deg + info["tilt_deg"]
        new = live[0] + th
        if len(new) > 1 and not self._step_ok((new[-1] - new[0]) / (len(new) - 1)):
            return  # an implausible fit (backwards, runaway): keep the live trace
        self.angles_deg[s : e + 1] = list(new)
        if e - s >= 1:
            self._step = float(new[-1] - new[-2])
        self._centre = float(c[-1])
        good = info["good"]
        # the fit's angles start at 0 in frame s: turn the orbits to absolute angles
        al = np.deg2rad(live[0])
        pa = info["p"] * np.cos(al) - info["q"] * np.sin(al)
        qa = info["p"] * np.sin(al) + info["q"] * np.cos(al)
        self._models = {int(i): (float(p), float(q)) for i, p, q, g in zip(info["ids"], pa, qa, good) if g}

    # ------------------------------------------------------------------ batch
    def observations(self, tilt_deg: float | None = None, band_weight: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Stored observations as (track id, frame, u across the axis, v along it, weight).

        Tracks seen in fewer than ``min_track_frames`` frames are left out: they carry no orbit
        curvature and only cost unknowns in the joint fit. ``band_weight`` overrides the
        configured weight of a slice-centroid observation (an LK one weighs 1).
        """
        bw = self.cfg.band_weight if band_weight is None else float(band_weight)
        obs = _observations(self.frames, self.tilt_deg if tilt_deg is None else tilt_deg, bw)
        return _long_tracks(obs, self.cfg.min_track_frames)

    def solve(self, tilt_deg: float | None = None, init_deg: np.ndarray | None = None,
              band_weight: float | None = None) -> np.ndarray:
        """All angles (deg, frame 0 = 0) from all tracks: rate search, then the joint orbit fit.

        ``tilt_deg`` overrides the tracker's own axis tilt (e.g. the mirror estimate);
        ``init_deg`` the live angles as the starting trace; ``band_weight`` the weight of the
        slice-centroid observations against the LK ones (:meth:`observations`).
        """
        cfg = self.cfg
        ang = np.asarray(self.angles_deg if init_deg is None else init_deg, np.float64)
        if ang.size < 3:
            return ang
        k, f, u, v, w = self.observations(tilt_deg, band_weight)
        if init_deg is None:
            # rate search on a uniform trace (robust), not on the live trace (may be off locally)
            trace = np.arange(ang.size) * (ang[-1] - ang[0]) / max(ang.size - 1, 1)
            if not np.any(trace):
                trace = np.arange(ang.size) * self._sign * abs(cfg.nominal_step_deg)
            g = scale_search(k, f, u, trace, 0.2, 5.0, 161)
            ang = trace * g
        th, _c, info = fit_orbits(k, f, u, ang, w, n_iter=cfg.batch_iters, gate=cfg.gate, huber_px=cfg.huber_px,
                                  min_span_deg=cfg.min_span_deg, centre_sigma=cfg.centre_sigma, v=v)
        self.fit_tilt_deg = (self.tilt_deg if tilt_deg is None else tilt_deg) + info["tilt_deg"]
        if self._sign * th[-1] < 0:
            th = -th
        return th
