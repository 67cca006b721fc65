"""napari plugin (npe2, manifest ``napari.yaml``): open our volumes, recordings and angle
tables with the right scale, units and per-frame metadata; save volumes the way ImageJ and the
reconstruct command read them.

Why a plugin: dropped on napari's own TIFF/Zarr readers, our files open as bare arrays (no
voxel size, no time axis, no angles). The readers here only claim files that are ours, so
napari's builtins still open everything else.

Layer metadata: a recording layer carries ``timestamps_s``, ``angles_deg`` (refined, else
tracked, else the simulator's truth; NaN where none), ``slm_angle_deg`` and the sidecar
header under ``acquisition``; a volume layer ``voxel_um`` (``None`` when not stated).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[Any], list[LayerData]]

_UM = "µm"
#: per-frame angle keys of the sidecar, best first
_ANGLE_KEYS = ("refined_angle_deg", "tracked_angle_deg", "true_angle_deg")


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """The reader for ``path`` if it is one of ours (volume, recording, angle table), else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    kind = _kind(p)
    return {"recording": _read_recording, "volume": _read_volume, "angles": _read_angles}.get(kind or "")


def _kind(p: Path) -> str | None:
    """Which of our file types ``p`` is (``None``: not ours, leave it to other readers)."""
    from mcf_rotator.recording import sidecar_path

    name = p.name.lower()
    try:
        if name.endswith(".frames.jsonl"):
            return "recording" if _recording_for_sidecar(p) is not None else None
        if p.is_dir() and name.endswith(".zarr"):
            import zarr

            attrs = dict(zarr.open_group(str(p), mode="r").attrs)
            return "recording" if "mcf_rotator" in attrs else None
        if name.endswith(".csv"):
            with open(p, newline="") as fh:
                header = [h.strip() for h in next(csv.reader(fh), [])]
            return "angles" if {"frame", "angle_deg"} <= set(header) else None
        if name.endswith((".tif", ".tiff")) and p.is_file():
            if sidecar_path(p).is_file():
                return "recording"
            import tifffile

            with tifffile.TiffFile(p) as tif:
                if tif.is_ome and "mcf-rotator" in (tif.pages.first.description or "")[:4096]:
                    return "recording"
                ij = tif.imagej_metadata or {}
                if tif.is_imagej and ij.get("frames") and not ij.get("slices"):
                    return "recording"  # a (t, y, x) projection stack, e.g. from `simulate`
                if tif.is_imagej and tif.series[0].dtype == np.float32 and tif.series[0].ndim == 3 and ij.get("slices"):
                    return "volume"
    except Exception:  # noqa: BLE001 - unreadable here: another reader may open it
        return None
    return None


def _recording_for_sidecar(sidecar: Path) -> Path | None:
    if sidecar.parent.name.lower().endswith(".zarr"):
        return sidecar.parent
    stem = sidecar.name[: -len(".frames.jsonl")]
    for suffix in (".ome.tif", ".ome.tiff", ".tif", ".tiff"):
        cand = sidecar.with_name(stem + suffix)
        if cand.is_file():
            return cand
    return None


# ----------------------------------------------------------------------------- readers
def _read_recording(path: Any) -> list[LayerData]:
    """A recording as a (t, y, x) image: seconds and micrometres on the axes, per-frame metadata."""
    from mcf_rotator.ome_metadata import frame_interval
    from mcf_rotator.reconstruction.io import read_pixel_size, read_stack
    from mcf_rotator.recording import read_sidecar, recording_stem, sidecar_path

    p = Path(path[0] if isinstance(path, (list, tuple)) else path)
    if p.name.lower().endswith(".frames.jsonl"):
        p = _recording_for_sidecar(p) or p
    frames = read_stack(p, min_frames=1)
    header, meta = read_sidecar(sidecar_path(p))
    n = frames.shape[0]
    rows = [meta.get(i, {}) for i in range(n)]
    timestamps = np.array([r.get("timestamp_s", np.nan) for r in rows], float)
    angles = np.array([next((r[k] for k in _ANGLE_KEYS if r.get(k) is not None), np.nan) for r in rows], float)
    pixel_um, source = read_pixel_size(p)
    if not np.isfinite(timestamps).any() and (ij_dt := _imagej_frame_interval(p)):
        timestamps = np.arange(n) * ij_dt  # an ImageJ stack states its frame interval only
    dt = frame_interval(timestamps[np.isfinite(timestamps)])
    scale = (dt or 1.0, pixel_um or 1.0, pixel_um or 1.0)
    units = ("s" if dt else "pixel", _UM if pixel_um else "pixel", _UM if pixel_um else "pixel")
    metadata = {
        "timestamps_s": timestamps - (timestamps[0] if n and np.isfinite(timestamps[0]) else 0.0),
        "angles_deg": angles,
        "slm_angle_deg": np.array([r.get("slm_angle_deg", np.nan) for r in rows], float),
        "acquisition": header,
        "pixel_size_source": source,
        "source_path": str(p),
    }
    kwargs = {"name": recording_stem(p), "scale": scale, "units": units, "axis_labels": ("t", "y", "x"),
              "metadata": metadata, "colormap": "gray"}
    return [(frames, kwargs, "image")]


def _imagej_frame_interval(p: Path) -> float | None:
    if p.is_dir():
        return None
    import tifffile

    with tifffile.TiffFile(p) as tif:
        dt = (tif.imagej_metadata or {}).get("finterval")
    return float(dt) if dt and float(dt) > 0 else None


def _read_volume(path: Any) -> list[LayerData]:
    """A reconstructed (H, D, W) volume, voxel size from its ImageJ calibration."""
    from mcf_rotator.reconstruction.io import read_voxel_size, read_volume

    p = Path(path[0] if isinstance(path, (list, tuple)) else path)
    vol = read_volume(p)
    voxel = read_voxel_size(p)
    unit = _UM if voxel else "pixel"
    kwargs = {"name": p.stem, "scale": (voxel or 1.0,) * 3, "units": (unit,) * 3,
              "axis_labels": ("row", "depth", "column"), "metadata": {"voxel_um": voxel, "source_path": str(p)},
              "colormap": "magma", "rendering": "mip"}
    return [(vol, kwargs, "image")]


def _read_angles(path: Any) -> list[LayerData]:
    """An angle table as points (frame, angle in degrees) with the columns as features."""
    from mcf_rotator.reconstruction.io import read_angle_table

    p = Path(path[0] if isinstance(path, (list, tuple)) else path)
    frames, angles = read_angle_table(p)
    data = np.column_stack([frames.astype(float), angles])
    kwargs = {"name": p.stem, "features": {"frame": frames, "angle_deg": angles},
              "axis_labels": ("frame", "angle_deg"), "units": ("pixel", "degree"),
              "metadata": {"frames": frames, "angles_deg": angles, "source_path": str(p)}, "size": 2.0}
    return [(data, kwargs, "points")]


# ----------------------------------------------------------------------------- writer
def write_volume(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Save an image layer as our 32-bit float ImageJ volume; the voxel size is the layer's
    ``voxel_um`` metadata, else its scale when its units are micrometres, else not stated."""
    from mcf_rotator.reconstruction.io import write_volume as _write

    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ValueError(f"{path}: a volume needs 3 axes, the layer has {arr.ndim}")
    voxel = (attributes.get("metadata") or {}).get("voxel_um")
    units = [str(u) for u in (attributes.get("units") or ())]
    scale = attributes.get("scale")
    if voxel is None and scale is not None and units and all(u in ("micrometer", _UM, "um") for u in units):
        voxel = float(scale[-1])
    _write(path, arr, voxel)
    return [path]
