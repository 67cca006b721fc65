"""Per-frame registration of a moving cell: flat field, centre of mass, sub-pixel re-centring.

A trapped cell moves (Brownian motion in the trap, drift, a wobble at twice the rotation
frequency: 0.5-5 px at 0.07-0.1 um per pixel), and every projection must be put back on the
rotation axis before the angles are estimated or anything is back-projected.

Why the centre of mass: any rigid motion of the cell (a rotation about any axis plus a
translation) is a rotation about an axis through the cell's centre of attenuation plus a
translation of that centre; and the centre of mass of a parallel projection (line integrals)
is the projection of the 3D centre of mass. So shifting every projection so that its centre
of mass sits on the crop centre removes the translation exactly and puts the rotation axis
through the crop centre, whatever the true axis, the tilt or the angle. It needs proper line
integrals (a per-pixel flat field, not one border level: the capillary walls and vignetting
are static in the frame while the cell moves) and the whole cell inside the window. The phase
halo of a defocused brightfield image is a Laplacian and has no first moment: it does not bias
the centre.

Conventions: centres are (row, column) in the pixels of the frames given; a crop of side
``n`` has its centre at ``((n - 1) / 2, (n - 1) / 2)``, where :func:`~.fbp.fbp` puts the axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import warnings

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter

__all__ = ["Registration", "flat_field", "cell_radius", "smooth_track", "centre_noise", "centre_of_mass", "extract_centred", "register", "disk_mask"]


def disk_mask(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """Bool (H, W): pixels within ``radius`` of ``centre`` (row, col)."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius * radius


def _fill(flat: np.ndarray, valid: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Illumination where the cell always sat: a quadratic surface fitted to the pixels seen
    (vignetting, a gradient) plus each column's median residual over its seen rows (the
    vertical capillary walls). With under 50 pixels ever seen: the frames' border median."""
    h, w = flat.shape
    if valid.sum() < 50:
        b = np.concatenate([frames[:, 0].ravel(), frames[:, -1].ravel(), frames[:, :, 0].ravel(), frames[:, :, -1].ravel()])
        return np.full((h, w), float(np.median(b)), np.float32)
    yy, xx = np.indices((h, w), dtype=np.float64)
    yn, xn = yy / max(h - 1, 1) - 0.5, xx / max(w - 1, 1) - 0.5
    basis = np.stack([np.ones_like(yn), yn, xn, yn * yn, xn * xn, yn * xn], axis=-1)
    coef, *_ = np.linalg.lstsq(basis[valid], flat[valid], rcond=None)
    surface = basis @ coef
    resid = np.where(valid, flat - surface, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column never seen: no correction
        col = np.nanmedian(resid, axis=0)
    return (surface + np.nan_to_num(col)[None, :]).astype(np.float32)


def flat_field(frames: np.ndarray, centres: np.ndarray, radius: float, max_frames: int = 64) -> np.ndarray:
    """Per-pixel illumination I0 (H, W) of a fixed field from frames with a moving cell in it.

    The temporal median of each pixel over the frames in which the cell (a disc of ``radius``
    around its centre) does not cover it; pixels the cell covers in every frame are filled by
    :func:`_fill` (a quadratic surface plus each column's residual: keeps the vertical
    capillary walls and the vignetting). ``max_frames`` evenly spaced frames are enough
    (the field is static; the median of 64 draws has ~1/6 of one frame's noise).
    """
    f = np.asarray(frames, np.float32)
    t, h, w = f.shape
    pick = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    sub = f[pick].copy()
    for k, i in enumerate(pick):
        sub[k][disk_mask((h, w), tuple(centres[i]), radius)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: filled below
        flat = np.nanmedian(sub, axis=0)
    holes = ~np.isfinite(flat)
    if holes.any():
        flat[holes] = _fill(flat, ~holes, f)[holes]
    return np.maximum(flat, 1e-6).astype(np.float32)


def _taper(shape: tuple[int, int], centre: tuple[float, float], radius: float, edge: float) -> np.ndarray:
    """Window 1 inside ``radius``, a cosine fall to 0 over ``edge`` px (sub-pixel smooth: the
    centre of mass does not jump when the window moves by a fraction of a pixel)."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    r = np.sqrt((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2)
    x = np.clip((r - radius) / max(edge, 1e-6), 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * x)).astype(np.float32)


def centre_of_mass(od: np.ndarray, start: tuple[float, float], radius: float, iterations: int = 5,
                   edge: float = 4.0) -> tuple[float, float]:
    """Centre (row, col) of the line-integral mass of one projection inside a window that follows it.

    The window (``radius`` + a cosine ``edge``) is re-centred on the estimate each iteration. A
    residual background level b inside the window pulls the estimate towards the window centre
    but not at the fixed point, which is the cell's centre of mass.
    """
    h, w = od.shape
    cy, cx = float(start[0]), float(start[1])
    yy = np.arange(h, dtype=np.float64)[:, None]
    xx = np.arange(w, dtype=np.float64)[None, :]
    for _ in range(iterations):
        r0, r1 = int(max(0, np.floor(cy - radius - edge - 1))), int(min(h, np.ceil(cy + radius + edge + 2)))
        c0, c1 = int(max(0, np.floor(cx - radius - edge - 1))), int(min(w, np.ceil(cx + radius + edge + 2)))
        if r1 <= r0 or c1 <= c0:
            break
        win = _taper((r1 - r0, c1 - c0), (cy - r0, cx - c0), radius, edge)
        m = od[r0:r1, c0:c1] * win
        tot = float(m.sum())
        if not np.isfinite(tot) or tot <= 1e-9:
            break
        ny = float((m * yy[r0:r1]).sum() / tot)
        nx = float((m * xx[:, c0:c1]).sum() / tot)
        step = np.hypot(ny - cy, nx - cx)
        cy, cx = ny, nx
        if step < 1e-3:
            break
    return cy, cx


def extract_centred(images: np.ndarray, centres: np.ndarray, side: int, interpolation: int = cv2.INTER_CUBIC
                    ) -> np.ndarray:
    """Crops (T, side, side) with each image's ``centres[t]`` (row, col) on the crop centre.

    Sub-pixel, cubic by default (bilinear resampling by a fractional shift is a blur of up to
    half a pixel; cubic keeps the fine structure). Outside the image: zeros (line integrals).
    """
    out = np.empty((len(images), side, side), np.float32)
    c = (side - 1) / 2.0
    for i, (img, (cy, cx)) in enumerate(zip(images, centres)):
        m = np.array([[1.0, 0.0, cx - c], [0.0, 1.0, cy - c]], np.float64)
        out[i] = cv2.warpAffine(np.asarray(img, np.float32), m, (side, side),
                                flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    return out


def cell_radius(od: np.ndarray, centres: np.ndarray, start_radius: float, max_frames: int = 32,
                level: float = 0.05) -> float:
    """Radius (px) of the cell from line integrals: the outermost radius at which the mean
    radial profile of |od| about each frame's centre is above ``level`` of its peak (the rim,
    and the phase halo outside it, included). A detector's box misses a faint rim (measured:
    44 px for a 72 px cell); a centre-of-mass window that cuts the cell is biased wherever the
    cut changes."""
    t = len(od)
    pick = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    h, w = od.shape[1:]
    rmax = int(np.ceil(min(max(h, w), 4 * start_radius + 16)))
    acc = np.zeros(rmax + 1)
    cnt = np.zeros(rmax + 1)
    yy, xx = np.indices((h, w))
    for i in pick:
        r = np.rint(np.hypot(yy - centres[i][0], xx - centres[i][1])).astype(int).ravel()
        keep = r <= rmax
        acc += np.bincount(r[keep], weights=np.abs(od[i]).ravel()[keep], minlength=rmax + 1)
        cnt += np.bincount(r[keep], minlength=rmax + 1)
    prof = acc / np.maximum(cnt, 1)
    prof = np.convolve(prof, np.ones(3) / 3, mode="same")
    seen = np.flatnonzero(cnt > 0)
    prof = prof[: seen[-1] + 1]
    core = float(prof[: max(2, int(0.5 * start_radius))].max())
    # the background level: beyond 2.5 radii where the field reaches that far, else the outer
    # quarter of what it shows (a tight frame)
    far = prof[int(2.5 * start_radius):] if prof.size > int(2.5 * start_radius) + 3 else prof[int(0.75 * prof.size):]
    floor = float(np.median(far)) if far.size else 0.0
    # the first fall below the level going outwards (a residual illumination error far out
    # must not extend the cell), plus the halo just outside the rim
    below = np.flatnonzero(prof[int(0.5 * start_radius):] - floor < level * max(core - floor, 1e-9))
    if not below.size:
        return float(prof.size - 1)
    return float(int(0.5 * start_radius) + below[0] + 3)


def smooth_track(centres: np.ndarray, noise_px: np.ndarray | float, max_sigma: float = 8.0) -> np.ndarray:
    """The centres (T, 2) smoothed in time as far as their measurement noise calls for, per axis.

    ``noise_px``: the std of each axis' centre-of-mass estimate (from the image noise,
    :func:`centre_noise`). The motion's own frame-to-frame step is what the first differences
    hold beyond that noise; the Gaussian window is their ratio in frames (the steady-state
    window of a Kalman smoother for a random walk in white noise), at most ``max_sigma``. A
    still cell's jittering centres are averaged, a fast-moving one's are followed.
    """
    c = np.asarray(centres, np.float64).copy()
    noise = np.broadcast_to(np.asarray(noise_px, np.float64), (c.shape[1],))
    if len(c) < 8:
        return c
    for k in range(c.shape[1]):
        step2 = max(float(np.var(np.diff(c[:, k]))) - 2.0 * noise[k] ** 2, 1e-6)
        sigma = min(max_sigma, float(noise[k]) / np.sqrt(step2))
        if sigma >= 0.5:
            c[:, k] = gaussian_filter1d(c[:, k], sigma, mode="nearest")
    return c


def centre_noise(od: np.ndarray, centres: np.ndarray, radius: float, exclude: float, max_frames: int = 16
                 ) -> np.ndarray:
    """Std (row, col) of the centre-of-mass estimate from the image noise: the noise of the
    line integrals (MAD of the pixels outside ``exclude`` of the cell) propagated through the
    window's first moment, ``sigma * sqrt(sum (x - c)^2) / mass``, median over frames."""
    t, h, w = od.shape
    pick = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    out = []
    for i in pick:
        far = ~disk_mask((h, w), tuple(centres[i]), exclude)
        if far.sum() < 50:
            continue
        bg = od[i][far]
        sig = 1.4826 * float(np.median(np.abs(bg - np.median(bg))))
        win = disk_mask((h, w), tuple(centres[i]), radius)
        yy, xx = np.nonzero(win)
        mass = float(od[i][win].sum())
        if mass <= 0:
            continue
        out.append([sig * np.sqrt(np.sum((yy - centres[i][0]) ** 2)) / mass,
                    sig * np.sqrt(np.sum((xx - centres[i][1]) ** 2)) / mass])
    return np.median(np.array(out), axis=0) if out else np.zeros(2)


@dataclass
class Registration:
    """What :func:`register` found: the flat field, each frame's centre and the centred crops."""

    flat: np.ndarray  # (H, W) illumination of the field
    centres: np.ndarray  # (T, 2) row, col of each frame's centre of mass (field pixels)
    radius: float  # the cell's radius (px) measured on the line integrals (:func:`cell_radius`)
    projections: np.ndarray  # (T, side, side) line integrals, centre of mass on the crop centre

    def report(self) -> dict[str, float]:
        """Motion figures for the report (pixels of the field)."""
        d = self.centres - np.median(self.centres, axis=0)
        step = np.diff(self.centres, axis=0)
        return {
            "cell_radius_px": float(self.radius),
            "motion_rms_px_row": float(np.sqrt(np.mean(d[:, 0] ** 2))),
            "motion_rms_px_col": float(np.sqrt(np.mean(d[:, 1] ** 2))),
            "motion_max_px": float(np.max(np.hypot(d[:, 0], d[:, 1]))) if len(d) else 0.0,
            "step_rms_px": float(np.sqrt(np.mean(np.sum(step ** 2, axis=1)))) if len(step) else 0.0,
        }


def register(frames: np.ndarray, centres: np.ndarray, radius: float, side: int | None = None,
             flat: np.ndarray | None = None) -> Registration:
    """Flat field, per-frame centre of mass and centred line-integral crops of a fixed field.

    ``frames`` (T, H, W) raw intensities of the field (the same pixels every frame);
    ``centres`` (T, 2) a first guess of the cell centre per frame (the live segmentation);
    ``radius`` the detected cell's radius in pixels (a first guess: the radius is measured
    again on the line integrals, :func:`cell_radius`, and the window adds a margin to it);
    ``side`` the crop side (None: twice the measured radius plus margins; a crop may extend past
    the field, where the line integrals are zero). ``flat`` a known illumination (else
    :func:`flat_field`, keeping out 1.25 x the detected radius + 6 px, or 1.15 x the measured
    radius + 8 px where that is smaller).
    """
    f = np.asarray(frames, np.float32)
    start = np.asarray(centres, np.float64).reshape(-1, 2)
    if f.ndim != 3 or len(f) != len(start):
        raise ValueError(f"frames {f.shape} and centres {start.shape} do not match")
    # the cell plus its phase halo (a bright rim some 4 sigma of the defocus wide) is kept out
    # of the flat field; where the detected size was generous (a tight frame is then all
    # "cell"), once more with the size measured on the line integrals
    given = flat is not None
    excl = 1.25 * radius + 6.0
    flat = np.asarray(flat, np.float32) if given else flat_field(f, start, excl)
    od = -np.log(np.clip(f / flat, 1e-3, None))
    measured = cell_radius(od, start, radius, level=0.04)
    if not given and 1.15 * measured + 8.0 < excl - 2.0:
        flat = flat_field(f, start, 1.15 * measured + 8.0)
        od = -np.log(np.clip(f / flat, 1e-3, None))
        measured = cell_radius(od, start, measured, level=0.04)
    win = measured + 3.0
    # at most the field: beyond it nothing was recorded
    side = int(side or min(2 * int(np.ceil(1.1 * measured + 10)), max(f.shape[1:]) // 2 * 2))
    cen = np.array([centre_of_mass(o, tuple(c), win, iterations=8) for o, c in zip(od, start)])
    # a frame whose window lost the cell (debris, a frame cut by the field edge) stands out
    # from its neighbours' track: it takes their median
    ok = np.all(np.isfinite(cen), axis=1)
    if ok.any():
        cen[~ok] = np.median(cen[ok], axis=0)
    smooth = median_filter(cen, size=(9, 1), mode="nearest")
    bad = np.hypot(*(cen - smooth).T) > max(0.25 * measured, 4.0)
    cen[bad] = smooth[bad]
    cen = smooth_track(cen, centre_noise(od, cen, win, 1.6 * radius + 12.0))
    return Registration(flat, cen, measured, extract_centred(od, cen, side))
