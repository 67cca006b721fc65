"""Filtered back-projection for parallel projections at arbitrary (non-uniform) angles.

Conventions (see ``mcf_rotator.simulation.phantom``):

- projections: array (T, H, W); the rotation axis runs along image rows (axis 1 = y), so every
  image row is an independent 2D slice;
- volume: array (H, D, W) = (y, z, x); at angle ``theta`` (degrees) a voxel at (x, z) (relative to
  the volume centre) lands on detector column ``u = x cos(theta) + z sin(theta) + axis_col``;
- ``axis_col`` defaults to ``(W - 1) / 2`` plus ``axis_offset_px``; an in-plane ``tilt_deg``
  (rotation axis turned in the image as in ``phantom.pose_matrix``) is undone by rotating each
  projection before filtering.

Speed: the detector-interpolation indices and weights depend only on the pixel (x, z) and the
angle, not on the slice, so one sparse matrix ``A`` (pixels x (views * columns)) serves every
slice; the filtered sinogram is laid out (views * columns, slices) with slices contiguous and the
whole volume is ``A @ S``. The product is split over row blocks run in threads (scipy releases
the GIL), with the thread count set explicitly.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.sparse as sp

from mcf_rotator.errors import ReconstructionError

FILTERS = ("ramp", "shepp-logan", "cosine", "hann", "none")


def default_threads() -> int:
    """Thread count for the back-projection: all cores, never more."""
    return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------- filtering
def fourier_filter(n_cols: int, name: str = "ramp") -> np.ndarray:
    """Frequency response (padded length,) of the named reconstruction filter.

    The ramp is built from its band-limited spatial kernel (as in scikit-image), which avoids
    the DC offset of a naive ``|f|``; windows multiply it.
    """
    if name not in FILTERS:
        raise ReconstructionError(f"unknown FBP filter {name!r}; choose one of {', '.join(FILTERS)}")
    size = max(64, int(2 ** np.ceil(np.log2(2 * n_cols))))
    if name == "none":
        return np.ones(size)
    n = np.concatenate((np.arange(1, size / 2 + 1, 2, dtype=int), np.arange(size / 2 - 1, 0, -2, dtype=int)))
    f = np.zeros(size)
    f[0] = 0.25
    f[1::2] = -1 / (np.pi * n) ** 2
    response = 2 * np.real(np.fft.fft(f))
    omega = np.pi * np.fft.fftfreq(size)[1:]
    if name == "shepp-logan":
        response[1:] *= np.sin(omega / 2) / (omega / 2)
    elif name == "cosine":
        response[1:] *= np.fft.fftshift(np.sin(np.linspace(0, np.pi, size, endpoint=False)))
    elif name == "hann":
        response *= np.fft.fftshift(np.hanning(size))
    return response


def filter_projections(projections: np.ndarray, filter_name: str = "ramp") -> np.ndarray:
    """Filter (T, H, W) projections along the detector axis (W); returns float32 (T, H, W)."""
    p = np.asarray(projections, dtype=np.float32)
    w = p.shape[-1]
    resp = fourier_filter(w, filter_name).astype(np.float32)
    size = resp.shape[0]
    workers = default_threads()
    spec = scipy.fft.rfft(p, n=size, axis=-1, workers=workers)
    spec *= resp[: size // 2 + 1]
    return scipy.fft.irfft(spec, n=size, axis=-1, workers=workers)[..., :w].astype(np.float32, copy=False)


# --------------------------------------------------------------------------- weights
def angle_weights(angles_deg: np.ndarray, mode: str = "trapezoid") -> np.ndarray:
    """Per-view integration weights (radians) for non-uniform angles, normalised to sum to pi.

    ``trapezoid``: half the gap to each neighbour along the cumulative angle (what the
    incremental reconstructor can build one view at a time), scaled by pi / coverage so a 180 or
    360 deg sweep is exact. ``circular``: half the gaps to the neighbours of each angle taken
    modulo 180 deg (views at theta and theta+180 see the same lines) - best for sweeps that are
    not a multiple of 180 deg. Unweighted FBP of tracked angles nearly doubles the error.
    """
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    n = a.size
    if n < 2:
        raise ReconstructionError(f"FBP needs at least 2 views, got {n}")
    if mode == "trapezoid":
        order = np.argsort(a, kind="stable")
        s = a[order]
        gaps = np.diff(s)
        w_sorted = np.zeros(n)
        w_sorted[:-1] += gaps / 2
        w_sorted[1:] += gaps / 2
        coverage = s[-1] - s[0]
        if coverage <= 0:
            raise ReconstructionError("all views have the same angle; nothing to reconstruct")
        w = np.empty(n)
        w[order] = w_sorted
        return w * (np.pi / max(coverage, np.pi)) if coverage >= np.pi else w
    if mode == "circular":
        m = np.mod(a, np.pi)
        order = np.argsort(m, kind="stable")
        s = m[order]
        ext = np.concatenate(([s[-1] - np.pi], s, [s[0] + np.pi]))
        w_sorted = (ext[2:] - ext[:-2]) / 2
        w = np.empty(n)
        w[order] = w_sorted
        return w
    raise ReconstructionError(f"unknown weighting {mode!r}; use 'trapezoid' or 'circular'")


# --------------------------------------------------------------------------- geometry
def undo_tilt(projections: np.ndarray, tilt_deg: float, axis_col: float) -> np.ndarray:
    """Rotate each (H, W) projection so a rotation axis tilted by ``tilt_deg`` becomes vertical.

    The axis passes through (row (H-1)/2, column ``axis_col``); ``tilt_deg`` has the sign of
    ``phantom.pose_matrix(tilt_in_plane_deg=...)``. Bilinear, edges padded with zeros.
    """
    p = np.asarray(projections, dtype=np.float32)
    if abs(tilt_deg) < 1e-6:
        return p
    import cv2

    h, w = p.shape[-2:]
    t = np.deg2rad(tilt_deg)
    c, s = np.cos(t), np.sin(t)
    cy = (h - 1) / 2.0
    # output pixel (x, y) samples the input at R_z(tilt) applied about the axis point
    m = np.array([[c, -s, axis_col - c * axis_col + s * cy], [s, c, cy - s * axis_col - c * cy]], np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    out = np.empty_like(p)
    for i, img in enumerate(p.reshape(-1, h, w)):
        out.reshape(-1, h, w)[i] = cv2.warpAffine(img, m, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    return out


def _fold_edges(data: np.ndarray, i0: np.ndarray, ncol: int) -> None:
    """Make every (i0, i0 + 1) pair a valid column pair, in place, keeping the weights right.

    A sample between columns -1 and 0 (or ncol-1 and ncol) keeps only its in-range half; samples
    wholly outside the detector get weight 0. Afterwards ``0 <= i0 <= ncol - 2``.
    """
    lo = i0 == -1
    data[..., 0][lo] = data[..., 1][lo]
    data[..., 1][lo] = 0
    i0[lo] = 0
    hi = i0 == ncol - 1
    data[..., 1][hi] = data[..., 0][hi]
    data[..., 0][hi] = 0
    i0[hi] = ncol - 2
    out = (i0 < 0) | (i0 > ncol - 2)
    data[out] = 0
    np.clip(i0, 0, ncol - 2, out=i0)


@dataclass
class BackProjector:
    """Sparse back-projection operator for fixed angles, detector width and volume grid.

    Built once per angle set (tens of ms); :meth:`apply` back-projects a filtered stack of any
    number of slices. ``weights`` (radians per view) are folded into the matrix.
    """

    angles_deg: np.ndarray
    n_cols: int
    size: int | None = None
    axis_offset_px: float = 0.0
    weights: np.ndarray | None = None
    threads: int = 1
    circle: bool = True

    def __post_init__(self) -> None:
        self.angles_deg = np.asarray(self.angles_deg, dtype=np.float64)
        self.size = int(self.size or self.n_cols)
        w = angle_weights(self.angles_deg) if self.weights is None else np.asarray(self.weights, np.float64)
        if w.shape != self.angles_deg.shape:
            raise ReconstructionError(f"{w.size} weights for {self.angles_deg.size} angles")
        self.matrix = self._build(w)
        self._blocks = self._split(max(1, int(self.threads)))

    def _build(self, w: np.ndarray) -> sp.csr_matrix:
        n, ncol, nv = self.size, self.n_cols, self.angles_deg.size
        c = (n - 1) / 2.0
        ax = np.arange(n) - c
        z, x = np.meshgrid(ax, ax, indexing="ij")  # volume (D, W) plane = (z, x)
        x, z = x.ravel(), z.ravel()
        if self.circle:
            keep = np.hypot(x, z) <= c + 0.5
        else:
            keep = np.ones(x.size, bool)
        self.pixels = np.flatnonzero(keep)
        x, z = x[keep], z[keep]
        t = np.deg2rad(self.angles_deg)
        x32, z32 = x.astype(np.float32), z.astype(np.float32)
        u = np.multiply.outer(x32, np.cos(t).astype(np.float32))
        u += np.multiply.outer(z32, np.sin(t).astype(np.float32))
        u += np.float32((ncol - 1) / 2.0 + self.axis_offset_px)
        i0f = np.floor(u)
        f = u - i0f  # fractional part, float32
        i0 = i0f.astype(np.int32)
        wv = (0.5 * w).astype(np.float32)  # 1/2: the ramp of fourier_filter is 2|f|
        data = np.empty(u.shape + (2,), np.float32)
        np.multiply(1 - f, wv, out=data[..., 0])
        np.multiply(f, wv, out=data[..., 1])
        _fold_edges(data, i0, ncol)
        i0 += (np.arange(nv, dtype=np.int32) * ncol)[None, :]
        indices = np.empty(u.shape + (2,), np.int32)
        indices[..., 0] = i0
        indices[..., 1] = i0 + 1
        data = data.reshape(-1)
        indices = indices.reshape(-1)
        npx = self.pixels.size
        indptr = np.arange(0, 2 * nv * npx + 1, 2 * nv, dtype=np.int64)
        m = sp.csr_matrix((data, indices, indptr), shape=(npx, nv * ncol))
        return m

    def _split(self, k: int) -> list[sp.csr_matrix]:
        rows = self.matrix.shape[0]
        edges = np.linspace(0, rows, k + 1).astype(int)
        return [self.matrix[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]

    def apply(self, filtered: np.ndarray) -> np.ndarray:
        """Back-project filtered projections (T, H, W) into a float32 volume (H, size, size)."""
        f = np.asarray(filtered, dtype=np.float32)
        nv, h, w = f.shape
        if nv != self.angles_deg.size or w != self.n_cols:
            raise ReconstructionError(
                f"projections {f.shape} do not match the operator ({self.angles_deg.size} views x {self.n_cols} columns)"
            )
        sino = np.ascontiguousarray(f.transpose(0, 2, 1)).reshape(nv * w, h)  # slices contiguous
        if len(self._blocks) == 1:
            res = self.matrix @ sino
        else:
            with ThreadPoolExecutor(len(self._blocks)) as ex:
                res = np.concatenate(list(ex.map(lambda b: b @ sino, self._blocks)))
        return scatter_pixels(res, self.pixels, self.size)


def scatter_pixels(values: np.ndarray, pixels: np.ndarray, size: int) -> np.ndarray:
    """(P, H) values of in-circle pixels -> float32 volume (H, size, size), zeros outside."""
    h = values.shape[1]
    out = np.zeros((h, size * size), np.float32)
    out[:, pixels] = values.T
    return out.reshape(h, size, size)


def fbp(
    projections: np.ndarray,
    angles_deg: np.ndarray,
    *,
    filter_name: str = "ramp",
    axis_offset_px: float = 0.0,
    tilt_deg: float = 0.0,
    weights: np.ndarray | str | None = "trapezoid",
    size: int | None = None,
    pixel_size: float = 1.0,
    threads: int | None = None,
) -> np.ndarray:
    """Batch FBP of (T, H, W) projections (line integrals) -> volume (H, size, size) float32.

    ``weights``: per-view weights in radians, a weighting mode for :func:`angle_weights`, or
    ``None`` for uniform weights (pi / T each; for comparison only). ``pixel_size`` converts
    line integrals in physical units into attenuation per unit length.
    """
    p = np.asarray(projections, dtype=np.float32)
    if p.ndim != 3:
        raise ReconstructionError(f"projections must be a (T, H, W) stack, got shape {p.shape}")
    a = np.asarray(angles_deg, dtype=np.float64)
    if a.size != p.shape[0]:
        raise ReconstructionError(f"{a.size} angles for {p.shape[0]} projections")
    if isinstance(weights, str):
        w = angle_weights(a, weights)
    elif weights is None:
        w = np.full(a.size, np.pi / a.size)
    else:
        w = np.asarray(weights, np.float64)
    axis_col = (p.shape[2] - 1) / 2.0 + axis_offset_px
    p = undo_tilt(p, tilt_deg, axis_col)
    op = BackProjector(a, p.shape[2], size, axis_offset_px, w, threads or 1)
    vol = op.apply(filter_projections(p, filter_name))
    if pixel_size != 1.0:
        vol /= np.float32(pixel_size)
    return vol
