"""Offline reconstruction of a whole recorded stack: the work behind ``mcf-rotator reconstruct``.

One function, :func:`reconstruct_frames`, used by the CLI, the accuracy suite and the tests, so
that what is measured is what the user runs: every frame through :class:`LivePipeline`, then its
final angles and registration (:meth:`LivePipeline.finalize`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mcf_rotator.errors import ReconstructionError

__all__ = ["StackReconstruction", "reconstruct_frames"]


@dataclass
class StackReconstruction:
    volume: np.ndarray  # (H, D, W) float32
    angles_deg: np.ndarray  # (T,) one per input frame, NaN where no cell was found
    used: np.ndarray  # indices of the frames that went into the volume
    report: dict[str, Any]
    voxel_px: float  # voxel side in camera pixels
    voxel_um: float | None


def reconstruct_frames(
    frames: np.ndarray,
    known_angles: np.ndarray | None = None,
    pixel_size_um: float | None = None,
    roi_px: int | None = None,
    size: int | None = None,
    cell_px: float | None = None,
    direction: int = 1,
    progress: Callable[[str], None] | None = None,
    frame_iter: Callable[[np.ndarray], Iterable[np.ndarray]] | None = None,
) -> StackReconstruction:
    """Volume and per-frame angles of a rotation stack (T, H, W).

    ``roi_px``/``size``/``cell_px`` None: sized from the measured cell (see
    :class:`~mcf_rotator.reconstruction.live.LivePipelineConfig`). ``known_angles`` (one per
    frame) skip the angle estimation. ``progress`` gets the name of each final step;
    ``frame_iter`` wraps the frames (a progress bar).
    """
    from mcf_rotator.reconstruction.live import LivePipeline, LivePipelineConfig

    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ReconstructionError(f"expected a stack of 2D frames, got shape {frames.shape}")
    kw: dict[str, Any] = {"direction": direction, "resolve_every": 0}
    if roi_px is not None:
        kw["roi_px"] = int(roi_px)
    if size is not None:
        kw["volume_size"] = int(size)
    if cell_px is not None:
        kw["cell_px"] = float(cell_px)
    pipe = LivePipeline(LivePipelineConfig(**kw))
    used = []
    for i, f in enumerate(frame_iter(frames) if frame_iter else frames):
        if pipe.process(f, float(i)).ok:
            used.append(i)
    if not used:
        raise ReconstructionError(f"no cell found in any of {frames.shape[0]} frames")
    idx = np.asarray(used)
    result = pipe.finalize(None if known_angles is None else np.asarray(known_angles, np.float64)[idx],
                           progress=progress)
    angles = np.full(frames.shape[0], np.nan)
    angles[idx] = result.angles_deg
    voxel_px = float(result.report.get("voxel_px", 1.0))
    voxel_um = pixel_size_um * voxel_px if pixel_size_um else None
    report = dict(result.report, frames_total=int(frames.shape[0]), voxel_um=voxel_um)
    return StackReconstruction(result.volume, angles, idx, report, voxel_px, voxel_um)
