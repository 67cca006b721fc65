"""Data sets for the rotation-angle + registration accuracy suite, from three independent generators.

Every data set is a brightfield stack of one cell that rotates about the vertical axis (image
rows) while it moves in the trap, with its ground truth:

- ``ours``: the project's own simulator (ellipsoid :class:`CellPhantom`, analytic projections,
  :func:`render_scene` camera);
- ``blobs``: a voxel phantom written here with numpy/scipy only (lumpy superellipsoid body,
  bean-shaped nucleus, smooth texture, Gaussian granules), its own parallel projector (a sparse
  pixel-driven operator built here) and its own camera model;
- ``cellsino``: the cell phantom of the third-party ``cellsino`` package (refractive-index
  spheres: cytoplasm, nucleus, nucleoli; granules added as cellsino spheres), drawn with
  cellsino's own element rasteriser, turned into attenuation and projected as ``blobs``.

Geometry (the project's conventions): projection stack (T, H, W); volume (H, D, W) =
(row/y, depth/z, column/x); a voxel at (x, z) from the rotation centre lands at column
``x cos(theta) + z sin(theta)`` from the centre in the view at ``theta``; the projection at
angle 0 is ``volume.sum(axis=1)``. An in-plane tilt of the axis moves image content at (x, y)
about the centre to ``R_z(tilt) (x, y)`` (the sign of ``phantom.pose_matrix``).

:func:`ideal_reconstruction` (true angles, true centres, true tilt) is the geometry check: it
must reproduce :attr:`Dataset.truth` (:func:`fine_structure_correlation` > 0.9).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp

from mcf_rotator.simulation.motion import MotionModel, trap_motion

__all__ = [
    "SuiteCase", "Dataset", "GENERATORS", "suite_cases", "generate", "angle_schedule",
    "smooth_angles", "uneven_angles", "stick_slip_angles", "parallel_project", "camera",
    "ideal_reconstruction", "line_integrals", "centred_projections", "fine_structure_correlation",
    "cell_mask",
]

GENERATORS = ("ours", "blobs", "cellsino")


# =============================================================================== data classes
@dataclass(frozen=True)
class SuiteCase:
    """One data set of the suite: a name, its generator and the generator's parameters."""

    name: str
    generator: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    regression: bool = False

    @property
    def n_frames(self) -> int:
        return n_frames_for(self.params)

    def describe(self) -> str:
        p = self.params
        return (f"{self.generator} cell {p['cell_px']:.0f}px, {p['n_granules']} granules, abs "
                f"{100 * p['absorption']:.0f}%, {p['electrons_per_count']:g} e/count, {p['sweep_deg']:.0f} deg "
                f"@{p['step_deg']:.2f} ({p['schedule']}), tilt {p['tilt_deg']:g}, motion "
                f"{p['brownian_rms_px']:g}px drift {p['drift_px_per_frame']:g} wobble {p['wobble_px']:g}")


@dataclass
class Dataset:
    """A generated stack and its ground truth (see the module doc for the geometry)."""

    case: SuiteCase
    frames: np.ndarray  # (T, H, W) float32 camera counts
    angles_deg: np.ndarray  # (T,) true cumulative angles, [0] == 0
    centres_px: np.ndarray  # (T, 2) true (row, col) of the rotation centre in the frame
    truth: np.ndarray  # (h, d, w) float32 attenuation per camera pixel, pose of frame 0, centred
    pixel_um: float
    flat: np.ndarray  # (H, W) float32 true empty-field intensity I0
    tilt_deg: float = 0.0  # in-plane tilt of the rotation axis (pose_matrix sign)


# =============================================================================== angle schedules
def n_frames_for(params: dict[str, Any]) -> int:
    return int(min(720, round(params["sweep_deg"] / params["step_deg"]) + 1))


def _finish(a: np.ndarray, sweep: float) -> np.ndarray:
    a = np.asarray(a, np.float64) - a[0]
    return a * (sweep / a[-1]) if a[-1] > 0 else a


def smooth_angles(n: int, sweep: float, rng: np.random.Generator, variation: float = 0.3,
                  jitter: float = 0.05) -> np.ndarray:
    """Rate varying smoothly by +-``variation`` (one or two slow cycles) plus a small jitter."""
    t = np.arange(n - 1)
    cycles = rng.uniform(1.0, 2.5)
    rate = 1.0 + variation * np.sin(2 * np.pi * cycles * t / max(n - 1, 1) + rng.uniform(0, 2 * np.pi))
    rate = np.clip(rate + rng.normal(0, jitter, n - 1), 0.05, None)
    return _finish(np.concatenate([[0.0], np.cumsum(rate)]), sweep)


def uneven_angles(n: int, sweep: float, rng: np.random.Generator, cv: float = 0.6) -> np.ndarray:
    """Irregular steps: a gamma-distributed rate (coefficient of variation ``cv``), lightly
    correlated over a few frames, with occasional short pauses and jumps."""
    k = 1.0 / cv**2
    rate = rng.gamma(k, 1.0 / k, n - 1)
    rate = ndi.gaussian_filter1d(rate, 1.0, mode="nearest")
    events = rng.random(n - 1)
    rate[events < 0.03] *= 0.1  # pauses
    rate[events > 0.985] *= 2.5  # jumps
    return _finish(np.concatenate([[0.0], np.cumsum(np.clip(rate, 0.02, None))]), sweep)


def stick_slip_angles(n: int, sweep: float, rng: np.random.Generator, stall_deg: float = 16.0,
                      release_frames: float = 4.0, jitter: float = 0.25) -> np.ndarray:
    """A cell dragged by a beam turning at a constant rate: twice per half turn the torque is
    weak, the cell stalls (~10 % of the beam rate) while its lag behind the beam grows by
    ~0.9 ``stall_deg``, then it bursts forward over ``release_frames`` frames. Any mean rate:
    the beam rate is chosen so that the sweep ends at ``sweep``. Small Ornstein-Uhlenbeck
    orientation jitter (std ``jitter`` deg) may make the cell slip back slightly in a stall."""
    step = sweep / max(n - 1, 1)
    phi = np.arange(n) * step
    p = np.mod(phi, 180.0)
    lag = np.zeros(n)
    rel_deg = release_frames * step
    peak = 0.9 * stall_deg
    for start in (rng.uniform(30, 60), rng.uniform(120, 150)):
        ramp = (p >= start) & (p < start + stall_deg)
        lag[ramp] = (p[ramp] - start) / stall_deg * peak
        rel = (p >= start + stall_deg) & (p < start + stall_deg + rel_deg)
        lag[rel] = peak * (1 - (p[rel] - start - stall_deg) / rel_deg)
    noise = np.zeros(n)
    a_k = 0.7
    for i in range(1, n):
        noise[i] = a_k * noise[i - 1] + jitter * np.sqrt(1 - a_k**2) * rng.normal()
    a = phi - lag + noise
    a -= a[0]
    # end exactly at the sweep without rescaling the stall structure much
    return a + (sweep - a[-1]) * np.arange(n) / max(n - 1, 1)


def angle_schedule(kind: str, n: int, sweep: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "smooth":
        return smooth_angles(n, sweep, rng)
    if kind == "uneven":
        return uneven_angles(n, sweep, rng)
    if kind in ("stick-slip", "stick_slip"):
        return stick_slip_angles(n, sweep, rng)
    raise ValueError(f"unknown angle schedule {kind!r}")


# =============================================================================== projector
def _ring_pixels(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = (n - 1) / 2.0
    ax = np.arange(n) - c
    z, x = np.meshgrid(ax, ax, indexing="ij")
    keep = np.flatnonzero(np.hypot(x, z).ravel() <= c + 0.5)
    return keep, x.ravel()[keep], z.ravel()[keep]


def parallel_project(volume: np.ndarray, angles_deg: np.ndarray, chunk: int = 24) -> np.ndarray:
    """Parallel projections (T, H, W) of a volume (H, D, W) (D == W) about its vertical centre axis.

    Pixel-driven: every voxel of a row slice (disc inscribed in the (D, W) plane) deposits its
    value on the two detector columns around ``u = x cos + z sin + (W - 1) / 2`` (linear
    weights). One sparse (views x columns, pixels) operator per chunk of views serves all slices.
    """
    vol = np.asarray(volume, np.float32)
    h, d, w = vol.shape
    if d != w:
        raise ValueError(f"volume must be (H, N, N), got {vol.shape}")
    keep, x, z = _ring_pixels(w)
    slices = np.ascontiguousarray(vol.transpose(1, 2, 0).reshape(d * w, h)[keep])  # (pixels, H)
    ang = np.deg2rad(np.asarray(angles_deg, np.float64))
    out = np.empty((ang.size, h, w), np.float32)
    npx = keep.size
    cols = np.arange(npx)
    for s in range(0, ang.size, chunk):
        a = ang[s:s + chunk]
        u = np.multiply.outer(np.cos(a), x) + np.multiply.outer(np.sin(a), z) + (w - 1) / 2.0  # (k, P)
        i0 = np.floor(u).astype(np.int64)
        f = (u - i0).astype(np.float32)
        view = np.arange(a.size)[:, None] * w
        taps = np.concatenate([i0.ravel(), (i0 + 1).ravel()])
        rows = np.concatenate([(view + i0).ravel(), (view + i0 + 1).ravel()])
        vals = np.concatenate([(1 - f).ravel(), f.ravel()])
        cc = np.concatenate([np.broadcast_to(cols, i0.shape).ravel()] * 2)
        ok = (taps >= 0) & (taps < w)
        m = sp.csr_matrix((vals[ok], (rows[ok], cc[ok])), shape=(a.size * w, npx))
        res = (m @ slices).reshape(a.size, w, h)
        out[s:s + a.size] = res.transpose(0, 2, 1)
    return out


# =============================================================================== camera
def flat_field(shape: tuple[int, int], rng: np.random.Generator, level: float, gradient: float,
               vignetting: float, walls: bool, cell_cols: tuple[float, float]) -> np.ndarray:
    """Empty-field intensity: a linear gradient in a random direction (``gradient`` fraction over
    the frame), a radial vignetting, and optionally two smooth dark vertical capillary walls just
    outside ``cell_cols`` (the columns the cell may reach)."""
    h, w = shape
    rr = (np.arange(h) - (h - 1) / 2.0)[:, None] / max(h - 1, 1)
    cc = (np.arange(w) - (w - 1) / 2.0)[None, :] / max(w - 1, 1)
    phi = rng.uniform(0, 2 * np.pi)
    lin = 1.0 + gradient * (np.cos(phi) * cc + np.sin(phi) * rr)
    vr, vc = rng.uniform(-0.1, 0.1, 2)
    r2 = ((rr - vr) ** 2 + ((cc - vc) * w / max(h, 1)) ** 2) / (0.25 + 0.25 * (w / max(h, 1)) ** 2)
    flat = level * lin * (1.0 - vignetting * r2)
    if walls:
        x = np.arange(w, dtype=np.float64)
        od = np.zeros(w)
        lo, hi = cell_cols
        left = max(2.0, lo - rng.uniform(3, 6))
        right = min(w - 3.0, hi + rng.uniform(3, 6))
        depth = rng.uniform(0.3, 0.8)
        for edge, sgn in ((left, -1.0), (right, 1.0)):
            width = rng.uniform(2.0, 4.0)
            od += depth * np.exp(-0.5 * ((x - edge) / width) ** 2)
            glass = 1.0 / (1.0 + np.exp(-sgn * (x - edge) / 1.5))  # grey glass outside the lumen
            od += 0.08 * glass
        flat = flat * np.exp(-od)[None, :]
    return flat.astype(np.float32)


def place(proj: np.ndarray, frame_shape: tuple[int, int], centre: tuple[float, float],
          tilt_deg: float = 0.0) -> np.ndarray:
    """A line-integral image (h, w) (its centre at ((h-1)/2, (w-1)/2)) placed in a zero frame with
    its centre at ``centre`` (row, col), sub-pixel (Fourier shift), optionally tilted in-plane
    about its centre (content at (x, y) moves to R_z(tilt) (x, y))."""
    h, w = proj.shape
    pad = 6
    img = np.pad(proj, pad).astype(np.float64)
    hp, wp = img.shape
    cy, cx = (hp - 1) / 2.0, (wp - 1) / 2.0
    if abs(tilt_deg) > 1e-9:
        t = np.deg2rad(tilt_deg)
        c, s = math.cos(t), math.sin(t)
        # output (row, col) samples the input at R^-1 about the centre; in (row, col) order
        # R_z acting on (x=col, y=row): x' = c x - s y, y' = s x + c y; inverse: x = c x' + s y', y = -s x' + c y'
        mat = np.array([[c, -s], [s, c]])  # maps output (row, col) offsets to input offsets
        off = np.array([cy, cx]) - mat @ np.array([cy, cx])
        img = ndi.affine_transform(img, mat, offset=off, order=3, mode="constant")
    tr, tc = centre[0] - cy, centre[1] - cx  # top-left of the padded image in the frame
    r0, c0 = int(math.floor(tr)), int(math.floor(tc))
    fr, fc = tr - r0, tc - c0
    if fr or fc:
        img = np.real(np.fft.ifft2(ndi.fourier_shift(np.fft.fft2(img), (fr, fc))))
    out = np.zeros(frame_shape, np.float32)
    fh, fw = frame_shape
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + hp, fh), min(c0 + wp, fw)
    if re > rs and ce > cs:
        out[rs:re, cs:ce] = img[rs - r0:re - r0, cs - c0:ce - c0]
    return out


def camera(od: np.ndarray, flat: np.ndarray, rng: np.random.Generator, electrons_per_count: float,
           read_noise: float, max_count: int, noise: bool = True) -> np.ndarray:
    """Counts of ``flat * exp(-od)``: Poisson shot noise at ``electrons_per_count``, Gaussian read
    noise (counts), rounding and clipping to [0, max_count]. float32. ``noise=False``: the
    exact expected intensity (geometry checks)."""
    mean = flat * np.exp(-od)
    if not noise:
        return mean.astype(np.float32)
    e = rng.poisson(np.clip(mean, 0, None) * electrons_per_count).astype(np.float32)
    counts = e / np.float32(electrons_per_count)
    counts += rng.normal(0.0, read_noise, counts.shape).astype(np.float32)
    return np.clip(np.rint(counts), 0, max_count).astype(np.float32)


# =============================================================================== phantoms
def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _grid_size(cell_px: float) -> int:
    return int(math.ceil(cell_px * 1.12)) + 4


def _scale_to_absorption(vol: np.ndarray, absorption: float) -> np.ndarray:
    """Scale so the ray through the centre (3x3 pixel mean of the angle-0 view) absorbs
    ``absorption``."""
    p = vol.sum(axis=1)
    h, w = p.shape
    centre_od = float(p[h // 2 - 1:h // 2 + 2, w // 2 - 1:w // 2 + 2].mean())
    target = -math.log(1.0 - absorption)
    return (vol * np.float32(target / max(centre_od, 1e-9))).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _blobs_volume(seed: int, cell_px: float, n_granules: int, absorption: float) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    n = _grid_size(cell_px)
    r = cell_px / 2.0
    ax = (np.arange(n) - (n - 1) / 2.0).astype(np.float32)
    y, z, x = np.meshgrid(ax, ax, ax, indexing="ij", sparse=True)
    rot = _random_rotation(rng).astype(np.float32)
    # body-frame coordinates (rotated), pixels
    bx = rot[0, 0] * x + rot[0, 1] * y + rot[0, 2] * z
    by = rot[1, 0] * x + rot[1, 1] * y + rot[1, 2] * z
    bz = rot[2, 0] * x + rot[2, 1] * y + rot[2, 2] * z
    semi = r * rng.uniform(0.82, 1.0, 3)
    semi *= r / semi.max()
    pexp = rng.uniform(2.0, 3.2)
    rho = np.sqrt(bx * bx + by * by + bz * bz) + np.float32(1e-3)
    ux, uy, uz = bx / rho, by / rho, bz / rho
    # low-order (degree 2-3) polynomial of the direction: a spherical-harmonic-like lumpiness
    pert = np.zeros_like(rho)
    for i, j, k in ((2, 0, 0), (0, 2, 0), (1, 1, 0), (1, 0, 1), (0, 1, 1), (3, 0, 0), (0, 0, 3),
                    (1, 2, 0), (2, 0, 1), (0, 1, 2), (1, 1, 1)):
        pert += np.float32(rng.normal(0, 0.045)) * ux**i * uy**j * uz**k
    s = (np.abs(bx / semi[0]) ** pexp + np.abs(by / semi[1]) ** pexp + np.abs(bz / semi[2]) ** pexp) ** (1 / pexp)
    s = s / (1.0 + pert)
    edge = 0.8  # px, soft edge
    body = 1.0 / (1.0 + np.exp(-(1.0 - s) * r / edge))
    del s, pert, ux, uy, uz
    # bean-shaped nucleus: union (soft max) of two offset ellipsoids
    d = rng.normal(size=3)
    nuc_c = d / np.linalg.norm(d) * r * rng.uniform(0.12, 0.28)
    nuc_rot = _random_rotation(rng)
    nuc_semi = r * rng.uniform(0.3, 0.42, 3)
    lobe = nuc_rot[:, 0] * r * rng.uniform(0.12, 0.22)
    nucleus = None
    for sgn in (-1.0, 1.0):
        c = nuc_c + sgn * lobe
        dx, dy, dz = x - np.float32(c[0]), y - np.float32(c[1]), z - np.float32(c[2])
        q = np.zeros((n, n, n), np.float32)
        for k in range(3):
            comp = nuc_rot[0, k] * dx + nuc_rot[1, k] * dy + nuc_rot[2, k] * dz
            q += (comp / np.float32(nuc_semi[k])) ** 2
        ind = 1.0 / (1.0 + np.exp(-(1.0 - np.sqrt(q)) * float(nuc_semi.min()) / edge))
        nucleus = ind if nucleus is None else np.maximum(nucleus, ind)
    texture = ndi.gaussian_filter(rng.standard_normal((n, n, n)).astype(np.float32), max(1.5, r / 25))
    texture /= max(float(texture.std()), 1e-9)
    mu_body, mu_nuc = 1.0, rng.uniform(0.6, 1.2)
    vol = body * (mu_body + 0.18 * texture) + nucleus * body * mu_nuc
    del texture, nucleus
    # granules: Gaussian blobs in the cytoplasm (most dense, some light)
    grains = np.zeros((n, n, n), np.float32)
    for _ in range(int(n_granules)):
        for _attempt in range(30):
            dd = rng.normal(size=3)
            pos = dd / np.linalg.norm(dd) * r * rng.uniform(0.35, 0.85)
            if np.linalg.norm(pos - nuc_c) > nuc_semi.max() * 1.2:
                break
        sig = max(1.0, r * rng.uniform(0.025, 0.055))
        amp = rng.uniform(3.0, 8.0) * (1.0 if rng.random() > 0.2 else -0.35)
        idx = pos + (n - 1) / 2.0  # (x, y, z) -> array index per axis
        reach = int(math.ceil(3.5 * sig))
        lo = np.maximum(np.floor(idx).astype(int) - reach, 0)
        hi = np.minimum(np.floor(idx).astype(int) + reach + 2, n)
        gx = np.arange(lo[0], hi[0]) - idx[0]
        gy = np.arange(lo[1], hi[1]) - idx[1]
        gz = np.arange(lo[2], hi[2]) - idx[2]
        blob = (np.exp(-0.5 * (gy / sig) ** 2)[:, None, None] * np.exp(-0.5 * (gz / sig) ** 2)[None, :, None]
                * np.exp(-0.5 * (gx / sig) ** 2)[None, None, :])
        grains[lo[1]:hi[1], lo[2]:hi[2], lo[0]:hi[0]] += (amp * blob).astype(np.float32)
    vol = vol + grains * body
    vol = np.clip(vol, 0, None).astype(np.float32)
    out = _scale_to_absorption(vol, absorption)
    out.flags.writeable = False
    return out


def import_cellsino() -> Any:
    """Import cellsino. One of its dependencies (qpsphere) still imports ``pkg_resources`` for
    ``resource_filename`` only; setuptools >= 81 no longer ships it, so where it is missing a
    minimal stand-in (importlib.resources) is registered first. Raises ImportError without
    cellsino."""
    import importlib
    import sys

    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import importlib.resources
        import types

        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)  # type: ignore[attr-defined]
        sys.modules.setdefault("pkg_resources", shim)
    return importlib.import_module("cellsino")


def cellsino_available() -> bool:
    try:
        import_cellsino()
    except ImportError:
        return False
    return True


def _cellsino_phantom(seed: int, n_granules: int):
    """cellsino's SimpleCell (indices jittered), granules appended as cellsino Spheres, randomly
    oriented with cellsino's own transform."""
    import_cellsino()
    from cellsino.elements import Sphere
    from cellsino.phantoms import SimpleCell

    rng = np.random.default_rng(seed + 2000)
    medium = 1.335
    cell = SimpleCell(cytoplasm_index=1.365 + rng.uniform(-0.004, 0.004),
                      nucleus_index=1.360 + rng.uniform(-0.004, 0.006),
                      nucleoli_index=1.387 + rng.uniform(-0.005, 0.005), medium_index=medium)
    r_cell = 5.5e-6
    nuc = cell.elements[2]
    for _ in range(int(n_granules)):
        for _attempt in range(30):
            d = rng.normal(size=3)
            pos = d / np.linalg.norm(d) * r_cell * rng.uniform(0.35, 0.85)
            if np.linalg.norm(pos - np.asarray(nuc.center)) > nuc.radius * 1.1:
                break
        dense = rng.random() > 0.2
        cell.append(Sphere(object_index=medium + (rng.uniform(0.02, 0.05) if dense else -0.01),
                           medium_index=medium, fl_brightness=0, center=tuple(pos),
                           radius=r_cell * rng.uniform(0.05, 0.1)))
    ang = rng.uniform(0, 2 * np.pi, 3)
    return cell.transform(rot_main=ang[0], rot_in_plane=ang[1], rot_perp_plane=ang[2]), r_cell


def _draw_element_local(el: Any, n: int, pixel: float) -> tuple[np.ndarray, tuple[slice, ...]] | None:
    """cellsino ``Sphere.draw`` on a small sub-grid around the element (same voxels as drawing the
    full (n, n, n) grid, which costs 3 full-grid arrays per element). cellsino's draw maps array
    axes (0, 1, 2) to the element coordinates (z, x, y)."""
    centre = np.asarray(el.center, np.float64)
    g = np.array([centre[2], centre[0], centre[1]]) / pixel + (n / 2 - 0.5)  # global index per axis
    reach = int(math.ceil(el.radius / pixel)) + 2
    m = 2 * reach + 2
    o = np.floor(g).astype(int) - reach
    lo, hi = np.maximum(o, 0), np.minimum(o + m, n)
    if np.any(hi <= lo):
        return None
    local = (g - o - (m / 2 - 0.5)) * pixel  # element position in the local grid, per array axis
    moved = el.transform(x=local[1] - centre[0], y=local[2] - centre[1], z=local[0] - centre[2])
    ri, _fl = moved.draw((m, m, m), pixel)
    sub = ri - el.medium_index
    sl_local = tuple(slice(lo[k] - o[k], hi[k] - o[k]) for k in range(3))
    return sub[sl_local], tuple(slice(lo[k], hi[k]) for k in range(3))


@functools.lru_cache(maxsize=4)
def _cellsino_volume(seed: int, cell_px: float, n_granules: int, absorption: float) -> np.ndarray:
    ph, r_cell = _cellsino_phantom(seed, n_granules)
    n = _grid_size(cell_px)
    pixel = 2 * r_cell / cell_px
    delta = np.zeros((n, n, n), np.float64)
    for el in ph:
        if el.object_index == el.medium_index:
            continue
        res = _draw_element_local(el, n, pixel)
        if res is not None:
            sub, sl = res
            delta[sl] += sub
    # RI minus medium -> attenuation: the refractive-index excess maps linearly to absorption;
    # the nucleus (RI below the cytoplasm) is lighter, nucleoli and dense granules darker.
    # cellsino spheres are binary: a 0.6 px Gaussian gives them partial-volume edges.
    vol = ndi.gaussian_filter(np.clip(delta, 0, None).astype(np.float32), 0.6)
    out = _scale_to_absorption(vol, absorption)
    out.flags.writeable = False
    return out


def _ours_phantom(seed: int, diameter_um: float, n_granules: int, absorption: float, pixel_um: float):
    from mcf_rotator.simulation.phantom import CellPhantom, pose_matrix

    probe = CellPhantom.random(seed, diameter_um=diameter_um, n_granules=n_granules, contrast=1.0)
    od = probe.project(pose_matrix(0.0), (3, 3), pixel_um, (1.0, 1.0), supersample=2)
    contrast = -math.log(1.0 - absorption) / max(float(od.mean()), 1e-9)
    return CellPhantom.random(seed, diameter_um=diameter_um, n_granules=n_granules, contrast=contrast)


def voxelize_parts(phantom: Any, size: int, voxel_um: float, supersample: int = 2) -> np.ndarray:
    """Same volume as ``CellPhantom.voxelize(size, voxel_um, supersample)`` (attenuation 1/um,
    (y, z, x), centre at (size - 1) / 2), evaluated only in each part's bounding box."""
    ss = max(1, int(supersample))
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    vol = np.zeros((size, size, size), np.float64)
    c0 = (size - 1) / 2.0
    for part in phantom.parts:
        if part.mu == 0:
            continue
        cen = np.asarray(part.centre, float)  # (x, y, z) um
        reach = float(np.max(part.semi_axes))
        q = part.quadric()
        # index range per array axis (y, z, x)
        cidx = np.array([cen[1], cen[2], cen[0]]) / voxel_um + c0
        rad = reach / voxel_um + 1
        lo = np.maximum(np.floor(cidx - rad).astype(int), 0)
        hi = np.minimum(np.ceil(cidx + rad).astype(int) + 1, size)
        if np.any(hi <= lo):
            continue
        acc = np.zeros(tuple(hi - lo), np.float64)
        iy, iz, ix = (np.arange(lo[k], hi[k]) for k in range(3))
        for oy in offs:
            for oz in offs:
                for ox in offs:
                    py = ((iy + oy - c0) * voxel_um - cen[1])[:, None, None]
                    pz = ((iz + oz - c0) * voxel_um - cen[2])[None, :, None]
                    px = ((ix + ox - c0) * voxel_um - cen[0])[None, None, :]
                    quad = (q[0, 0] * px * px + q[1, 1] * py * py + q[2, 2] * pz * pz
                            + 2 * (q[0, 1] * px * py + q[0, 2] * px * pz + q[1, 2] * py * pz))
                    acc += quad <= 1.0
        vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += part.mu * acc
    return (vol / ss**3).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _ours_volume(seed: int, diameter_um: float, n_granules: int, absorption: float, pixel_um: float,
                 n: int) -> np.ndarray:
    ph = _ours_phantom(seed, diameter_um, n_granules, absorption, pixel_um)
    out = voxelize_parts(ph, n, pixel_um) * np.float32(pixel_um)  # optical depth per camera pixel
    out.flags.writeable = False
    return out


# =============================================================================== generation
def _motion(params: dict[str, Any], angles: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    model = MotionModel(brownian_rms_px=params["brownian_rms_px"], memory_frames=params.get("memory_frames", 30.0),
                        vertical_ratio=params.get("vertical_ratio", 0.7),
                        drift_px_per_frame=params["drift_px_per_frame"], wobble_px=params["wobble_px"])
    return trap_motion(angles, model, rng)


def _frame_shape(params: dict[str, Any], offsets: np.ndarray) -> tuple[int, int]:
    cell = params["cell_px"]
    fr, fc = params.get("frame_factor", (1.45, 1.55))
    reach = np.abs(offsets).max(axis=0) if offsets.size else np.zeros(2)
    h = max(fr * cell, cell * 1.2 + 2 * reach[0] + 16)
    w = max(fc * cell, cell * 1.2 + 2 * reach[1] + 24)
    return int(math.ceil(h / 2) * 2), int(math.ceil(w / 2) * 2)


def generate(case: SuiteCase) -> Dataset:
    """Render one suite case (deterministic in its parameters)."""
    p = case.params
    rng = np.random.default_rng(p["seed"])
    n = n_frames_for(p)
    angles = angle_schedule(p["schedule"], n, float(p["sweep_deg"]), rng)
    offsets = _motion(p, angles, rng)
    shape = _frame_shape(p, offsets)
    rest = np.array([(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0]) + rng.uniform(-2.0, 2.0, 2)
    centres = rest[None, :] + offsets
    tilt = float(p["tilt_deg"])
    if case.generator == "ours":
        return _generate_ours(case, angles, centres, shape, tilt, rng)
    if case.generator == "blobs":
        truth = _blobs_volume(int(p["seed"]), float(p["cell_px"]), int(p["n_granules"]), float(p["absorption"]))
        pixel_um = float(p.get("pixel_um", 0.08))
    elif case.generator == "cellsino":
        truth = _cellsino_volume(int(p["seed"]), float(p["cell_px"]), int(p["n_granules"]), float(p["absorption"]))
        pixel_um = 11.0 / float(p["cell_px"])
    else:
        raise ValueError(f"unknown generator {case.generator!r}")
    half = p["cell_px"] * 0.6
    cols = (float(centres[:, 1].min() - half), float(centres[:, 1].max() + half))
    flat = flat_field(shape, rng, level=float(p.get("level", 200.0)), gradient=float(p.get("gradient", 0.02)),
                      vignetting=float(p.get("vignetting", 0.08)), walls=bool(p.get("walls", True)), cell_cols=cols)
    frames = np.empty((n,) + shape, np.float32)
    bits = int(p.get("bit_depth", 8))
    chunk = 32
    for s in range(0, n, chunk):
        proj = parallel_project(truth, angles[s:s + chunk])
        od = np.stack([place(pr, shape, tuple(c), tilt) for pr, c in zip(proj, centres[s:s + chunk])])
        frames[s:s + len(od)] = camera(od, flat, rng, float(p["electrons_per_count"]),
                                       float(p.get("read_noise", 2.0)), (1 << bits) - 1, bool(p.get("noise", True)))
    return Dataset(case, frames, angles, centres, np.array(truth), pixel_um, flat, tilt)


def _generate_ours(case: SuiteCase, angles: np.ndarray, centres: np.ndarray, shape: tuple[int, int],
                   tilt: float, rng: np.random.Generator) -> Dataset:
    from mcf_rotator.simulation.brightfield import BrightfieldOptics, CellInstance, background, render_scene
    from mcf_rotator.simulation.phantom import pose_matrix

    p = case.params
    diameter_um = float(p.get("diameter_um", 12.0))
    pixel_um = diameter_um / float(p["cell_px"])
    ph = _ours_phantom(int(p["seed"]), diameter_um, int(p["n_granules"]), float(p["absorption"]), pixel_um)
    optics = BrightfieldOptics(pixel_um=pixel_um, electrons_per_count=float(p["electrons_per_count"]),
                               vignetting=float(p.get("vignetting", 0.08)),
                               illumination_tilt=float(p.get("gradient", 0.02)), phase_halo=0.0,
                               read_noise=float(p.get("read_noise", 2.0)))
    walls = bool(p.get("walls", True))
    noise = bool(p.get("noise", True))
    flat = np.array(background(shape, optics, walls), np.float32)
    frames = np.empty((angles.size,) + shape, np.float32)
    for i, (a, c) in enumerate(zip(angles, centres)):
        sc = render_scene(shape, [CellInstance(ph, pose_matrix(float(a), tilt), (float(c[0]), float(c[1])))],
                          optics, rng, walls=walls, noise=noise)
        frames[i] = sc.image if noise else flat * np.exp(-sc.optical_depth)
    n = _grid_size(float(p["cell_px"]))
    truth = _ours_volume(int(p["seed"]), diameter_um, int(p["n_granules"]), float(p["absorption"]), pixel_um, n)
    return Dataset(case, frames, angles, centres, np.array(truth), pixel_um, flat, tilt)


# =============================================================================== ideal reconstruction
def line_integrals(ds: Dataset) -> np.ndarray:
    """-log(frames / flat), (T, H, W) float32."""
    return (-np.log(np.clip(ds.frames / ds.flat[None], 1e-3, None))).astype(np.float32)


def centred_projections(ds: Dataset, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Line integrals cropped (T, h, w) with each frame's true centre moved (Fourier shift) to the
    crop centre ((h - 1) / 2, (w - 1) / 2); default crop: the truth's (H, W)."""
    h, w = shape or (ds.truth.shape[0], ds.truth.shape[2])
    li = line_integrals(ds)
    pad = 8
    hp, wp = h + 2 * pad, w + 2 * pad
    out = np.empty((li.shape[0], h, w), np.float32)
    for i, (img, c) in enumerate(zip(li, ds.centres_px)):
        # window whose centre is at the integer-rounded position, then the fractional shift
        r0 = int(math.floor(c[0] - (hp - 1) / 2.0))
        c0 = int(math.floor(c[1] - (wp - 1) / 2.0))
        win = np.zeros((hp, wp), np.float64)
        fh, fw = img.shape
        rs, cs, re, ce = max(r0, 0), max(c0, 0), min(r0 + hp, fh), min(c0 + wp, fw)
        win[rs - r0:re - r0, cs - c0:ce - c0] = img[rs:re, cs:ce]
        # the centre is at c - (r0, c0) in the window; move it to ((hp-1)/2, (wp-1)/2)
        sr = (hp - 1) / 2.0 - (c[0] - r0)
        sc = (wp - 1) / 2.0 - (c[1] - c0)
        win = np.real(np.fft.ifft2(ndi.fourier_shift(np.fft.fft2(win), (sr, sc))))
        out[i] = win[pad:pad + h, pad:pad + w]
    return out


def ideal_reconstruction(ds: Dataset, filter_name: str = "ramp") -> np.ndarray:
    """FBP with the true angles, centres and tilt: (H, D, W) like ``ds.truth``."""
    from mcf_rotator.reconstruction.fbp import fbp

    proj = centred_projections(ds)
    return fbp(proj, ds.angles_deg, axis_offset_px=0.0, tilt_deg=ds.tilt_deg, filter_name=filter_name,
               weights="circular")


def truth_in_pose(truth: np.ndarray, theta_deg: float) -> np.ndarray:
    """The truth volume turned to the pose of the view at ``theta_deg`` (so that its
    ``sum(axis=1)`` is that view): a reconstruction whose angles are referenced to a later
    frame is the cell in that frame's pose. Cubic spline about the array centre."""
    if abs(theta_deg) < 1e-9:
        return np.asarray(truth, np.float32)
    t = np.deg2rad(theta_deg)
    c, s = math.cos(t), math.sin(t)
    h, d, w = truth.shape
    # output (z', x') samples the input at z = s x' + c z', x = c x' - s z'
    mat = np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    centre = np.array([(h - 1) / 2.0, (d - 1) / 2.0, (w - 1) / 2.0])
    out = ndi.affine_transform(np.asarray(truth, np.float32), mat, offset=centre - mat @ centre, order=3,
                               mode="constant")
    return out.astype(np.float32)


# =============================================================================== metric
def cell_mask(truth: np.ndarray, frac: float = 0.05, dilate: int = 2) -> np.ndarray:
    m = truth > frac * float(truth.max())
    return ndi.binary_dilation(m, iterations=dilate) if dilate else m


def band_pass(vol: np.ndarray, s1: float = 1.0, s2: float = 4.0) -> np.ndarray:
    v = np.asarray(vol, np.float32)
    return ndi.gaussian_filter(v, s1) - ndi.gaussian_filter(v, s2)


def fine_structure_correlation(vol: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of the difference-of-Gaussians (sigma 1 and 4 px) band of both
    volumes inside the cell (truth > 5 % of its max, dilated by 2 px). Same shapes."""
    if vol.shape != truth.shape:
        raise ValueError(f"shapes differ: {vol.shape} vs {truth.shape}")
    m = cell_mask(truth) if mask is None else mask
    a = band_pass(vol)[m].astype(np.float64)
    b = band_pass(truth)[m].astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


# =============================================================================== the suite
def _case(gen: str, idx: int, rng: np.random.Generator, quick: bool, **over: Any) -> SuiteCase:
    cell = float(over.pop("cell_px", rng.uniform(60, 250)))
    sweep = float(over.pop("sweep_deg", rng.uniform(190, 720)))
    step = float(over.pop("step_deg", rng.uniform(0.7, 2.5)))
    step = max(step, sweep / 719.0)
    params = dict(
        seed=int(over.pop("seed", 1000 * GENERATORS.index(gen) + idx)),
        cell_px=cell,
        n_granules=int(over.pop("n_granules", rng.integers(5, 51))),
        absorption=float(over.pop("absorption", rng.uniform(0.05, 0.30))),
        electrons_per_count=float(over.pop("electrons_per_count", rng.uniform(4, 30))),
        sweep_deg=sweep,
        step_deg=step,
        schedule=over.pop("schedule", ("smooth", "uneven", "stick-slip")[idx % 3]),
        tilt_deg=float(over.pop("tilt_deg", rng.choice([0.0, 0.0, rng.uniform(0.3, 3.0)]))),
        brownian_rms_px=float(over.pop("brownian_rms_px", rng.choice([0.0, rng.uniform(0.3, 2.0), rng.uniform(2.0, 5.0)]))),
        drift_px_per_frame=float(over.pop("drift_px_per_frame", rng.choice([0.0, rng.uniform(0.02, 0.4)]))),
        wobble_px=float(over.pop("wobble_px", rng.choice([0.0, rng.uniform(0.1, 1.5)]))),
        memory_frames=float(over.pop("memory_frames", rng.uniform(10, 60))),
        walls=bool(over.pop("walls", rng.random() < 0.6)),
        gradient=float(over.pop("gradient", rng.uniform(0.01, 0.03))),
        vignetting=float(over.pop("vignetting", rng.uniform(0.0, 0.15))),
    )
    if gen == "ours":
        params["diameter_um"] = float(over.pop("diameter_um", rng.uniform(9, 15)))
    if gen == "cellsino":
        params["bit_depth"] = 12
        params["level"] = float(rng.uniform(1500, 3000))
    regression = bool(over.pop("regression", False))
    params.update(over)
    if quick:
        params["sweep_deg"] = min(params["sweep_deg"], 370.0)
        params["cell_px"] = min(params["cell_px"], 140.0)
        params["step_deg"] = max(params["step_deg"], params["sweep_deg"] / 240.0)
    sched = params["schedule"].replace("-", "")
    name = (f"{gen}-{idx:02d}-c{params['cell_px']:.0f}-{sched}-{params['sweep_deg']:.0f}deg"
            f"-m{params['brownian_rms_px']:.1f}")
    return SuiteCase(name, gen, params, regression)


def suite_cases(quick: bool = False) -> list[SuiteCase]:
    """The benchmark suite: 14 cases per generator (42), deterministic.

    Per generator: 2 regression cases (small cells 64-96 px, <= 200 frames; one still, one
    moving with tilt), a few hand-placed corners (largest cell, longest sweep, strongest
    motion + drift, faintest and noisiest, stick-slip at the fastest rate) and the rest drawn
    from the ranges (cell 60-250 px, 5-50 granules, 5-30 % absorption, 4-30 e/count,
    190-720 deg at 0.7-2.5 deg/frame, tilt 0-3 deg, motion 0-5 px RMS, drift 0-0.4 px/frame,
    wobble). ``quick``: the same cases capped at 140 px, 370 deg and 240 frames.
    """
    cases: list[SuiteCase] = []
    for gi, gen in enumerate(GENERATORS):
        rng = np.random.default_rng(7919 + gi)
        fixed = [
            dict(cell_px=72.0, sweep_deg=200.0, step_deg=1.6, schedule="smooth", brownian_rms_px=0.0,
                 drift_px_per_frame=0.0, wobble_px=0.0, tilt_deg=0.0, n_granules=25, absorption=0.18,
                 electrons_per_count=20.0, regression=True),
            dict(cell_px=90.0, sweep_deg=370.0, step_deg=2.0, schedule=("uneven", "stick-slip", "smooth")[gi],
                 brownian_rms_px=1.5, drift_px_per_frame=0.05, wobble_px=0.4, tilt_deg=1.5, n_granules=15,
                 absorption=0.12, electrons_per_count=8.0, regression=True),
            dict(cell_px=245.0, sweep_deg=360.0, step_deg=1.5, schedule="smooth"),
            dict(cell_px=110.0, sweep_deg=720.0, step_deg=1.0, schedule="uneven"),
            dict(cell_px=130.0, sweep_deg=400.0, step_deg=1.2, brownian_rms_px=5.0, drift_px_per_frame=0.4,
                 wobble_px=1.5, schedule="stick-slip"),
            dict(cell_px=100.0, absorption=0.05, electrons_per_count=4.0, n_granules=5, sweep_deg=300.0),
            dict(cell_px=150.0, schedule="stick-slip", step_deg=2.5, sweep_deg=540.0, tilt_deg=3.0),
            dict(cell_px=64.0, sweep_deg=190.0, step_deg=0.7, n_granules=50, absorption=0.30),
        ]
        for k in range(14):
            over = dict(fixed[k]) if k < len(fixed) else {}
            if k >= len(fixed) and k % 2 == 0:
                over["cell_px"] = float(rng.uniform(60, 140))  # keep the suite's run time in check
            cases.append(_case(gen, k, rng, quick, **over))
    return cases


def regression_cases() -> list[SuiteCase]:
    return [c for c in suite_cases() if c.regression]
