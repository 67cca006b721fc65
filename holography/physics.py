"""Differentiable far-field physics layer (torch) shared by gradient descent and CoreNet.

It evaluates exactly the model of :func:`~mcf_rotator.holography.mcf.far_field_matrix`, so a
network trained through it optimises the same intensity the numpy model (and the simulated
rig) predicts. Only the central lobe region is propagated: the replicas carry no shaping
freedom and computing them would cost ~4x more per step.
"""

from __future__ import annotations

import numpy as np
import torch

from mcf_rotator.holography.quality import SUPPORT_LEVEL


class FarFieldLayer(torch.nn.Module):
    """Per-core field (cos, sin) -> far-field intensity on the pixels of ``mask``.

    ``matrix`` is the complex (M*M, N) far-field matrix; ``mask`` a boolean (M, M) region to
    evaluate (None: everything). Output: (B, P) intensities on the P masked pixels.
    """

    def __init__(self, matrix: np.ndarray, mask: np.ndarray | None = None,
                 amplitudes: np.ndarray | None = None) -> None:
        super().__init__()
        m = np.asarray(matrix)
        if mask is not None:
            m = m[np.asarray(mask).ravel()]
        if amplitudes is not None:
            m = m * np.asarray(amplitudes)[None, :]
        self.register_buffer("a_re", torch.from_numpy(np.ascontiguousarray(m.real.T, np.float32)))
        self.register_buffer("a_im", torch.from_numpy(np.ascontiguousarray(m.imag.T, np.float32)))

    def forward(self, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Intensity |sum_n A_pn (cos_n + i sin_n)|^2 for a batch (B, N) -> (B, P)."""
        e_re = cos @ self.a_re - sin @ self.a_im
        e_im = cos @ self.a_im + sin @ self.a_re
        return e_re * e_re + e_im * e_im

    def from_phases(self, phases: torch.Tensor) -> torch.Tensor:
        return self.forward(torch.cos(phases), torch.sin(phases))


def hologram_loss(
    intensity: torch.Tensor,
    target: torch.Tensor,
    efficiency_weight: float = 0.5,
    moment_weight: float = 0.0,
    coords: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the batch of (1 - Pearson correlation) + w * (1 - efficiency)
    [+ w_m * second-moment mismatch].

    All terms are scale-free, so the network never has to learn absolute power. ``intensity``
    and ``target`` are (B, P) on the same masked pixels. The moment term (needs ``coords``
    (P, 2) pixel positions) pins the ellipse orientation, which the trap torque follows and
    which correlation alone constrains weakly for a near diffraction-limited spot.
    """
    i = intensity - intensity.mean(-1, keepdim=True)
    t = target - target.mean(-1, keepdim=True)
    corr = (i * t).sum(-1) / (i.norm(dim=-1) * t.norm(dim=-1) + 1e-12)
    support = (target >= SUPPORT_LEVEL * target.amax(-1, keepdim=True)).to(intensity.dtype)
    eff = (intensity * support).sum(-1) / (intensity.sum(-1) + 1e-12)
    loss = 1.0 - corr + efficiency_weight * (1.0 - eff)
    if moment_weight and coords is not None:
        loss = loss + moment_weight * _moment_mismatch(intensity * support, target, coords)
    return loss.mean()


def second_moments(weights: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Centred second moments (B, 3) = (mxx, myy, mxy) of (B, P) weights at (P, 2) coords."""
    w = weights / (weights.sum(-1, keepdim=True) + 1e-12)
    x, y = coords[:, 0], coords[:, 1]
    cx = w @ x
    cy = w @ y
    dx = x[None] - cx[:, None]
    dy = y[None] - cy[:, None]
    return torch.stack([(w * dx * dx).sum(-1), (w * dy * dy).sum(-1), (w * dx * dy).sum(-1)], -1)


def _moment_mismatch(intensity: torch.Tensor, target: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    mi = second_moments(intensity, coords)
    mt = second_moments(target, coords)
    scale = (mt[:, 0] + mt[:, 1]) ** 2 + 1e-12
    return ((mi - mt) ** 2).sum(-1) / scale


def mask_coords(mask: np.ndarray) -> torch.Tensor:
    """(P, 2) float32 (x, y-up) pixel coordinates of the True pixels of a (M, M) mask."""
    rows, cols = np.nonzero(np.asarray(mask))
    return torch.from_numpy(np.stack([cols, -rows], 1).astype(np.float32))
