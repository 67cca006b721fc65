"""Trap -> Rotate -> Reconstruct by clicking the real main window on the simulated rig."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture
def sim_window(qtbot, tmp_path, monkeypatch):
    pytest.importorskip("mcf_rotator.controller")
    from mcf_rotator.gui.app import create_main_window

    monkeypatch.setenv("MCF_ROTATOR_SETTINGS", str(tmp_path / "gui_settings.json"))
    monkeypatch.chdir(tmp_path)  # recordings land here
    win = create_main_window(simulate=True)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


def _state(win) -> str:
    from mcf_rotator.gui.main_window import state_name

    return state_name(win.controller.state)


def _cell_visible(volume: np.ndarray) -> bool:
    """A compact bright object in the middle, clearly above the background at the borders."""
    v = np.asarray(volume, dtype=float)
    h, d, w = v.shape
    centre = v[h // 4 : 3 * h // 4, d // 4 : 3 * d // 4, w // 4 : 3 * w // 4]
    border = np.concatenate([v[:, :, : w // 8].ravel(), v[:, :, -w // 8 :].ravel()])
    return centre.mean() > border.mean() + 3 * (border.std() + 1e-9) or (
        np.percentile(centre, 90) > 5 * max(abs(np.percentile(border, 90)), 1e-6)
    )


def test_click_trap_rotate_reconstruct_shows_cell(sim_window, qtbot):
    win = sim_window
    assert win.banner.isVisible()
    assert win.live_view.last_index is None  # the camera starts with the trap
    win.buttons["trap"].click()
    qtbot.waitUntil(lambda: win.buttons["rotate"].isEnabled(), timeout=60000)
    qtbot.waitUntil(lambda: win.live_view.meter.count > 10, timeout=60000)
    # like the operator, wait until the cell sits still in the trap before rotating
    trapped: list[bool] = []
    waiter = threading.Thread(target=lambda: trapped.append(win.controller.wait_trapped(60.0)))
    waiter.start()
    qtbot.waitUntil(lambda: bool(trapped), timeout=70000)
    waiter.join()
    assert trapped == [True], win.log_panel.plain_text()[-2000:]
    # the controller reports the trapped cell by itself: status bar and log
    qtbot.waitUntil(lambda: win.status_trapped.text() == "cell trapped", timeout=10000)
    assert "cell trapped" in win.log_panel.plain_text()
    win.buttons["rotate"].click()
    qtbot.waitUntil(lambda: win.buttons["reconstruct"].isEnabled() and _state(win) == "ROTATING", timeout=30000)
    win.buttons["reconstruct"].click()
    qtbot.waitUntil(lambda: win.volume_view.shown_version is not None, timeout=120000)
    # the volume shown in napari (not just the controller's) must come to contain the cell
    def shown_cell() -> bool:
        snap = win.volume_view.snapshot
        return snap is not None and snap.coverage_deg >= 180 and _cell_visible(win.volume_view.layer.data)

    # wait for the cell, or for the run to end (then the final volume must show it)
    qtbot.waitUntil(lambda: shown_cell() or _state(win) in ("IDLE", "ERROR"), timeout=300000)
    win.volume_view.refresh()
    result = win.controller.latest_result()
    assert _state(win) != "ERROR", win.log_panel.plain_text()[-2000:]
    assert shown_cell(), f"no cell in the shown volume; last detection box {getattr(result, 'box', None)}"
    layer = win.volume_view.layer
    assert layer.contrast_limits[1] > layer.contrast_limits[0]
    shot = win.volume_view.screenshot()
    assert shot[..., :3].max() > 50  # napari rendered something, not a black canvas
    assert win.live_view.circle_item.isVisible() or win.live_view.last_result_index is not None
    assert win.error_count == 0, win.log_panel.plain_text()[-2000:]
    win.buttons["stop"].click()
    qtbot.waitUntil(lambda: _state(win) in ("IDLE", "FINISHING"), timeout=60000)
