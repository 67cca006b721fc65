"""Far-field target intensities for the trap: the rotating elliptical spot.

Units: ``axes`` and ``centre`` are in far-field grid pixels (the grid of
:class:`~mcf_rotator.holography.mcf.FarFieldGrid`); x points along +u (columns) and y along
+v drawn upwards (rows run down), so ``angle_deg`` is counter-clockwise from +u exactly as
:func:`~mcf_rotator.holography.mcf.beam_moments` reports it. The spot is a Gaussian ellipse:
``axes`` are its 1/e^2 intensity radii (major, minor). A smooth target is what a 61-core
phase-only array can actually form; a flat-top would only add unreachable ringing.
"""

from __future__ import annotations

import numpy as np

from mcf_rotator.holography.mcf import FarFieldGrid, MCFGeometry


def _pixel_coords(grid: FarFieldGrid) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) pixel offsets from the grid centre, y up, each (M, M)."""
    m = grid.size
    ax = np.arange(m) - (m - 1) / 2.0
    rows, cols = np.meshgrid(ax, ax, indexing="ij")
    return cols, -rows


def ellipse_target(
    grid: FarFieldGrid,
    axes: tuple[float, float],
    angle_deg: float,
    centre: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Elliptical Gaussian spot (M, M) float32, peak 1, long axis at ``angle_deg``."""
    a, b = float(axes[0]), float(axes[1])
    if a <= 0 or b <= 0:
        raise ValueError(f"ellipse axes must be positive, got {axes}")
    x, y = _pixel_coords(grid)
    x = x - centre[0]
    y = y - centre[1]
    t = np.deg2rad(angle_deg)
    xr = x * np.cos(t) + y * np.sin(t)
    yr = -x * np.sin(t) + y * np.cos(t)
    return np.exp(-2.0 * ((xr / a) ** 2 + (yr / b) ** 2)).astype(np.float32)


def ellipse_targets(
    grid: FarFieldGrid,
    axes: tuple[float, float],
    angles_deg: np.ndarray,
    centre: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Stack (B, M, M) of :func:`ellipse_target` for several angles (batch hologram paths)."""
    return np.stack([ellipse_target(grid, axes, float(a), centre) for a in np.atleast_1d(angles_deg)])


def central_radius_px(grid: FarFieldGrid, geometry: MCFGeometry) -> float:
    """Radius (grid pixels) of the central lobe region, free of the lattice replicas.

    A core lattice of pitch p repeats the far field every ~lambda / p in direction sine; half
    of that is the region the trap sees and the only one a hologram can shape independently.
    """
    pixel = 2.0 * grid.half_extent / grid.size
    return 0.5 * geometry.wavelength_um / geometry.pitch_um / pixel


def central_mask(grid: FarFieldGrid, geometry: MCFGeometry) -> np.ndarray:
    """Boolean (M, M) disk of the central lobe region (see :func:`central_radius_px`)."""
    x, y = _pixel_coords(grid)
    return (x**2 + y**2) <= central_radius_px(grid, geometry) ** 2
