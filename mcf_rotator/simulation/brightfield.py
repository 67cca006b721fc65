"""Brightfield image formation for the simulated rig: cells in a capillary seen by a camera.

Physics, in the order it is applied:

1. Absorption (Beer-Lambert): each cell's optical depth is the exact line integral of its
   attenuation (:meth:`CellPhantom.project`); the transmitted intensity is
   ``I = I0(r, c) * exp(-optical_depth)``.
2. Weak phase contrast: a slightly defocused brightfield image shows the cell's phase as the
   Laplacian of its (smoothed) thickness (transport of intensity), i.e. a dark rim inside the
   edge and a bright halo outside. Off by ``phase_halo=0``.
3. Background ``I0``: non-uniform (vignetted) illumination and two vertical capillary walls
   (the fibre axis, the rotation axis and the capillary are all along image rows).
4. Optional debris: sharp dark specks and large faint out-of-focus blobs (not cells, no mask).
5. Optional defocus (Gaussian blur), then shot noise (Poisson, drawn as its Gaussian limit,
   which is exact to <1 % above ~30 electrons and 4x cheaper) plus Gaussian read noise,
   rounding and clipping to the camera's bit depth.

``Scene.optical_depth`` is the absorption part only (no halo, debris or walls), so that
``-log(image / background) == optical_depth`` inside a cell when noise and halo are off.
The background is cached per (shape, optics, walls) because it is the same every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from mcf_rotator.simulation.phantom import CellPhantom

__all__ = ["BrightfieldOptics", "CellInstance", "Scene", "background", "render_scene", "box_from_mask"]


@dataclass
class CellInstance:
    """One cell in the field: its phantom, pose (3x3 rotation) and centre in pixels (row, col)."""

    phantom: CellPhantom
    rotation: np.ndarray
    centre_px: tuple[float, float]


@dataclass(frozen=True)
class BrightfieldOptics:
    """Camera + illumination parameters. Frozen (hashable) so the background can be cached.

    ``illumination`` is the mean background level in counts at ``exposure_ref_ms``; the level
    scales linearly with ``exposure_ms``. ``electrons_per_count`` sets the shot-noise level
    (variance in counts = signal / electrons_per_count).
    """

    pixel_um: float = 3.45 / 40
    illumination: float = 200.0
    exposure_ms: float = 5.0
    exposure_ref_ms: float = 5.0
    read_noise: float = 2.0
    electrons_per_count: float = 1.0
    bit_depth: int = 8
    defocus_px: float = 0.0
    vignetting: float = 0.15
    vignetting_centre: tuple[float, float] = (0.45, 0.55)  # (row, col) as fractions of the frame
    illumination_tilt: float = 0.04  # linear left-right illumination gradient (fraction)
    absorption_scale: float = 1.0
    phase_halo: float = 0.6
    halo_sigma_px: float = 3.0
    wall_cols_frac: tuple[float, float] = (0.05, 0.95)
    wall_thickness_px: float = 18.0
    wall_optical_depth: float = 0.9
    supersample: int = 2

    @property
    def max_count(self) -> int:
        return (1 << int(self.bit_depth)) - 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.bit_depth <= 8 else np.dtype(np.uint16)

    @property
    def mean_level(self) -> float:
        """Background counts at the current exposure (before vignetting)."""
        return self.illumination * self.exposure_ms / self.exposure_ref_ms


@dataclass
class Scene:
    """A rendered frame with its ground truth (per visible cell: mask and box)."""

    image: np.ndarray
    masks: list[np.ndarray]
    boxes: list[tuple[float, float, float, float]]
    optical_depth: np.ndarray
    #: index into the ``cells`` argument for each mask/box (cells wholly outside are skipped)
    cell_index: list[int] = field(default_factory=list)


def _wall_profile(width: int, optics: BrightfieldOptics) -> np.ndarray:
    """Optical depth across columns of two glass capillary walls (dark edges, grey glass)."""
    x = np.arange(width, dtype=np.float64)
    od = np.zeros(width)
    t = optics.wall_thickness_px
    for k, frac in enumerate(optics.wall_cols_frac):
        inner = frac * (width - 1)
        # glass lies outside the inner edge: left wall extends left, right wall right
        outer = inner - t if k == 0 else inner + t
        lo, hi = min(inner, outer), max(inner, outer)
        glass = 1.0 / (1.0 + np.exp(-(x - lo) / 1.0)) - 1.0 / (1.0 + np.exp(-(x - hi) / 1.0))
        od += 0.08 * optics.wall_optical_depth * glass
        od += optics.wall_optical_depth * np.exp(-0.5 * ((x - inner) / 1.6) ** 2)
        od += 0.5 * optics.wall_optical_depth * np.exp(-0.5 * ((x - outer) / 2.5) ** 2)
        # refraction fringe: a thin bright line just inside the lumen
        sgn = 1.0 if k == 0 else -1.0
        od -= 0.12 * optics.wall_optical_depth * np.exp(-0.5 * ((x - inner - sgn * 4.0) / 1.5) ** 2)
    return od


@lru_cache(maxsize=16)
def _background_cached(shape: tuple[int, int], optics: BrightfieldOptics, walls: bool) -> np.ndarray:
    h, w = shape
    rr = (np.arange(h, dtype=np.float64) / max(h - 1, 1) - optics.vignetting_centre[0])[:, None]
    cc = (np.arange(w, dtype=np.float64) / max(w - 1, 1) - optics.vignetting_centre[1])[None, :]
    aspect = w / max(h, 1)
    r2 = (rr**2 + (cc * aspect) ** 2) / (0.25 + 0.25 * aspect**2)
    illum = (1.0 - optics.vignetting * r2) * (1.0 + optics.illumination_tilt * cc)
    bg = optics.mean_level * np.clip(illum, 0.05, None)
    if walls:
        bg = bg * np.exp(-_wall_profile(w, optics))[None, :]
    out = bg.astype(np.float32)
    out.flags.writeable = False
    return out


def background(shape: tuple[int, int], optics: BrightfieldOptics, walls: bool = True) -> np.ndarray:
    """Noise-free empty-field intensity ``I0`` (H, W) float32 in counts (read-only, cached)."""
    return _background_cached((int(shape[0]), int(shape[1])), optics, bool(walls))


def box_from_mask(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) in pixel-edge coordinates (x1, y1 exclusive); None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def _cell_crop(
    cell: CellInstance, shape: tuple[int, int], optics: BrightfieldOptics, pad: int = 0
) -> tuple[int, int, int, int] | None:
    """Frame rows/cols [r0, r1) x [c0, c1) that can hold the cell (clipped), or None if outside."""
    reach = cell.phantom.radius_um * 1.25 / optics.pixel_um + 3 + pad
    cy, cx = cell.centre_px
    r0, r1 = max(int(np.floor(cy - reach)), 0), min(int(np.ceil(cy + reach)) + 1, shape[0])
    c0, c1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)) + 1, shape[1])
    if r1 <= r0 or c1 <= c0:
        return None
    return r0, r1, c0, c1


def _project_cell(
    cell: CellInstance, crop_shape: tuple[int, int], centre: tuple[float, float], optics: BrightfieldOptics
) -> tuple[np.ndarray, np.ndarray]:
    """Optical depth of the cell on its crop, and its body silhouette from the same pass.

    The silhouette is where the body's projection (``kind == 'body'`` parts; the first part if
    none is marked) is > 0, sampled exactly like the image (same supersampling), so partially
    covered edge pixels count.
    """
    phantom = cell.phantom
    if any(p.kind == "body" for p in phantom.parts):
        return phantom.project_with_support(cell.rotation, crop_shape, optics.pixel_um, centre, optics.supersample)
    od = phantom.project(cell.rotation, crop_shape, optics.pixel_um, centre, optics.supersample)
    shell = CellPhantom(phantom.parts[:1], phantom.radius_um, phantom.seed)
    return od, shell.project(cell.rotation, crop_shape, optics.pixel_um, centre, optics.supersample) > 0


def _add_debris(
    intensity: np.ndarray, n: int, rng: np.random.Generator, optics: BrightfieldOptics
) -> None:
    """Dark specks (sharp, small) and out-of-focus blobs (large, faint, ring-like): not cells.

    Applied in place as a local transmission factor so the cost is per blob, not per frame.
    """
    h, w = intensity.shape
    for _ in range(int(n)):
        sharp = rng.random() < 0.6
        sigma = rng.uniform(1.0, 4.0) if sharp else rng.uniform(8.0, 25.0)
        amp = rng.uniform(0.15, 0.8) if sharp else rng.uniform(0.03, 0.1)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ex, ey = rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
        reach = int(3 * sigma / min(ex, ey)) + 1
        r0, r1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, h)
        c0, c1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, w)
        if r1 <= r0 or c1 <= c0:
            continue
        yy = (np.arange(r0, r1) - cy)[:, None]
        xx = (np.arange(c0, c1) - cx)[None, :]
        d2 = ((xx * ex) ** 2 + (yy * ey) ** 2) / sigma**2
        blob = amp * np.exp(-0.5 * d2)
        if not sharp:  # out-of-focus particles look like a faint dark disc with a bright ring
            blob -= 0.6 * amp * np.exp(-0.5 * (np.sqrt(d2) - 1.6) ** 2 / 0.15)
        intensity[r0:r1, c0:c1] *= np.exp(-blob).astype(np.float32)


def render_scene(
    shape: tuple[int, int],
    cells: list[CellInstance],
    optics: BrightfieldOptics | None = None,
    rng: np.random.Generator | None = None,
    walls: bool = True,
    debris: int = 0,
    noise: bool = True,
) -> Scene:
    """Render one brightfield frame of ``cells`` in the capillary; returns image and ground truth.

    Masks are the silhouettes of the cell bodies (pixels whose projection is > 0), boxes are
    their bounding boxes clipped to the frame; cells wholly outside the frame get neither.
    Work is done on each cell's crop, so the cost is dominated by the projection and the noise.
    """
    optics = optics or BrightfieldOptics()
    rng = rng if rng is not None else np.random.default_rng()
    h, w = int(shape[0]), int(shape[1])
    od = np.zeros((h, w), np.float32)
    intensity = background((h, w), optics, walls).copy()
    masks: list[np.ndarray] = []
    boxes: list[tuple[float, float, float, float]] = []
    index: list[int] = []
    pad = int(np.ceil(4 * optics.halo_sigma_px)) if optics.phase_halo else 0
    for i, cell in enumerate(cells):
        crop = _cell_crop(cell, (h, w), optics, pad)
        if crop is None:
            continue
        r0, r1, c0, c1 = crop
        centre = (cell.centre_px[0] - r0, cell.centre_px[1] - c0)
        cell_od, sil = _project_cell(cell, (r1 - r0, c1 - c0), centre, optics)
        if optics.absorption_scale != 1.0:
            cell_od = cell_od * np.float32(optics.absorption_scale)
        od[r0:r1, c0:c1] += cell_od
        trans = np.exp(-cell_od)
        if optics.phase_halo:
            # phase ~ thickness; the optical depth is a good proxy (the body's chord dominates)
            s = optics.halo_sigma_px
            lap = cv2.Laplacian(cv2.GaussianBlur(cell_od, (0, 0), s), cv2.CV_32F)
            trans *= np.clip(1.0 + (optics.phase_halo * s * s / 0.05) * lap, 0.2, 3.0)
        intensity[r0:r1, c0:c1] *= trans
        if not sil.any():
            continue
        mask = np.zeros((h, w), bool)
        mask[r0:r1, c0:c1] = sil
        masks.append(mask)
        boxes.append(box_from_mask(mask))  # type: ignore[arg-type]
        index.append(i)
    if debris:
        _add_debris(intensity, debris, rng, optics)
    if optics.defocus_px > 0:
        intensity = cv2.GaussianBlur(intensity, (0, 0), optics.defocus_px)
    if noise:
        var = intensity * np.float32(1.0 / optics.electrons_per_count)
        var += np.float32(optics.read_noise**2)
        np.maximum(var, 0, out=var)
        z = rng.standard_normal((h, w), dtype=np.float32)
        z *= np.sqrt(var, out=var)
        intensity += z
    np.rint(intensity, out=intensity)
    np.clip(intensity, 0, optics.max_count, out=intensity)
    return Scene(intensity.astype(optics.dtype), masks, boxes, od, index)
