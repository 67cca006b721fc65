"""The simulated rig's physical world: one cell in the MCF trap, the fibre, the SLM pattern.

The devices in ``drivers/simulated.py`` are thin views of one :class:`SimulatedWorld`: the
SLM writes its pattern here, the trap switches the laser here, the cameras render what is
here. Every public method takes ``self.lock`` because the camera thread and the SLM thread
both touch the world.

Cost notes: the 1080x1920 SLM-to-core label map is built once; reading an SLM pattern uses
the precomputed flat indices of the ~15k core pixels (~0.3 ms instead of ~10 ms), and the
far field and its beam summary are cached until the SLM pattern or the fibre changes.
If the config sets ``slm.grating_period_px``, the blazed carrier (angle 0 unless
``set_grating_angle``) is removed before reading the per-core phases: only the first order
couples into the cores, and the modulus of each core's mean field is its coupling.
"""

from __future__ import annotations

import threading

import numpy as np

from mcf_rotator.config import RigConfig
from mcf_rotator.holography.mcf import (
    FarFieldGrid,
    MCFGeometry,
    SLMCoreMapping,
    far_field_intensity,
    far_field_matrix,
    grey_to_phase,
    phase_to_grey,
)
from mcf_rotator.simulation.brightfield import BrightfieldOptics, CellInstance, Scene, render_scene
from mcf_rotator.simulation.fibre import SimulatedFibre
from mcf_rotator.simulation.phantom import CellPhantom, pose_matrix
from mcf_rotator.simulation.trap import BeamState, FarFieldAnalyser, RotationalTrap, TrapParameters

__all__ = ["SimulatedWorld", "geometry_from_config"]


def geometry_from_config(config: RigConfig) -> MCFGeometry:
    """The fibre's core map from the config (file, or a hexagonal lattice)."""
    f = config.fibre
    if f.core_map is not None:
        geo = MCFGeometry.from_file(f.core_map, mode_field_diameter_um=f.mode_field_diameter_um,
                                    wavelength_um=f.wavelength_um)
        return geo
    geo = MCFGeometry.hexagonal(f.rings, f.pitch_um, f.mode_field_diameter_um, f.wavelength_um)
    return MCFGeometry(geo.core_positions_um, geo.mode_field_diameter_um, geo.wavelength_um, f.fibre_id)


class SimulatedWorld:
    """Cell + trap + fibre + SLM state, advanced by a simulated clock (``time_s``).

    Frames carry this clock (``sim_time_s``, also the frame timestamp) and the controller
    turns the ellipse on it, so the cell turns at the set rate per simulated second whatever
    the machine's load.
    """

    def __init__(self, config: RigConfig | None = None, realtime: bool = False) -> None:
        self.config = config if config is not None else RigConfig()
        self.realtime = bool(realtime)
        self.lock = threading.RLock()
        sim = self.config.simulation
        self.rng = np.random.default_rng([sim.seed, 31337])
        self.phantom = CellPhantom.random(sim.seed, sim.cell_diameter_um)
        self.geometry = geometry_from_config(self.config)  # InputFileError names a bad core map
        slm = self.config.slm
        self.mapping = SLMCoreMapping.build(
            self.geometry, (slm.height, slm.width), slm.pixel_pitch_um, self.config.fibre.slm_to_facet_magnification
        )
        self.fibre = SimulatedFibre(self.geometry, seed=sim.seed, mapping=self.mapping)
        self.grid = FarFieldGrid.for_geometry(self.geometry, 64)
        self._ff_matrix = far_field_matrix(self.geometry, self.grid)
        # complex64 (N, M*M): a broadcast multiply-sum is ~20x faster here than the BLAS call in
        # far_field_intensity (which also upcasts the matrix to complex128 per call)
        self._ff_matrix_t = np.ascontiguousarray(self._ff_matrix.T)
        self._analyser = FarFieldAnalyser(
            self.geometry, self.grid, far_field_intensity(np.zeros(self.geometry.n_cores), self._ff_matrix)
        )
        self._core_idx = np.flatnonzero(self.mapping.labels.ravel() >= 0)
        self._core_lab = self.mapping.labels.ravel()[self._core_idx]
        self._core_count = np.bincount(self._core_lab, minlength=self.geometry.n_cores).astype(float)
        self._grating = self._grating_at_cores()
        self.trap = RotationalTrap(
            TrapParameters(brownian_deg=sim.brownian_deg, drift_um_s=sim.drift_um_s, axis_tilt_deg=sim.axis_tilt_deg),
            seed=sim.seed,
        )
        self.laser_enabled = False
        self.power_mw = self.trap.params.nominal_power_mw
        self.slm_phase: np.ndarray | None = None
        self._core_coupling = np.ones(self.geometry.n_cores, complex)  # flat SLM
        self._beam_cache: tuple[np.ndarray, BeamState] | None = None
        self._volume_cache: dict[int, np.ndarray] = {}
        #: simulated seconds; only :meth:`advance` moves it (the camera: one frame period per
        #: frame). ``realtime`` merely paces the camera's reads with the wall clock, so on a busy
        #: machine simulated time runs slower than the wall clock and every motion (the cell's,
        #: the ellipse's via the controller) stays consistent per simulated second.
        self.time_s = 0.0

    # ------------------------------------------------------------------ SLM side
    def _grating_at_cores(self, angle_deg: float = 0.0) -> np.ndarray | None:
        period = self.config.slm.grating_period_px
        if not period:
            return None
        w = self.mapping.labels.shape[1]
        rows, cols = np.divmod(self._core_idx, w)
        a = np.deg2rad(angle_deg)
        return 2 * np.pi * (cols * np.cos(a) + rows * np.sin(a)) / period

    def set_grating_angle(self, angle_deg: float) -> None:
        """Direction of the blazed carrier the coupling optics pick (default 0: along rows).

        Only used when ``config.slm.grating_period_px`` is set; a pattern with another
        carrier couples poorly, as on the real bench.
        """
        with self.lock:
            self._grating = self._grating_at_cores(angle_deg)

    def set_slm_phase(self, phase_image: np.ndarray, quantise_two_pi_grey: int | None = None) -> None:
        """The SLM shows ``phase_image`` (radians, SLM shape); per-core coupling is read once.

        ``quantise_two_pi_grey`` applies the SLM's 8-bit quantisation (on the core pixels only).
        """
        phase_image = np.asarray(phase_image)
        if phase_image.shape != self.mapping.labels.shape:
            raise ValueError(f"SLM phase image has shape {phase_image.shape}, the SLM is {self.mapping.labels.shape}")
        ph = phase_image.ravel()[self._core_idx].astype(np.float64)
        if quantise_two_pi_grey is not None:
            ph = grey_to_phase(phase_to_grey(ph, quantise_two_pi_grey), quantise_two_pi_grey)
        if self._grating is not None:
            ph = ph - self._grating
        re = np.bincount(self._core_lab, np.cos(ph), minlength=self.geometry.n_cores)
        im = np.bincount(self._core_lab, np.sin(ph), minlength=self.geometry.n_cores)
        coupling = (re + 1j * im) / np.maximum(self._core_count, 1)
        with self.lock:
            self.slm_phase = phase_image
            self._core_coupling = coupling
            self._beam_cache = None

    def set_slm_grey(self, grey: np.ndarray) -> None:
        """The SLM shows 8-bit grey levels (through the config's 2-pi LUT)."""
        self.set_slm_phase(grey_to_phase(np.asarray(grey), self.config.slm.two_pi_grey))

    def set_core_phases(self, phases: np.ndarray) -> None:
        """Shortcut for simulations: SLM-side per-core phases (N,) without an SLM image."""
        phases = np.asarray(phases, dtype=np.float64)
        if phases.shape != (self.geometry.n_cores,):
            raise ValueError(f"expected {self.geometry.n_cores} core phases, got shape {phases.shape}")
        with self.lock:
            self.slm_phase = None
            self._core_coupling = np.exp(1j * phases)
            self._beam_cache = None

    def slm_core_phases(self) -> np.ndarray:
        """Per-core phases the SLM currently imposes (before the fibre)."""
        with self.lock:
            return np.angle(self._core_coupling)

    def total_core_phases(self) -> np.ndarray:
        """Phases at the distal facet: SLM + hidden distortion (ground truth for tests)."""
        with self.lock:
            return self.fibre.total_phases(np.angle(self._core_coupling))

    def core_amplitudes(self) -> np.ndarray:
        """Field amplitude per core at the distal facet (coupling x fibre non-uniformity)."""
        with self.lock:
            return np.abs(self._core_coupling) * self.fibre.amplitudes

    # ------------------------------------------------------------------ fibre / laser
    def rebend_fibre(self, seed: int) -> None:
        with self.lock:
            self.fibre.rebend(seed)
            self._beam_cache = None

    def set_laser(self, enabled: bool, power_mw: float | None = None) -> None:
        """Switch the trapping laser. Switching it on after a cell was lost puts a new cell
        (the same phantom, so the ground truth stays valid) in the trap: the operator
        flushes the next cell in before re-trapping, e.g. after a calibration."""
        with self.lock:
            if enabled and not self.laser_enabled and self.trap.lost:
                self.trap.reset(self.trap.theta_deg)
            self.laser_enabled = bool(enabled)
            if power_mw is not None:
                self.power_mw = float(power_mw)

    # ------------------------------------------------------------------ beam
    def _beam(self) -> tuple[np.ndarray, BeamState]:
        if self._beam_cache is None:
            c = (self.core_amplitudes() * np.exp(1j * self.total_core_phases())).astype(np.complex64)
            m = self.grid.size
            intensity = (np.abs((c[:, None] * self._ff_matrix_t).sum(0)) ** 2).reshape(m, m).astype(np.float32)
            self._beam_cache = (intensity, self._analyser(intensity))
        return self._beam_cache

    def beam_far_field(self) -> np.ndarray:
        """(M, M) far-field intensity the cell sees (rows = v), zero when the laser is off."""
        with self.lock:
            intensity = self._beam()[0]
            return intensity.copy() if self.laser_enabled else np.zeros_like(intensity)

    def beam_state(self) -> BeamState:
        """Orientation, ellipticity and efficiency of the current beam (laser on or not)."""
        with self.lock:
            return self._beam()[1]

    # ------------------------------------------------------------------ time
    def advance(self, dt_s: float) -> None:
        """Advance the simulated clock and the cell by ``dt_s`` seconds."""
        with self.lock:
            beam = self._beam()[1] if self.laser_enabled else BeamState.dark()
            self.trap.step(dt_s, beam, self.power_mw, self.laser_enabled)
            self.time_s += dt_s

    # ------------------------------------------------------------------ cell state
    @property
    def true_angle_deg(self) -> float:
        with self.lock:
            return float(self.trap.theta_deg)

    @property
    def trapped(self) -> bool:
        with self.lock:
            return self.trap.trapped

    def true_pose(self) -> np.ndarray:
        """3x3 cell orientation now (spin about the tilted rotation axis)."""
        with self.lock:
            tilt_in, tilt_out = self.trap.tilt_deg()
            return pose_matrix(self.trap.theta_deg, tilt_in, tilt_out)

    def cell_position_um(self) -> np.ndarray:
        """(x, y) offset of the cell from the trap centre (image columns, rows)."""
        with self.lock:
            return self.trap.position_um.copy()

    def reset_cell(self) -> None:
        """Put a cell back in the trap (after one was lost)."""
        with self.lock:
            self.trap.reset()

    def ground_truth_volume(self, size: int = 128) -> np.ndarray:
        """Attenuation volume (H, D, W) of the cell at angle 0 (cached per size)."""
        with self.lock:
            if size not in self._volume_cache:
                self._volume_cache[size] = self.phantom.voxelize(size)
            return self._volume_cache[size]

    def voxel_um(self, size: int = 128) -> float:
        return self.phantom.default_voxel_um(size)

    # ------------------------------------------------------------------ imaging
    def brightfield_optics(self, exposure_ms: float | None = None, bit_depth: int | None = None) -> BrightfieldOptics:
        """Camera optics from the config (object pixel, exposure, bit depth, defocus blur)."""
        cam, sim = self.config.camera, self.config.simulation
        px = self.config.optics.object_pixel_um
        bits = int(bit_depth or cam.bit_depth)
        return BrightfieldOptics(
            pixel_um=px,
            illumination=200.0 * (1 << max(bits - 8, 0)),
            exposure_ms=float(exposure_ms or cam.exposure_ms),
            bit_depth=bits,
            defocus_px=0.25 * abs(sim.defocus_um) / px,
        )

    def render_brightfield(
        self,
        shape: tuple[int, int] | None = None,
        optics: BrightfieldOptics | None = None,
        rng: np.random.Generator | None = None,
        centre_px: tuple[float, float] | None = None,
        walls: bool = True,
    ) -> tuple[Scene, dict]:
        """Brightfield frame of the field now and the ground truth that goes with it.

        The trap centre is the frame centre (or ``centre_px``); the cell sits at its simulated
        offset from it. ``walls=False`` for crops inside the capillary lumen. Returns the scene
        and a metadata dict (true angle, time, trapped).
        """
        with self.lock:
            shape = tuple(shape or self.config.simulation.camera_shape)
            optics = optics or self.brightfield_optics()
            cy, cx = centre_px if centre_px is not None else ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)
            pos = self.trap.displacement_um()
            cell = CellInstance(self.phantom, self.true_pose(),
                                (cy + pos[1] / optics.pixel_um, cx + pos[0] / optics.pixel_um))
            meta = {
                "true_angle_deg": float(self.trap.theta_deg),
                "sim_time_s": float(self.time_s),
                "trapped": bool(self.trap.trapped),
                "cell_centre_px": (float(cell.centre_px[0]), float(cell.centre_px[1])),
                "axis_tilt_deg": float(self.trap.tilt_deg()[0]),
            }
            rng = rng if rng is not None else self.rng
        scene = render_scene(shape, [cell], optics, rng, walls=walls,
                             noise=self.config.simulation.noise)
        return scene, meta
