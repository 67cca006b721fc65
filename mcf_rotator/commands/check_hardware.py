"""``mcf-rotator check-hardware``: open each configured device, exercise it, report PASS/FAIL.

First it lists every driver the rig file can name, what it needs and whether that is installed
here (``--drivers`` prints only that list), so a missing SDK shows up even for drivers the rig
file does not select. ``--camera-driver`` / ``--slm-driver`` check another driver than the
configured one. Camera: open, print model/serial/settings, grab frames, report the frame rate measured on the
camera's own clock, intensity range, saturation and dropped frames. SLM: open, show a blazed
grating (first diffraction order should move off axis) for ``--hold`` seconds, then close.
Every failure prints the driver's operator-readable message; the exit status is 0 only if
every checked device passed.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from mcf_rotator.drivers.catalog import all_statuses, driver_names
from mcf_rotator.errors import McfRotatorError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check-hardware",
        help="open the configured camera and SLM, grab frames / show a test pattern, report PASS/FAIL",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--config", dest="hw_config", default=None,
                   help="rig configuration (default: the global --config, else the default rig)")
    p.add_argument("--no-camera", dest="camera", action="store_false", help="skip the camera")
    p.add_argument("--no-slm", dest="slm", action="store_false", help="skip the SLM")
    p.add_argument("--frames", type=int, default=30, help="frames to grab from the camera (default 30)")
    p.add_argument("--hold", type=float, default=5.0, help="seconds to show the SLM test pattern (default 5)")
    p.add_argument("--grating-period", type=float, default=8.0,
                   help="test grating period in SLM pixels (default 8)")
    p.add_argument("--list-screens", action="store_true", help="list the monitors Qt sees (for slm.screen_index)")
    p.add_argument("--drivers", action="store_true",
                   help="only list every driver, what it needs and whether its SDK is installed here")
    p.add_argument("--camera-driver", choices=driver_names("camera"), default=None,
                   help="check this camera driver instead of the rig file's camera.driver")
    p.add_argument("--slm-driver", choices=driver_names("slm"), default=None,
                   help="check this SLM driver instead of the rig file's slm.driver")
    p.set_defaults(func=run)


def _wait(seconds: float) -> None:
    """Sleep while keeping a Qt GUI (screen SLM window) responsive if one exists."""
    app = None
    try:
        import sys

        if "qtpy" in sys.modules:
            from qtpy import QtWidgets

            app = QtWidgets.QApplication.instance()
    except Exception:  # noqa: BLE001 - no Qt, plain sleep
        app = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if app is not None:
            app.processEvents()
        time.sleep(0.01)


def _world(cfg: Any) -> Any:
    from mcf_rotator.simulation.world import SimulatedWorld

    return SimulatedWorld(cfg)


def print_drivers(cfg: Any | None, out: Any = print) -> None:
    """One line per driver: kind, name, whether the rig selects it, ready/MISSING and the detail."""
    selected = set()
    if cfg is not None:
        selected = {("camera", cfg.camera.driver), ("slm", cfg.slm.driver), ("trap", cfg.trap)}
    out("drivers (* = selected by the rig file):")
    for st in all_statuses():
        d = st.info
        mark = "*" if (d.kind, d.name) in selected else " "
        state = "ready" if st.ready else "MISSING"
        out(f"  {mark} {d.kind:<6} {d.name:<12} {state:<7} {d.device} (needs {d.needs})")
        out(f"      {st.detail}")


def check_camera(cfg: Any, frames: int, out: Any = print) -> bool:
    from mcf_rotator.drivers.factory import make_camera

    cam_cfg = cfg.camera
    out(f"camera: driver {cam_cfg.driver}")
    cam = None
    try:
        world = _world(cfg) if cam_cfg.driver == "simulated" else None
        cam = make_camera(cam_cfg, world, realtime=True)
        cam.connect()
        describe = getattr(cam, "describe", None)
        out(f"  opened: {describe() if describe else cam!r}")
        out(f"  image {cam.shape[1]}x{cam.shape[0]} {np.dtype(cam.dtype).name}, {cam.bit_depth} bit, "
            f"exposure {cam.exposure_ms:.3g} ms, frame rate {cam.frame_rate_hz:.3g} Hz")
        cam.start_acquisition()
        got = []
        timeout = max(1.0, 3.0 / max(cam.frame_rate_hz, 1e-3) + cam.exposure_ms / 1000)
        for _ in range(max(2, frames)):
            got.append(cam.read_frame(timeout))
        cam.stop_acquisition()
        ts = np.array([f.timestamp for f in got])
        imgs = np.stack([f.image for f in got])
        full = (1 << int(cam.bit_depth)) - 1
        fps = (len(ts) - 1) / (ts[-1] - ts[0]) if ts[-1] > ts[0] else float("nan")
        dropped = got[-1].metadata.get("dropped_by_camera", 0)
        out(f"  {len(got)} frames: {fps:.3g} Hz on the {got[-1].metadata.get('clock', 'host')} clock, "
            f"grey {imgs.min()}..{imgs.max()} (mean {imgs.mean():.1f}), "
            f"saturated {100 * np.mean(imgs >= full):.2f} %, dropped by camera {dropped}")
        if imgs.max() == imgs.min():
            out("  WARNING: every pixel has the same value; check the illumination, exposure and lens cap")
        out("  camera: PASS")
        return True
    except McfRotatorError as exc:
        out(f"  camera: FAIL - {exc}")
        return False
    finally:
        if cam is not None:
            try:
                cam.disconnect()
            except Exception as exc:  # noqa: BLE001 - report, never mask the verdict
                out(f"  (closing the camera: {exc})")


def check_slm(cfg: Any, hold_s: float, period_px: float, out: Any = print) -> bool:
    from mcf_rotator.drivers.factory import make_slm

    slm_cfg = cfg.slm
    out(f"SLM: driver {slm_cfg.driver}")
    slm = None
    try:
        world = _world(cfg) if slm_cfg.driver == "simulated" else None
        slm = make_slm(slm_cfg, world)
        slm.connect()
        describe = getattr(slm, "describe", None)
        out(f"  opened: {describe() if describe else slm!r}")
        h, w = slm.shape
        phase = (np.arange(w)[None, :] * (2 * np.pi / period_px)) * np.ones((h, 1))
        slm.show_phase(phase)
        out(f"  showing a blazed grating, period {period_px:g} px, for {hold_s:g} s: the first diffraction "
            "order should appear beside the zero order")
        _wait(hold_s)
        grey = slm.current_grey
        if grey is not None:
            out(f"  grey levels in use {int(grey.min())}..{int(grey.max())}")
        slm.show_grey(np.zeros((h, w), np.uint8))
        out("  SLM: PASS")
        return True
    except McfRotatorError as exc:
        out(f"  SLM: FAIL - {exc}")
        return False
    finally:
        if slm is not None:
            try:
                slm.disconnect()
            except Exception as exc:  # noqa: BLE001
                out(f"  (closing the SLM: {exc})")


def run(args: argparse.Namespace) -> int:
    from mcf_rotator.config import load_config

    if args.list_screens:
        from qtpy import QtWidgets

        from mcf_rotator.drivers.screen_slm import list_screens

        _app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        for line in list_screens():
            print(line)
        return 0
    if getattr(args, "drivers", False):
        print_drivers(None)
        return 0
    cfg = load_config(args.hw_config or getattr(args, "config", None))
    if getattr(args, "camera_driver", None):
        cfg.camera = cfg.camera.model_copy(update={"driver": args.camera_driver})
    if getattr(args, "slm_driver", None):
        cfg.slm = cfg.slm.model_copy(update={"driver": args.slm_driver})
    print(f"rig: {cfg.name}")
    print_drivers(cfg)
    results = []
    if args.camera:
        results.append(check_camera(cfg, args.frames))
    if args.slm:
        results.append(check_slm(cfg, args.hold, args.grating_period))
    if not results:
        print("nothing to check (--no-camera and --no-slm)")
        return 0
    ok = all(results)
    print("all checked devices PASS" if ok else "some devices FAILED (see above)")
    return 0 if ok else 1
