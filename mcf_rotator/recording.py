"""Crash-safe recording of every camera frame of a run (OME-TIFF or OME-Zarr).

Why it is built this way
------------------------
- Nothing recorded may be lost, even when the pipeline drops frames or the process is killed.
  The :class:`Recorder` therefore owns its own *unbounded* queue and writer thread; the camera
  thread only enqueues (never blocks on the disk).
- OME-TIFF: each frame is appended as its own uncompressed TIFF page and the file is flushed
  after every page, so a killed process leaves a valid multi-page TIFF up to the last whole
  page. Page 0 carries valid minimal OME-XML from the start (rewritten in place with the
  frame count as frames arrive); the full OME-XML (per-plane DeltaT and exposure, instrument)
  replaces it when the recording closes.
- OME-Zarr (NGFF 0.5 on zarr v3, metadata through ome-zarr-models): one chunk file per frame,
  dimension names on the array; the array grows in blocks, the time scale is the measured
  frame interval and the final frame count is stored on close.
- Per-frame metadata (timestamp, SLM state, calibration id, tracked angle once known) goes to
  a JSON-lines sidecar flushed per frame (``<name>.frames.jsonl`` beside a TIFF, inside the
  ``.ome.zarr`` folder for Zarr). Tracked angles arrive later than the frame, so they are
  appended as ``annotation`` lines and merged by the reader.
- :func:`open_recording` reads finished *and* interrupted recordings.

Disk-full or permission errors become :class:`~mcf_rotator.errors.RecordingError`; frames
written before the error stay readable, later frames are counted as lost.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np

from mcf_rotator import strict_json
from mcf_rotator.errors import InputFileError, RecordingError
from mcf_rotator.ome_metadata import (
    RECORDING_DIMS,
    AcquisitionInfo,
    frame_interval,
    minimal_ome_xml,
    ngff_image_attrs,
    ome_xml,
)

log = logging.getLogger(__name__)

RecordFormat = Literal["ome-tiff", "ome-zarr"]
SIDECAR_SUFFIX = ".frames.jsonl"
#: bytes reserved for page 0's OME-XML while recording (rewritten in place as frames arrive)
_XML_RESERVE = 2048
#: seconds between in-place rewrites of that XML (each costs a few ms)
_XML_UPDATE_S = 0.5
_SENTINEL = object()


# ----------------------------------------------------------------------------- paths
def recording_stem(path: str | Path) -> str:
    """File name without the recording suffixes (``run.ome.tif`` -> ``run``)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def sidecar_path(path: str | Path) -> Path:
    """Where the per-frame metadata of the recording at ``path`` lives."""
    path = Path(path)
    if path.name.lower().endswith(".zarr"):
        return path / SIDECAR_SUFFIX.lstrip(".")
    return path.with_name(recording_stem(path) + SIDECAR_SUFFIX)


def format_for_path(path: str | Path) -> RecordFormat:
    return "ome-zarr" if str(path).lower().rstrip("/").endswith(".zarr") else "ome-tiff"


def _short_write_on_full_disk(path: Path, exc: OSError) -> bool:
    """A write that stopped short without an errno (numpy's ``tofile``, used by tifffile, says
    "N requested and M written") on a drive with (almost) no room left: the disk is full."""
    if exc.errno is not None or "requested and" not in str(exc):
        return False
    import shutil

    try:
        return shutil.disk_usage(path.parent).free < 16 * 2**20
    except OSError:
        return False


def _describe_os_error(path: Path, exc: OSError, written: int) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or _short_write_on_full_disk(path, exc):
        why = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied (is the folder writable?)"
    elif "requested and" in str(exc):  # a short write with room left: a removed drive, a quota
        why = f"a write stopped short ({exc}): is the drive still there, or over a quota?"
    else:
        why = str(exc)
    return (
        f"recording {path}: {why}; the {written} frame(s) written so far are kept and readable, "
        "later frames are not recorded"
    )


# ----------------------------------------------------------------------------- backends
class _TiffBackend:
    """Appends pages to an OME-TIFF, flushing each page.

    Page 0 carries valid minimal OME-XML from the start, padded to :data:`_XML_RESERVE`
    bytes and rewritten in place (frame count) at most every :data:`_XML_UPDATE_S`, so an
    interrupted file opens as OME in every reader; the full XML (per-plane DeltaT and
    exposure) replaces it on close.
    """

    def __init__(self, path: Path, info: AcquisitionInfo, name: str) -> None:
        import tifffile

        self.path = path
        self.info = info
        self.name = name
        self._tifffile = tifffile
        self._writer: Any = None
        self._shape: tuple[int, int] | None = None
        self._dtype: np.dtype | None = None
        self._xml_offset: int | None = None
        self._xml_updated = 0.0
        self._xml_count = 0
        self.count = 0

    def _progress_xml(self, n: int) -> bytes:
        assert self._shape is not None and self._dtype is not None
        xml = minimal_ome_xml(self.info, name=self.name, shape=self._shape, dtype=self._dtype, n_frames=n)
        return xml.encode("ascii", "xmlcharrefreplace")  # TIFF ASCII tag: "µm" as a character reference

    def append(self, image: np.ndarray) -> None:
        if self._writer is None:
            self._shape = image.shape
            self._dtype = image.dtype
            self._writer = self._tifffile.TiffWriter(self.path, bigtiff=True, ome=False)
            xml = self._progress_xml(1)
            desc = {"description": (xml + b" " * max(0, _XML_RESERVE - len(xml))).decode("ascii")}
        else:
            desc = {}
            if image.shape != self._shape or image.dtype != self._dtype:
                raise RecordingError(
                    f"recording {self.path}: frame {self.count} is {image.shape} {image.dtype}, "
                    f"the recording holds {self._shape} {self._dtype}"
                )
        self._writer.write(image, contiguous=False, photometric="minisblack", metadata=None, **desc)
        self._writer._fh.flush()
        self.count += 1
        if self.count == 1:
            self._locate_description()
            self._xml_count = 1
        elif time.monotonic() - self._xml_updated >= _XML_UPDATE_S:
            self._update_description()

    def _locate_description(self) -> None:
        """Where page 0's ImageDescription value lies (read back once, after the first flush)."""
        with self._tifffile.TiffFile(self.path) as tif:
            tag = tif.pages.first.tags.get("ImageDescription")
            self._xml_offset = int(tag.valueoffset) if tag is not None and tag.count >= _XML_RESERVE else None
        self._xml_updated = time.monotonic()

    def _update_description(self) -> None:
        """Rewrite page 0's OME-XML in place with the frame count written so far."""
        self._xml_updated = time.monotonic()
        if self._xml_offset is None or self.count == self._xml_count:
            return
        xml = self._progress_xml(self.count)
        if len(xml) > _XML_RESERVE:
            return  # does not fit: the close writes the full XML
        with open(self.path, "r+b") as fh:
            fh.seek(self._xml_offset)
            fh.write(xml + b" " * (_XML_RESERVE - len(xml)))
        self._xml_count = self.count

    def close(self, timestamps: Sequence[float]) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        if self.count == 0 or self._shape is None:
            return
        xml = ome_xml(self.info, name=self.name, shape=self._shape, dtype=self._dtype, n_frames=self.count,
                      timestamps=list(timestamps) if len(timestamps) == self.count else None)
        self._tifffile.tiffcomment(self.path, xml.encode("ascii", "xmlcharrefreplace"))

    def abort(self) -> None:
        """Close the file handle after an error; pages already written stay valid."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - best effort, the file stays readable
                try:
                    self._writer._fh.close()
                except Exception:  # noqa: BLE001
                    pass
            self._writer = None


class _ZarrBackend:
    """Appends frames to an OME-Zarr (NGFF 0.5, zarr v3) image, one chunk per frame.

    The multiscales metadata comes from ome-zarr-models; its time scale is the nominal frame
    interval at the first frame, the measured one from the second frame on and the median
    spacing of all timestamps on close.
    """

    GROW = 128

    def __init__(self, path: Path, info: AcquisitionInfo, name: str, timestamps: Sequence[float] = ()) -> None:
        self.path = path
        self.info = info
        self.name = name
        self._timestamps = timestamps  # the recorder's list of written frames' timestamps (shared)
        self._interval_measured = False
        import zarr

        # created now (replacing an old recording at this path) so the sidecar can live inside
        self._group: Any = zarr.open_group(str(path), mode="w", zarr_format=3)
        self._array: Any = None
        self.count = 0
        ngff_image_attrs(name, info.pixel_um, info.frame_interval_s)  # imports the models before frames arrive

    def _write_attrs(self, interval_s: float | None, complete: bool) -> None:
        info: dict[str, Any] = {"complete": complete, "acquisition": self.info.to_json()}
        if complete:
            info["n_frames"] = self.count
        self._group.attrs.update(
            {"ome": ngff_image_attrs(self.name, self.info.pixel_um, interval_s), "mcf_rotator": info}
        )

    def append(self, image: np.ndarray) -> None:
        if self._array is None:
            h, w = image.shape
            self._array = self._group.create_array(
                "0", shape=(self.GROW, h, w), chunks=(1, h, w), dtype=image.dtype, fill_value=0,
                compressors=None, dimension_names=RECORDING_DIMS,
            )
            self._write_attrs(self.info.frame_interval_s, complete=False)
        elif image.shape != self._array.shape[1:] or image.dtype != self._array.dtype:
            raise RecordingError(
                f"recording {self.path}: frame {self.count} is {image.shape} {image.dtype}, "
                f"the recording holds {self._array.shape[1:]} {self._array.dtype}"
            )
        if self.count >= self._array.shape[0]:
            self._array.resize((self._array.shape[0] + self.GROW,) + tuple(self._array.shape[1:]))
        self._array[self.count] = image
        self.count += 1
        if not self._interval_measured and len(self._timestamps) >= 2:
            # the first measured interval replaces the nominal one (an interrupted run keeps it)
            self._interval_measured = True
            self._write_attrs(frame_interval(self._timestamps[:2], self.info.frame_interval_s), complete=False)

    def close(self, timestamps: Sequence[float]) -> None:
        if self._array is None:
            return
        self._array.resize((self.count,) + tuple(self._array.shape[1:]))
        self._write_attrs(frame_interval(timestamps, self.info.frame_interval_s), complete=True)
        self._array = None

    def abort(self) -> None:
        self._array = None


# ----------------------------------------------------------------------------- recorder
@dataclass
class RecordingSummary:
    """What a closed recording holds."""

    path: Path
    sidecar: Path
    frames_written: int
    frames_lost: int
    error: str | None = None


class Recorder:
    """Writes every frame it is given, in its own thread, to an OME-TIFF or OME-Zarr.

    ``write`` never blocks and never drops: frames wait in an unbounded queue until the disk
    takes them. ``on_error(message)`` is called (from the writer thread) once, on the first
    write failure; the message is also kept in :attr:`error`.
    """

    def __init__(
        self,
        path: str | Path,
        fmt: RecordFormat | None = None,
        *,
        pixel_um: float | None = None,
        metadata: dict[str, Any] | None = None,
        on_error: Callable[[str], None] | None = None,
        acquisition: AcquisitionInfo | None = None,
    ) -> None:
        """``acquisition`` describes the instrument for the OME metadata (see
        :meth:`AcquisitionInfo.from_config`); without it what ``metadata`` names is used
        (``pixel_um``, ``magnification``, ``exposure_ms``, ``frame_rate_hz``...). ``pixel_um``
        overrides both."""
        self.path = Path(path)
        self.format: RecordFormat = fmt or format_for_path(self.path)
        self.sidecar = sidecar_path(self.path)
        self.on_error = on_error
        self.error: str | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._next_index = 0
        self._written = 0
        self._lost = 0
        self._timestamps: list[float] = []
        self._lock = threading.Lock()
        self._closed = False
        name = recording_stem(self.path)
        started = time.time()
        info = acquisition or AcquisitionInfo.from_header(metadata or {})
        self.acquisition = info.merged(
            pixel_um=pixel_um, started=info.started or datetime.fromtimestamp(started, timezone.utc)
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.format == "ome-zarr":
                self._backend: _TiffBackend | _ZarrBackend = _ZarrBackend(
                    self.path, self.acquisition, name, self._timestamps
                )
            else:
                self._backend = _TiffBackend(self.path, self.acquisition, name)
            self._sidecar_fh = open(self.sidecar, "w", encoding="utf-8")
            header = {"kind": "header", "format": self.format, "started_unix": started, **(metadata or {}),
                      "acquisition": self.acquisition.to_json()}
            if self.acquisition.pixel_um:
                header["pixel_um"] = self.acquisition.to_json()["pixel_um"]
            self._sidecar_fh.write(strict_json.dumps(header) + "\n")
            self._sidecar_fh.flush()
        except OSError as exc:
            raise RecordingError(_describe_os_error(self.path, exc, 0)) from exc
        self._thread = threading.Thread(target=self._run, name=f"recorder-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producer side
    def write(self, image: np.ndarray, timestamp: float, **metadata: Any) -> int:
        """Queue one frame; returns its index in the recording."""
        if self._closed:
            raise RecordingError(f"recording {self.path} is closed")
        with self._lock:
            index = self._next_index
            self._next_index += 1
        self._queue.put(("frame", index, np.array(image, copy=True), float(timestamp), metadata))
        return index

    def annotate(self, frame: int, **fields: Any) -> None:
        """Attach late metadata (e.g. the tracked angle) to an already queued frame."""
        if not self._closed:
            self._queue.put(("annotation", int(frame), fields))

    # ------------------------------------------------------------------ stats
    @property
    def frames_queued(self) -> int:
        """Frames accepted by ``write`` (written, waiting or lost)."""
        return self._next_index

    @property
    def frames_written(self) -> int:
        return self._written

    @property
    def frames_lost(self) -> int:
        return self._lost

    @property
    def backlog(self) -> int:
        """Items waiting for the disk."""
        return self._queue.qsize()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _SENTINEL:
                return
            if self.error is not None:
                if item[0] == "frame":
                    self._lost += 1
                continue
            try:
                if item[0] == "frame":
                    _, index, image, ts, meta = item
                    self._backend.append(image)
                    record = {"kind": "frame", "frame": index, "timestamp_s": ts, **meta}
                    self._sidecar_fh.write(json.dumps(record, default=_json_default) + "\n")
                    self._sidecar_fh.flush()
                    self._timestamps.append(ts)
                    self._written += 1
                else:
                    _, index, fields = item
                    record = {"kind": "annotation", "frame": index, **fields}
                    self._sidecar_fh.write(json.dumps(record, default=_json_default) + "\n")
                    self._sidecar_fh.flush()
            except (OSError, RecordingError) as exc:
                msg = exc.args[0] if isinstance(exc, RecordingError) else _describe_os_error(self.path, exc, self._written)
                self._set_error(msg)
                if item[0] == "frame":
                    self._lost += 1
            except Exception as exc:  # noqa: BLE001 - any writer failure must reach the operator
                self._set_error(f"recording {self.path}: write failed ({exc}); {self._written} frame(s) kept")
                if item[0] == "frame":
                    self._lost += 1

    def _set_error(self, message: str) -> None:
        self.error = message
        log.error(message)
        self._backend.abort()
        if self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:  # noqa: BLE001
                log.exception("recording error callback failed")

    # ------------------------------------------------------------------ close
    def close(self, timeout_s: float | None = None) -> RecordingSummary:
        """Write everything queued, finalise the OME metadata and release the files.

        Safe to call twice. Raises :class:`RecordingError` if finalising fails; frames already
        written stay readable.
        """
        if not self._closed:
            self._closed = True
            self._queue.put(_SENTINEL)
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RecordingError(
                    f"recording {self.path}: still writing {self.backlog} queued frame(s) after {timeout_s} s"
                )
            try:
                if self.error is None:
                    self._backend.close(self._timestamps)
            except OSError as exc:
                self._set_error(_describe_os_error(self.path, exc, self._written))
            finally:
                try:
                    self._sidecar_fh.close()
                except OSError:
                    pass
        return RecordingSummary(self.path, self.sidecar, self._written, self._lost, self.error)

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


# ----------------------------------------------------------------------------- reader
class RecordingFrames:
    """Lazy, read-only (T, H, W) view of a recording's frames (finished or interrupted)."""

    def __init__(self, getter: Callable[[int], np.ndarray], n: int, shape: tuple[int, int], dtype: np.dtype,
                 closer: Callable[[], None] | None = None) -> None:
        self._get = getter
        self._n = n
        self.shape = (n, *shape)
        self.dtype = np.dtype(dtype)
        self._closer = closer

    @property
    def ndim(self) -> int:
        return 3

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if isinstance(key, slice):
            return np.stack([self._get(i) for i in range(*key.indices(self._n))]) if self._n else np.zeros(self.shape, self.dtype)
        i = int(key)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"frame {key} out of range (recording has {self._n} frames)")
        return self._get(i)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self._n):
            yield self._get(i)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self[:]
        return arr.astype(dtype) if dtype is not None else arr

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None


def read_sidecar(path: str | Path) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """(header, {frame: metadata}) from a sidecar, annotations merged; a torn last line is ignored."""
    header: dict[str, Any] = {}
    frames: dict[int, dict[str, Any]] = {}
    annotations: list[dict[str, Any]] = []
    path = Path(path)
    if not path.is_file():
        return header, frames
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            kind = rec.pop("kind", "frame")
            if kind == "header":
                header = rec
            elif kind == "frame" and "frame" in rec:
                frames[int(rec["frame"])] = rec
            elif kind == "annotation" and "frame" in rec:
                annotations.append(rec)
    for rec in annotations:
        idx = int(rec.pop("frame"))
        if idx in frames:
            frames[idx].update(rec)
    return header, frames


def open_recording(path: str | Path) -> tuple[RecordingFrames, list[dict[str, Any]]]:
    """Frames and per-frame metadata of a recording, including one cut short by a crash.

    Only whole frames are returned: a page torn by a crash is left out. Metadata entries are
    ``{}`` for frames whose sidecar line did not reach the disk.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: recording not found")
    _, meta = read_sidecar(sidecar_path(path))
    if path.is_dir():
        frames = _open_zarr(path, meta)
    else:
        frames = _open_tiff(path)
    metadata = [meta.get(i, {}) for i in range(len(frames))]
    for i, m in enumerate(metadata):
        m.pop("frame", None)
        m["frame"] = i
    return frames, metadata


def _open_tiff(path: Path) -> RecordingFrames:
    import tifffile

    if path.stat().st_size == 0:
        raise InputFileError(f"{path}: the recording file is empty (no frame was written)")
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types on damaged files
        raise InputFileError(f"{path}: not a readable TIFF recording ({exc})") from exc
    pages = tif.pages
    pages.cache = False
    try:
        n = len(pages)
    except Exception:  # noqa: BLE001
        n = 0
    # drop trailing pages that a crash cut short: unreadable, or read with another shape than
    # the first page (a torn page's tags can decode to a 1-D strip)
    try:
        first_shape = tuple(pages[0].shape)
    except Exception:  # noqa: BLE001
        first_shape = None
    while n > 0:
        try:
            if pages[n - 1].asarray().shape == first_shape:
                break
        except Exception:  # noqa: BLE001
            pass
        n -= 1
    if n == 0:
        tif.close()
        raise InputFileError(f"{path}: the recording holds no complete frame")
    first = pages[0]
    shape = tuple(first.shape[:2])
    lock = threading.Lock()

    def get(i: int) -> np.ndarray:
        with lock:
            return pages[i].asarray()

    return RecordingFrames(get, n, shape, first.dtype, tif.close)  # type: ignore[arg-type]


def _open_zarr(path: Path, meta: dict[int, dict[str, Any]]) -> RecordingFrames:
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        arr = group["0"]
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"{path}: not a readable OME-Zarr recording ({exc})") from exc
    info = dict(group.attrs.get("mcf_rotator", {}))
    if info.get("complete"):
        n = int(info.get("n_frames", arr.shape[0]))
    else:
        # interrupted: frames are whole chunk files; count those the sidecar confirms
        n = 0
        while n < arr.shape[0] and n in meta:
            n += 1
    return RecordingFrames(lambda i: np.asarray(arr[i]), n, tuple(arr.shape[1:]), arr.dtype)
