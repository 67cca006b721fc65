"""Screen SLM under Xvfb: pixel-exact display, LUT, window-closed fault, reconnect, threading."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mcf_rotator.config import SLMConfig  # noqa: E402
from mcf_rotator.errors import DeviceDisconnectedError, DeviceError, DeviceNotFoundError  # noqa: E402
from mcf_rotator.holography.mcf import phase_to_grey  # noqa: E402


def _rgb32(qimage) -> np.ndarray:
    from qtpy import QtGui

    img = qimage.convertToFormat(QtGui.QImage.Format.Format_RGB32)
    h, w = img.height(), img.width()
    arr = np.frombuffer(img.constBits(), np.uint8, count=img.sizeInBytes()).reshape(h, img.bytesPerLine())
    return arr[:, : 4 * w].reshape(h, w, 4)[..., :3].copy()


def rendered(win) -> np.ndarray:
    """What the window paints, rendered into a 32-bit image (independent of the display depth)."""
    from qtpy import QtGui

    img = QtGui.QImage(win.size(), QtGui.QImage.Format.Format_RGB32)
    img.fill(0x123456)
    win.render(img)
    return _rgb32(img)


@pytest.fixture
def slm_cfg(qapp):
    g = qapp.primaryScreen().geometry()
    return SLMConfig(driver="screen", width=g.width(), height=g.height(), screen_index=0, two_pi_grey=180)


@pytest.fixture
def slm(slm_cfg, qtbot):
    from mcf_rotator.drivers.screen_slm import ScreenSLM

    dev = ScreenSLM(slm_cfg)
    dev.connect()
    yield dev
    dev.disconnect()


def test_paints_phase_pixel_exact_with_lut(slm, qapp):
    h, w = slm.shape
    yy, xx = np.mgrid[0:h, 0:w]
    phase = (xx * 0.05 + yy * 0.031) - 3.0  # negative and > 2 pi: wrap in the LUT
    slm.show_phase(phase)
    want = phase_to_grey(phase, 180)
    got = rendered(slm.window)
    for c in range(3):
        np.testing.assert_array_equal(got[..., c], want)
    win = slm.window
    assert win.isVisible() and win.geometry() == qapp.primaryScreen().geometry()
    # what actually reached the X server
    screen = qapp.primaryScreen()
    shot = _rgb32(screen.grabWindow(int(win.winId())).toImage())
    assert shot.shape[:2] == (h, w)
    if screen.depth() >= 24:
        np.testing.assert_array_equal(shot[..., 1], want)
    else:  # 16-bit test display: 5/6-bit channels, still no smoothing (errors bounded per pixel)
        assert np.abs(shot[..., 1].astype(int) - want).max() <= 4
    # single-pixel detail survives (no scaling / smoothing)
    grey = np.zeros((h, w), np.uint8)
    grey[::2, ::2] = 255
    slm.show_grey(grey)
    np.testing.assert_array_equal(rendered(slm.window)[..., 0], grey)


def test_window_closed_raises_emits_and_reconnects(slm, qtbot):
    errors = []
    slm.events.error.connect(errors.append)
    first = np.full(slm.shape, 77, np.uint8)
    slm.show_grey(first)
    slm.window.close()  # what the operator's Alt+F4 / window manager does
    assert len(errors) == 1 and "closed" in errors[0]
    assert not slm.is_connected
    with pytest.raises(DeviceDisconnectedError, match="window was closed"):
        slm.show_grey(np.zeros(slm.shape, np.uint8))
    slm.reconnect()
    assert slm.is_connected and slm.window.isVisible()
    np.testing.assert_array_equal(rendered(slm.window)[..., 1], first)  # last pattern restored
    assert len(errors) == 1  # our own close during reconnect is not an error


def test_show_from_worker_thread(slm, qtbot):
    frames = [np.full(slm.shape, v, np.uint8) for v in (10, 20, 30)]
    done: list[object] = []

    def worker() -> None:
        try:
            for f in frames:
                slm.show_grey(f)
            done.append("ok")
        except Exception as exc:  # surfaced in the assertion below
            done.append(exc)

    th = threading.Thread(target=worker)
    th.start()
    qtbot.waitUntil(lambda: bool(done), timeout=10000)
    th.join()
    assert done == ["ok"]
    np.testing.assert_array_equal(rendered(slm.window)[..., 2], frames[-1])


def test_wrong_screen_and_wrong_size(slm_cfg, qtbot):
    from mcf_rotator.drivers.screen_slm import ScreenSLM

    with pytest.raises(DeviceNotFoundError, match="monitor 5 not found"):
        ScreenSLM(slm_cfg.model_copy(update={"screen_index": 5})).connect()
    with pytest.raises(DeviceError, match="fix slm.width"):
        ScreenSLM(slm_cfg.model_copy(update={"width": 1920, "height": 1152})).connect()
    lenient = ScreenSLM(slm_cfg.model_copy(update={"width": 64, "height": 32}), strict_size=False)
    lenient.connect()
    g = np.arange(64 * 32, dtype=np.uint16).reshape(32, 64).astype(np.uint8)
    lenient.show_grey(g)
    np.testing.assert_array_equal(rendered(lenient.window)[:32, :64, 0], g)  # 1:1 at the top-left
    lenient.disconnect()


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb not installed")
def test_on_screen_exact_and_latency_on_24bit_pluto_sized_display(tmp_path, record_property):
    """Own 24-bit 1920x1080 Xvfb: grab the screen after show_phase returns and compare."""
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        display = xvfb.stdout.readline().decode().strip()
        assert display, "Xvfb did not start"
        env = dict(os.environ, DISPLAY=f":{display}", QT_QPA_PLATFORM="xcb")
        env.pop("WAYLAND_DISPLAY", None)
        proc = subprocess.run([sys.executable, str(HERE / "drv_screen_probe.py")], env=env,
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        xvfb.terminate()
        xvfb.wait(10)
    assert res["screen"] == [1920, 1080] and res["depth"] >= 24
    assert all(res["exact"]), res["exact"]  # on screen, pixel-exact, by the time show_phase returned
    assert res["worker_final_exact"]
    for k in ("show_ms_median", "show_ms_max", "show_grey_ms_median", "worker_show_ms_median", "worker_show_ms_max"):
        record_property(k, res[k])
    print(f"\nscreen SLM 1920x1080 under Xvfb: show_phase->on screen median {res['show_ms_median']:.1f} ms "
          f"(max {res['show_ms_max']:.1f}), of which LUT ~{res['show_ms_median'] - res['show_grey_ms_median']:.1f} ms; "
          f"show_grey median {res['show_grey_ms_median']:.1f} ms; from worker thread median {res['worker_show_ms_median']:.1f} ms "
          f"(max {res['worker_show_ms_max']:.1f}); grab {res['grab_ms_median']:.1f} ms")


def test_monitor_removed_is_a_disconnect(slm, qapp):
    errors = []
    slm.events.error.connect(errors.append)
    # what QGuiApplication.screenRemoved delivers when the SLM's HDMI cable is pulled
    slm._on_screen_removed(qapp.primaryScreen())
    assert len(errors) == 1 and "monitor disappeared" in errors[0]
    with pytest.raises(DeviceDisconnectedError, match="monitor was disconnected"):
        slm.show_grey(np.zeros(slm.shape, np.uint8))
    slm.reconnect()
    assert slm.is_connected
