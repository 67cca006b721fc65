"""Optics model of the multi-core fibre (MCF): core layout, far field, SLM-to-core mapping.

Conventions
-----------
- Core positions are in micrometres on the distal facet, shape (N, 2) as (x, y).
- Each core carries one Gaussian mode of 1/e^2 intensity diameter ``mode_field_diameter_um``.
  The distal field is ``sum_n a_n exp(i phi_n) g(r - r_n)``.
- The far field (Fraunhofer, where the cell is trapped) is sampled on a square grid of
  direction sines ``(u, v) = (kx/k, ky/k)``, shape (M, M), row = v, column = u.
  It is evaluated as an exact non-uniform DFT (a (M*M, N) matrix times the core vector), so
  it is band-limited correctly with no FFT wrap-around or padding artefacts; the mode's
  envelope multiplies the array factor.
- SLM phases are radians; 8-bit grey levels go through a LUT (``phase_to_grey``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcf_rotator.errors import InputFileError


@dataclass(frozen=True)
class MCFGeometry:
    """Where the cores are and what light they carry."""

    core_positions_um: np.ndarray
    mode_field_diameter_um: float = 4.0
    wavelength_um: float = 1.064
    fibre_id: str = "default-hex61"

    @property
    def n_cores(self) -> int:
        return int(self.core_positions_um.shape[0])

    @property
    def pitch_um(self) -> float:
        """Smallest centre-to-centre distance between two cores."""
        p = self.core_positions_um
        d = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))
        d[d == 0] = np.inf
        return float(d.min())

    @property
    def radius_um(self) -> float:
        return float(np.sqrt((self.core_positions_um**2).sum(1)).max())

    @classmethod
    def hexagonal(
        cls,
        rings: int = 4,
        pitch_um: float = 15.0,
        mode_field_diameter_um: float = 4.0,
        wavelength_um: float = 1.064,
        jitter_um: float = 0.0,
        seed: int = 0,
    ) -> "MCFGeometry":
        """Hexagonal lattice with ``rings`` rings around a centre core (1 + 3 r (r + 1) cores)."""
        pts = []
        for q in range(-rings, rings + 1):
            for r in range(-rings, rings + 1):
                s = -q - r
                if max(abs(q), abs(r), abs(s)) <= rings:
                    x = pitch_um * (q + r / 2.0)
                    y = pitch_um * (r * np.sqrt(3) / 2.0)
                    pts.append((x, y))
        pos = np.array(pts, dtype=np.float64)
        order = np.lexsort((pos[:, 0], pos[:, 1]))
        pos = pos[order]
        if jitter_um:
            pos = pos + np.random.default_rng(seed).normal(0, jitter_um, pos.shape)
        return cls(pos, mode_field_diameter_um, wavelength_um, f"hex{len(pos)}-p{pitch_um:g}")

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "MCFGeometry":
        """Load a measured core map: CSV with columns x_um,y_um (header optional) or JSON.

        JSON: ``{"core_positions_um": [[x, y], ...], "mode_field_diameter_um": ..,
        "wavelength_um": .., "fibre_id": ..}``.
        """
        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"core map {path}: file not found")
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(path.read_text())
                pos = np.asarray(data["core_positions_um"], dtype=float)
                for key in ("mode_field_diameter_um", "wavelength_um", "fibre_id"):
                    if key in data:
                        kwargs.setdefault(key, data[key])
            else:
                pos = np.genfromtxt(path, delimiter=",", comments="#", dtype=float)
                if pos.ndim == 2 and np.isnan(pos[0]).all():
                    pos = pos[1:]
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise InputFileError(f"core map {path}: cannot parse ({exc})") from exc
        pos = np.atleast_2d(pos)
        if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] < 3 or not np.isfinite(pos).all():
            raise InputFileError(
                f"core map {path}: expected at least 3 rows of finite x_um,y_um, got shape {pos.shape}"
            )
        kwargs.setdefault("fibre_id", path.stem)
        return cls(pos, **kwargs)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(
            json.dumps(
                {
                    "core_positions_um": self.core_positions_um.tolist(),
                    "mode_field_diameter_um": self.mode_field_diameter_um,
                    "wavelength_um": self.wavelength_um,
                    "fibre_id": self.fibre_id,
                },
                indent=1,
            )
        )


@dataclass(frozen=True)
class FarFieldGrid:
    """Square grid of direction sines on which far-field intensities are sampled."""

    size: int = 64
    half_extent: float = 0.05  # direction sine at the grid edge

    @property
    def axis(self) -> np.ndarray:
        """Direction sines of the pixel centres along one axis (length ``size``)."""
        n = self.size
        return (np.arange(n) - (n - 1) / 2.0) * (2 * self.half_extent / n)

    @classmethod
    def for_geometry(cls, geometry: MCFGeometry, size: int = 64, lobes: float = 3.0) -> "FarFieldGrid":
        """Grid that holds the central ``lobes`` x (lambda / pitch) region (main lobe plus the
        nearest lattice replicas are cut off at the edge)."""
        return cls(size=size, half_extent=0.5 * lobes * geometry.wavelength_um / geometry.pitch_um)


def far_field_matrix(geometry: MCFGeometry, grid: FarFieldGrid) -> np.ndarray:
    """Complex (M*M, N) matrix A with far field E = A @ (a * exp(i phi)), envelope included.

    Row order is C-order over (v, u), i.e. ``E.reshape(M, M)`` has rows = v.
    """
    k = 2 * np.pi / geometry.wavelength_um
    ax = grid.axis
    vv, uu = np.meshgrid(ax, ax, indexing="ij")
    u = uu.ravel()[:, None]
    v = vv.ravel()[:, None]
    x = geometry.core_positions_um[None, :, 0]
    y = geometry.core_positions_um[None, :, 1]
    w0 = geometry.mode_field_diameter_um / 2.0
    envelope = np.exp(-((k * w0 / 2.0) ** 2) * (u**2 + v**2))
    return (envelope * np.exp(-1j * k * (u * x + v * y))).astype(np.complex64)


def far_field_intensity(
    phases: np.ndarray, matrix: np.ndarray, amplitudes: np.ndarray | None = None
) -> np.ndarray:
    """Far-field intensity (M, M) for per-core phases (N,) (or a batch (B, N) -> (B, M, M))."""
    phases = np.asarray(phases)
    c = np.exp(1j * phases).astype(np.complex64)  # stay in the matrix's precision (5-20x faster)
    if amplitudes is not None:
        c = c * amplitudes.astype(np.float32)
    e = c @ matrix.T
    m = int(round(np.sqrt(matrix.shape[0])))
    return (np.abs(e) ** 2).reshape(*phases.shape[:-1], m, m).astype(np.float32)


def near_field(
    geometry: MCFGeometry,
    phases: np.ndarray,
    shape: tuple[int, int],
    pixel_um: float,
    amplitudes: np.ndarray | None = None,
    centre_px: tuple[float, float] | None = None,
) -> np.ndarray:
    """Complex field on the distal facet sampled on a camera-like grid (rows = y)."""
    h, w = shape
    cy, cx = centre_px if centre_px is not None else ((h - 1) / 2.0, (w - 1) / 2.0)
    yy = (np.arange(h) - cy) * pixel_um
    xx = (np.arange(w) - cx) * pixel_um
    w0 = geometry.mode_field_diameter_um / 2.0
    amps = np.ones(geometry.n_cores) if amplitudes is None else amplitudes
    field = np.zeros(shape, np.complex128)
    reach = 3.0 * w0
    for (x0, y0), ph, a in zip(geometry.core_positions_um, phases, amps):
        r0 = np.searchsorted(yy, y0 - reach)
        r1 = np.searchsorted(yy, y0 + reach)
        c0 = np.searchsorted(xx, x0 - reach)
        c1 = np.searchsorted(xx, x0 + reach)
        if r1 <= r0 or c1 <= c0:
            continue
        gy = np.exp(-((yy[r0:r1] - y0) ** 2) / w0**2)
        gx = np.exp(-((xx[c0:c1] - x0) ** 2) / w0**2)
        field[r0:r1, c0:c1] += a * np.exp(1j * ph) * np.outer(gy, gx)
    return field


@dataclass(frozen=True)
class SLMCoreMapping:
    """Which SLM pixels feed which core (the SLM is imaged onto the proximal facet).

    ``labels`` has the SLM's shape; value n >= 0 marks pixels of core n, -1 is background.
    """

    labels: np.ndarray
    n_cores: int

    @classmethod
    def build(
        cls,
        geometry: MCFGeometry,
        slm_shape: tuple[int, int] = (1080, 1920),
        slm_pitch_um: float = 8.0,
        magnification: float = 1 / 12.0,
        centre_px: tuple[float, float] | None = None,
        fill: float = 0.8,
    ) -> "SLMCoreMapping":
        """Disks of diameter ``fill`` x pitch (in SLM pixels) around each imaged core centre."""
        h, w = slm_shape
        cy, cx = centre_px if centre_px is not None else ((h - 1) / 2.0, (w - 1) / 2.0)
        scale = 1.0 / (magnification * slm_pitch_um)  # SLM pixels per facet micrometre
        pos_px = geometry.core_positions_um * scale
        radius = 0.5 * fill * geometry.pitch_um * scale
        labels = np.full(slm_shape, -1, np.int32)
        r = int(np.ceil(radius))
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = dy**2 + dx**2 <= radius**2
        for n, (x, y) in enumerate(pos_px):
            yc, xc = int(round(cy + y)), int(round(cx + x))
            ys, xs = dy[disk] + yc, dx[disk] + xc
            ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            labels[ys[ok], xs[ok]] = n
        return cls(labels, geometry.n_cores)

    def phases_to_slm(
        self,
        phases: np.ndarray,
        grating_period_px: float | None = None,
        grating_angle_deg: float = 0.0,
        background: float = 0.0,
    ) -> np.ndarray:
        """SLM phase image (radians, [0, 2pi)) with each core region filled with its phase.

        An optional blazed grating moves the light to the first diffraction order so the
        unmodulated zero order can be blocked.
        """
        phases = np.asarray(phases, dtype=np.float64)
        lut = np.append(phases, background)
        img = lut[self.labels]  # label -1 picks the background entry
        if grating_period_px:
            h, w = self.labels.shape
            yy, xx = np.mgrid[0:h, 0:w]
            a = np.deg2rad(grating_angle_deg)
            img = img + 2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / grating_period_px
        return np.mod(img, 2 * np.pi)

    def slm_to_phases(self, phase_image: np.ndarray) -> np.ndarray:
        """Per-core phase seen by each core: circular mean of its SLM pixels."""
        mask = self.labels >= 0
        lab = self.labels[mask]
        ph = phase_image[mask]
        re = np.bincount(lab, np.cos(ph), minlength=self.n_cores)
        im = np.bincount(lab, np.sin(ph), minlength=self.n_cores)
        return np.arctan2(im, re)


def phase_to_grey(phase_rad: np.ndarray, two_pi_grey: int = 255) -> np.ndarray:
    """Wrap a phase to [0, 2pi) and map it linearly to 8-bit grey, 2pi -> ``two_pi_grey``.

    ``two_pi_grey`` is the SLM's LUT calibration at the trapping wavelength (PLUTO-2 at
    1064 nm with the matching LUT: 255).
    """
    wrapped = np.mod(phase_rad, 2 * np.pi)
    grey = np.round(wrapped / (2 * np.pi) * (two_pi_grey + 1)) % (two_pi_grey + 1)
    return grey.astype(np.uint8)


def grey_to_phase(grey: np.ndarray, two_pi_grey: int = 255) -> np.ndarray:
    """Inverse of :func:`phase_to_grey`."""
    return grey.astype(np.float64) * (2 * np.pi / (two_pi_grey + 1))


def beam_moments(intensity: np.ndarray, grid: FarFieldGrid | None = None) -> dict[str, float]:
    """Second-moment ellipse of a far-field intensity (M, M).

    Returns orientation ``angle_deg`` (of the long axis, counter-clockwise from +u, in
    (-90, 90]), ``ellipticity`` (1 - minor/major, 0 for a round spot) and the centroid in
    pixels. The trap torque follows from these.
    """
    img = np.asarray(intensity, dtype=np.float64)
    total = img.sum()
    if total <= 0:
        return {"angle_deg": 0.0, "ellipticity": 0.0, "cx": 0.0, "cy": 0.0, "power": 0.0}
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    cx = (img * xx).sum() / total
    cy = (img * yy).sum() / total
    mxx = (img * (xx - cx) ** 2).sum() / total
    myy = (img * (yy - cy) ** 2).sum() / total
    mxy = (img * (xx - cx) * (yy - cy)).sum() / total
    # rows point down; flip y so the angle is counter-clockwise in the usual sense
    angle = 0.5 * np.degrees(np.arctan2(-2 * mxy, mxx - myy))
    tr = mxx + myy
    det = np.sqrt(max((mxx - myy) ** 2 + 4 * mxy**2, 0.0))
    l1, l2 = (tr + det) / 2, max((tr - det) / 2, 1e-12)
    return {
        "angle_deg": float(angle),
        "ellipticity": float(1 - np.sqrt(l2 / l1)),
        "cx": float(cx),
        "cy": float(cy),
        "power": float(total),
    }
