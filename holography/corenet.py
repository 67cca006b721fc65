"""CoreNet: a small network that maps a far-field target intensity to per-core phases.

It is trained *unsupervised*: its phases go through the differentiable far-field model
(:class:`~mcf_rotator.holography.physics.FarFieldLayer`) and the loss compares the simulated
intensity with the target (1 - correlation + efficiency term), so no GS labels are needed and
the network is never capped by GS's quality. Only the central lobe region is fed in and scored
(the lattice replicas cannot be shaped independently), which keeps the network an MLP of
~0.25 M parameters: one hologram is a few matrix-vector products, fast on a CPU.

Output: per core a (cos, sin) pair, normalised; the phase is its angle (no 2 pi wrap
discontinuity for the network to learn).
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mcf_rotator.errors import ConfigError, InputFileError
from mcf_rotator.holography.mcf import FarFieldGrid, MCFGeometry, far_field_matrix
from mcf_rotator.holography.physics import FarFieldLayer, hologram_loss
from mcf_rotator.holography.targets import central_mask

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "corenet_default.pt"
FORMAT_VERSION = 1


class CoreNet(nn.Module):
    """MLP: central-region target pixels (P,) -> per-core (cos, sin) (N, 2)."""

    def __init__(self, n_inputs: int, n_cores: int, hidden: int = 256, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers.append(nn.Linear(width, 2 * n_cores))
        self.body = nn.Sequential(*layers)
        self.n_inputs = n_inputs
        self.n_cores = n_cores
        self.hidden = hidden
        self.depth = depth

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P) targets (peak-normalised) -> (cos, sin), each (B, N), unit modulus."""
        out = self.body(x).view(-1, self.n_cores, 2)
        norm = torch.sqrt((out * out).sum(-1) + 1e-8)
        return out[..., 0] / norm, out[..., 1] / norm


@dataclass
class CoreNetBundle:
    """A trained network with the fibre and far-field grid it was trained for."""

    net: CoreNet
    geometry: MCFGeometry
    grid: FarFieldGrid
    info: dict

    def save(self, path: str | Path) -> None:
        state = {k: v.half() if v.is_floating_point() else v for k, v in self.net.state_dict().items()}
        torch.save(
            {
                "format_version": FORMAT_VERSION,
                "state_dict": state,
                "n_inputs": self.net.n_inputs,
                "n_cores": self.net.n_cores,
                "hidden": self.net.hidden,
                "depth": self.net.depth,
                "core_positions_um": self.geometry.core_positions_um.tolist(),
                "mode_field_diameter_um": self.geometry.mode_field_diameter_um,
                "wavelength_um": self.geometry.wavelength_um,
                "fibre_id": self.geometry.fibre_id,
                "grid_size": self.grid.size,
                "grid_half_extent": self.grid.half_extent,
                "info": self.info,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> "CoreNetBundle":
        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"CoreNet weights {path}: file not found")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            if d.get("format_version") != FORMAT_VERSION:
                raise InputFileError(
                    f"CoreNet weights {path}: format version {d.get('format_version')} is not supported "
                    f"(expected {FORMAT_VERSION}); retrain with 'mcf-rotator train-corenet'"
                )
            net = CoreNet(d["n_inputs"], d["n_cores"], d["hidden"], d["depth"])
            net.load_state_dict({k: v.float() for k, v in d["state_dict"].items()})
        except (RuntimeError, KeyError, EOFError, OSError, ValueError, TypeError, pickle.UnpicklingError) as exc:
            # a truncated or foreign file: name it instead of a pickle traceback
            raise InputFileError(f"CoreNet weights {path}: cannot load ({str(exc).splitlines()[0][:200]})") from exc
        net.eval()
        geometry = MCFGeometry(
            np.asarray(d["core_positions_um"], float), d["mode_field_diameter_um"], d["wavelength_um"], d["fibre_id"]
        )
        grid = FarFieldGrid(int(d["grid_size"]), float(d["grid_half_extent"]))
        return cls(net, geometry, grid, dict(d.get("info", {})))

    def check_fibre(self, geometry: MCFGeometry) -> None:
        """Raise ConfigError unless the weights were trained for this fibre's optics."""
        same = (
            geometry.n_cores == self.geometry.n_cores
            and np.allclose(geometry.core_positions_um, self.geometry.core_positions_um, atol=0.05)
            and math.isclose(geometry.wavelength_um, self.geometry.wavelength_um, rel_tol=1e-3)
            and math.isclose(geometry.mode_field_diameter_um, self.geometry.mode_field_diameter_um, rel_tol=1e-2)
        )
        if not same:
            raise ConfigError(
                f"CoreNet weights were trained for fibre '{self.geometry.fibre_id}' "
                f"({self.geometry.n_cores} cores), not for '{geometry.fibre_id}' ({geometry.n_cores} cores); "
                "train weights for this fibre with 'mcf-rotator train-corenet' or use the GS generator"
            )


def default_weights_path() -> Path:
    return Path(str(resources.files("mcf_rotator.resources").joinpath(DEFAULT_WEIGHTS)))


def load_default_corenet(path: str | Path | None = None) -> CoreNetBundle:
    """The shipped weights for the default fibre (or ``path``)."""
    return CoreNetBundle.load(path or default_weights_path())


class CoreNetHologramGenerator:
    """``phases(target)`` / ``phases_batch(targets)`` with a trained CoreNet.

    ``bundle`` defaults to the shipped weights; ``geometry`` (optional) is checked against the
    fibre the weights were trained for. ``refine_iter`` > 0 polishes each result with that many
    gradient-descent steps (slower, slightly better).
    """

    def __init__(
        self,
        bundle: CoreNetBundle | None = None,
        geometry: MCFGeometry | None = None,
        refine_iter: int = 0,
    ) -> None:
        self.bundle = bundle or load_default_corenet()
        if geometry is not None:
            self.bundle.check_fibre(geometry)
        self.geometry = self.bundle.geometry
        self.grid = self.bundle.grid
        self.mask = central_mask(self.grid, self.geometry)
        self._flat_index = torch.from_numpy(np.flatnonzero(self.mask.ravel()))
        if self._flat_index.numel() != self.bundle.net.n_inputs:
            raise ConfigError("CoreNet weights do not match their far-field grid; retrain them")
        self.net = self.bundle.net.eval()
        self.refine_iter = int(refine_iter)
        self._matrix: np.ndarray | None = None

    @property
    def n_cores(self) -> int:
        return self.geometry.n_cores

    def _inputs(self, targets: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(targets, np.float32))
        m = self.grid.size
        if t.shape[-2:] != (m, m):
            raise ValueError(f"target shape {tuple(t.shape[-2:])} does not match the CoreNet grid ({m}, {m})")
        x = t.reshape(t.shape[0], -1).index_select(1, self._flat_index)
        return x / (x.amax(1, keepdim=True) + 1e-12)

    def phases_batch(self, targets: np.ndarray) -> np.ndarray:
        """(B, M, M) targets -> (B, N) phases in (-pi, pi]."""
        with torch.inference_mode():
            c, s = self.net(self._inputs(targets))
            ph = torch.atan2(s, c).numpy().astype(np.float64)
        if self.refine_iter:
            from mcf_rotator.holography.gs import gradient_descent_phases

            if self._matrix is None:
                self._matrix = far_field_matrix(self.geometry, self.grid)
            ph = np.stack(
                [
                    gradient_descent_phases(t, self._matrix, self.refine_iter, mask=self.mask, init=p, lr=0.02)
                    for t, p in zip(np.asarray(targets), ph)
                ]
            )
        return ph

    def phases(self, target: np.ndarray) -> np.ndarray:
        """(M, M) target -> (N,) phases."""
        return self.phases_batch(np.asarray(target)[None])[0]


# -- training ---------------------------------------------------------------------------
@dataclass
class TrainSettings:
    steps: int = 3000
    batch: int = 256
    lr: float = 2e-3
    hidden: int = 256
    depth: int = 2
    efficiency_weight: float = 0.5
    #: weight of the second-moment (orientation/elongation) mismatch: the trap torque follows the
    #: beam's moment ellipse, which correlation alone pins only loosely
    moment_weight: float = 0.0
    major_px: tuple[float, float] = (3.0, 9.0)
    minor_px: tuple[float, float] = (1.8, 6.0)
    max_offset_px: float = 2.0
    seed: int = 0
    threads: int = 2


def random_ellipse_batch(coords: torch.Tensor, n: int, s: TrainSettings, gen: torch.Generator) -> torch.Tensor:
    """(n, P) Gaussian-ellipse targets at the masked pixel coords (x, y-up) (P, 2)."""
    u = torch.rand(n, 5, generator=gen)
    major = s.major_px[0] + u[:, 0] * (s.major_px[1] - s.major_px[0])
    minor = s.minor_px[0] + u[:, 1] * (s.minor_px[1] - s.minor_px[0])
    minor = torch.minimum(minor, major)
    theta = u[:, 2] * math.pi
    cx = (u[:, 3] * 2 - 1) * s.max_offset_px
    cy = (u[:, 4] * 2 - 1) * s.max_offset_px
    x = coords[None, :, 0] - cx[:, None]
    y = coords[None, :, 1] - cy[:, None]
    c, sn = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
    xr = x * c + y * sn
    yr = -x * sn + y * c
    return torch.exp(-2 * ((xr / major[:, None]) ** 2 + (yr / minor[:, None]) ** 2))


def train_corenet(
    geometry: MCFGeometry | None = None,
    grid_size: int = 64,
    settings: TrainSettings | None = None,
    device: str | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> CoreNetBundle:
    """Train a CoreNet for ``geometry`` on random ellipses; returns the bundle (CPU weights)."""
    s = settings or TrainSettings()
    geometry = geometry or MCFGeometry.hexagonal()
    grid = FarFieldGrid.for_geometry(geometry, grid_size)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(max(1, s.threads))
    torch.manual_seed(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    mask = central_mask(grid, geometry)
    rows, cols = np.nonzero(mask)
    coords = torch.from_numpy(np.stack([cols - (grid.size - 1) / 2, -(rows - (grid.size - 1) / 2)], 1).astype(np.float32))
    layer = FarFieldLayer(far_field_matrix(geometry, grid), mask).to(device)
    coords_dev = coords.to(device)
    net = CoreNet(int(mask.sum()), geometry.n_cores, s.hidden, s.depth).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.steps, pct_start=0.1)
    t0 = time.perf_counter()
    loss_v = float("nan")
    for step in range(s.steps):
        target = random_ellipse_batch(coords, s.batch, s, gen).to(device)
        c, sn = net(target)
        loss = hologram_loss(layer(c, sn), target, s.efficiency_weight, s.moment_weight, coords_dev)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_v = loss.item()
        if progress and (step % 100 == 0 or step == s.steps - 1):
            progress(step + 1, s.steps, loss_v)
    net = net.cpu().eval()
    info = {
        "steps": s.steps,
        "batch": s.batch,
        "final_loss": loss_v,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "device": device,
        "major_px": list(s.major_px),
        "minor_px": list(s.minor_px),
        "max_offset_px": s.max_offset_px,
        "efficiency_weight": s.efficiency_weight,
        "moment_weight": s.moment_weight,
    }
    return CoreNetBundle(net, geometry, grid, info)
