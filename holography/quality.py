"""Hologram quality metrics, evaluated on the central lobe region only (what the trap sees)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: target pixels above this fraction of the peak count as the spot (1/e^2 contour)
SUPPORT_LEVEL = float(np.exp(-2.0))


@dataclass(frozen=True)
class HologramQuality:
    """``correlation``: Pearson correlation of simulated vs target intensity in the central
    region (1 = perfect shape); ``efficiency``: fraction of the central-region power that lands
    inside the target's 1/e^2 contour."""

    correlation: float
    efficiency: float


def correlation(intensity: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson correlation over ``mask``; works on (M, M) or batches (B, M, M)."""
    i = np.asarray(intensity, np.float64)[..., mask]
    t = np.asarray(target, np.float64)[..., mask]
    i = i - i.mean(-1, keepdims=True)
    t = t - t.mean(-1, keepdims=True)
    num = (i * t).sum(-1)
    den = np.sqrt((i * i).sum(-1) * (t * t).sum(-1)) + 1e-30
    return num / den


def efficiency(intensity: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Power inside the target support / power in the central region; (M, M) or batched."""
    i = np.asarray(intensity, np.float64)
    t = np.asarray(target, np.float64)
    peak = t.reshape(*t.shape[:-2], -1).max(-1)[..., None, None]
    support = (t >= SUPPORT_LEVEL * peak) & mask
    inside = (i * support).sum((-2, -1))
    total = (i * mask).sum((-2, -1)) + 1e-30
    return inside / total


def hologram_quality(intensity: np.ndarray, target: np.ndarray, mask: np.ndarray) -> HologramQuality:
    """Both metrics for one hologram."""
    return HologramQuality(
        float(correlation(intensity, target, mask)), float(efficiency(intensity, target, mask))
    )


def beam_orientation_deg(intensity: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Long-axis angle of the spot inside ``mask`` (second moments), degrees in (-90, 90].

    Same convention as :func:`mcf_rotator.holography.mcf.beam_moments` (counter-clockwise from
    +u with image rows pointing down); works on (M, M) or batches (B, M, M). This is the
    orientation the trapped cell follows.
    """
    i = np.asarray(intensity, np.float64) * mask
    m = i.shape[-1]
    yy, xx = np.mgrid[0:m, 0:m].astype(np.float64)
    tot = i.sum((-2, -1)) + 1e-30
    cx = (i * xx).sum((-2, -1)) / tot
    cy = (i * yy).sum((-2, -1)) / tot
    dx = xx - cx[..., None, None]
    dy = yy - cy[..., None, None]
    mxx = (i * dx * dx).sum((-2, -1)) / tot
    myy = (i * dy * dy).sum((-2, -1)) / tot
    mxy = (i * dx * dy).sum((-2, -1)) / tot
    return 0.5 * np.degrees(np.arctan2(-2 * mxy, mxx - myy))
