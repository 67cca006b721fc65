"""Translational motion of a trapped cell: what a real optical trap does to the cell's centre.

A trapped cell is not still. Three parts, each in camera pixels and rendered sub-pixel by the
callers (the cell's centre is a float; the projection is evaluated at it):

- **Brownian motion in the trap** (Ornstein-Uhlenbeck): the trap's stiffness pulls the cell
  back with a relaxation time ``memory_frames``; the stationary RMS is ``brownian_rms_px`` per
  axis (kT / stiffness: tens of nm to ~0.3 um for soft fibre traps, 0.5-5 px at 0.07-0.1 um/px).
  Lateral (image columns) and vertical (image rows, along the rotation axis) are independent;
  the vertical stiffness of a dual-fibre trap is usually lower (``vertical_ratio``).
- **Slow drift** from residual flow: a random walk of ``drift_px_per_frame`` per frame (std of
  each step), i.e. a wandering that the trap does not pull back within the sweep.
- **Wobble at twice the rotation frequency**: an ellipse not centred on the cell pushes it
  sideways twice per turn (the ellipse at phi and phi + 180 deg is the same spot), amplitude
  ``wobble_px``.

:func:`trap_motion` returns the offsets (T, 2) as (row, column) of the cell centre from its
rest position, frame by frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MotionModel", "trap_motion", "ou_process"]


@dataclass(frozen=True)
class MotionModel:
    """Parameters of :func:`trap_motion` (pixels, frames). Defaults: a realistic soft trap."""

    brownian_rms_px: float = 0.7
    memory_frames: float = 30.0
    vertical_ratio: float = 0.7  # vertical RMS / lateral RMS
    drift_px_per_frame: float = 0.0
    wobble_px: float = 0.3

    @classmethod
    def still(cls) -> "MotionModel":
        """No motion at all (the cell a benchmark of the past assumed)."""
        return cls(brownian_rms_px=0.0, drift_px_per_frame=0.0, wobble_px=0.0)

    def describe(self) -> str:
        return (f"brownian {self.brownian_rms_px:g} px rms (memory {self.memory_frames:g} frames), "
                f"drift {self.drift_px_per_frame:g} px/frame, wobble {self.wobble_px:g} px")


def ou_process(n: int, rms: float, memory: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary Ornstein-Uhlenbeck series of ``n`` samples, std ``rms``, correlation time
    ``memory`` samples (exact discretisation: x[i] = a x[i-1] + sqrt(1 - a^2) rms z)."""
    if n <= 0:
        return np.zeros(0)
    if rms <= 0:
        return np.zeros(n)
    a = float(np.exp(-1.0 / max(memory, 1e-6)))
    z = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = rms * z[0]
    b = rms * np.sqrt(1.0 - a * a)
    for i in range(1, n):
        x[i] = a * x[i - 1] + b * z[i]
    return x


def trap_motion(angles_deg: np.ndarray, model: MotionModel, rng: np.random.Generator) -> np.ndarray:
    """Offsets (T, 2) = (row, column) px of the cell centre, one per frame of ``angles_deg``.

    The wobble follows the cell's own angle (2x its rotation frequency) with a random phase.
    Frame 0 is not forced to zero: the cell's rest position is unknown to the analysis too.
    """
    th = np.deg2rad(np.asarray(angles_deg, np.float64))
    n = th.size
    col = ou_process(n, model.brownian_rms_px, model.memory_frames, rng)
    row = ou_process(n, model.brownian_rms_px * model.vertical_ratio, model.memory_frames, rng)
    if model.drift_px_per_frame > 0:
        steps = rng.normal(0.0, model.drift_px_per_frame, (n, 2))
        steps[0] = 0.0
        walk = np.cumsum(steps, axis=0)
        row += walk[:, 0]
        col += walk[:, 1]
    if model.wobble_px > 0:
        ph = rng.uniform(0, 2 * np.pi)
        col += model.wobble_px * np.sin(2 * th + ph)
        row += 0.3 * model.wobble_px * np.sin(2 * th + ph + 1.0)
    return np.stack([row, col], axis=1)
