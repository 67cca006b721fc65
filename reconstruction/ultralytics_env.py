"""Offline set-up for ultralytics, called by every entry point *before* ``import ultralytics``.

Why: ultralytics otherwise reaches for the network (fonts, weights, pip auto-install,
analytics), writes settings into the user's home, and forces ``OMP_NUM_THREADS=1`` at import.
The microscope PC may have no network, and tests must never touch it. All of that is pinned
here, in one place:

- ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0``: no online checks, no pip installs;
- ``YOLO_CONFIG_DIR``: a private cache folder (never the repository);
- a local TrueType font copied to ``<config>/Ultralytics/Arial.ttf`` (``train()`` otherwise
  downloads one for its plots);
- ``settings.update(sync=False)``: no analytics / crash reports;
- ``OMP_NUM_THREADS`` set explicitly, and torch's thread count, so 2-core PCs are not
  oversubscribed (oversubscription made torch 10x slower on the reference machine);
- OpenCV's thread count pinned once at process start-up (:func:`configure_opencv_threads`).

Why the OpenCV pin: ``import ultralytics`` runs ``cv2.setNumThreads(0)``. Changing OpenCV's
thread count re-plans its worker pool, and a ``cv2`` call running in another thread at that
moment (the camera thread's ``connectedComponentsWithStats``) can die with a divide error
(SIGFPE, the whole process gone). Setting the same value once, before any worker thread
exists, makes ultralytics' later call a no-op: the count does not change, so the pool is left
alone. The import itself runs under a module-level lock, and the count is checked afterwards.

Models are always built from a yaml or a local ``.pt``; never from a bare hub name.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from mcf_rotator.errors import McfRotatorError

log = logging.getLogger(__name__)

_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")

#: OpenCV's thread count for the whole process: the value ``import ultralytics`` sets
#: (``cv2.setNumThreads(0)``: OpenCV runs its loops on the calling thread).
OPENCV_THREADS = 0

_OPENCV_LOCK = threading.Lock()
_opencv_configured = False
#: held while ``ultralytics`` is imported (two threads never import it at once)
_IMPORT_LOCK = threading.RLock()


def configure_opencv_threads() -> None:
    """Pin OpenCV's thread count to :data:`OPENCV_THREADS`, once per process.

    Call it at process start-up, before any thread that uses ``cv2`` exists (the CLI and the
    GUI entry do; so does the rig controller before it starts its camera thread). Later calls
    are free. After it, ``import ultralytics`` no longer changes OpenCV's threading.
    """
    global _opencv_configured
    if _opencv_configured:
        return
    with _OPENCV_LOCK:
        if _opencv_configured:
            return
        try:
            import cv2
        except ImportError:  # no OpenCV: nothing to pin
            return
        cv2.setNumThreads(OPENCV_THREADS)
        _opencv_configured = True


def import_ultralytics() -> object:
    """``import ultralytics`` with OpenCV's threading pinned first, under a module-level lock.

    Raises :class:`UltralyticsUnavailableError` when it cannot be imported. Call
    :func:`setup_ultralytics` first (it calls this); importing ultralytics anywhere else in
    the package goes through here.
    """
    configure_opencv_threads()
    with _IMPORT_LOCK:
        try:
            import cv2
        except ImportError:
            cv2 = None
        before = cv2.getNumThreads() if cv2 is not None else None
        try:
            import ultralytics
            import ultralytics.utils  # noqa: F401 - the module whose import touches cv2
        except Exception as exc:  # ImportError, OSError from a broken CUDA/torch install, ...
            raise UltralyticsUnavailableError(f"ultralytics/torch cannot be imported: {exc}") from exc
        if cv2 is not None and cv2.getNumThreads() != before:  # a future ultralytics changed it
            log.warning(
                "importing ultralytics changed OpenCV's thread count (%s -> %s); set back",
                before, cv2.getNumThreads(),
            )
            cv2.setNumThreads(OPENCV_THREADS)
        return ultralytics


class UltralyticsUnavailableError(McfRotatorError):
    """ultralytics or torch cannot be imported (not installed, or a broken install)."""


def default_config_dir() -> Path:
    """Per-user cache folder for ultralytics settings and fonts (falls back to the temp dir)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "mcf-rotator" / "ultralytics"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        return path
    except OSError:
        alt = Path(tempfile.gettempdir()) / f"mcf-rotator-ultralytics-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        alt.mkdir(parents=True, exist_ok=True)
        return alt


def _find_local_font() -> Path | None:
    """Any TrueType font already on disk: matplotlib's DejaVuSans first, then system fonts."""
    try:
        import matplotlib

        cand = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        if cand.is_file():
            return cand
    except Exception:  # matplotlib missing or broken: try the OS fonts
        pass
    for folder in ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts"):
        root = Path(folder)
        if root.is_dir():
            for f in root.rglob("*.ttf"):
                return f
    return None


def setup_ultralytics(config_dir: str | Path | None = None, threads: int | None = None) -> Path:
    """Make ultralytics offline and quiet; returns the ultralytics user-config folder.

    Safe to call many times. ``threads`` sets ``OMP_NUM_THREADS`` (if not already set by the
    user) and ``torch.set_num_threads``; ``None`` keeps the current torch setting but still
    stops ultralytics forcing 1 thread at import.
    """
    cfg = Path(config_dir) if config_dir is not None else default_config_dir()
    cfg.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if "ultralytics" not in sys.modules:
        os.environ["YOLO_CONFIG_DIR"] = str(cfg)
    if threads is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(int(threads)))
    else:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, min(os.cpu_count() or 1, 4))))

    user_dir = Path(os.environ.get("YOLO_CONFIG_DIR", str(cfg))) / "Ultralytics"
    user_dir.mkdir(parents=True, exist_ok=True)
    font = _find_local_font()
    for name in _FONT_NAMES:
        target = user_dir / name
        if not target.exists() and font is not None:
            try:
                shutil.copyfile(font, target)
            except OSError as exc:  # plots fall back, training still runs with plots=False
                log.debug("cannot copy font %s to %s: %s", font, target, exc)

    try:
        import torch

        if threads is not None:
            torch.set_num_threads(int(threads))
    except Exception as exc:  # ImportError, OSError from a broken CUDA/torch install, ...
        raise UltralyticsUnavailableError(f"ultralytics/torch cannot be imported: {exc}") from exc
    import_ultralytics()
    from ultralytics.utils import SETTINGS

    try:
        SETTINGS.update({"sync": False})
    except Exception as exc:  # a read-only settings file must not stop inference
        log.debug("cannot update ultralytics settings: %s", exc)
    return user_dir
