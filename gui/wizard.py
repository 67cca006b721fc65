"""Calibration wizard (QWizard) rendering the non-Qt calibration steps.

``calibration.wizard.CalibrationWizard`` does the work as ordered plain methods returning
data; this module only shows that data: the captured off-axis hologram, its Fourier plane
with the detected carrier, the retrieved per-core phases, the residual after applying, and
the saved record. Each step runs in a worker thread so the GUI (and the live view) never
freezes; its result comes back through a queued Qt signal.
"""

from __future__ import annotations

import inspect
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWizard, QWizardPage, QWidget

log = logging.getLogger("mcf_rotator.gui.wizard")

#: (page id, title, explanation, candidate method names on the steps object)
STEPS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("mode", "Calibration mode",
     "The trap is switched off, the SLM shows a flat phase and the calibration camera images the "
     "fibre facet against the tilted reference beam.",
     ("enter_calibration_mode", "switch_to_calibration_mode", "start", "begin")),
    ("hologram", "Capture hologram",
     "Off-axis hologram of the multi-core fibre facet: fringes inside each core encode its phase.",
     ("capture_hologram", "capture")),
    ("fourier", "Fourier plane",
     "Spectrum of the hologram; the cross mark is the detected carrier (side band) that is "
     "filtered and shifted to the centre.",
     ("fourier_plane", "detect_carrier", "fourier")),
    ("phases", "Per-core phase map",
     "Phase retrieved inside every core; the correction is its negative.",
     ("per_core_phase_map", "retrieve_phases", "phase_map", "retrieve")),
    ("apply", "Apply correction",
     "The per-core correction is added to every hologram sent to the SLM.",
     ("apply", "apply_correction")),
    ("verify", "Verify",
     "A second hologram with the correction applied: the residual per-core phase should be small.",
     ("verify", "verify_residual")),
    ("save", "Save",
     "The calibration record (per-core correction, carrier, fit quality, residual) is saved and "
     "becomes the active calibration.",
     ("save", "save_record")),
]

#: steps whose method takes the file to save to
NEEDS_PATH = {"save"}

#: pages that wait for the operator's button instead of running when entered
ACTION_TEXT = {"apply": "Apply correction"}

#: what the colour bar of each image page measures
COLOURBAR_LABELS = {
    "hologram": "counts",
    "fourier": "log magnitude",
    "phases": "phase (rad)",
    "verify": "residual phase (rad)",
}


def make_calibration_steps(controller: Any) -> Any:
    """The steps object for this rig: ``controller.calibration_wizard()``.

    The controller wires the wizard to its SLM and calibration camera, opens the devices and
    switches the laser on for calibration mode (and off again in ``leave_calibration_mode``),
    and installs an applied correction so the next run uses it. The GUI only renders.
    """
    fn = getattr(controller, "calibration_wizard", None)
    if not callable(fn):
        raise RuntimeError("this controller cannot calibrate (no calibration_wizard())")
    return fn()


def default_calibration_path(controller: Any) -> Path:
    """Where the wizard saves: the config's calibration_dir, else <output_dir>/calibration."""
    paths = getattr(getattr(controller, "config", None), "paths", None)
    runs = getattr(controller, "output_dir", None) or getattr(paths, "output_dir", ".")
    base = getattr(paths, "calibration_dir", None) or Path(runs) / "calibration"
    return Path(base) / time.strftime("calibration-%Y%m%d-%H%M%S.json")


def drift_ok(report: Any) -> tuple[bool, str]:
    """Interpret a drift_check() result (bool, dict or object) as (ok, short text)."""
    if isinstance(report, bool):
        return report, "ok" if report else "phase drift above tolerance"
    get = report.get if isinstance(report, dict) else (lambda k, d=None: getattr(report, k, d))
    ok = get("ok", None)
    if ok is None:
        ok = get("passed", None)
    for key in ("needs_recalibration", "needs_calibration"):
        if ok is None and get(key, None) is not None:
            ok = not get(key)
    residual = None
    for key in ("residual_rms_rad", "residual_rad", "rms_rad"):
        if residual is None:
            residual = get(key, None)
    text = f"residual {float(residual):.2f} rad rms" if residual is not None else "see log"
    return bool(ok), text


def _first_image(data: Any, keys: tuple[str, ...]) -> np.ndarray | None:
    if isinstance(data, np.ndarray) and data.ndim == 2:
        return data
    for k in keys:
        v = data.get(k) if isinstance(data, dict) else getattr(data, k, None)
        if isinstance(v, np.ndarray) and v.ndim == 2:
            return v
        if v is not None and hasattr(v, "image") and isinstance(getattr(v, "image"), np.ndarray):
            return v.image
    return None


#: plain names of the fields calibration steps return (anything else: its name in words)
FIELD_NAMES: dict[str, str] = {
    "max_count": "brightest pixel",
    "residual_rms_rad": "residual phase error",
    "residual_piston_only_rms_rad": "residual without tilt removal",
    "residual_rad": "residual phase error",
    "ok": "verified",
    "carrier_cyc_per_px": "fringe carrier",
    "sideband_px": "side band position",
    "filter_radius_cyc_per_px": "side-band filter radius",
    "fringe_strength": "fringe contrast",
    "n_cores": "cores",
    "fit_quality": "fit quality",
    "calibration_id": "calibration id",
    "fibre_id": "fibre",
    "trap_enabled": "trap laser on",
    "message": "",
}

#: unit suffixes of field names -> unit in words
UNIT_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_cyc_per_px", "cycles/pixel"), ("_rms_rad", "rad RMS"), ("_rad", "rad"), ("_deg", "deg"),
    ("_um", "um"), ("_px", "px"), ("_mw", "mW"), ("_ms", "ms"), ("_s", "s"),
)


def _unit_and_name(key: str) -> tuple[str, str]:
    unit = ""
    for suffix, words in UNIT_SUFFIXES:
        if key.endswith(suffix):
            unit = words
            break
    name = FIELD_NAMES.get(key)
    if name is None:
        stem = key[: -len(next(s for s, w in UNIT_SUFFIXES if w == unit))] if unit else key
        name = stem.replace("_", " ")
    return name, unit


def _value_text(key: str, v: Any, unit: str) -> str | None:
    """A value in words (None: not worth a line, e.g. an image or a long array)."""
    if key == "max_count" and isinstance(v, (int, float)):
        return f"{v:.0f} counts"
    if key == "sideband_px" and isinstance(v, (tuple, list)) and len(v) == 2:
        return f"row {float(v[0]):.1f}, column {float(v[1]):.1f}"
    if isinstance(v, bool) or isinstance(v, np.bool_):
        return "yes" if v else "no"
    if v is None:
        return "not measured yet"
    if isinstance(v, (int, np.integer)):
        return f"{int(v)}" + (f" {unit}" if unit else "")
    if isinstance(v, (float, np.floating)):
        text = f"{float(v):.3g}" + (f" {unit}" if unit else "")
        if unit.startswith("rad"):
            text += f" ({float(v) / (2 * np.pi):.3f} waves)"
        return text
    if isinstance(v, str):
        return v
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (tuple, list, np.ndarray)) and 0 < len(v) <= 4 and all(
            isinstance(x, (int, float, np.integer, np.floating)) for x in v):
        return ", ".join(f"{float(x):.3g}" for x in v) + (f" {unit}" if unit else "")
    return None


def describe_result(data: Any) -> str:
    """A step's result in words and units, one fact per line (never a raw Python repr).

    Paths say where the file is; a calibration record says what it corrects; dicts give their
    scalar fields by name (``max_count`` -> "brightest pixel: 2929 counts", booleans as
    yes/no, unknown values as "not measured yet").
    """
    if data is None:
        return "done"
    if isinstance(data, Path):
        return f"saved to {data}"
    if isinstance(data, (bool, np.bool_)):
        return "yes" if data else "no"
    if isinstance(data, (int, float, str)):
        return str(data)
    if hasattr(data, "correction_rad") and hasattr(data, "fibre_id"):
        n = len(getattr(data, "correction_rad"))
        carrier = _value_text("carrier_cyc_per_px", getattr(data, "carrier_cyc_per_px", None), "cycles/pixel")
        lines = [f"correction for {n} cores of fibre {data.fibre_id} is now active on the SLM",
                 f"calibration id: {getattr(data, 'calibration_id', '?')}"]
        if carrier:
            lines.append(f"fringe carrier: {carrier}")
        return "\n".join(lines)
    items: Any = data.items() if isinstance(data, dict) else (
        (k, getattr(data, k)) for k in dir(data) if not k.startswith("_") and not callable(getattr(data, k, None))
    )
    lines: list[str] = []
    for k, v in items:
        if isinstance(v, dict):  # one level of nesting (fit quality): its scalars, named
            for k2, v2 in v.items():
                name, unit = _unit_and_name(str(k2))
                text = _value_text(str(k2), v2, unit)
                if text is not None:
                    lines.append(f"{name}: {text}")
            continue
        name, unit = _unit_and_name(str(k))
        text = _value_text(str(k), v, unit)
        if text is not None:
            lines.append(f"{name}: {text}" if name else text)
    return "\n".join(lines[:12]) or "done"


_summary = describe_result  # the name earlier versions used


IMAGE_KEYS: dict[str, tuple[str, ...]] = {
    "hologram": ("image", "hologram", "frame"),
    "fourier": ("spectrum_log", "log_spectrum", "spectrum", "fourier", "image", "magnitude"),
    "phases": ("phase_map", "phase_image", "image", "correction_map"),
    "verify": ("residual_map", "phase_map", "image"),
}


def carrier_xy(result: Any) -> tuple[float, float] | None:
    """Carrier position in spectrum pixels as (x, y): ``sideband_px`` is (row, col),
    ``carrier_px`` is (x, y)."""
    get = result.get if isinstance(result, dict) else (lambda k, d=None: getattr(result, k, d))
    rc = get("sideband_px", None)
    if rc is not None and len(rc) == 2:
        return float(rc[1]), float(rc[0])
    xy = get("carrier_px", None)
    if xy is not None and len(xy) == 2:
        return float(xy[0]), float(xy[1])
    return None


class _Relay(QObject):
    done = Signal(str, object, object)  # page id, result, exception


class StepPage(QWizardPage):
    """One calibration step: runs its method when entered, shows the returned data."""

    def __init__(self, key: str, title: str, text: str, wizard: "CalibrationWizardDialog",
                 number: int = 1, total: int = 1) -> None:
        super().__init__()
        self.key = key
        self.dialog = wizard
        self.setTitle(f"Step {number} of {total}: {title}")
        self.setSubTitle(text)
        self.result: Any = None
        self.error: str | None = None
        self._done = False
        lay = QVBoxLayout(self)
        self.canvas = pg.GraphicsLayoutWidget(self)
        self.viewbox = self.canvas.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.viewbox.addItem(self.image_item)
        self.marker = pg.ScatterPlotItem(size=18, symbol="+", pen=pg.mkPen("#ff3030", width=2), brush=None)
        self.viewbox.addItem(self.marker)
        # a colour bar says what the colours mean (counts, log magnitude, radians)
        self.colorbar: pg.ColorBarItem | None = None
        if key in IMAGE_KEYS:
            self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("viridis"),
                                            interactive=False, label=COLOURBAR_LABELS.get(key, ""))
            self.colorbar.setImageItem(self.image_item, insert_in=self.canvas.ci)
        # Apply is the operator's decision (it changes every hologram); Save happens on Finish
        self.action = QPushButton(ACTION_TEXT.get(key, ""), self)
        self.action.setObjectName(f"{key}ActionButton")
        self.action.setVisible(key in ACTION_TEXT)
        self.action.clicked.connect(self.run_step)
        self.canvas.setVisible(key in IMAGE_KEYS)
        self.canvas.setMinimumHeight(300 if key in IMAGE_KEYS else 0)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.retry = QPushButton("Retry this step", self)
        self.retry.setVisible(False)
        self.retry.clicked.connect(self.run_step)
        lay.addWidget(self.canvas, 1)
        lay.addWidget(self.action)
        lay.addWidget(self.status)
        lay.addWidget(self.retry)

    def initializePage(self) -> None:  # noqa: N802 - Qt API
        if self.key == "apply":
            self._done = False
            self.action.setEnabled(True)
            self.status.setText("Press Apply to install the measured correction (nothing changes until then).")
            self.completeChanged.emit()
        elif self.key == "save":
            self._done = True  # Finish saves
            self.status.setText(f"Press Finish to save the calibration record to\n{self.dialog.save_path}\n"
                                "and make it the active calibration; Cancel keeps the previous one.")
            self.completeChanged.emit()
        else:
            self.run_step()

    def validatePage(self) -> bool:  # noqa: N802 - Qt API
        """Finish on the Save page writes the record (synchronously: a small JSON file)."""
        if self.key != "save":
            return True
        return self.dialog.save_now()

    def run_step(self) -> None:
        if self.key == "apply":
            self.action.setEnabled(False)
        self._done = False
        self.error = None
        self.retry.setVisible(False)
        self.status.setText("working...")
        self.completeChanged.emit()
        self.dialog.submit(self.key)

    def finish(self, result: Any, exc: BaseException | None) -> None:
        if exc is not None:
            self.error = str(exc)
            self.status.setText(f"<b style='color:#c00000'>Failed:</b> {exc}")
            self.retry.setVisible(self.key != "apply")
            self.action.setEnabled(True)
            log.error("calibration step %s failed: %s", self.key, exc)
        else:
            self.result = result
            self.show_result(result)
            self._done = True
        self.completeChanged.emit()

    def show_result(self, result: Any) -> None:
        img = _first_image(result, IMAGE_KEYS.get(self.key, ("image",)))
        if img is not None:
            img = np.asarray(img, dtype=np.float32)
            if self.key == "fourier" and img.min() >= 0 and img.max() > 1e3 * max(np.median(img), 1e-12):
                img = np.log1p(img)  # raw magnitudes span decades
            finite = img[np.isfinite(img)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            cmap = pg.colormap.get("viridis")
            if self.key in ("phases", "verify"):
                lo, hi = -np.pi, np.pi
                cmap = pg.colormap.get("CET-C1")  # cyclic map for phases
            hi = hi if hi > lo else lo + 1
            self.image_item.setImage(img, levels=(lo, hi), autoLevels=False)
            if self.colorbar is not None:
                self.colorbar.setColorMap(cmap)
                self.colorbar.setLevels((lo, hi))
            else:
                self.image_item.setColorMap(cmap)
            self.viewbox.autoRange(padding=0)
        if self.key == "fourier":
            xy = carrier_xy(result)
            if xy is not None:
                self.marker.setData([xy[0]], [xy[1]])
        self.status.setText(describe_result(result))

    def isComplete(self) -> bool:  # noqa: N802 - Qt API
        return self._done


def _takes_argument(fn: Any) -> bool:
    try:
        params = [p for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty
                  and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return bool(params)


class CalibrationWizardDialog(QWizard):
    """Walks the operator through a per-core phase calibration (non-modal)."""

    #: a line for the operator's log once the record is saved (Finish)
    saved_message = Signal(str)

    def __init__(self, steps: Any, parent: QWidget | None = None, save_path: str | Path | None = None) -> None:
        super().__init__(parent)
        self.steps = steps
        self.saved = False
        self.save_path = Path(save_path) if save_path is not None else Path("calibration.json")
        self.saved_to: Any = None
        self.setWindowTitle("Calibration wizard - per-core phase (off-axis holography)")
        self.setObjectName("calibrationWizard")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.resize(760, 640)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calibration")
        self._relay = _Relay()
        self._relay.done.connect(self._on_done)
        self.pages: dict[str, StepPage] = {}
        shown = [st for st in STEPS if not (self._method(st[3]) is None and st[0] == "mode")]
        for i, (key, title, text, _names) in enumerate(shown, start=1):
            page = StepPage(key, title, text, self, number=i, total=len(shown))
            self.pages[key] = page
            self.addPage(page)
        self.finished.connect(self._shutdown)

    def save_now(self) -> bool:
        """Write the calibration record (Finish); a failure stays on the page with its reason."""
        page = self.pages.get("save")
        fn = self._method(next(s[3] for s in STEPS if s[0] == "save"))
        try:
            if fn is None:
                raise RuntimeError("this calibration cannot be saved (no save step)")
            if _takes_argument(fn):
                self.save_path.parent.mkdir(parents=True, exist_ok=True)
                res = fn(self.save_path)
            else:
                res = fn()
        except Exception as exc:  # shown on the page: Finish stays possible after a fix
            if page is not None:
                page.status.setText(f"<b style='color:#c00000'>Saving failed:</b> {exc}")
            log.error("saving the calibration failed: %s", exc)
            return False
        self.saved = True
        self.saved_to = res
        where = res if isinstance(res, (str, Path)) else self.save_path
        self.saved_message.emit(f"calibration saved to {where} and active from the next run")
        return True

    def _method(self, names: tuple[str, ...]) -> Any:
        for n in names:
            fn = getattr(self.steps, n, None)
            if callable(fn):
                return fn
        return None

    def submit(self, key: str) -> None:
        names = next(s[3] for s in STEPS if s[0] == key)
        fn = self._method(names)
        relay = self._relay

        def work() -> None:
            try:
                if fn is None:
                    raise RuntimeError(f"calibration step '{key}' is not available ({' / '.join(names)})")
                if key in NEEDS_PATH and _takes_argument(fn):
                    self.save_path.parent.mkdir(parents=True, exist_ok=True)
                    res = fn(self.save_path)
                else:
                    res = fn()
            except Exception as exc:  # shown on the page
                relay.done.emit(key, None, exc)
                return
            relay.done.emit(key, res, None)

        self._pool.submit(work)

    def _on_done(self, key: str, result: Any, exc: Any) -> None:
        page = self.pages.get(key)
        if page is not None:
            page.finish(result, exc)
        if key == "save" and exc is None:
            self.saved = True
            self.saved_to = result

    def _shutdown(self, *_: Any) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        leave = getattr(self.steps, "leave_calibration_mode", None)
        if callable(leave):
            try:
                leave()
            except Exception as exc:
                log.warning("leaving calibration mode failed: %s", exc)
