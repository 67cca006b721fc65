"""Calibration wizard logic (no Qt): ordered steps, each a plain method returning data to show.

Order: :meth:`enter_calibration_mode` -> :meth:`capture_hologram` -> :meth:`fourier_plane`
-> :meth:`per_core_phase_map` -> :meth:`apply` -> :meth:`verify` -> :meth:`save`.
A failing step raises :class:`CalibrationError` naming the cause; nothing is applied before
:meth:`apply`, so the previous calibration stays active on any error (and :meth:`verify`
reverts to it when the new one does not verify). :meth:`drift_check` is the quick re-measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mcf_rotator.calibration.offaxis import PhaseRetrieval, check_signal, retrieve_phase, wrap
from mcf_rotator.calibration.record import CalibrationRecord
from mcf_rotator.drivers.protocols import SLM, Camera
from mcf_rotator.errors import CalibrationError, McfRotatorError
from mcf_rotator.holography.mcf import MCFGeometry, SLMCoreMapping

#: residual RMS above which a fresh calibration is rejected / a drift check asks to recalibrate
VERIFY_LIMIT_RAD = 0.3
DRIFT_LIMIT_RAD = 0.15


@dataclass
class DriftReport:
    residual_rms_rad: float
    threshold_rad: float
    needs_recalibration: bool
    message: str


def _residual(phases: np.ndarray, amplitudes: np.ndarray, positions: np.ndarray | None = None) -> float:
    """Amplitude-weighted RMS of the facet phases about their piston [and global tilt].

    Piston is invisible to the trap; a global tilt only shifts the far-field spot (the
    ~1e-4 cyc/px carrier uncertainty of one off-axis frame is a shift of < 0.1 far-field
    pixel), so with ``positions`` (N, 2) the best-fit plane is removed as well: what is left
    is the part of the error that blurs or distorts the ellipse.
    """
    w = np.asarray(amplitudes, float)
    d = wrap(phases - np.angle(np.sum(w * np.exp(1j * phases))))
    if positions is not None:
        a = np.column_stack([np.ones_like(d), np.asarray(positions, float)])
        coef, *_ = np.linalg.lstsq(a * w[:, None], d * w, rcond=None)
        d = wrap(d - a @ coef)
    return float(np.sqrt(np.sum(w * d**2) / np.sum(w)))


class CalibrationWizard:
    """Steps of the in-situ off-axis calibration of the per-core phases.

    ``on_apply(record_or_None)`` installs a correction (e.g. ``sequencer.set_correction``);
    ``previous`` is the calibration active now (restored on failure). ``facet_um_per_px``
    and ``carrier_hint`` default to the camera frame's metadata, then to ``previous``.
    ``on_enter()`` / ``on_leave()`` bring the rig into calibration mode (devices open, laser
    on) and out of it again; :meth:`enter_calibration_mode` and :meth:`drift_check` call the
    first, :meth:`leave_calibration_mode` (and the end of :meth:`drift_check`) the second.
    """

    STEPS = ("enter_calibration_mode", "capture_hologram", "fourier_plane", "per_core_phase_map",
             "apply", "verify", "save")

    def __init__(
        self,
        slm: SLM,
        camera: Camera,
        geometry: MCFGeometry,
        mapping: SLMCoreMapping,
        on_apply: Callable[[CalibrationRecord | None], None] | None = None,
        previous: CalibrationRecord | None = None,
        facet_um_per_px: float | None = None,
        carrier_hint: tuple[float, float] | None = None,
        grating_period_px: float | None = None,
        on_enter: Callable[[], None] | None = None,
        on_leave: Callable[[], None] | None = None,
    ) -> None:
        self.slm = slm
        self.on_enter = on_enter
        self.on_leave = on_leave
        self.camera = camera
        self.geometry = geometry
        self.mapping = mapping
        self.on_apply = on_apply
        self.previous = previous
        self.active = previous
        self.facet_um_per_px = facet_um_per_px
        self.carrier_hint = carrier_hint or (tuple(previous.carrier_cyc_per_px) if previous else None)
        self.grating_period_px = grating_period_px
        self.image: np.ndarray | None = None
        self.retrieval: PhaseRetrieval | None = None
        self.record: CalibrationRecord | None = None
        self._applied = np.zeros(geometry.n_cores)

    # -- helpers ------------------------------------------------------------------
    def _show(self, core_phases: np.ndarray) -> np.ndarray:
        img = self.mapping.phases_to_slm(core_phases, self.grating_period_px)
        self.slm.show_phase(img)
        return img

    def _capture(self) -> tuple[np.ndarray, dict]:
        try:
            if hasattr(self.camera, "is_acquiring") and not self.camera.is_acquiring:
                self.camera.start_acquisition()
            frame = self.camera.read_frame(2.0)
        except McfRotatorError as exc:
            raise CalibrationError(f"calibration camera: {exc}") from exc
        meta = dict(frame.metadata)
        if self.facet_um_per_px is None:
            self.facet_um_per_px = meta.get("facet_um_per_px")
        if self.facet_um_per_px is None:
            raise CalibrationError("facet scale unknown: set the calibration camera's um per pixel")
        if self.carrier_hint is None and meta.get("carrier_cyc_per_px") is not None:
            self.carrier_hint = tuple(meta["carrier_cyc_per_px"])
        return np.asarray(frame.image), meta

    def _full_scale(self) -> float:
        return float(2 ** int(getattr(self.camera, "bit_depth", 16)) - 1)

    def _measure(self, image: np.ndarray) -> PhaseRetrieval:
        full = self._full_scale()
        return retrieve_phase(image, self.geometry, float(self.facet_um_per_px), self.carrier_hint, full_scale=full)

    # -- steps --------------------------------------------------------------------
    def enter_calibration_mode(self) -> dict[str, Any]:
        """Flat per-core phases, no correction, on the SLM: the facet then shows the bare distortion."""
        if self.on_enter is not None:
            self.on_enter()
        self._applied = np.zeros(self.geometry.n_cores)
        img = self._show(self._applied)
        return {"slm_image": img, "message": "SLM shows a flat pattern; open the reference arm of the calibration camera"}

    def capture_hologram(self) -> dict[str, Any]:
        image, meta = self._capture()
        self.image = None
        self.retrieval = None
        check_signal(image, self._full_scale())  # laser off: a dark frame, said plainly
        self.image = image
        return {"image": image, "max_count": float(image.max()), "metadata": meta}

    def fourier_plane(self) -> dict[str, Any]:
        """Retrieve the phase (also checks carrier, saturation, core map); shows the spectrum."""
        if self.image is None:
            raise CalibrationError("capture a hologram first")
        self.retrieval = self._measure(self.image)
        r = self.retrieval
        return {"spectrum_log": r.spectrum_log, "sideband_px": r.sideband_px, "carrier_cyc_per_px": r.carrier,
                "filter_radius_cyc_per_px": r.filter_radius_cyc_per_px, "fringe_strength": r.quality["fringe_strength"]}

    def per_core_phase_map(self) -> dict[str, Any]:
        if self.retrieval is None:
            self.fourier_plane()
        r = self.retrieval
        assert r is not None
        return {"phase_map": r.phase_map, "core_centres_px": r.core_centres_px, "core_phases": r.core_phases,
                "core_amplitudes": r.core_amplitudes, "quality": r.quality}

    def apply(self) -> CalibrationRecord:
        """Correction = -(measured - applied), piston removed; installed and shown on the SLM."""
        if self.retrieval is None:
            self.per_core_phase_map()
        r = self.retrieval
        assert r is not None
        distortion = wrap(r.core_phases - self._applied)
        corr = wrap(-(distortion - np.angle(np.sum(r.core_amplitudes * np.exp(1j * distortion)))))
        self.record = CalibrationRecord(
            fibre_id=self.geometry.fibre_id,
            correction_rad=[float(v) for v in corr],
            carrier_cyc_per_px=r.carrier,
            fit_quality=dict(r.quality),
            facet_um_per_px=float(self.facet_um_per_px) if self.facet_um_per_px else None,
            core_centres_px=r.core_centres_px.tolist(),
        )
        self.carrier_hint = r.carrier
        self._install(self.record)
        self._show(corr)
        return self.record

    def verify(self, limit_rad: float = VERIFY_LIMIT_RAD) -> dict[str, Any]:
        """Re-measure with the correction applied; the residual (piston and tilt removed, see
        :func:`_residual`) should be flat. Reverts to the previous calibration if not."""
        if self.record is None:
            raise CalibrationError("apply a calibration before verifying it")
        self._show(self.record.correction)
        image, _ = self._capture()
        r = self._measure(image)
        res = _residual(r.core_phases, r.core_amplitudes, self.geometry.core_positions_um)
        self.record.residual_rms_rad = res
        self.record.fit_quality["residual_piston_only_rms_rad"] = _residual(r.core_phases, r.core_amplitudes)
        ok = res <= limit_rad
        if not ok:
            self._install(self.previous)
            raise CalibrationError(
                f"calibration did not verify: residual {res:.3f} rad RMS > {limit_rad} rad "
                "(fibre moved during calibration?); the previous calibration stays active"
            )
        return {"residual_rms_rad": res, "ok": ok, "phase_map": r.phase_map,
                "residual_piston_only_rms_rad": self.record.fit_quality["residual_piston_only_rms_rad"]}

    def save(self, path: str | Path) -> Path:
        if self.record is None:
            raise CalibrationError("nothing to save: apply a calibration first")
        return self.record.save(path)

    def run(self, save_to: str | Path | None = None) -> CalibrationRecord:
        """All steps in order (CLI and tests)."""
        self.enter_calibration_mode()
        self.capture_hologram()
        self.fourier_plane()
        self.per_core_phase_map()
        self.apply()
        self.verify()
        if save_to is not None:
            self.save(save_to)
        assert self.record is not None
        return self.record

    def _install(self, record: CalibrationRecord | None) -> None:
        self.active = record
        if self.on_apply is not None:
            self.on_apply(record)

    def leave_calibration_mode(self) -> None:
        """Back to the rig's idle state (laser off, calibration camera stopped); safe to repeat."""
        if self.on_leave is not None:
            self.on_leave()

    def drift_check(self, threshold_rad: float = DRIFT_LIMIT_RAD) -> DriftReport:
        """Show the active correction on a flat pattern, re-measure, report whether to recalibrate."""
        rec = self.active
        corr = rec.correction if rec is not None else np.zeros(self.geometry.n_cores)
        if self.on_enter is not None:
            self.on_enter()
        try:
            self._show(corr)
            image, _ = self._capture()
            check_signal(image, self._full_scale())
            r = self._measure(image)
        finally:
            self.leave_calibration_mode()
        res = _residual(r.core_phases, r.core_amplitudes, self.geometry.core_positions_um)
        need = res > threshold_rad
        msg = (f"phase drift {res:.3f} rad RMS > {threshold_rad} rad: recalibrate" if need
               else f"phase drift {res:.3f} rad RMS: calibration still good")
        return DriftReport(res, threshold_rad, need, msg)
