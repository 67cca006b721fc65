"""Rotation-angle tracking: Shi-Tomasi corners, pyramidal Lucas-Kanade, orbit factorisation.

Why not per-frame mean flow: in a transmission (parallel) projection a point (x, y, z) of the
cell shows at column ``u = c + x cos(theta) + z sin(theta)``; features on the back of the cell
move opposite to those on the front and features near the limb stand still, so the flow of a
frame says little about the angle. Each feature instead runs on its own orbit
``u_k(t) - c(t) = p_k cos(theta_t) + q_k sin(theta_t)`` (own radius ``hypot(p, q)`` and phase,
shared axis ``c``), so over a window of frames in which K features are tracked throughout, the
(K, T) matrix of positions, with the per-frame mean over features removed (which removes the
axis column and any lateral drift of the cell), has rank 2: ``U = P S`` with
``S = [cos theta; sin theta]``. An SVD gives ``U = A B`` up to an unknown 2x2 ``G`` (``S = G B``);
requiring every column of ``G B`` on the unit circle is linear in ``M = G^T G`` (affine
factorisation with a metric constraint, as in Tomasi-Kanade). The window's angles follow up to
an offset and a sign; overlapping windows chain them. The curvature of the orbits sets the
angle scale, so windows must span a few tens of degrees (``window_deg``).

Images: the tracker works on the high-passed optical depth ``d - blur(d)`` of the crop, so
granules and nucleoli dominate and the static outlines of body and nucleus fade; corners are
taken inside the eroded cell mask. An in-plane tilt of the rotation axis makes features move
along a tilted line; the tilt is estimated from the (u, v) motion and positions are projected on
the normal of the axis. Tracks are dropped when lost (LK status, forward-backward error), when
they leave the eroded mask (limb, outline) or when they do not fit their orbit; new corners are
detected in empty parts of the mask. The sign of the rotation is unobservable in parallel
projections (a transparent cell turning +theta looks like its mirror image turning -theta): it
comes from ``direction``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "TrackerConfig",
    "RotationTracker",
    "highpass_depth",
    "factorize_orbits",
    "estimate_tilt",
    "angles_from_tracks",
]


@dataclass
class TrackerConfig:
    """Feature and window parameters (pixels of the tracked crop, degrees)."""

    max_features: int = 160
    min_features: int = 60
    quality: float = 0.02
    min_distance: int = 5
    block_size: int = 5
    win_size: int = 13
    levels: int = 2
    fb_max_px: float = 0.4
    highpass_sigma: float = 3.0
    erode_frac: float = 0.12  # of the mask's equivalent radius
    window_deg: float = 36.0  # angular span of a factorisation window
    max_window: int = 80  # frames
    min_window: int = 4
    min_tracks: int = 8
    max_residual_px: float = 0.8
    redetect_every: int = 4
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
def factorize_orbits(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Angles of T frames from K features on circular orbits about a common axis.

    ``u`` (K, T): positions across the rotation axis of the same K features in T frames.
    Returns (theta (T,) radians with theta[0] = 0 and a positive net turn, orbit coefficients
    (K, 2) = (p, q), per-feature rms residual (K,)), or None when the metric constraint has no
    positive-definite solution (too little curvature, e.g. a window spanning a few degrees).
    """
    u = np.asarray(u, np.float64)
    k, t = u.shape
    if k < 3 or t < 3:
        return None
    uc = u - u.mean(axis=0, keepdims=True)
    uu, s, vt = np.linalg.svd(uc, full_matrices=False)
    a = uu[:, :2] * s[:2]
    b = vt[:2]
    design = np.stack([b[0] * b[0], 2 * b[0] * b[1], b[1] * b[1]], axis=1)
    m, *_ = np.linalg.lstsq(design, np.ones(t), rcond=None)
    mm = np.array([[m[0], m[1]], [m[1], m[2]]])
    if m[0] <= 0 or np.linalg.det(mm) <= 0:
        return None
    g = np.linalg.cholesky(mm).T  # mm = g^T g
    sc = g @ b
    theta = np.unwrap(np.arctan2(sc[1], sc[0]))
    theta -= theta[0]
    pq = a @ np.linalg.inv(g)
    if theta[-1] < 0:  # reflection: theta -> -theta, q -> -q
        theta, pq = -theta, pq * np.array([1.0, -1.0])
    model = pq[:, :1] * np.cos(theta) + pq[:, 1:] * np.sin(theta)
    res = np.sqrt(np.mean((uc - model) ** 2, axis=1))
    return theta, pq, res


def estimate_tilt(uv: np.ndarray) -> tuple[float, float, float]:
    """Sufficient statistics (sum du^2, sum du dv, n) for the in-plane axis tilt.

    ``uv`` (K, T, 2): the same K features over T frames. Frame-to-frame motion, with the common
    (lateral drift) part removed, runs along ``(cos tilt, sin tilt)``; ``tilt = atan2(sdudv, sdu2)``.
    """
    d = np.diff(uv, axis=1)
    d = d - d.mean(axis=0, keepdims=True)
    return float(np.sum(d[..., 0] ** 2)), float(np.sum(d[..., 0] * d[..., 1])), float(d.shape[0] * d.shape[1])


def _window_start(births: np.ndarray, end: int, angles: np.ndarray, cfg: TrackerConfig) -> tuple[int, np.ndarray]:
    """First frame of the window ending at ``end`` and the positions (in ``ids[end]``) of its tracks.

    Grows backwards until it spans ``window_deg`` (by the current angle estimates), reaches
    ``max_window`` frames, or fewer than ``min_tracks`` tracks cover it all.
    """
    order = np.sort(births)
    s = end
    lo = max(0, end - cfg.max_window + 1)
    while s > lo:
        cand = s - 1
        n_cover = int(np.searchsorted(order, cand, side="right"))
        if n_cover < cfg.min_tracks:
            break
        s = cand
        if abs(angles[end] - angles[s]) >= cfg.window_deg:
            break
    return s, np.flatnonzero(births <= s)


def _gather(frame_ids: list[np.ndarray], frame_pts: list[np.ndarray], ids: np.ndarray, s: int, e: int) -> np.ndarray:
    """Positions (K, T, 2) of tracks ``ids`` (alive over frames s..e) from per-frame storage."""
    out = np.empty((ids.size, e - s + 1, 2))
    for j, f in enumerate(range(s, e + 1)):
        out[:, j] = frame_pts[f][np.searchsorted(frame_ids[f], ids)]
    return out


def _solve_window(uv: np.ndarray, tilt_rad: float, cfg: TrackerConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """Angles (T,) of one window with robust rejection of features off their orbit; and the
    boolean inlier mask over features."""
    c, s = np.cos(tilt_rad), np.sin(tilt_rad)
    u = c * uv[..., 0] + s * uv[..., 1]
    keep = np.ones(u.shape[0], bool)
    sol = None
    for _ in range(3):
        if keep.sum() < max(3, cfg.min_tracks // 2):
            return None
        sol = factorize_orbits(u[keep])
        if sol is None:
            return None
        res = np.full(u.shape[0], np.inf)
        res[keep] = sol[2]
        med = float(np.median(sol[2]))
        new = res < max(3.0 * med, 0.15)
        new &= res < cfg.max_residual_px * 2
        if new.sum() == keep.sum() and np.all(new == keep):
            break
        keep = new
    if sol is None or keep.sum() < 3:
        return None
    return sol[0], keep


def angles_from_tracks(
    frame_ids: list[np.ndarray],
    frame_pts: list[np.ndarray],
    births: dict[int, int] | np.ndarray,
    initial_deg: np.ndarray,
    tilt_deg: float,
    config: TrackerConfig | None = None,
) -> np.ndarray:
    """Batch angles (deg, cumulative, frame 0 = 0) from stored feature tracks.

    Every frame ends one window (chosen with ``initial_deg``, e.g. the live estimates, to span
    ``window_deg``); each window's factorised angles give increments for its consecutive frames;
    the increment of a frame pair is the mean over all windows that contain it (sign of each
    window from ``initial_deg``). Pairs that no window covers keep their initial increment.
    """
    cfg = config or TrackerConfig()
    n = len(frame_ids)
    init = np.asarray(initial_deg, np.float64)
    acc = np.zeros(max(n - 1, 0))
    cnt = np.zeros(max(n - 1, 0))
    tilt = np.deg2rad(tilt_deg)
    for e in range(cfg.min_window - 1, n):
        ids_e = frame_ids[e]
        if ids_e.size < cfg.min_tracks:
            continue
        b = np.array([births[int(i)] for i in ids_e]) if isinstance(births, dict) else births[ids_e]
        s, sel = _window_start(b, e, init, cfg)
        if e - s + 1 < cfg.min_window or sel.size < cfg.min_tracks:
            continue
        if abs(init[e] - init[s]) < 0.5 * cfg.window_deg and e - s + 1 < cfg.max_window:
            continue  # too little curvature to fix the scale
        out = _solve_window(_gather(frame_ids, frame_pts, ids_e[sel], s, e), tilt, cfg)
        if out is None:
            continue
        th = np.rad2deg(out[0])
        ref = init[s : e + 1] - init[s]
        if float(th @ ref) < 0:
            th = -th
        acc[s:e] += np.diff(th)
        cnt[s:e] += 1
    inc = np.where(cnt > 0, acc / np.maximum(cnt, 1), np.diff(init) if n > 1 else acc)
    return np.concatenate([[0.0], np.cumsum(inc)])


# --------------------------------------------------------------------------- tracker
class RotationTracker:
    """Per-frame cumulative signed angle of a rotating cell from crops and cell masks.

    ``update(crop, mask)`` takes the crop's intensity (any dtype, background > 0) and a bool
    cell mask; it returns the live angle estimate (deg). :meth:`solve` re-estimates all
    angles from all tracks with centred windows (better than the causal live estimates).
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.cfg = config or TrackerConfig()
        self.angles_deg: list[float] = []
        self.frame_ids: list[np.ndarray] = []
        self.frame_pts: list[np.ndarray] = []
        self.births: dict[int, int] = {}
        self._birth_arr = np.zeros(0, np.int64)
        self._prev: np.ndarray | None = None
        self._pts = np.zeros((0, 2), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._next_id = 0
        self._gain: float | None = None
        self._i0: float | None = None
        self._tilt_stats = np.zeros(3)
        self._sign = 1.0 if self.cfg.direction >= 0 else -1.0
        self._step = self._sign * abs(self.cfg.nominal_step_deg)

    # ------------------------------------------------------------------ properties
    @property
    def features(self) -> np.ndarray:
        """Current feature positions (P, 2) xy in crop pixels."""
        return self._pts.copy()

    @property
    def tilt_deg(self) -> float:
        """In-plane tilt of the rotation axis from the feature motion (deg, pose_matrix sign)."""
        su2, suv, n = self._tilt_stats
        return float(np.rad2deg(np.arctan2(suv, su2))) if n > 0 and su2 > 0 else 0.0

    @property
    def n_tracks(self) -> int:
        return self._next_id

    # ------------------------------------------------------------------ image
    def _prepare(self, image: np.ndarray) -> np.ndarray:
        img = np.asarray(image, np.float32)
        if self._i0 is None:
            h, w = img.shape
            b = max(1, min(4, min(h, w) // 8))
            self._i0 = float(np.median(np.concatenate([img[:b].ravel(), img[-b:].ravel(), img[:, :b].ravel(), img[:, -b:].ravel()])))
        hp = highpass_depth(img, self._i0, self.cfg.highpass_sigma)
        if self._gain is None:
            self._gain = 30.0 / max(float(np.std(hp)), 1e-4)
        return cv2.convertScaleAbs(hp, alpha=self._gain, beta=128.0)

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
        for i in ids:
            self.births[int(i)] = frame
        self._birth_arr = np.concatenate([self._birth_arr, np.full(len(new), frame, np.int64)])
        self._pts = np.concatenate([self._pts, new])
        self._ids = np.concatenate([self._ids, ids])

    # ------------------------------------------------------------------ per frame
    def update(self, image: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Track one crop; returns the cumulative angle (deg) of this frame (live estimate)."""
        cfg = self.cfg
        frame = len(self.angles_deg)
        img = self._prepare(image)
        if mask is None or not np.any(mask):
            allowed = np.full(img.shape, 255, np.uint8)
        else:
            allowed = _eroded(mask, cfg.erode_frac) * np.uint8(255)
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
        elif self._prev is not None:
            self._pts = np.zeros((0, 2), np.float32)
        self.frame_ids.append(self._ids.copy())
        self.frame_pts.append(self._pts.astype(np.float64))
        angle = self._live_angle(frame)
        self.angles_deg.append(angle)
        self._prev = img
        if frame == 0 or len(self._pts) < cfg.min_features or frame % cfg.redetect_every == 0:
            self._detect(img, allowed, frame)
            # features found now are part of this frame (their track starts here)
            self.frame_ids[-1] = self._ids.copy()
            self.frame_pts[-1] = self._pts.astype(np.float64)
        return angle

    def _live_angle(self, e: int) -> float:
        cfg = self.cfg
        if e == 0:
            return 0.0
        prev = np.asarray(self.angles_deg + [self.angles_deg[-1] + self._step])
        # tilt statistics from the last pair of frames
        ids_e = self.frame_ids[e]
        if ids_e.size >= 3:
            b = self._birth_arr[ids_e]
            pair = ids_e[b <= e - 1]
            if pair.size >= 3:
                uv = _gather(self.frame_ids, self.frame_pts, pair, e - 1, e)
                self._tilt_stats += estimate_tilt(uv)
        angle = prev[e]
        if ids_e.size >= cfg.min_tracks:
            s, sel = _window_start(self._birth_arr[ids_e], e, prev, cfg)
            if e - s + 1 >= cfg.min_window and sel.size >= cfg.min_tracks:
                uv = _gather(self.frame_ids, self.frame_pts, ids_e[sel], s, e)
                out = _solve_window(uv, np.deg2rad(self.tilt_deg), cfg)
                span_ok = abs(prev[e - 1] - prev[s]) >= 0.4 * cfg.window_deg or e - s + 1 >= cfg.max_window
                if out is not None and span_ok:
                    th = np.rad2deg(out[0])
                    ref = prev[s:e] - prev[s]
                    if float(th[:-1] @ ref) < 0 or (not np.any(ref) and self._sign * th[-1] < 0):
                        th = -th
                    off = float(np.mean(prev[s:e] - th[:-1]))
                    cand = th[-1] + off
                    step = cand - prev[e - 1]
                    if np.sign(step) == self._sign or step == 0:
                        angle = cand
                    # drop tracks off their orbit (stuck on an outline, swapped granules)
                    bad = ids_e[sel][~out[1]]
                    if bad.size:
                        keep = ~np.isin(self._ids, bad)
                        self._pts, self._ids = self._pts[keep], self._ids[keep]
        self._step = angle - prev[e - 1] if angle != prev[e - 1] else self._step
        return float(angle)

    # ------------------------------------------------------------------ batch
    def solve(self, passes: int = 2) -> np.ndarray:
        """All angles (deg) re-estimated from all tracks with windows chosen on the live angles."""
        ang = np.asarray(self.angles_deg, np.float64)
        if ang.size < 2:
            return ang
        for _ in range(passes):
            ang = angles_from_tracks(self.frame_ids, self.frame_pts, self._birth_arr, ang, self.tilt_deg, self.cfg)
        return ang
