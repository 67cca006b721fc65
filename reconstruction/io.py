"""Reading projection stacks (TIFF, AVI/MP4, our OME-TIFF / OME-Zarr recordings) and writing
volumes and angle tables.

Everything read here is checked at the boundary, before any work starts: a stack must hold at
least :data:`MIN_FRAMES` whole 2D frames of finite numbers, an angle table one finite angle per
distinct frame; output paths are created (or refused) up front. Every message names the file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mcf_rotator.errors import InputFileError

log = logging.getLogger(__name__)

#: the fewest frames a projection stack may hold
MIN_FRAMES = 3

_MOVIE_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv")


def read_stack(path: str | Path, min_frames: int = MIN_FRAMES) -> np.ndarray:
    """Frames (T, H, W) from a multi-page TIFF (incl. our OME-TIFF recordings), an OME-Zarr
    recording (folder ``*.zarr``) or a movie; colour frames are averaged to grey.

    A recording cut short (crash, copy interrupted) gives every complete frame, with a logged
    warning saying how many were read. Refused with :class:`InputFileError` naming the file:
    unreadable or unsupported files, fewer than ``min_frames`` frames, non-finite values.
    """
    p = Path(path)
    data = _as_frames(p, _load_stack(p))
    n = int(data.shape[0])
    if n < min_frames:
        raise InputFileError(
            f"{p}: holds {n} frame{'s' if n != 1 else ''}; a projection stack needs at least {min_frames}"
        )
    _refuse_non_finite(p, data, "frames")
    return data


def _load_stack(p: Path) -> np.ndarray:
    if not p.exists():
        raise InputFileError(f"{p}: no such file")
    if p.is_dir():
        if p.name.lower().endswith(".zarr"):
            return _read_zarr_recording(p)
        raise InputFileError(f"{p}: is a folder, not an image stack (give a TIFF, AVI/MP4 or *.ome.zarr recording)")
    suffix = p.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            return _read_tiff(p)
        if suffix in _MOVIE_SUFFIXES:
            import imageio.v3 as iio

            return np.stack(list(iio.imiter(p)))
    except InputFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input file
        raise InputFileError(f"{p}: cannot be read as an image stack ({exc})") from exc
    raise InputFileError(
        f"{p}: unsupported format {suffix!r} (use a TIFF stack, AVI/MP4 or an OME-Zarr recording folder)"
    )


def _read_tiff(p: Path) -> np.ndarray:
    """The whole TIFF; if it is cut short, every complete frame (as ``open_recording`` reads them)."""
    import tifffile

    with _quiet_tifffile():  # a torn file's tag errors: reported once, below
        try:
            return np.asarray(tifffile.imread(p))
        except Exception as exc:  # noqa: BLE001 - a torn file: try page by page below
            first_error = exc
        if p.stat().st_size == 0:
            raise InputFileError(f"{p}: the file is empty")
        try:
            frames = _recording_frames(p)
        except Exception:  # noqa: BLE001 - not readable page by page either: report the first cause
            frames = None
    if frames is None or frames.shape[0] == 0:
        raise InputFileError(f"{p}: cannot be read as an image stack ({first_error})") from first_error
    log.warning(
        "%s: the file is cut short (truncated or damaged); using its %d complete frames, the rest is dropped",
        p, frames.shape[0],
    )
    return frames


def _read_zarr_recording(p: Path) -> np.ndarray:
    """Every complete frame of an OME-Zarr recording (warning when it was interrupted)."""
    try:
        import zarr

        group = zarr.open_group(str(p), mode="r")
        info = dict(group.attrs.get("mcf_rotator", {}) or {})
        stored = int(group["0"].shape[0])
    except Exception as exc:  # noqa: BLE001 - zarr raises many types on a damaged store
        raise InputFileError(f"{p}: not a readable OME-Zarr image (no array '0': {exc})") from exc
    if not info:  # an OME-Zarr image from another program: its array as it is
        try:
            return np.asarray(group["0"][:])
        except Exception as exc:  # noqa: BLE001
            raise InputFileError(f"{p}: cannot be read as an image stack ({exc})") from exc
    frames = _recording_frames(p)
    if not info.get("complete"):
        log.warning(
            "%s: the recording was interrupted; using its %d complete frames (frames whose metadata "
            "never reached the disk are dropped)", p, frames.shape[0],
        )
    elif frames.shape[0] < stored:
        log.warning("%s: using %d of %d stored frames", p, frames.shape[0], stored)
    return frames


def _recording_frames(p: Path) -> np.ndarray:
    """All complete frames through the recording reader (quiet about the torn tail it skips)."""
    from mcf_rotator.recording import open_recording

    with _quiet_tifffile():  # the torn pages are reported once, by the caller
        frames, _ = open_recording(p)
        try:
            return np.asarray(frames[:]) if len(frames) else np.zeros((0, *frames.shape[1:]), frames.dtype)
        finally:
            frames.close()


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    tiff_log = logging.getLogger("tifffile")
    level = tiff_log.level
    tiff_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        tiff_log.setLevel(level)


def _as_frames(p: Path, data: np.ndarray) -> np.ndarray:
    """(T, H, W): colour averaged to grey, leading singleton axes dropped, one 2D image = 1 frame."""
    data = np.asarray(data)
    if data.size == 0:
        raise InputFileError(f"{p}: holds no image data (the file is empty or damaged)")
    if data.ndim == 4 and data.shape[-1] in (3, 4):
        data = data[..., :3].mean(axis=-1)
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputFileError(f"{p}: expected a stack of 2D frames, got an array of shape {data.shape}")
    if data.dtype.kind not in "biuf":
        raise InputFileError(f"{p}: frames of type {data.dtype} are not pixel values")
    return data


def _refuse_non_finite(p: Path, data: np.ndarray, what: str) -> None:
    if data.dtype.kind != "f":
        return
    bad = np.flatnonzero(~np.isfinite(data).reshape(data.shape[0], -1).all(axis=1))
    if bad.size:
        raise InputFileError(
            f"{p}: {bad.size} of {data.shape[0]} {what} contain NaN or inf values "
            f"(first: {what[:-1]} {int(bad[0])}); replace or remove them"
        )


def read_angles(path: str | Path) -> np.ndarray:
    """Angle CSV with header ``frame,angle_deg`` -> angles ordered by frame.

    Refused, naming the file and the row: missing columns, values that are not numbers,
    NaN/inf angles, a frame number given twice, an empty table.
    """
    p = Path(path)
    pairs: dict[int, tuple[float, int]] = {}
    try:
        with open(p, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"frame", "angle_deg"} <= {f.strip() for f in reader.fieldnames}:
                raise InputFileError(
                    f"{p}: not an angle table: the first line must be the header frame,angle_deg "
                    f"(got {','.join(reader.fieldnames or []) or 'nothing'})"
                )
            for raw in reader:
                row = {(k or "").strip(): v for k, v in raw.items()}
                line = reader.line_num
                frame_s, angle_s = row.get("frame"), row.get("angle_deg")
                if frame_s is None or angle_s is None or not frame_s.strip() or not angle_s.strip():
                    raise InputFileError(f"{p}: row {line}: needs a frame number and an angle")
                try:
                    frame_f = float(frame_s)
                    if not frame_f.is_integer():
                        raise ValueError
                    frame = int(frame_f)
                except ValueError:
                    raise InputFileError(f"{p}: row {line}: frame {frame_s.strip()!r} is not a whole number") from None
                try:
                    angle = float(angle_s)
                except ValueError:
                    raise InputFileError(f"{p}: row {line}: angle {angle_s.strip()!r} is not a number") from None
                if not math.isfinite(angle):
                    raise InputFileError(f"{p}: row {line}: angle {angle_s.strip()!r} is not a finite number")
                if frame in pairs:
                    raise InputFileError(
                        f"{p}: row {line}: frame {frame} is listed twice (first on row {pairs[frame][1]})"
                    )
                pairs[frame] = (angle, line)
    except OSError as exc:
        raise InputFileError(f"{p}: cannot be read ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(f"{p}: not an angle table with header frame,angle_deg ({exc})") from exc
    if not pairs:
        raise InputFileError(f"{p}: the angle table has no rows")
    return np.array([pairs[k][0] for k in sorted(pairs)])


# ----------------------------------------------------------------------------- output paths
_OS_CAUSES = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.ENOTDIR: "a parent is not a folder",
    errno.EEXIST: "is an existing file",
    errno.ENAMETOOLONG: "the name is too long",
}


def _cause(exc: OSError) -> str:
    return _OS_CAUSES.get(exc.errno or -1, exc.strerror or str(exc))


def _folder_problem(p: Path) -> str | None:
    """Why the folder ``p`` cannot be created or written (``None``: it now exists, writable)."""
    if p.exists() and not p.is_dir():
        return f"parent {p} is not a folder (an existing file)"
    for parent in p.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                return f"parent {parent} is not a folder"
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create folder {p}: {_cause(exc)}"
    try:  # writable? (a probe file catches read-only mounts and ACLs, also when run as root)
        fd, probe = tempfile.mkstemp(prefix=".mcf-rotator-write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"folder {p}: {_cause(exc)}"
    return None


def prepare_output_dir(path: str | Path) -> Path:
    """Create the output folder ``path`` (and its parents) now, or refuse with the cause.

    Called before any work starts, so a run never ends in an error after the work is done.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputFileError(f"cannot write {p}: is an existing file (an output folder is needed)")
    problem = _folder_problem(p)
    if problem:
        raise InputFileError(f"cannot write {p}: {problem}")
    return p


def prepare_output_file(path: str | Path) -> Path:
    """Check now that the file ``path`` can be written (its folder is created), or refuse."""
    p = Path(path)
    if p.is_dir():
        raise InputFileError(f"cannot write {p}: is an existing folder (give a file name)")
    problem = _folder_problem(p.parent)
    if problem:
        raise InputFileError(f"cannot write {p}: {problem}")
    if p.exists() and not os.access(p, os.W_OK):
        raise InputFileError(f"cannot write {p}: permission denied")
    return p


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
    """(H, D, W) float32 volume from a TIFF stack; refused when it holds NaN or inf."""
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        raise InputFileError(f"{p}: volumes must be TIFF")
    v = _as_frames(p, _load_stack(p))
    _refuse_non_finite(p, v, "slices")
    return v.astype(np.float32)
