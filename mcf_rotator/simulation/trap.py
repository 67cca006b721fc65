"""Overdamped rotational and lateral dynamics of a cell in the MCF trap.

What the cell feels is summarised from the far field (the intensity it sits in):

- ``angle_deg`` and ``ellipticity``: second-moment ellipse (``holography.mcf.beam_moments``)
  over the central window, radius ``0.5 lambda / pitch`` in direction sines (the main lobe
  and its surroundings; the lattice replicas further out miss the cell);
- ``efficiency``: power within ``0.25 lambda / pitch``, as a fraction of the total, divided by
  the same fraction for a flat-phase (perfectly focused) beam. The 0.5-window fraction barely
  separates a speckle from a focused spot on a 61-core fibre (0.14 vs 0.21), the tighter one
  does (speckle ~0.15, calibrated ellipse ~0.7, focused spot 1).

Rotation (angle = cell spin about the fibre axis, cumulative, degrees): the cell's long
axis aligns with the beam's, a 180-degree-periodic torque, so

    d theta / dt = omega_max * sin(2 (phi_beam - theta)) + Brownian,
    omega_max = gain * (power / nominal) * efficiency * ellipticity.

``sin(2(...))`` makes the cell follow the nearest equivalent orientation of the ellipse, so
``theta`` stays unwrapped. The gain gives omega_max ~600 deg/s for a calibrated ellipse at
nominal power: a lag of ~1.4 deg at 30 deg/s. The Brownian term is an Ornstein-Uhlenbeck
process whose stationary std in that calibrated trap is ``brownian_deg``.

Lateral (image plane, um, relative to the trap centre): slow drift (``drift_um_s``, slowly
turning), restoring force ~ power * efficiency when the trap holds. With the laser on but
the trap strength below ``min_strength`` (a speckle from an uncalibrated fibre, or too
little power) scattering pushes the cell along the capillary; once it is farther than
``capture_radius_um`` it is lost for good (``trapped`` False, it drifts out of view).
With the laser off the cell only drifts slowly and can be caught again.

Wobble: an ellipse that is not centred on the cell pushes it sideways twice per turn (the
ellipse at phi and phi + 180 deg is the same spot): ``wobble_um * sin(2 theta + phase)`` across
the axis and a third of it along, added to the position the camera sees
(:meth:`RotationalTrap.displacement_um`). With the defaults the cell moves ~1 px RMS at
0.086 um per pixel (Brownian ~0.07 um, drift, wobble 0.03 um): what a soft fibre trap does.

Axis tilt: in-plane ``axis_tilt_deg`` with a slow +-30 % wobble, plus a small out-of-plane
tilt (a quarter of it), as seen on real rotators.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcf_rotator.holography.mcf import FarFieldGrid, MCFGeometry, beam_moments

__all__ = ["BeamState", "TrapParameters", "RotationalTrap", "analyse_far_field", "FarFieldAnalyser"]


@dataclass(frozen=True)
class BeamState:
    """What the trapped cell feels from the current far field."""

    angle_deg: float
    ellipticity: float
    efficiency: float

    @classmethod
    def dark(cls) -> "BeamState":
        return cls(0.0, 0.0, 0.0)


class FarFieldAnalyser:
    """Turns a far-field intensity into a :class:`BeamState` (windows precomputed per grid)."""

    def __init__(self, geometry: MCFGeometry, grid: FarFieldGrid, flat_intensity: np.ndarray) -> None:
        lam_p = geometry.wavelength_um / geometry.pitch_um
        ax = grid.axis
        vv, uu = np.meshgrid(ax, ax, indexing="ij")
        r = np.hypot(uu, vv)
        self.moment_window = r <= 0.5 * lam_p
        self.power_window = r <= 0.25 * lam_p
        self._flat_fraction = self._fraction(flat_intensity) or 1.0

    def _fraction(self, intensity: np.ndarray) -> float:
        total = float(intensity.sum())
        return float(intensity[self.power_window].sum()) / total if total > 0 else 0.0

    def __call__(self, intensity: np.ndarray) -> BeamState:
        if float(intensity.sum()) <= 0:
            return BeamState.dark()
        m = beam_moments(np.where(self.moment_window, intensity, 0.0))
        eff = min(self._fraction(intensity) / self._flat_fraction, 1.5)
        return BeamState(m["angle_deg"], m["ellipticity"], eff)


def analyse_far_field(
    intensity: np.ndarray, geometry: MCFGeometry, grid: FarFieldGrid, flat_intensity: np.ndarray
) -> BeamState:
    """One-off version of :class:`FarFieldAnalyser` (builds the windows each call)."""
    return FarFieldAnalyser(geometry, grid, flat_intensity)(intensity)


@dataclass
class TrapParameters:
    """Trap constants. Defaults give a small lag at 30 deg/s for a calibrated ellipse."""

    nominal_power_mw: float = 100.0
    #: deg/s per unit (power/nominal * efficiency * ellipticity); 0.7 * 0.55 * 1560 ~ 600 deg/s
    torque_gain_deg_s: float = 1560.0
    brownian_deg: float = 0.2
    drift_um_s: float = 0.05
    axis_tilt_deg: float = 1.0
    tilt_wobble_period_s: float = 23.0
    #: lateral restoring rate (1/s) per unit (power/nominal * efficiency)
    lateral_stiffness_s: float = 1.5
    lateral_brownian_um: float = 0.08  # um/sqrt(s); stationary RMS b / sqrt(2 k): ~0.07 um nominal
    wobble_um: float = 0.03  # sideways push at twice the rotation frequency (off-centre ellipse)
    min_strength: float = 0.3
    escape_speed_um_s: float = 4.0
    capture_radius_um: float = 6.0
    max_substep_s: float = 0.004


class RotationalTrap:
    """State and integrator of the cell's orientation and position."""

    def __init__(self, params: TrapParameters | None = None, seed: int = 0) -> None:
        self.params = params or TrapParameters()
        self.rng = np.random.default_rng([int(seed), 104729])
        self.theta_deg = 0.0
        self.position_um = np.zeros(2)  # (x = columns, y = rows), relative to the trap centre
        self.lost = False
        self.time_s = 0.0
        self._drift_dir = self.rng.uniform(0, 2 * np.pi)
        self._escape_dir = np.array([self.rng.uniform(-0.3, 0.3), 1.0 if self.rng.random() < 0.5 else -1.0])
        self._tilt_phase = self.rng.uniform(0, 2 * np.pi)
        self._wobble_phase = self.rng.uniform(0, 2 * np.pi)
        p = self.params
        ref_omega = np.deg2rad(0.7 * 0.55 * p.torque_gain_deg_s)
        self._ou_stiffness = 2.0 * ref_omega  # 1/s, linearised calibrated trap
        self._diffusion = p.brownian_deg**2 * self._ou_stiffness  # deg^2/s

    # ------------------------------------------------------------------ derived state
    def strength(self, beam: BeamState, power_mw: float, laser_on: bool) -> float:
        if not laser_on:
            return 0.0
        return max(power_mw, 0.0) / self.params.nominal_power_mw * beam.efficiency

    @property
    def trapped(self) -> bool:
        return not self.lost and float(np.hypot(*self.position_um)) <= self.params.capture_radius_um

    def tilt_deg(self) -> tuple[float, float]:
        """(in-plane, out-of-plane) tilt of the rotation axis now."""
        p = self.params
        wob = np.sin(2 * np.pi * self.time_s / p.tilt_wobble_period_s + self._tilt_phase)
        return p.axis_tilt_deg * (1.0 + 0.3 * wob), 0.25 * p.axis_tilt_deg * np.cos(
            2 * np.pi * self.time_s / (1.7 * p.tilt_wobble_period_s) + self._tilt_phase
        )

    def displacement_um(self) -> np.ndarray:
        """(x, y) of the cell centre from the trap centre as the camera sees it: the position
        plus the 2x-rotation wobble."""
        w = self.params.wobble_um * np.sin(np.deg2rad(2.0 * self.theta_deg) + self._wobble_phase)
        return self.position_um + np.array([w, w / 3.0])

    # ------------------------------------------------------------------ integration
    def step(self, dt_s: float, beam: BeamState, power_mw: float, laser_on: bool) -> None:
        """Advance by ``dt_s`` seconds with a constant beam (sub-stepped for stability)."""
        if dt_s <= 0:
            return
        p = self.params
        n = max(1, int(np.ceil(dt_s / p.max_substep_s)))
        h = dt_s / n
        s = self.strength(beam, power_mw, laser_on)
        holds = laser_on and s >= p.min_strength
        for _ in range(n):
            # rotation
            omega = 0.0
            if laser_on and self.trapped:
                omega_max = p.torque_gain_deg_s * (power_mw / p.nominal_power_mw) * beam.efficiency * beam.ellipticity
                omega = omega_max * np.sin(np.deg2rad(2.0 * (beam.angle_deg - self.theta_deg)))
            self.theta_deg += omega * h + np.sqrt(2 * self._diffusion * h) * self.rng.standard_normal()
            # lateral motion
            self._drift_dir += 0.2 * np.sqrt(h) * self.rng.standard_normal()
            v = p.drift_um_s * np.array([np.cos(self._drift_dir), np.sin(self._drift_dir)])
            if holds and not self.lost:
                v = v - p.lateral_stiffness_s * s * self.position_um
            elif laser_on:
                v = v + p.escape_speed_um_s * self._escape_dir
            self.position_um = self.position_um + v * h + p.lateral_brownian_um * np.sqrt(h) * self.rng.standard_normal(2)
            if laser_on and not holds and not self.trapped:
                self.lost = True  # pushed out of reach: does not come back by itself
            self.time_s += h

    def reset(self, theta_deg: float = 0.0) -> None:
        """A new cell in the trap centre (after one was lost)."""
        self.theta_deg = float(theta_deg)
        self.position_um = np.zeros(2)
        self.lost = False
