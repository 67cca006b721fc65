"""Start-up: `mcf-rotator --simulate` path, corrupt settings, volume preview helpers."""

from __future__ import annotations

import numpy as np
import pytest

from mcf_rotator.gui.volume_view import contrast_for, preview


def test_preview_downsamples_by_block_mean():
    vol = np.arange(128**3, dtype=np.float32).reshape(128, 128, 128)
    small = preview(vol, 64)
    assert small.shape == (64, 64, 64) and small.dtype == np.float32
    assert small[0, 0, 0] == pytest.approx(vol[:2, :2, :2].mean())
    assert preview(vol[:32, :32, :32], 64).shape == (32, 32, 32)


def test_contrast_ignores_outliers_and_empty():
    vol = np.zeros((40, 40, 40), np.float32)
    assert contrast_for(vol) == (0.0, 1.0)
    vol[10:30, 10:30, 10:30] = 1.0
    vol[0, 0, 0] = 1e6  # one hot voxel must not set the display range
    lo, hi = contrast_for(vol)
    assert lo == 0.0 and hi == pytest.approx(1.0)
    vol[:5] = -0.5  # negative FBP ringing is shown black, it does not widen the range
    assert contrast_for(vol) == (0.0, pytest.approx(1.0))


@pytest.mark.gui
def test_run_app_simulated_opens_and_closes(qtbot, tmp_path, monkeypatch):
    pytest.importorskip("mcf_rotator.controller")
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from mcf_rotator.gui.app import run_app
    from mcf_rotator.gui.main_window import MainWindow

    settings = tmp_path / "gui_settings.json"
    settings.write_text("{ this is not json")  # corrupt settings must not block start-up
    monkeypatch.setenv("MCF_ROTATOR_SETTINGS", str(settings))
    monkeypatch.chdir(tmp_path)
    seen = []

    def close_main() -> None:
        wins = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if not wins:
            QTimer.singleShot(200, close_main)
            return
        seen.append(wins[0].banner.isVisible())
        wins[0].close()

    QTimer.singleShot(500, close_main)
    assert run_app(config_path=None, simulate=True) == 0
    assert seen == [True]  # the simulated banner was shown
    assert settings.read_text().startswith("{")  # rewritten with valid defaults on close
    import json

    json.loads(settings.read_text())
