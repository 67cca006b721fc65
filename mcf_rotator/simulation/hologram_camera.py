"""Off-axis holography of the MCF distal facet: what the calibration camera records.

The facet is imaged onto the camera at ``facet_um_per_px`` and overlapped with a tilted
plane reference wave:

    I = |E_mcf + R exp(-i 2 pi (fx (col - cx) + fy (row - cy)))|^2

with ``(cy, cx)`` the facet centre (the image centre plus ``centre_offset_px``). The cross
term ``E_mcf conj(R)`` sits at spatial frequency ``+(fx, fy)`` (numpy FFT convention), so
isolating that order and taking the angle at core n gives ``phi_n + 2 pi (fx dx_n + fy dy_n)``
with (dx_n, dy_n) the core's offset in pixels (col, row) from the facet centre: subtract
the carrier ramp to get ``phi_n``. ``fx, fy`` (cycles/pixel) put the +1 order well away from the zero-order
autocorrelation (default |f| = 0.28 cyc/px, Nyquist 0.5). The reference amplitude is a
fraction of the mean peak core amplitude; counts are scaled so an unsaturated peak sits at
``fill`` of full scale, ``saturation > 1`` over-exposes. Shot and read noise as in the
brightfield camera; ``reference_blocked`` gives the intensity-only image (|E_mcf|^2). All amplitudes zero (the
laser off) give a dark frame: read noise only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcf_rotator.holography.mcf import MCFGeometry, near_field

__all__ = ["HologramOptics", "render_hologram"]


@dataclass(frozen=True)
class HologramOptics:
    """Calibration-camera parameters (frozen so they can key caches)."""

    shape: tuple[int, int] = (512, 512)
    facet_um_per_px: float = 0.5
    carrier_cyc_per_px: tuple[float, float] = (0.2, 0.2)  # (fx along columns, fy along rows)
    reference_ratio: float = 1.0  # reference amplitude / mean core peak amplitude
    fill: float = 0.8  # unsaturated peak as a fraction of full scale
    saturation: float = 1.0  # > 1 over-exposes (clips the brightest fringes)
    bit_depth: int = 12
    read_noise: float = 2.0
    electrons_per_count: float = 1.0
    noise: bool = True
    reference_blocked: bool = False
    centre_offset_px: tuple[float, float] = (0.0, 0.0)  # (row, col) of the facet centre vs the image centre

    @property
    def max_count(self) -> int:
        return (1 << int(self.bit_depth)) - 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.bit_depth <= 8 else np.dtype(np.uint16)

    def facet_centre_px(self) -> tuple[float, float]:
        h, w = self.shape
        return ((h - 1) / 2.0 + self.centre_offset_px[0], (w - 1) / 2.0 + self.centre_offset_px[1])


def render_hologram(
    geometry: MCFGeometry,
    total_phases: np.ndarray,
    amplitudes: np.ndarray | None = None,
    optics: HologramOptics | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, dict]:
    """Hologram image (uint8/uint16) of the facet with distal core phases ``total_phases``.

    Returns the image and metadata: ``facet_um_per_px``, ``carrier_cyc_per_px`` (fx, fy),
    ``facet_centre_px`` (row, col), ``core_positions_px`` (N, 2) as (row, col),
    ``reference_blocked``, ``saturated_fraction`` and ``true_core_phases`` (wrapped, for tests).
    """
    optics = optics or HologramOptics()
    rng = rng if rng is not None else np.random.default_rng()
    h, w = optics.shape
    cy, cx = optics.facet_centre_px()
    amps = np.ones(geometry.n_cores) if amplitudes is None else np.asarray(amplitudes, float)
    field = near_field(geometry, np.asarray(total_phases, float), (h, w), optics.facet_um_per_px, amps, (cy, cx))
    ref_amp = optics.reference_ratio * float(np.mean(np.abs(amps))) if len(amps) else 1.0
    if optics.reference_blocked:
        intensity = np.abs(field) ** 2
        peak = max(float(np.max(np.abs(amps))) ** 2, 1e-12)
    else:
        fx, fy = optics.carrier_cyc_per_px
        ramp_r = np.exp(-2j * np.pi * fy * (np.arange(h) - cy))[:, None]
        ramp_c = np.exp(-2j * np.pi * fx * (np.arange(w) - cx))[None, :]
        intensity = np.abs(field + ref_amp * (ramp_r * ramp_c)) ** 2
        peak = (float(np.max(np.abs(amps))) + ref_amp) ** 2
    # no light (laser off: every core dark, and the reference is split off the same laser):
    # the camera still reads out, a dark frame of read noise only
    lit = peak > 1e-12 and bool(np.any(amps != 0))
    scale = optics.fill * optics.saturation * optics.max_count / peak if lit else 0.0
    counts = intensity * scale
    if optics.noise:
        var = counts / optics.electrons_per_count + optics.read_noise**2
        counts = counts + np.sqrt(var) * rng.standard_normal((h, w))
    counts = np.clip(np.rint(counts), 0, optics.max_count)
    image = counts.astype(optics.dtype)
    pos = geometry.core_positions_um / optics.facet_um_per_px
    meta = {
        "facet_um_per_px": float(optics.facet_um_per_px),
        "carrier_cyc_per_px": (float(optics.carrier_cyc_per_px[0]), float(optics.carrier_cyc_per_px[1])),
        "facet_centre_px": (float(cy), float(cx)),
        "core_positions_px": np.stack([cy + pos[:, 1], cx + pos[:, 0]], axis=1),
        "reference_blocked": bool(optics.reference_blocked),
        "saturated_fraction": float(np.mean(image >= optics.max_count)),
        "true_core_phases": np.mod(np.asarray(total_phases, float), 2 * np.pi),
    }
    return image, meta
