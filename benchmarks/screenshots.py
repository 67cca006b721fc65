"""Make the README's screenshots on the simulated rig (main window, FINISHING, wizard).

    python benchmarks/screenshots.py [--out docs] [--timeout 300]

Runs the real main window (Rig > Run all on the simulated rig) and grabs the screen, not the
widget: napari's 3D view is a native GL window that ``QWidget.grab`` would leave black. Without
a display it starts a virtual one (PyVirtualDisplay, which pytest-xvfb installs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable


def _pump(app: Any, until: Callable[[], bool], timeout_s: float) -> bool:
    """Run the Qt event loop until ``until()`` or the timeout; True when it came true."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if until():
            return True
        time.sleep(0.02)
    return False


def _grab(app: Any, widget: Any, path: Path) -> None:
    """Screen pixels of ``widget``'s window (GL children included)."""
    app.processEvents()
    geo = widget.frameGeometry()
    shot = app.primaryScreen().grabWindow(0, geo.x(), geo.y(), geo.width(), geo.height())
    shot.save(str(path))
    print(f"wrote {path} ({geo.width()}x{geo.height()})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each stage")
    args = ap.parse_args(argv)
    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=(1680, 1050), color_depth=24)
        display.start()
    os.environ.setdefault("QT_API", "pyside6")
    work = Path(tempfile.mkdtemp(prefix="mcf-screens-"))
    os.environ["MCF_ROTATOR_SETTINGS"] = str(work / "settings.json")
    (work / "settings.json").write_text(json.dumps({"output_dir": str(work / "runs")}))
    from mcf_rotator.gui.app import _ensure_app, create_main_window
    from mcf_rotator.reconstruction.ultralytics_env import configure_opencv_threads

    configure_opencv_threads()
    app = _ensure_app()
    win = create_main_window(simulate=True)
    win.move(0, 0)
    win.resize(1640, 1000)
    win.show()
    args.out.mkdir(parents=True, exist_ok=True)
    rc = 1
    try:
        rc = _shoot(app, win, args)
    finally:
        win.close()
        app.processEvents()
        if display is not None:
            # end now: Qt's own teardown after its X server is gone would crash on exit
            display.stop()
            sys.stdout.flush()
            os._exit(rc)
    return rc


def _shoot(app: Any, win: Any, args: argparse.Namespace) -> int:
    """Run all, grabbing the start, live, FINISHING, final and wizard views; 0 when done."""
    state = lambda: win.controller.state.name  # noqa: E731
    _pump(app, lambda: False, 2.0)
    _grab(app, win, args.out / "screenshot_start.png")  # start-up hints
    win.run_all()

    def live_volume() -> bool:
        snap = win.volume_view.snapshot
        return (snap is not None and win.controller.stats()["coverage_deg"] >= 200) or state() in ("IDLE", "ERROR")

    if not _pump(app, live_volume, args.timeout):
        print("no live volume in time", file=sys.stderr)
        return 1
    _pump(app, lambda: False, 1.5)
    _grab(app, win, args.out / "screenshot_main.png")
    if state() == "RECONSTRUCTING":
        win.buttons["stop"].click()
    if _pump(app, lambda: state() == "FINISHING" and bool(win.finishing_step.text()), 30.0):
        _pump(app, lambda: "now:" in win.finishing_step.text(), 60.0)
        _grab(app, win, args.out / "screenshot_finishing.png")
    if _pump(app, lambda: state() in ("IDLE", "ERROR"), args.timeout):
        _pump(app, lambda: win.volume_view.title.startswith("final volume"), 10.0)
        _pump(app, lambda: False, 1.5)
        _grab(app, win, args.out / "screenshot_final.png")
    wiz = win.open_calibration_wizard()
    if wiz is not None:
        wiz.move(60, 40)
        for _ in range(2):  # calibration mode, hologram, then the Fourier plane
            _pump(app, wiz.currentPage().isComplete, 60.0)
            wiz.next()
        _pump(app, wiz.currentPage().isComplete, 60.0)
        _pump(app, lambda: False, 1.0)
        _grab(app, wiz, args.out / "screenshot_wizard.png")
        wiz.reject()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
