"""Save buttons: delegate to the controller where it offers a saver, else write the
conventional formats from its pull accessors (volume: float32 ImageJ TIFF; angles:
CSV ``frame,angle_deg``; recording: copy of the controller's crash-safe recording)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mcf_rotator.errors import McfRotatorError


def save_volume(controller: Any, path: Path) -> Path:
    if hasattr(controller, "save_volume"):
        controller.save_volume(path)
        return path
    snap = controller.volume_snapshot()
    if snap is None:
        raise McfRotatorError("no volume yet - reconstruct first")
    from mcf_rotator.reconstruction.io import write_volume

    try:
        voxel_um = float(controller.config.optics.object_pixel_um)
    except Exception:
        voxel_um = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(path, snap.volume, voxel_um)
    return path


def save_angles(controller: Any, path: Path) -> Path:
    if hasattr(controller, "save_angles"):
        controller.save_angles(path)
        return path
    _t, angles = controller.angle_trace()
    angles = np.asarray(angles, dtype=float)
    if angles.size == 0:
        raise McfRotatorError("no tracked angles yet")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        fh.write("frame,angle_deg\n")
        for i, a in enumerate(angles):
            fh.write(f"{i},{a:.6f}\n")
    return path


def save_recording(controller: Any, path: Path) -> Path:
    if hasattr(controller, "save_recording"):
        out = controller.save_recording(path)
        return Path(out) if out is not None else path
    src = getattr(controller, "recording_path", None)
    src = src() if callable(src) else src
    if not src:  # the last finished run's recording, else the current run folder
        last = getattr(controller, "last_result", None)
        rec = getattr(last, "recording", None)
        src = getattr(rec, "path", None) or getattr(controller, "run_dir", None)
    if not src or not Path(src).exists():
        raise McfRotatorError("nothing recorded yet")
    src = Path(src)
    if src.is_dir():
        shutil.copytree(src, path, dirs_exist_ok=True)
    else:
        shutil.copy2(src, path)
    return path
