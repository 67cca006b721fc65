"""Run the screen SLM on the current X display and check what is *on screen* (not just painted).

Used by test_drv_screen_slm.py in a subprocess on its own 24-bit Xvfb sized like a PLUTO-2
(1920x1080), because pytest-xvfb's default display is 16-bit and would quantise grey levels.
Prints one JSON line: pixel-exactness of screen grabs and show_phase() timings.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time

import numpy as np


def grab_grey(screen, win) -> np.ndarray:
    from qtpy import QtGui

    img = screen.grabWindow(int(win.winId())).toImage().convertToFormat(QtGui.QImage.Format.Format_RGB32)
    h, w = img.height(), img.width()
    arr = np.frombuffer(img.constBits(), np.uint8, count=img.sizeInBytes()).reshape(h, img.bytesPerLine())
    bgra = arr[:, : 4 * w].reshape(h, w, 4)
    return bgra[..., :3].copy()


def main() -> int:
    from qtpy import QtCore, QtWidgets

    from mcf_rotator.config import SLMConfig
    from mcf_rotator.drivers.screen_slm import ScreenSLM
    from mcf_rotator.holography.mcf import phase_to_grey

    app = QtWidgets.QApplication(sys.argv[:1])
    screen = app.primaryScreen()
    g = screen.geometry()
    cfg = SLMConfig(driver="screen", width=g.width(), height=g.height(), screen_index=0, two_pi_grey=213)
    slm = ScreenSLM(cfg)
    slm.connect()
    rng = np.random.default_rng(0)
    h, w = slm.shape
    yy, xx = np.mgrid[0:h, 0:w]
    out: dict = {"screen": [w, h], "depth": screen.depth(), "exact": [], "show_ms": [], "grab_ms": []}
    for k in range(12):
        phase = (xx * 0.011 * (k + 1) + yy * 0.017 + rng.uniform(0, 6.3, (h, w)) * (k % 2)) % (2 * np.pi)
        want = phase_to_grey(phase, 213)
        t0 = time.perf_counter()
        slm.show_phase(phase)
        t1 = time.perf_counter()
        got = grab_grey(screen, slm.window)  # first grab after return: already on screen?
        t2 = time.perf_counter()
        exact = bool(got.shape[:2] == want.shape and all(np.array_equal(got[..., c], want) for c in range(3)))
        out["exact"].append(exact)
        out["show_ms"].append(1000 * (t1 - t0))
        out["grab_ms"].append(1000 * (t2 - t1))
        grey = slm.lut(phase)
        t0 = time.perf_counter()
        slm.show_grey(grey)
        out.setdefault("show_grey_ms", []).append(1000 * (time.perf_counter() - t0))

    # from a worker thread (how the rotation driver calls it) while the GUI loop runs
    worker_ms: list[float] = []
    frames = [phase_to_grey((xx * 0.01 * (k + 2)) % (2 * np.pi), 255) for k in range(30)]

    def worker() -> None:
        for f in frames:
            t0 = time.perf_counter()
            slm.show_grey(f)
            worker_ms.append(1000 * (time.perf_counter() - t0))

    th = threading.Thread(target=worker)
    # QGuiApplication.quit() would close every window (the SLM too); just leave the loop
    poll = QtCore.QTimer()
    poll.timeout.connect(lambda: None if th.is_alive() else app.exit(0))
    QtCore.QTimer.singleShot(0, th.start)
    QtCore.QTimer.singleShot(20000, lambda: app.exit(1))
    poll.start(5)
    app.exec()
    th.join(5)
    final = grab_grey(screen, slm.window)
    out["worker_final_exact"] = bool(np.array_equal(final[..., 1], frames[-1]))
    out["worker_show_ms"] = worker_ms
    for key in ("show_ms", "show_grey_ms", "grab_ms", "worker_show_ms"):
        vals = out[key]
        out[key + "_median"] = statistics.median(vals) if vals else None
        out[key + "_max"] = max(vals) if vals else None
    slm.disconnect()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
