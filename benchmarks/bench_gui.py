"""GUI responsiveness while reconstructing on the simulated rig.

Measures, with the real main window under X11 (starts its own Xvfb when no DISPLAY is set):
  * live camera view rate during RECONSTRUCTING: distinct camera frames actually painted per
    second (the live view counts a frame when its image item paints it, once);
  * GUI-thread stalls: gaps between ticks of a 5 ms timer; each gap is attributed to napari's
    own volume repaint when it overlaps a napari canvas draw or the hand-over of a prepared
    volume to napari's layer (the preview itself is computed off the GUI thread).

Target: view >= 25 fps and no stall > 250 ms apart from napari's repaint.
Also reported (information, not a target): each stall minus the napari time inside it (draw
start to the frame swap that shows it), which shows whether other work hides behind a
repaint, and the machine load.

    python benchmarks/bench_gui.py [--seconds 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _ensure_display() -> subprocess.Popen | None:
    if os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM", "xcb") == "xcb":
        return None
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        sys.exit("bench_gui: needs an X display or Xvfb (napari's 3D view needs GL)")
    for n in range(90, 120):
        if not Path(f"/tmp/.X11-unix/X{n}").exists():
            break
    proc = subprocess.Popen([xvfb, f":{n}", "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    os.environ["DISPLAY"] = f":{n}"
    os.environ.pop("QT_QPA_PLATFORM", None)
    return proc


class StallMonitor:
    """Records GUI-thread gaps: a 5 ms PreciseTimer should tick every ~5 ms when the loop is free."""

    def __init__(self, interval_ms: int = 5) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def gaps(self) -> list[tuple[float, float]]:
        return [(a, b) for a, b in zip(self.ticks, self.ticks[1:])]


def _overlaps(gap: tuple[float, float], intervals: list[tuple[float, float]]) -> bool:
    a, b = gap
    return any(s < b and e > a for s, e in intervals)


def _outside(gap: tuple[float, float], intervals: list[tuple[float, float]]) -> float:
    """Length of ``gap`` not covered by any of ``intervals`` (which may overlap each other)."""
    a, b = gap
    covered, reach = 0.0, a
    for s, e in sorted((max(s, a), min(e, b)) for s, e in intervals if s < b and e > a):
        if e > reach:
            covered += e - max(s, reach)
            reach = e
    return (b - a) - covered


def _until_swapped(draws: list[tuple[float, float]], swaps: list[float]) -> list[tuple[float, float]]:
    """Each draw extended to the frame swap that shows it (GL composition is part of the repaint)."""
    out = []
    for s, e in draws:
        after = [t for t in swaps if e <= t <= e + 2.0]
        out.append((s, after[0] if after else e))
    return out


def _p99(values: list[float]) -> float:
    return sorted(values)[int(0.99 * (len(values) - 1))] if values else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement time while reconstructing")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temporary run folder (recording, volume)")
    ap.add_argument("--screenshot", type=Path, default=None, help="save the main window here mid-reconstruction")
    ap.add_argument("--wizard-screenshot", type=Path, default=None,
                    help="first calibrate with the wizard on the idle rig and save it showing the Fourier plane")
    args = ap.parse_args(argv)
    xvfb = _ensure_display()
    work = Path(tempfile.mkdtemp(prefix="bench-gui-"))
    os.environ.setdefault("MCF_ROTATOR_SETTINGS", str(work / "gui_settings.json"))
    screenshots = [p.resolve() if p else None for p in (args.screenshot, args.wizard_screenshot)]
    args.screenshot, args.wizard_screenshot = screenshots
    args.json = args.json.resolve() if args.json else None
    os.chdir(work)  # recordings and calibration records of the benchmark run land here
    try:
        from qtpy.QtWidgets import QApplication

        from mcf_rotator.gui.app import _ensure_app, create_main_window
        from mcf_rotator.gui.main_window import stat, state_name

        app = _ensure_app()
        win = create_main_window(simulate=True)
        win.show()
        draws: list[tuple[float, float]] = []
        start: list[float] = []
        swaps: list[float] = []
        try:  # napari's canvas (private attribute: benchmark only)
            ev = win.volume_view.qt_viewer.canvas._scene_canvas.events.draw
            ev.connect(lambda _e: start.append(time.perf_counter()), position="first")
            ev.connect(lambda _e: draws.append((start[-1], time.perf_counter())), position="last")
        except Exception as exc:  # noqa: BLE001
            print(f"(napari draw timing unavailable: {exc})")
        try:  # QOpenGLWidget.frameSwapped: the repaint is on screen
            win.volume_view.qt_viewer.canvas.native.frameSwapped.connect(lambda: swaps.append(time.perf_counter()))
        except Exception as exc:  # noqa: BLE001
            print(f"(napari frame-swap timing unavailable: {exc})")

        def pump(seconds: float, until=None) -> bool:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                app.processEvents()
                time.sleep(0.002)
                if until is not None and until():
                    return True
            return until is None

        def state() -> str:
            return state_name(win.controller.state)

        pump(2.0)
        if args.wizard_screenshot:
            wiz = win.open_calibration_wizard()
            for _ in range(2):
                pump(30, lambda: wiz.currentPage().isComplete())
                wiz.next()
            pump(30, lambda: wiz.currentPage().isComplete())
            pump(0.5)
            wiz.grab().save(str(args.wizard_screenshot))
            while wiz.nextId() != -1:
                pump(30, lambda: wiz.currentPage().isComplete())
                wiz.next()
            pump(30, lambda: wiz.currentPage().isComplete())
            wiz.accept()
            pump(1.0)
        win.buttons["trap"].click()
        if not pump(60, lambda: state() == "TRAPPING" and win.buttons["rotate"].isEnabled()):
            print(f"trap did not reach TRAPPING (state {state()})")
        win.buttons["rotate"].click()
        pump(30, lambda: state() == "ROTATING")
        pump(1.0)
        # the run must not reach its target coverage (and stop the camera) inside the window: it
        # cannot end before the ellipse has turned COMMAND_MARGIN x the target
        from mcf_rotator.controller import COMMAND_MARGIN

        rot = win.controller.config.rotation
        shortest_run_target = rot.rate_deg_s * (args.seconds + 1.0) / COMMAND_MARGIN
        if rot.target_coverage_deg < shortest_run_target:
            rot.target_coverage_deg = round(shortest_run_target)
        win.buttons["reconstruct"].click()
        if not pump(60, lambda: state() == "RECONSTRUCTING"):
            print(f"reconstruct did not start (state {state()})")
        mon = StallMonitor()
        load_start = os.getloadavg()[0]
        mon.timer.start()
        c0 = win.live_view.meter.count
        f0 = int(win.controller.stats().get("frames_read", 0) or 0)
        t0 = time.perf_counter()
        if args.screenshot:
            pump(args.seconds / 2)
            win.grab().save(str(args.screenshot))
            pump(args.seconds / 2)
        else:
            pump(args.seconds)
        t1 = time.perf_counter()
        mon.timer.stop()
        if state() != "RECONSTRUCTING":
            print(f"warning: the run left RECONSTRUCTING during the measurement (now {state()})")
        drawn = win.live_view.meter.count - c0
        camera_rate = (int(win.controller.stats().get("frames_read", 0) or 0) - f0) / (t1 - t0)
        view_fps = drawn / (t1 - t0)
        gaps = mon.gaps()
        napari_iv = draws + win.volume_view.refresh_intervals
        other = [b - a for a, b in gaps if not _overlaps((a, b), napari_iv)]
        napari = [b - a for a, b in gaps if _overlaps((a, b), napari_iv)]
        residual = [_outside(g, _until_swapped(draws, swaps) + win.volume_view.refresh_intervals) for g in gaps]
        draw_ms = [1000 * (e - s) for s, e in draws if s >= t0]
        st = win.controller.stats()
        get = st.get if hasattr(st, "get") else (lambda k, d=None: getattr(st, k, d))
        result = {
            "seconds": round(t1 - t0, 2),
            "state_at_end": state(),
            "live_view_fps": round(view_fps, 1),
            "camera_fps": round(camera_rate, 1),  # frames the (simulated) camera delivered in the window
            "dropped_frames": int(stat(get, "dropped_frames", "dropped")),
            "max_stall_ms_excluding_napari": round(1000 * max(other, default=0.0), 1),
            "p99_stall_ms_excluding_napari": round(1000 * _p99(other), 1),
            "max_stall_ms_napari_repaint": round(1000 * max(napari, default=0.0), 1),
            "max_stall_ms_minus_napari_time": round(1000 * max(residual, default=0.0), 1),
            "napari_draws": len(draw_ms),
            "napari_draw_ms_median": round(sorted(draw_ms)[len(draw_ms) // 2], 1) if draw_ms else None,
            "volume_refreshes": win.volume_view.refresh_count,
            "volume_version": win.volume_view.shown_version,
            "errors_shown": win.error_count,
            "targets_met": view_fps >= 25 and max(other, default=0.0) <= 0.25,
            "platform": QApplication.platformName(),
            "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],  # at start and end
            "cpu_count": os.cpu_count(),
        }
        win.close()
        app.processEvents()
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0 if result["targets_met"] else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(5)


if __name__ == "__main__":
    sys.exit(main())
