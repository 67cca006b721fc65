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

log = logging.getLogger("mcf_rotator.gui")


def _ensure_app() -> Any:
    from qtpy.QtWidgets import QApplication

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
    return RigController(config, rig=rig)


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
    return MainWindow(controller, settings=settings, simulated=simulated)


def run_app(config_path: str | Path | None = None, simulate: bool = False) -> int:
    """Run the operator GUI until the window closes; returns the process exit code."""
    from mcf_rotator.errors import McfRotatorError

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
