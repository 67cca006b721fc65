"""Calibration wizard walk-through on a re-bent fibre (fake steps until the real ones land)."""

from __future__ import annotations

import numpy as np
import pytest

from test_gui_main_window import FakeController  # noqa: E402  (same folder, pytest rootdir import)

pytestmark = pytest.mark.gui


class FakeSteps:
    """Stands in for calibration.wizard.CalibrationWizard on a fibre whose phases drifted."""

    def __init__(self, fail_once: str | None = None) -> None:
        self.rng = np.random.default_rng(1)
        self.true = self.rng.uniform(-np.pi, np.pi, 61)
        self.correction = np.zeros(61)
        self.calls: list[str] = []
        self.fail_once = fail_once

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_once:
            self.fail_once = None
            raise RuntimeError("no carrier found (saturated hologram)")

    def residual(self) -> float:
        r = np.angle(np.exp(1j * (self.true + self.correction)))
        return float(np.sqrt(np.mean(r**2)))

    def drift_check(self) -> dict:
        r = self.residual()
        return {"ok": r < 0.3, "residual_rad": r}

    def enter_calibration_mode(self) -> dict:
        self._call("mode")
        return {"trap_enabled": False}

    def capture_hologram(self) -> np.ndarray:
        self._call("hologram")
        y, x = np.mgrid[:128, :128]
        return 100 + 50 * np.cos(0.8 * x + 0.3 * y)

    def fourier_plane(self) -> dict:
        self._call("fourier")
        spec = np.ones((128, 128))
        spec[45, 100] = 1e6
        return {"log_spectrum": np.log1p(spec), "carrier_px": (100.0, 45.0)}

    def retrieve_phases(self) -> dict:
        self._call("phases")
        return {"phase_map": np.tile(np.linspace(-3, 3, 64), (64, 1)), "n_cores": 61, "fit_quality": 0.98}

    def apply(self) -> None:
        self._call("apply")
        self.correction = -self.true

    def verify(self) -> dict:
        self._call("verify")
        return {"residual_rad": self.residual(), "residual_map": np.zeros((64, 64))}

    def save(self) -> dict:
        self._call("save")
        return {"calibration_id": "cal-1"}


class StepsController(FakeController):
    def __init__(self, steps: FakeSteps) -> None:
        super().__init__()
        self.steps = steps

    def calibration_wizard(self) -> FakeSteps:
        return self.steps


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    from mcf_rotator.gui.main_window import MainWindow

    monkeypatch.setenv("MCF_ROTATOR_SETTINGS", str(tmp_path / "s.json"))
    made = []

    def make(steps):
        ctrl = StepsController(steps)
        win = MainWindow(ctrl)
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        made.append((win, ctrl))
        return win

    yield make
    for win, ctrl in made:
        win.close()
        ctrl.shutdown()


def _walk(qtbot, wiz) -> list[str]:
    seen = []
    while True:
        page = wiz.currentPage()
        if page.key == "apply":  # Apply is the operator's explicit decision
            assert not page.isComplete()
            page.action.click()
        qtbot.waitUntil(page.isComplete, timeout=30000)
        seen.append(page.key)
        if wiz.nextId() == -1:
            wiz.button(wiz.WizardButton.FinishButton).click()
            return seen
        wiz.next()


def test_drift_check_suggests_wizard_and_walkthrough_fixes_it(window, qtbot):
    steps = FakeSteps()
    win = window(steps)
    assert steps.residual() > 0.3  # the fibre was re-bent
    win.check_drift()
    assert win.drift_bar.isVisible()
    assert "re-bent" in win.drift_label.text()
    win.drift_button.click()
    wiz = win.wizard
    assert wiz is not None and wiz.isVisible()
    seen = _walk(qtbot, wiz)
    assert seen == ["mode", "hologram", "fourier", "phases", "apply", "verify", "save"]
    assert steps.calls == seen
    assert wiz.saved
    fourier = wiz.pages["fourier"]
    assert fourier.marker.data["x"][0] == pytest.approx(100.0)
    assert wiz.pages["hologram"].image_item.image.shape == (128, 128)
    verify = wiz.pages["verify"].status.text()
    assert "residual phase error:" in verify and " rad" in verify and "residual_rad" not in verify
    assert wiz.pages["hologram"].title().startswith("Step 2 of 7")
    assert "calibration saved to" in win.log_panel.plain_text()
    qtbot.waitUntil(lambda: not win.drift_bar.isVisible(), timeout=3000)
    win.check_drift()
    assert not win.drift_bar.isVisible()


def test_failed_step_blocks_next_and_can_retry(window, qtbot):
    steps = FakeSteps(fail_once="fourier")
    win = window(steps)
    wiz = win.open_calibration_wizard()
    for _ in range(2):
        qtbot.waitUntil(wiz.currentPage().isComplete, timeout=5000)
        wiz.next()
    page = wiz.currentPage()
    assert page.key == "fourier"
    qtbot.waitUntil(lambda: page.error is not None, timeout=5000)
    assert not page.isComplete() and page.retry.isVisibleTo(page)
    assert "no carrier" in page.status.text()
    page.retry.click()
    qtbot.waitUntil(page.isComplete, timeout=30000)
    wiz.reject()
    assert not wiz.saved


@pytest.fixture
def sim_window(qtbot, tmp_path, monkeypatch):
    pytest.importorskip("mcf_rotator.calibration.wizard")
    pytest.importorskip("mcf_rotator.controller")
    from mcf_rotator.gui.app import create_main_window

    monkeypatch.setenv("MCF_ROTATOR_SETTINGS", str(tmp_path / "gui_settings.json"))
    monkeypatch.chdir(tmp_path)  # nothing lands in the working directory (relative default paths)
    win = create_main_window(simulate=True)
    win.controller.config.paths.output_dir = tmp_path
    win.controller.output_dir = tmp_path
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


def test_simulated_rebent_fibre_walkthrough(sim_window, qtbot, tmp_path):
    """Calibrate, re-bend the simulated fibre, see the drift check fail, recalibrate."""
    win = sim_window
    world = win.controller.rig.world
    from mcf_rotator.calibration.wizard import CalibrationWizard

    assert isinstance(win.controller.calibration_wizard(), CalibrationWizard)
    wiz = win.open_calibration_wizard()
    assert _walk(qtbot, wiz)[-1] == "save" and wiz.saved
    assert win.controller.calibration is not None  # installed for the next run
    saved = list(tmp_path.glob("calibration/*.json"))
    assert len(saved) == 1
    qtbot.waitUntil(lambda: win.wizard is None, timeout=3000)
    win.check_drift()
    assert not win.drift_bar.isVisible()

    world.rebend_fibre(seed=7)
    report = win.check_drift()
    assert report.needs_recalibration
    assert win.drift_bar.isVisible() and "re-bent" in win.drift_label.text()
    win.drift_button.click()
    wiz = win.wizard
    _walk(qtbot, wiz)
    fourier = wiz.pages["fourier"]
    assert fourier.image_item.image is not None and len(fourier.marker.data) == 1
    assert wiz.pages["phases"].image_item.image is not None
    verify = wiz.pages["verify"].status.text()
    assert "residual phase error:" in verify and "rad RMS" in verify and "waves" in verify
    assert "residual_rms_rad" not in verify and "True" not in verify
    assert "brightest pixel:" in wiz.pages["hologram"].status.text()
    assert "fringe carrier:" in wiz.pages["fourier"].status.text()
    assert "anchor" not in wiz.pages["save"].status.text()  # no Path object's fields
    assert wiz.pages["phases"].colorbar is not None
    assert wiz.saved
    qtbot.waitUntil(lambda: not win.drift_bar.isVisible(), timeout=3000)
    assert not win.check_drift().needs_recalibration
    assert not world.laser_enabled  # calibration mode left: the laser is off again
    assert not list(tmp_path.glob("mcf-rotator-data"))


def test_results_read_in_words_and_units():
    from pathlib import Path

    from mcf_rotator.gui.wizard import describe_result

    text = describe_result({"max_count": 2929.0, "residual_rms_rad": None, "ok": True,
                            "carrier_cyc_per_px": (0.21, 0.13), "image": np.zeros((4, 4))})
    assert "brightest pixel: 2929 counts" in text
    assert "residual phase error: not measured yet" in text
    assert "verified: yes" in text and "fringe carrier: 0.21, 0.13 cycles/pixel" in text
    assert "None" not in text and "True" not in text and "max_count" not in text
    saved = describe_result(Path("/data/cal/calibration-1.json"))
    assert saved == "saved to /data/cal/calibration-1.json"


def test_apply_waits_for_the_button_and_save_happens_on_finish(window, qtbot, tmp_path):
    steps = FakeSteps()
    win = window(steps)
    wiz = win.open_calibration_wizard()
    while wiz.currentPage().key != "apply":
        qtbot.waitUntil(wiz.currentPage().isComplete, timeout=10000)
        wiz.next()
    page = wiz.currentPage()
    qtbot.wait(200)
    assert "apply" not in steps.calls and not page.isComplete()
    page.action.click()
    qtbot.waitUntil(page.isComplete, timeout=10000)
    assert steps.calls[-1] == "apply"
    wiz.next()
    qtbot.waitUntil(wiz.currentPage().isComplete, timeout=10000)
    wiz.next()
    assert wiz.currentPage().key == "save"
    qtbot.wait(200)
    assert "save" not in steps.calls and not wiz.saved  # nothing written before Finish
    wiz.button(wiz.WizardButton.FinishButton).click()
    qtbot.waitUntil(lambda: wiz.saved, timeout=5000)
    assert steps.calls[-1] == "save"
