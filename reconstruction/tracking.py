"""Rotation-angle tracking from feature tracks (Shi-Tomasi corners + pyramidal Lucas-Kanade).

Model: the cell turns about the image-vertical axis, so in a parallel projection a feature i
moves horizontally on its own orbit, ``x_i(theta) = c_i + a_i cos(theta) + b_i sin(theta)``
(orbit centre ``c_i`` and radius ``hypot(a_i, b_i)`` per feature - features inside the cell
have all radii, none is assumed on the surface). Each frame's angle is the Gauss-Newton
least-squares fit of all modelled features' positions (features near the limb, where
``dx/dtheta`` vanishes, weigh little by construction; outliers are trimmed). Each feature's
orbit is refitted (3x3 linear least squares) from its own track as it grows.

Bootstrap: before any orbit is known the increments come from the ratio of feature velocities
between frames, scaled by a nominal step; after ``bootstrap_frames`` the true scale is found
by a 1D search over the angle scale that best fits sinusoids to all tracks.

Features are re-detected (in empty parts of the cell mask) when they are lost (LK status,
forward-backward error) or too few remain informative. The sign of a parallel projection's
rotation is unobservable (a transparent cell turning +theta looks like its mirror turning
-theta), so the first increment takes the sign of ``direction``; later reversals are tracked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class TrackerConfig:
    max_features: int = 200
    min_features: int = 40
    quality: float = 0.01
    min_distance: int = 5
    win_size: int = 15
    levels: int = 3
    fb_max_px: float = 0.5
    min_track_fit: int = 6
    min_span_deg: float = 12.0
    bootstrap_frames: int = 25
    nominal_step_deg: float = 1.0
    direction: int = 1
    redetect_every: int = 10


@dataclass
class _Track:
    frames: list[int] = field(default_factory=list)
    xs: list[float] = field(default_factory=list)
    model: np.ndarray | None = None  # (c, a, b)
    weight: float = 1.0


def fit_orbit(theta_rad: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares orbit (c, a, b) of positions x at angles theta; returns (model, rms)."""
    m = np.stack([np.ones_like(theta_rad), np.cos(theta_rad), np.sin(theta_rad)], axis=1)
    coef, *_ = np.linalg.lstsq(m, x, rcond=None)
    res = x - m @ coef
    return coef, float(np.sqrt(np.mean(res**2)))


def solve_angle(models: np.ndarray, x: np.ndarray, theta0: float, iters: int = 4) -> tuple[float, int]:
    """Angle (rad) best explaining positions ``x`` of features with orbits ``models`` (P, 3).

    Gauss-Newton from ``theta0`` with one round of outlier trimming (3 x MAD); returns
    (theta, number of inliers).
    """
    c, a, b = models[:, 0], models[:, 1], models[:, 2]
    keep = np.ones(x.size, bool)
    th = theta0
    for it in range(iters + 2):
        r = x - (c + a * np.cos(th) + b * np.sin(th))
        if it == 2:
            mad = np.median(np.abs(r)) + 1e-3
            keep = np.abs(r) < 4 * 1.4826 * mad + 0.05
        d = -a * np.sin(th) + b * np.cos(th)
        dd = d[keep]
        den = float(dd @ dd)
        if den < 1e-9:
            break
        th += float(dd @ r[keep]) / den
    return th, int(keep.sum())


class RotationTracker:
    """Per-frame cumulative signed angle from (H, W) uint8 crops of the cell."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.cfg = config or TrackerConfig()
        self.angles_deg: list[float] = []
        self._prev: np.ndarray | None = None
        self._pts = np.zeros((0, 2), np.float32)
        self._ids: list[int] = []
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0
        self._bootstrapped = False
        self._step = np.deg2rad(self.cfg.nominal_step_deg) * (1 if self.cfg.direction >= 0 else -1)

    # ------------------------------------------------------------------ features
    def _detect(self, gray: np.ndarray, mask: np.ndarray | None, frame: int) -> None:
        m = None
        if mask is not None and mask.any():
            # stay off the limb: silhouette corners barely move with the rotation
            r = max(2, int(0.12 * np.sqrt(mask.sum() / np.pi)))
            m = cv2.erode(mask.astype(np.uint8) * 255, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        if m is not None and len(self._pts):
            for x, y in self._pts:
                cv2.circle(m, (int(round(x)), int(round(y))), self.cfg.min_distance, 0, -1)
        need = self.cfg.max_features - len(self._pts)
        if need <= 0:
            return
        new = cv2.goodFeaturesToTrack(gray, need, self.cfg.quality, self.cfg.min_distance, mask=m, blockSize=5)
        if new is None:
            return
        new = new.reshape(-1, 2).astype(np.float32)
        self._pts = np.concatenate([self._pts, new])
        for x, _y in new:
            self._ids.append(self._next_id)
            self._tracks[self._next_id] = _Track([frame], [float(x)])
            self._next_id += 1

    @property
    def features(self) -> np.ndarray:
        """Current feature positions (P, 2) xy in crop pixels."""
        return self._pts.copy()

    @property
    def tracks(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """All tracks: id -> (frame indices, x positions)."""
        return {k: (np.array(t.frames), np.array(t.xs)) for k, t in self._tracks.items() if len(t.frames) > 1}

    # ------------------------------------------------------------------ angle
    def _refit(self, tid: int) -> None:
        t = self._tracks[tid]
        if len(t.frames) < self.cfg.min_track_fit:
            return
        th = np.deg2rad(np.asarray(self.angles_deg)[t.frames])
        if np.ptp(th) < np.deg2rad(self.cfg.min_span_deg):
            return
        coef, rms = fit_orbit(th, np.asarray(t.xs))
        t.model = coef if rms < 1.0 else None

    def _bootstrap_scale(self) -> None:
        """Pick the angle scale k (theta -> k * theta) that best fits orbits to all tracks."""
        th = np.deg2rad(np.asarray(self.angles_deg))
        best = (np.inf, 1.0)
        tracks = [t for t in self._tracks.values() if len(t.frames) >= self.cfg.min_track_fit]
        if len(tracks) < 5 or np.ptp(th) == 0:
            return
        for k in np.exp(np.linspace(np.log(0.1), np.log(10), 121)):
            tot = 0.0
            for t in tracks:
                tt = k * th[t.frames]
                m = np.stack([np.ones_like(tt), np.cos(tt), np.sin(tt)], 1)
                coef, res, *_ = np.linalg.lstsq(m, np.asarray(t.xs), rcond=None)
                tot += float(res[0]) if res.size else float(np.sum((np.asarray(t.xs) - m @ coef) ** 2))
            if tot < best[0]:
                best = (tot, k)
        k = best[1]
        self.angles_deg = [a * k for a in self.angles_deg]
        self._step *= k
        self._bootstrapped = True
        for _ in range(3):  # alternate: orbits from angles, angles from orbits
            for tid in self._tracks:
                self._refit(tid)
            self._resolve_history()

    def _resolve_history(self) -> None:
        """Re-solve every past frame's angle from the fitted orbits (keeps frame 0 at 0)."""
        rows: dict[int, list[tuple[np.ndarray, float]]] = {}
        for t in self._tracks.values():
            if t.model is None:
                continue
            for f, x in zip(t.frames, t.xs):
                rows.setdefault(f, []).append((t.model, x))
        for f in range(1, len(self.angles_deg)):
            if len(rows.get(f, ())) >= 3:
                models = np.stack([m for m, _ in rows[f]])
                xs = np.array([x for _, x in rows[f]])
                th, n_in = solve_angle(models, xs, np.deg2rad(self.angles_deg[f]))
                if n_in >= 3:
                    self.angles_deg[f] = float(np.rad2deg(th))
        if len(self.angles_deg) > 1:
            self._step = np.deg2rad(self.angles_deg[-1] - self.angles_deg[-2])

    def update(self, gray: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Track one crop (uint8); returns the cumulative angle (deg) of this frame."""
        frame = len(self.angles_deg)
        if self._prev is None:
            self.angles_deg.append(0.0)
            self._prev = gray
            self._detect(gray, mask, frame)
            return 0.0
        cfg = self.cfg
        lk = dict(winSize=(cfg.win_size, cfg.win_size), maxLevel=cfg.levels,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01))
        ids = np.asarray(self._ids)
        xs_prev = self._pts[:, 0].copy()
        if len(self._pts):
            p1, st, _ = cv2.calcOpticalFlowPyrLK(self._prev, gray, self._pts.reshape(-1, 1, 2), None, **lk)
            p0b, st2, _ = cv2.calcOpticalFlowPyrLK(gray, self._prev, p1, None, **lk)
            fb = np.linalg.norm(p0b.reshape(-1, 2) - self._pts, axis=1)
            good = (st.ravel() == 1) & (st2.ravel() == 1) & (fb < cfg.fb_max_px)
            p1 = p1.reshape(-1, 2)
            if mask is not None:
                h, w = mask.shape
                xi = np.clip(p1[:, 0].round().astype(int), 0, w - 1)
                yi = np.clip(p1[:, 1].round().astype(int), 0, h - 1)
                good &= mask[yi, xi]
        else:
            p1, good = self._pts, np.zeros(0, bool)
        prev_theta = np.deg2rad(self.angles_deg[-1])
        theta = None
        # model mode: features with known orbits
        sel = [i for i in np.flatnonzero(good) if self._tracks[ids[i]].model is not None]
        if self._bootstrapped and len(sel) >= 3:
            models = np.stack([self._tracks[ids[i]].model for i in sel])
            theta, n_in = solve_angle(models, p1[sel, 0].astype(np.float64), prev_theta + self._step)
            if n_in < 3:
                theta = None
        if theta is None:
            # bootstrap / fallback: this frame's velocities relative to each track's mean
            # velocity per unit of angle so far (robust median over features)
            ratios = []
            for i in np.flatnonzero(good):
                t = self._tracks[ids[i]]
                if len(t.frames) < 2:
                    continue
                span = np.deg2rad(self.angles_deg[t.frames[-1]] - self.angles_deg[t.frames[0]])
                mean_v = (t.xs[-1] - t.xs[0]) / span if span != 0 else 0.0
                if abs(mean_v * self._step) > 0.3:
                    ratios.append(float(p1[i, 0] - xs_prev[i]) / mean_v)
            step = float(np.median(ratios)) if len(ratios) >= 3 else self._step
            if not np.isfinite(step) or step * self._step <= 0:
                step = self._step
            theta = prev_theta + float(np.clip(step, self._step / 3, self._step * 3))
        self._step = theta - prev_theta
        self.angles_deg.append(float(np.rad2deg(theta)))
        # keep the surviving tracks, refit their orbits
        keep_idx = np.flatnonzero(good)
        self._pts = p1[keep_idx].astype(np.float32)
        self._ids = [int(ids[i]) for i in keep_idx]
        for i, tid in zip(keep_idx, self._ids):
            t = self._tracks[tid]
            t.frames.append(frame)
            t.xs.append(float(p1[i, 0]))
            if self._bootstrapped and (t.model is None or len(t.frames) % 5 == 0):
                self._refit(tid)
        if not self._bootstrapped and frame >= cfg.bootstrap_frames:
            self._bootstrap_scale()
        self._prev = gray
        if len(self._pts) < cfg.min_features or frame % cfg.redetect_every == 0:
            self._detect(gray, mask, frame)
        return self.angles_deg[-1]
