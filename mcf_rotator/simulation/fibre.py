"""The simulated multi-core fibre: the hidden per-core phase distortion a calibration must find.

A real MCF adds to every core an unknown phase (different optical path lengths, changing
whenever the fibre is bent) and transmits slightly different powers per core. The model:

- distortion = smooth part (low-order polynomial over the facet, a few radians peak to
  valley: bend-induced path differences) + random per-core part (std ~1.5 rad: core-to-core
  length/index differences), so without correction the far field is a speckle;
- amplitudes: log-normal, ~12 % spread (coupling and loss differences);
- ``rebend(seed)`` draws a new distortion (a re-bent fibre), ``perturb`` a small drift.

:func:`cylindrical_lens_phases` is the analytic elliptical beam used when no hologram
generator is wanted: a quadratic phase along one direction across the cores defocuses the
far-field spot along that direction. Sign (checked with ``beam_moments``): the pattern
``alpha * (x cos p + y sin p)^2`` gives a long axis at ``angle_deg = -p`` in
``beam_moments``' convention (it flips rows, while far-field rows are +v), so the function
uses ``p = -angle`` and the beam's ``angle_deg`` equals the requested angle (within
~1.3 deg, a 60-deg-periodic error from the hexagonal lattice, for the default alpha).
"""

from __future__ import annotations

import numpy as np

from mcf_rotator.holography.mcf import MCFGeometry, SLMCoreMapping

__all__ = ["SimulatedFibre", "cylindrical_lens_phases", "DEFAULT_LENS_ALPHA"]

#: quadratic phase (rad/um^2) giving an elongated, still compact far-field spot on the default
#: 61-core, 15 um pitch fibre (ellipticity ~0.55, ~70 % of the flat beam's central power)
DEFAULT_LENS_ALPHA = 0.0015


def cylindrical_lens_phases(geometry: MCFGeometry, angle_deg: float, alpha: float = DEFAULT_LENS_ALPHA) -> np.ndarray:
    """Per-core phases (N,) giving a far-field ellipse whose long axis is at ``angle_deg``
    (``beam_moments`` convention) through an ideal (distortion-free) fibre."""
    p = np.deg2rad(-angle_deg)
    x, y = geometry.core_positions_um[:, 0], geometry.core_positions_um[:, 1]
    # scale with the fibre size so other core maps get a comparable elongation
    scale = (60.0 / max(geometry.radius_um, 1e-6)) ** 2
    return np.mod(alpha * scale * (x * np.cos(p) + y * np.sin(p)) ** 2, 2 * np.pi)


class SimulatedFibre:
    """An MCF with a hidden phase distortion and core amplitude non-uniformity."""

    def __init__(
        self,
        geometry: MCFGeometry,
        seed: int = 0,
        mapping: SLMCoreMapping | None = None,
        smooth_pv_rad: float = 6.0,
        random_std_rad: float = 1.5,
        amplitude_spread: float = 0.12,
    ) -> None:
        self.geometry = geometry
        self.mapping = mapping
        self.smooth_pv_rad = float(smooth_pv_rad)
        self.random_std_rad = float(random_std_rad)
        self.amplitude_spread = float(amplitude_spread)
        self.seed = int(seed)
        self.distortion = np.zeros(geometry.n_cores)
        self.amplitudes = np.ones(geometry.n_cores)
        self.rebend(seed)

    def rebend(self, seed: int) -> None:
        """Draw a new distortion (and slightly different core powers), as after re-bending."""
        rng = np.random.default_rng([int(seed), 7919])
        pos = self.geometry.core_positions_um / max(self.geometry.radius_um, 1e-6)
        x, y = pos[:, 0], pos[:, 1]
        # tilt, defocus, astigmatism x2, coma x2, trefoil: the low orders a bend produces
        basis = np.stack([x, y, 2 * (x * x + y * y) - 1, x * x - y * y, 2 * x * y,
                          (3 * (x * x + y * y) - 2) * x, (3 * (x * x + y * y) - 2) * y, x**3 - 3 * x * y * y])
        smooth = rng.normal(size=basis.shape[0]) @ basis
        ptp = float(np.ptp(smooth)) or 1.0
        smooth *= self.smooth_pv_rad / ptp
        self.distortion = smooth + rng.normal(0.0, self.random_std_rad, self.geometry.n_cores)
        self.amplitudes = np.exp(rng.normal(0.0, self.amplitude_spread, self.geometry.n_cores))
        self.amplitudes /= np.sqrt(np.mean(self.amplitudes**2))
        self.seed = int(seed)

    def perturb(self, rms_rad: float, seed: int | None = None) -> None:
        """Small drift of the distortion (temperature, relaxation) without a full re-bend."""
        rng = np.random.default_rng(seed)
        self.distortion = self.distortion + rng.normal(0.0, rms_rad, self.geometry.n_cores)

    def total_phases(self, core_phases: np.ndarray) -> np.ndarray:
        """Phases at the distal facet for SLM-side per-core phases (N,) or (B, N)."""
        return np.asarray(core_phases) + self.distortion

    def total_core_phases(self, slm_phase_image: np.ndarray) -> np.ndarray:
        """Distal per-core phases for an SLM phase image (radians, the SLM's shape)."""
        if self.mapping is None:
            raise ValueError("SimulatedFibre.total_core_phases needs an SLMCoreMapping (mapping=...)")
        return self.mapping.slm_to_phases(slm_phase_image) + self.distortion

    def correction(self) -> np.ndarray:
        """The ideal calibration correction (-distortion, wrapped): for tests and the simulator."""
        return np.mod(-self.distortion, 2 * np.pi)

    def ellipse_phases(self, angle_deg: float, alpha: float = DEFAULT_LENS_ALPHA, corrected: bool = True) -> np.ndarray:
        """SLM-side per-core phases for an ellipse at ``angle_deg``, perfectly calibrated if
        ``corrected`` (what a correct calibration + sequencer produce)."""
        ph = cylindrical_lens_phases(self.geometry, angle_deg, alpha)
        return np.mod(ph + self.correction(), 2 * np.pi) if corrected else ph
