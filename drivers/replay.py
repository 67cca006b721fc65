"""File-replay camera: plays a recorded stack as if it were a live camera.

Sources: a TIFF stack (read page by page, so large files never sit in RAM), an AVI/MP4 movie
(OpenCV, converted to mono), a folder of TIFF/PNG frames (natural sort order), or one of our
own recordings (OME-TIFF/OME-Zarr with its per-frame metadata, see
:mod:`mcf_rotator.recording`). Everything the file cannot give is reported as
:class:`~mcf_rotator.errors.InputFileError` naming the file and the problem, when the camera
is created (not half way through a run).

Images come out 2-D, mono, as uint8/uint16 (kept) or float32 (other real types converted);
RGB is converted to luminance; complex data is rejected.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mcf_rotator.drivers.base import BaseDevice
from mcf_rotator.drivers.protocols import Frame
from mcf_rotator.errors import DeviceError, FrameTimeoutError, InputFileError

MOVIE_SUFFIXES = {".avi", ".mp4", ".mov", ".mkv", ".m4v"}
TIFF_SUFFIXES = {".tif", ".tiff"}
FRAME_SUFFIXES = TIFF_SUFFIXES | {".png"}


class ReplayFinished(FrameTimeoutError):
    """A non-looping replay reached the end of its file."""


# ----------------------------------------------------------------------------- conversion
def to_mono(image: np.ndarray, source: str) -> np.ndarray:
    """2-D mono image in a camera-like dtype, or InputFileError saying why not."""
    img = np.asarray(image)
    if np.iscomplexobj(img):
        raise InputFileError(f"{source}: complex-valued images cannot be replayed (expected intensity)")
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        rgb = img[..., :3].astype(np.float32)
        lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        img = lum.astype(img.dtype) if img.dtype in (np.uint8, np.uint16) else lum
    elif img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 2:
        raise InputFileError(f"{source}: frame has shape {img.shape}; expected a 2-D (mono or RGB) image")
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    if img.dtype in (np.uint8, np.uint16):
        return img
    if img.dtype.kind in "iuf":
        return img.astype(np.float32)
    raise InputFileError(f"{source}: unsupported pixel type {img.dtype}")


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


# ----------------------------------------------------------------------------- sources
class _Source:
    """Random access to frames of one file; ``read(i)`` returns a mono 2-D image."""

    n: int
    shape: tuple[int, int]
    dtype: np.dtype
    fps: float | None = None

    def read(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def metadata(self, i: int) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class _TiffSource(_Source):
    def __init__(self, path: Path) -> None:
        import tifffile

        self.path = path
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            pages = self._tif.pages
            pages.cache = False
            n_pages = len(pages)
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types on damaged files
            raise InputFileError(f"{path}: not a readable TIFF ({exc})") from exc
        shape = tuple(series.shape)
        axes = series.axes
        rgb = axes.endswith("S") and shape[-1] in (3, 4)
        frame_nd = 3 if rgb else 2
        if len(shape) <= frame_nd and n_pages > 1:
            # pages written one by one (one series each): a stack of pages of the first page's shape
            shape = (n_pages,) + shape
        if len(shape) <= frame_nd:
            raise InputFileError(f"{path}: holds a single image {shape}, not a stack of frames")
        n = int(np.prod(shape[:-frame_nd]))
        if n != n_pages:
            # e.g. one page holding a whole 3-D block: fall back to the series array (memory-mapped if possible)
            try:
                self._block = series.asarray(out="memmap") if series.dataoffset is not None else series.asarray()
            except Exception as exc:  # noqa: BLE001
                raise InputFileError(f"{path}: TIFF data is truncated or damaged ({exc})") from exc
            self._block = self._block.reshape((n,) + shape[-frame_nd:])
            self._reader: Callable[[int], np.ndarray] = lambda i: self._block[i]
        else:
            self._reader = lambda i: pages[i].asarray()
        self.n = n
        self._lock = threading.Lock()
        for i in {0, n - 1}:  # a truncated file fails on its last page: say so now
            try:
                img = self._reader(i)
            except Exception as exc:  # noqa: BLE001
                raise InputFileError(
                    f"{path}: TIFF is truncated or damaged (frame {i + 1} of {n} cannot be read: {exc})"
                ) from exc
        first = to_mono(self._reader(0), str(path))
        last = to_mono(self._reader(n - 1), str(path))
        if last.shape != first.shape:
            raise InputFileError(f"{path}: pages differ in size (first {first.shape}, last {last.shape})")
        self.shape = first.shape  # type: ignore[assignment]
        self.dtype = first.dtype

    def read(self, i: int) -> np.ndarray:
        with self._lock:
            try:
                raw = self._reader(i)
            except Exception as exc:  # noqa: BLE001
                raise InputFileError(f"{self.path}: frame {i + 1} cannot be read ({exc})") from exc
        return to_mono(raw, f"{self.path} frame {i + 1}")

    def close(self) -> None:
        self._tif.close()


class _MovieSource(_Source):
    """Sequential movie reading (random access is seek-by-reopen, only used when looping)."""

    def __init__(self, path: Path) -> None:
        import cv2

        self.path = path
        self._cv2 = cv2
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise InputFileError(f"{path}: cannot open the movie (unsupported codec or damaged file)")
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._cap.release()
            raise InputFileError(f"{path}: the movie holds no readable frame")
        first = self._mono(frame)
        self.shape = first.shape  # type: ignore[assignment]
        self.dtype = first.dtype
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if n <= 0:  # container without a count: count by decoding once
            n = 1
            while self._cap.grab():
                n += 1
        self.n = n
        if self.n < 2:
            self._cap.release()
            raise InputFileError(f"{path}: the movie holds a single frame, not a sequence")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if fps > 0 else None
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._pos = 0

    def _mono(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 3:
            frame = self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2GRAY)
        return to_mono(frame, str(self.path))

    def read(self, i: int) -> np.ndarray:
        if i != self._pos:
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, i)
            self._pos = i
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise InputFileError(f"{self.path}: frame {i + 1} of {self.n} cannot be decoded (file truncated?)")
        self._pos += 1
        return self._mono(frame)

    def close(self) -> None:
        self._cap.release()


class _FolderSource(_Source):
    def __init__(self, path: Path) -> None:
        self.path = path
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key)
        if not files:
            raise InputFileError(f"{path}: folder holds no .tif/.tiff/.png frames")
        if len(files) < 2:
            raise InputFileError(f"{path}: folder holds a single frame ({files[0].name}), not a sequence")
        self.files = files
        self.n = len(files)
        first = self.read(0)
        last = self.read(self.n - 1)
        if last.shape != first.shape:
            raise InputFileError(
                f"{path}: frames differ in size ({files[0].name} is {first.shape}, {files[-1].name} is {last.shape})"
            )
        self.shape = first.shape  # type: ignore[assignment]
        self.dtype = first.dtype

    def read(self, i: int) -> np.ndarray:
        f = self.files[i]
        if f.stat().st_size == 0:
            raise InputFileError(f"{f}: empty file")
        try:
            if f.suffix.lower() in TIFF_SUFFIXES:
                import tifffile

                raw = tifffile.imread(f)
            else:
                import cv2

                raw = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
                if raw is None:
                    raise ValueError("not a readable PNG")
                if raw.ndim == 3:
                    raw = raw[..., ::-1]  # BGR(A) -> RGB(A)
        except InputFileError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InputFileError(f"{f}: cannot read frame ({exc})") from exc
        img = to_mono(raw, str(f))
        if hasattr(self, "shape") and img.shape != self.shape:
            raise InputFileError(f"{f}: frame is {img.shape}, the other frames are {self.shape}")
        return img


class _RecordingSource(_Source):
    def __init__(self, path: Path) -> None:
        from mcf_rotator.recording import open_recording

        self.path = path
        self._frames, self._meta = open_recording(path)
        self.n = len(self._frames)
        if self.n < 2:
            raise InputFileError(f"{path}: recording holds {self.n} frame(s), not a sequence")
        first = to_mono(self._frames[0], str(path))
        self.shape = first.shape  # type: ignore[assignment]
        self.dtype = first.dtype
        ts = [m.get("timestamp_s") for m in self._meta]
        if all(isinstance(t, (int, float)) for t in ts) and ts[-1] > ts[0]:
            self.fps = (self.n - 1) / (ts[-1] - ts[0])

    def read(self, i: int) -> np.ndarray:
        return to_mono(self._frames[i], str(self.path))

    def metadata(self, i: int) -> dict[str, Any]:
        return dict(self._meta[i])

    def close(self) -> None:
        self._frames.close()


def open_source(path: str | Path) -> _Source:
    """Pick the reader for ``path``; every failure is an InputFileError naming the file."""
    from mcf_rotator.recording import sidecar_path

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: file not found")
    if path.is_dir():
        if path.name.lower().endswith(".zarr"):
            return _RecordingSource(path)
        return _FolderSource(path)
    if path.stat().st_size == 0:
        raise InputFileError(f"{path}: empty file")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        if sidecar_path(path).is_file():
            return _RecordingSource(path)
        return _TiffSource(path)
    if suffix in MOVIE_SUFFIXES:
        return _MovieSource(path)
    raise InputFileError(
        f"{path}: unsupported file type {suffix or '(none)'}; replay plays .tif/.tiff stacks, "
        f"{'/'.join(sorted(MOVIE_SUFFIXES))} movies, folders of .tif/.png frames or .ome.zarr recordings"
    )


# ----------------------------------------------------------------------------- camera
class ReplayCamera(BaseDevice):
    """A :class:`~mcf_rotator.drivers.protocols.Camera` that plays a file.

    ``realtime=True`` paces ``read_frame`` at ``frame_rate_hz``; otherwise frames come as fast
    as they are asked for (offline reconstruction, tests). Timestamps are the recorded ones for
    our recordings, else ``index / frame_rate_hz``. Without ``loop`` the end of the file raises
    :class:`ReplayFinished`.
    """

    def __init__(
        self,
        path: str | Path,
        loop: bool = True,
        frame_rate_hz: float | None = None,
        realtime: bool = False,
        name: str = "replay camera",
    ) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.loop = bool(loop)
        self.realtime = bool(realtime)
        self._source = open_source(self.path)  # validate now: errors at configuration time
        self.frame_rate_hz = float(frame_rate_hz or self._source.fps or 30.0)
        self.exposure_ms = 1000.0 / self.frame_rate_hz
        self._pos = 0
        self._index = 0
        self._acquiring = False
        self._t_start = 0.0

    # -- Camera protocol ----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._source.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._source.dtype)

    @property
    def bit_depth(self) -> int:
        return {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(self.dtype, 32)

    @property
    def n_frames(self) -> int:
        """Frames in the file (one pass)."""
        return self._source.n

    @property
    def is_acquiring(self) -> bool:
        return self._acquiring

    def _connect(self) -> None:
        if self._source is None:
            self._source = open_source(self.path)

    def _disconnect(self) -> None:
        self._acquiring = False

    def close(self) -> None:
        """Release the file (the camera cannot be used afterwards)."""
        self.disconnect()
        self._source.close()

    def start_acquisition(self) -> None:
        with self.lock:
            self._require_connected()
            self._index = 0
            self._t_start = time.monotonic()
            self._acquiring = True

    def stop_acquisition(self) -> None:
        with self.lock:
            self._acquiring = False

    def rewind(self) -> None:
        with self.lock:
            self._pos = 0

    def read_frame(self, timeout_s: float = 1.0) -> Frame:
        with self.lock:
            self._require_connected()
            if not self._acquiring:
                raise DeviceError(f"{self.name}: read_frame called before start_acquisition")
            if self.realtime:
                due = self._t_start + self._index / self.frame_rate_hz
                wait = due - time.monotonic()
                if wait > timeout_s:
                    time.sleep(timeout_s)
                    raise FrameTimeoutError(f"{self.name}: no frame within {timeout_s} s")
                if wait > 0:
                    time.sleep(wait)
            frame = self._next()
            self._index += 1
            return frame

    def snap(self) -> Frame:
        with self.lock:
            self._require_connected()
            return self._next()

    # -- internals --------------------------------------------------------------------------
    def _require_connected(self) -> None:
        if not self._connected:
            raise DeviceError(f"{self.name}: not connected ({self.path})")

    def _next(self) -> Frame:
        if self._pos >= self._source.n:
            if not self.loop:
                raise ReplayFinished(f"{self.name}: end of {self.path} ({self._source.n} frames)")
            self._pos = 0
        pos = self._pos
        try:
            image = self._source.read(pos)
        except InputFileError as exc:
            self._fail(str(exc))
            raise
        meta = self._source.metadata(pos)
        meta.update(source_path=str(self.path), source_frame=pos)
        ts = meta.get("timestamp_s")
        timestamp = float(ts) if isinstance(ts, (int, float)) else self._index / self.frame_rate_hz
        self._pos += 1
        return Frame(image=image, index=self._index, timestamp=timestamp, metadata=meta)
