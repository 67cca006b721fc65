"""Application entry: ``run_app(config_path, simulate)`` builds the controller and main window.

Start-up never depends on user settings being readable; a bad rig config or a device that
fails to open is reported (dialog + log) and the operator can still fall back to the
simulated rig.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from mcf_rotator.gui.responsiveness import freeze_long_lived_heap, prefer_gui_thread

log = logging.getLogger("mcf_rotator.gui")


def _ensure_app() -> Any:
    from qtpy.QtWidgets import QApplication

    prefer_gui_thread()
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName("mcf-rotator")
        app.setOrganizationName("mcf-rotator")
    return app


def build_controller(config_path: str | Path | None, simulate: bool, settings: Any) -> Any:
    """Load the rig config (CLI path > saved setting > default), apply per-device choices."""
    from mcf_rotator.config import load_config
    from mcf_rotator.controller import RigController
    from mcf_rotator.gui.user_settings import apply_device_modes
    from mcf_rotator.rig import build_rig

    path = config_path if config_path is not None else settings.config_path
    config = load_config(path)
    config = apply_device_modes(config, settings, simulate=simulate)
    # an operator watches in real time: pace the simulated world with the wall clock, so the
    # camera runs at its frame rate and the pipeline takes the newest frames it can
    rig = build_rig(config, realtime=True)
    # runs go to the operator's output folder (Hardware & settings), else the config's
    output_dir = Path(settings.output_dir).expanduser() if getattr(settings, "output_dir", None) else None
    return RigController(config, rig=rig, calibration=initial_calibration(config, rig), output_dir=output_dir)


def initial_calibration(config: Any, rig: Any) -> Any:
    """The per-core correction a session starts with (``None``: uncorrected).

    The newest record for this fibre in the config's ``paths.calibration_dir`` (only an
    explicitly configured folder is read: never a default or relative one, whose contents
    would depend on where the app was started). Without one, a simulated rig starts
    "factory calibrated" with its own world's exact correction - as the demo does - so the
    distorted simulated fibre does not scramble the ellipse and lose the cell; a re-bend
    (drift check) then asks for the wizard as on the real rig. Each call builds a new record
    from this rig's own world: nothing is shared between controllers.
    """
    from mcf_rotator.calibration.record import CalibrationRecord, latest_record

    world = getattr(rig, "world", None)
    geometry = getattr(world, "geometry", None)
    cal_dir = getattr(getattr(config, "paths", None), "calibration_dir", None)
    if cal_dir is not None and Path(cal_dir).is_dir():
        try:
            rec = latest_record(cal_dir)
            if rec is not None:
                if geometry is not None:
                    rec.check_fibre(geometry.fibre_id, geometry.n_cores)
                log.info("using calibration %s from %s", rec.calibration_id, cal_dir)
                return rec
        except Exception as exc:  # noqa: BLE001 - a bad record must not block start-up
            log.warning("calibration in %s not usable (%s); starting without it", cal_dir, exc)
    if world is None or not hasattr(world, "fibre"):
        return None
    cam = getattr(rig, "calibration_camera", None)
    carrier = getattr(getattr(cam, "optics", None), "carrier_cyc_per_px", (0.0, 0.0))
    seed = getattr(getattr(config, "simulation", None), "seed", 0)
    return CalibrationRecord(
        fibre_id=geometry.fibre_id,
        correction_rad=[float(v) for v in world.fibre.correction()],
        carrier_cyc_per_px=(float(carrier[0]), float(carrier[1])),
        fit_quality={"source": "simulator (exact)"},
        residual_rms_rad=0.0,
        calibration_id=f"simulated-ideal-seed{seed}",
    )


def install_excepthook(window: Any) -> None:
    """Uncaught exceptions in Qt slots go to the log panel instead of killing the app."""

    def hook(exc_type, exc, tb) -> None:  # noqa: ANN001
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("unexpected error: %s", text)
        try:
            window.show_error(f"{exc_type.__name__}: {exc}")
        except Exception:
            pass

    sys.excepthook = hook


def create_main_window(config_path: str | Path | None = None, simulate: bool = False, settings_path: str | Path | None = None) -> Any:
    """Build settings, controller and window (shown by the caller); used by run_app and tests."""
    from mcf_rotator.gui.main_window import MainWindow
    from mcf_rotator.gui.user_settings import UserSettings

    settings = UserSettings.load(settings_path)
    controller = build_controller(config_path, simulate, settings)
    simulated = simulate or bool(getattr(controller.config, "is_simulated", False))
    window = MainWindow(controller, settings=settings, simulated=simulated)
    freeze_long_lived_heap()  # napari, Qt and the rig are built: keep them out of every gc pass
    return window


def run_app(config_path: str | Path | None = None, simulate: bool = False) -> int:
    """Run the operator GUI until the window closes; returns the process exit code."""
    from mcf_rotator.errors import McfRotatorError
    from mcf_rotator.reconstruction.ultralytics_env import configure_opencv_threads

    configure_opencv_threads()  # before any worker thread uses cv2 (see ultralytics_env)
    # napari's 3D view needs a GL-capable platform; honour an explicit choice otherwise
    os.environ.setdefault("QT_API", "pyside6")
    app = _ensure_app()
    try:
        window = create_main_window(config_path, simulate)
    except McfRotatorError as exc:
        from qtpy.QtWidgets import QMessageBox

        log.error("%s", exc)
        if not simulate:
            answer = QMessageBox.question(
                None,
                "mcf-rotator",
                f"The rig could not be opened:\n\n{exc}\n\nStart on the simulated rig instead?",
            )
            if answer == QMessageBox.StandardButton.Yes:
                return run_app(config_path=None, simulate=True)
        else:
            QMessageBox.critical(None, "mcf-rotator", str(exc))
        return 2
    previous_hook = sys.excepthook
    install_excepthook(window)
    window.show()
    try:
        return int(app.exec())
    finally:
        sys.excepthook = previous_hook
