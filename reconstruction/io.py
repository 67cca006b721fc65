"""Reading projection stacks (TIFF, AVI/MP4) and writing volumes and angle tables."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mcf_rotator.errors import InputFileError


def read_stack(path: str | Path) -> np.ndarray:
    """Frames (T, H, W[, C]) from a multi-page TIFF (incl. our OME-TIFF recordings) or a movie."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(p)
        elif suffix in (".avi", ".mp4", ".mov", ".mkv"):
            import imageio.v3 as iio

            data = np.stack(list(iio.imiter(p)))
        else:
            raise InputFileError(f"{p}: unsupported format {suffix!r} (use a TIFF stack, AVI or MP4)")
    except InputFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input file
        raise InputFileError(f"{p}: cannot be read as an image stack ({exc})") from exc
    data = np.asarray(data)
    if data.ndim == 4 and data.shape[-1] in (3, 4):
        data = data[..., :3].mean(axis=-1)
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3:
        raise InputFileError(f"{p}: expected a stack of 2D frames, got an array of shape {data.shape}")
    return data


def read_angles(path: str | Path) -> np.ndarray:
    """Angle CSV with header ``frame,angle_deg`` -> angles ordered by frame."""
    p = Path(path)
    try:
        with open(p, newline="") as fh:
            rows = list(csv.DictReader(fh))
        pairs = sorted((int(r["frame"]), float(r["angle_deg"])) for r in rows)
    except (OSError, KeyError, ValueError) as exc:
        raise InputFileError(f"{p}: not an angle table with header frame,angle_deg ({exc})") from exc
    return np.array([a for _, a in pairs])


def write_angles(path: str | Path, angles_deg: np.ndarray, frames: Sequence[int] | None = None) -> None:
    """``frame,angle_deg`` rows; ``frames`` names each angle's frame (default 0, 1, ...)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "angle_deg"])
        for i, a in zip(range(len(angles_deg)) if frames is None else frames, angles_deg):
            w.writerow([int(i), f"{a:.4f}"])


def write_volume(path: str | Path, volume: np.ndarray, voxel_um: float | None = None) -> None:
    """(H, D, W) float32 volume as an ImageJ hyperstack (Z = axis 0), voxel size in metadata."""
    import tifffile

    v = np.asarray(volume, np.float32)
    kw: dict = {"imagej": True, "metadata": {"axes": "ZYX", "unit": "um"}}
    if voxel_um:
        kw["resolution"] = (1.0 / voxel_um, 1.0 / voxel_um)
        kw["metadata"]["spacing"] = voxel_um
    tifffile.imwrite(path, v, **kw)


def read_volume(path: str | Path) -> np.ndarray:
    v = read_stack(path) if Path(path).suffix.lower() in (".tif", ".tiff") else None
    if v is None:
        raise InputFileError(f"{path}: volumes must be TIFF")
    return v.astype(np.float32)
