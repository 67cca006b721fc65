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
from collections.abc import Iterable, Iterator, Sequence
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
            if _interrupted_recording(p):
                raise ValueError("the recording was interrupted before it closed")
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


def _interrupted_recording(p: Path) -> bool:
    """Our OME-TIFF recording whose page-0 OME-XML is still the in-progress one (the process
    ended before closing it): its OME frame count lags the pages on disk."""
    import tifffile

    from mcf_rotator.ome_metadata import IN_PROGRESS

    try:
        with tifffile.TiffFile(p) as tif:
            return IN_PROGRESS in (tif.pages.first.description or "")[:4096]
    except Exception:  # noqa: BLE001 - unreadable: the caller's reader reports it
        return False


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
    """Angle CSV with header ``frame,angle_deg`` -> angles ordered by frame (see
    :func:`read_angle_table` for the frame numbers)."""
    return read_angle_table(path)[1]


def read_angle_table(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Angle CSV with header ``frame,angle_deg`` -> (frame numbers, angles), ordered by frame.

    Gaps are allowed (a run's table starts at its first processed frame). Refused, naming the
    file and the row: missing columns, values that are not numbers, NaN/inf angles, a negative
    frame, a frame number given twice, an empty table.
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
                if frame < 0:
                    raise InputFileError(f"{p}: row {line}: frame {frame} is negative")
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
    order = sorted(pairs)
    return np.array(order, dtype=np.int64), np.array([pairs[k][0] for k in order])


def select_angle_frames(
    frames: np.ndarray, table_frames: np.ndarray, angles: np.ndarray, stack_name: str | Path, table_name: str | Path
) -> tuple[np.ndarray, np.ndarray, int]:
    """The frames that have an angle in the table, their angles, and how many were left out.

    Refused (naming both files) when the table names frames the stack does not hold, or when
    fewer than :data:`MIN_FRAMES` frames have an angle.
    """
    n = int(frames.shape[0])
    beyond = table_frames[table_frames >= n]
    if beyond.size:
        raise InputFileError(
            f"{table_name}: names frame {int(beyond[0])} (and {beyond.size - 1} more) but {stack_name} "
            f"holds frames 0-{n - 1}; is it the angle table of this recording?"
        )
    if table_frames.size < MIN_FRAMES:
        raise InputFileError(
            f"{table_name}: {table_frames.size} angles for {n} frames in {stack_name}; "
            f"at least {MIN_FRAMES} frames need an angle"
        )
    if table_frames.size == n and np.array_equal(table_frames, np.arange(n)):
        return frames, angles, 0
    return frames[table_frames], angles, n - int(table_frames.size)


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


def refuse_overwrite(paths: Iterable[str | Path | None], overwrite: bool) -> None:
    """Refuse, naming the file, to replace an existing output unless ``overwrite`` (the user
    passed --overwrite); checked before any work starts."""
    if overwrite:
        return
    for path in paths:
        if path is None:
            continue
        p = Path(path)
        # a folder where a file is wanted is refused by prepare_output_file, with that cause
        if p.is_file() or (p.is_dir() and p.name.lower().endswith(".zarr")):
            raise InputFileError(f"{p}: exists already; pass --overwrite to replace it")


def write_angles(path: str | Path, angles_deg: np.ndarray, frames: Sequence[int] | None = None) -> None:
    """``frame,angle_deg`` rows; ``frames`` names each angle's frame (default 0, 1, ...)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "angle_deg"])
        for i, a in zip(range(len(angles_deg)) if frames is None else frames, angles_deg):
            w.writerow([int(i), f"{a:.4f}"])


def write_volume(path: str | Path, volume: np.ndarray, voxel_um: float | None = None) -> None:
    """(H, D, W) float32 volume as an ImageJ hyperstack (Z = axis 0), voxel size in metadata.

    Without a known voxel size no unit is written (ImageJ then shows pixels), never a
    micrometre calibration of 1 that would be stated as fact.
    """
    import tifffile

    from mcf_rotator.ome_metadata import rounded

    v = np.asarray(volume, np.float32)
    kw: dict = {"imagej": True, "metadata": {"axes": "ZYX"}}
    if voxel_um:
        vox = rounded(voxel_um)
        kw["resolution"] = (1.0 / vox, 1.0 / vox)
        kw["metadata"].update(spacing=vox, unit="um")
    tifffile.imwrite(path, v, **kw)


def read_voxel_size(path: str | Path) -> float | None:
    """Voxel size (um) of a volume written by :func:`write_volume` (``None``: not stated)."""
    return read_pixel_size(path)[0]


# ----------------------------------------------------------------------------- pixel size
def read_pixel_size(path: str | Path) -> tuple[float | None, str]:
    """(pixel size in um, where it was found) of a stack or recording; (None, why) if unknown.

    Looked up, in order: the OME-XML ``PhysicalSizeX`` (OME-TIFF), the NGFF scale of the x axis
    when it has a length unit (OME-Zarr), the ImageJ calibration (unit and resolution tags), the
    recording's ``frames.jsonl`` sidecar header.
    """
    from mcf_rotator.ome_metadata import pixel_um_from_ome, rounded
    from mcf_rotator.recording import read_sidecar, sidecar_path

    p = Path(path)
    try:
        if p.is_dir():
            px = _ngff_pixel_um(p)
            if px:
                return px, "OME-Zarr multiscales scale"
        elif p.suffix.lower() in (".tif", ".tiff") and p.is_file():
            import tifffile

            with _quiet_tifffile(), tifffile.TiffFile(p) as tif:
                xml = tif.ome_metadata
                ij = tif.imagej_metadata
                page = tif.pages.first
                tags = page.tags
                xres = tags.get("XResolution")
                res_unit = tags.get("ResolutionUnit")
            px = pixel_um_from_ome(xml) if xml else None
            if px:
                return px, "OME-XML PhysicalSizeX"
            px = _imagej_pixel_um(ij, xres.value if xres is not None else None,
                                  int(res_unit.value) if res_unit is not None else None)
            if px:
                return rounded(px), "ImageJ calibration"
    except Exception as exc:  # noqa: BLE001 - unreadable metadata: try the sidecar, then give up
        log.debug("%s: no pixel size in its metadata (%s)", p, exc)
    header, _ = read_sidecar(sidecar_path(p)) if p.exists() else ({}, {})
    px = header.get("pixel_um") or (header.get("acquisition") or {}).get("pixel_um")
    if px:
        return rounded(float(px)), f"{sidecar_path(p).name} header"
    return None, "pixel size unknown (no OME, ImageJ or sidecar calibration)"


_UNIT_TO_UM = {"um": 1.0, "µm": 1.0, "\u00B5m": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
               "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3}


def _imagej_pixel_um(ij: dict | None, xres: tuple[int, int] | None, res_unit: int | None) -> float | None:
    """Pixel size from an ImageJ calibration: ``unit`` plus the XResolution tag (pixels per unit)."""
    if not ij or not xres:
        return None
    factor = _UNIT_TO_UM.get(str(ij.get("unit", "")).strip().lower())
    num, den = (xres if isinstance(xres, tuple) else (xres, 1))
    if not factor or not num or not den:
        return None
    size = float(den) / float(num)
    return size * factor if size > 0 and not (size == 1.0 and res_unit in (None, 1)) else None


def _ngff_pixel_um(p: Path) -> float | None:
    """x-axis scale of an NGFF image whose x axis has a length unit."""
    import zarr

    attrs = dict(zarr.open_group(str(p), mode="r").attrs)
    ms = (attrs.get("ome", attrs).get("multiscales") or [{}])[0]
    axes = ms.get("axes", [])
    names = [a.get("name") for a in axes]
    if "x" not in names:
        return None
    unit = axes[names.index("x")].get("unit")
    factor = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3}.get(unit or "")
    if not factor:
        return None
    ours = attrs.get("mcf_rotator")
    for t in (ms.get("datasets") or [{}])[0].get("coordinateTransformations", []):
        if t.get("type") == "scale":
            s = float(t["scale"][names.index("x")])
            if s == 1.0 and isinstance(ours, dict) and "acquisition" not in ours:
                return None  # recordings of older versions wrote 1 um when the size was unknown
            return s * factor if s > 0 else None
    return None


def read_volume(path: str | Path) -> np.ndarray:
    """(H, D, W) float32 volume from a TIFF stack; refused when it holds NaN or inf."""
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        raise InputFileError(f"{p}: volumes must be TIFF")
    v = _as_frames(p, _load_stack(p))
    _refuse_non_finite(p, v, "slices")
    return v.astype(np.float32)
