"""Iterative baselines for per-core phase holograms: weighted Gerchberg-Saxton and direct
gradient descent. They are the reference CoreNet is measured against (quality and speed) and a
fallback generator when no trained network fits the fibre.

Both work on the far-field matrix A (M*M, N) of :func:`~mcf_rotator.holography.mcf.far_field_matrix`
and optimise only inside ``mask`` (normally the central lobe region, see
:func:`~mcf_rotator.holography.targets.central_mask`); outside it the field is left free.
"""

from __future__ import annotations

import numpy as np
import torch

from mcf_rotator.holography.mcf import FarFieldGrid, MCFGeometry, far_field_matrix
from mcf_rotator.holography.physics import FarFieldLayer, hologram_loss, mask_coords
from mcf_rotator.holography.targets import central_mask


def _prepare(target: np.ndarray, matrix: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    target = np.asarray(target, np.float64)
    if target.size != matrix.shape[0]:
        raise ValueError(f"target has {target.size} pixels, the far-field matrix expects {matrix.shape[0]}")
    m = np.ones(target.size, bool) if mask is None else np.asarray(mask, bool).ravel()
    return target.ravel(), m


def weighted_gs(
    target: np.ndarray,
    matrix: np.ndarray,
    n_iter: int = 50,
    amplitudes: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    init: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted Gerchberg-Saxton on per-core phases -> phases (N,) in (-pi, pi].

    Each iteration replaces the far-field amplitude inside ``mask`` by the (weighted) target
    amplitude and keeps the phase; outside the mask the field is free. Back-projection uses
    A^H and keeps only the phase (each core carries fixed power ``amplitudes``). The weights
    grow where the spot is too dim and shrink where it is too bright, which removes the
    non-uniformity plain GS leaves. Start: the phase of A^H sqrt(target) (or ``init``).
    """
    t, m = _prepare(target, matrix, mask)
    a = matrix.astype(np.complex128) if amplitudes is None else matrix * np.asarray(amplitudes)[None, :]
    amp_t = np.sqrt(np.clip(t, 0, None))[m]
    a_in = a[m]
    a_in_h = a_in.conj().T
    support = amp_t > 0.1 * amp_t.max()
    if init is None:
        phases = np.angle(a_in_h @ amp_t)
    else:
        phases = np.asarray(init, np.float64).copy()
    w = np.ones_like(amp_t)
    t_c = amp_t**2 - (amp_t**2).mean()
    t_norm = np.sqrt(t_c @ t_c) + 1e-30
    best, best_corr = phases, -np.inf
    for _ in range(int(n_iter) + 1):
        e = a_in @ np.exp(1j * phases)
        mag = np.abs(e)
        inten = mag**2 - (mag**2).mean()
        corr = (inten @ t_c) / (np.sqrt(inten @ inten) * t_norm + 1e-30)
        if corr > best_corr:  # GS is not monotone: keep the best iterate
            best, best_corr = phases, corr
        # least-squares scale between current amplitude and target on the support
        scale = (mag[support] @ amp_t[support]) / (amp_t[support] @ amp_t[support] + 1e-30)
        ratio = np.ones_like(amp_t)
        ratio[support] = scale * amp_t[support] / (mag[support] + 1e-12)
        w = np.clip(w * np.sqrt(ratio), 0.2, 5.0)  # damped weight update: no oscillation
        new_amp = scale * w * amp_t
        e_new = new_amp * np.exp(1j * np.angle(e))
        phases = np.angle(a_in_h @ e_new)
    return best


def gradient_descent_phases(
    target: np.ndarray,
    matrix: np.ndarray,
    n_iter: int = 200,
    amplitudes: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    init: np.ndarray | None = None,
    lr: float = 0.05,
    efficiency_weight: float = 0.5,
    moment_weight: float = 0.0,
) -> np.ndarray:
    """Adam on the per-core phases through the differentiable far field -> phases (N,).

    Minimises the same loss CoreNet trains on (1 - correlation + w (1 - efficiency)) inside
    ``mask``; starting from ``init`` (e.g. a GS or CoreNet result) it polishes a hologram.
    """
    t, m = _prepare(target, matrix, mask)
    layer = FarFieldLayer(matrix, m if mask is not None else None, amplitudes)
    side = int(round(np.sqrt(m.size)))
    coords = mask_coords(m.reshape(side, side))
    tt = torch.from_numpy(t[m].astype(np.float32))[None]
    if init is None:
        a_in = matrix[m]
        init = np.angle(a_in.conj().T @ np.sqrt(np.clip(t[m], 0, None)))
    phi = torch.tensor(np.asarray(init, np.float32)[None], requires_grad=True)
    opt = torch.optim.Adam([phi], lr=lr)
    for _ in range(int(n_iter)):
        opt.zero_grad()
        loss = hologram_loss(layer.from_phases(phi), tt, efficiency_weight, moment_weight, coords)
        loss.backward()
        opt.step()
    return np.angle(np.exp(1j * phi.detach().numpy()[0].astype(np.float64)))


class GSHologramGenerator:
    """Weighted-GS generator with the ``phases(target)`` interface the sequencer takes."""

    def __init__(
        self,
        geometry: MCFGeometry,
        grid: FarFieldGrid | None = None,
        n_iter: int = 50,
        amplitudes: np.ndarray | None = None,
    ) -> None:
        self.geometry = geometry
        self.grid = grid or FarFieldGrid.for_geometry(geometry, 64)
        self.matrix = far_field_matrix(geometry, self.grid)
        self.mask = central_mask(self.grid, geometry)
        self.n_iter = n_iter
        self.amplitudes = amplitudes

    @property
    def n_cores(self) -> int:
        return self.geometry.n_cores

    def phases(self, target: np.ndarray) -> np.ndarray:
        """Per-core phases (N,) for one far-field target (M, M)."""
        return weighted_gs(target, self.matrix, self.n_iter, self.amplitudes, self.mask)

    def phases_batch(self, targets: np.ndarray) -> np.ndarray:
        """(B, N) for a stack of targets (B, M, M)."""
        return np.stack([self.phases(t) for t in targets])
