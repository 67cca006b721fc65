"""Rotating-ellipse sequencer and the thread that drives the SLM with it.

The trap rotates the cell by rotating an elliptical far-field spot about the beam axis. An
ellipse at phi and phi + 180 deg is the same spot, so one half-turn of holograms (180 /
``step_deg`` steps) is generated once, cached as per-core phases, and reused for every turn.
The calibration correction is added *after* the cache, so a new calibration applies at once
without regenerating holograms. (The model here has one rotation axis, the fibre axis; the
MCF-OCR's other rotation modes need a 3D trap model this package does not have.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Protocol

import numpy as np

from mcf_rotator.drivers.protocols import SLM
from mcf_rotator.holography.mcf import FarFieldGrid, SLMCoreMapping, phase_to_grey
from mcf_rotator.holography.targets import ellipse_target, ellipse_targets

log = logging.getLogger(__name__)


class HologramGenerator(Protocol):
    """Anything that turns a far-field target intensity (M, M) into per-core phases (N,)."""

    def phases(self, target: np.ndarray) -> np.ndarray: ...


def _as_correction(correction: Any, n_cores: int) -> np.ndarray:
    """Accept None, an (N,) array or a calibration record (``.correction_rad``)."""
    if correction is None:
        return np.zeros(n_cores)
    values = getattr(correction, "correction_rad", correction)
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.shape != (n_cores,):
        raise ValueError(f"calibration correction has {arr.size} cores, the fibre has {n_cores}")
    if not np.isfinite(arr).all():
        raise ValueError("calibration correction contains non-finite phases")
    return arr


class EllipseSequencer:
    """SLM phase image for the elliptical spot at any commanded angle.

    ``generator`` makes per-core phases from a target (CoreNet, GS, ...); ``mapping`` puts
    them on the SLM; ``correction`` is the per-core calibration (added to every pattern).
    ``grid`` defaults to ``generator.grid``; ``axes`` are the ellipse's 1/e^2 radii in grid
    pixels and ``centre`` its offset (see :mod:`~mcf_rotator.holography.targets`).
    """

    def __init__(
        self,
        generator: HologramGenerator,
        mapping: SLMCoreMapping,
        correction: Any = None,
        step_deg: float = 1.0,
        two_pi_grey: int = 255,
        *,
        grid: FarFieldGrid | None = None,
        axes: tuple[float, float] = (6.0, 2.5),
        centre: tuple[float, float] = (0.0, 0.0),
        grating_period_px: float | None = None,
        grating_angle_deg: float = 0.0,
        image_cache_size: int = 4,
    ) -> None:
        n_steps = 180.0 / step_deg
        if step_deg <= 0 or abs(n_steps - round(n_steps)) > 1e-6:
            raise ValueError(f"step_deg must divide 180 deg, got {step_deg}")
        grid = grid if grid is not None else getattr(generator, "grid", None)
        if grid is None:
            raise ValueError("no far-field grid: pass grid= or use a generator with a .grid")
        self.generator = generator
        self.mapping = mapping
        self.grid = grid
        self.step_deg = float(step_deg)
        self.n_steps = int(round(n_steps))
        self.two_pi_grey = int(two_pi_grey)
        self.axes = (float(axes[0]), float(axes[1]))
        self.centre = (float(centre[0]), float(centre[1]))
        self._lock = threading.RLock()
        self._phases: dict[int, np.ndarray] = {}
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()
        self._image_cache_size = max(1, int(image_cache_size))
        self._correction = _as_correction(correction, mapping.n_cores)
        self._labels = mapping.labels
        self._grating: np.ndarray | None = None
        if grating_period_px:
            h, w = mapping.labels.shape
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            a = np.deg2rad(grating_angle_deg)
            self._grating = (2 * np.pi / grating_period_px) * (xx * np.cos(a) + yy * np.sin(a))

    # -- configuration ----------------------------------------------------------------
    @property
    def correction(self) -> np.ndarray:
        return self._correction.copy()

    def set_correction(self, correction: Any) -> None:
        """Swap the calibration layer (array (N,), record or None); cached holograms stay."""
        corr = _as_correction(correction, self.mapping.n_cores)
        with self._lock:
            self._correction = corr
            self._images.clear()

    def set_ellipse(self, axes: tuple[float, float] | None = None, centre: tuple[float, float] | None = None) -> None:
        """Change the spot; clears the hologram cache."""
        with self._lock:
            if axes is not None:
                self.axes = (float(axes[0]), float(axes[1]))
            if centre is not None:
                self.centre = (float(centre[0]), float(centre[1]))
            self._phases.clear()
            self._images.clear()

    # -- holograms ------------------------------------------------------------------
    def step_index(self, angle_deg: float) -> int:
        """Cache slot of a (cumulative) angle: nearest step, modulo the 180 deg symmetry."""
        return int(np.round(angle_deg / self.step_deg)) % self.n_steps

    def step_angle(self, index: int) -> float:
        return index * self.step_deg

    def target(self, angle_deg: float) -> np.ndarray:
        """The far-field target (M, M) shown at ``angle_deg`` (quantised to the step)."""
        return ellipse_target(self.grid, self.axes, self.step_angle(self.step_index(angle_deg)), self.centre)

    def core_phases(self, angle_deg: float) -> np.ndarray:
        """Per-core hologram phases (N,) for the angle, without calibration (cached)."""
        k = self.step_index(angle_deg)
        with self._lock:
            ph = self._phases.get(k)
        if ph is None:
            ph = np.asarray(self.generator.phases(self.target(self.step_angle(k))), np.float64)
            with self._lock:
                self._phases[k] = ph
        return ph

    def precompute(
        self, progress: Callable[[int, int], None] | None = None, orientation_true: bool = True
    ) -> None:
        """Fill the cache for every step (one batched call when the generator has one).

        With ``orientation_true`` (and a batched generator that knows its fibre), each step gets
        the hologram whose *realised* beam orientation is nearest the commanded angle, chosen
        among candidates for finely spaced target angles. A generator's orientation error
        (CoreNet: a few degrees, up to ~20 deg at some angles on the hexagonal lattice) would
        otherwise make the trapped cell turn in jerks; here the beam turns evenly.
        """
        missing = [k for k in range(self.n_steps) if k not in self._phases]
        if not missing:
            return
        batch = getattr(self.generator, "phases_batch", None)
        geometry = getattr(self.generator, "geometry", None)
        mask = getattr(self.generator, "mask", None)
        if orientation_true and batch is not None and geometry is not None and mask is not None:
            self._precompute_orientation_true(missing, batch, geometry, mask)
            if progress:
                progress(self.n_steps, self.n_steps)
            return
        if batch is not None:
            targets = ellipse_targets(self.grid, self.axes, np.array(missing) * self.step_deg, self.centre)
            result = np.asarray(batch(targets), np.float64)
            with self._lock:
                for k, ph in zip(missing, result):
                    self._phases[k] = ph
            if progress:
                progress(self.n_steps, self.n_steps)
            return
        for i, k in enumerate(missing):
            self.core_phases(self.step_angle(k))
            if progress:
                progress(i + 1, len(missing))

    def _precompute_orientation_true(
        self, missing: list[int], batch: Callable[[np.ndarray], np.ndarray], geometry: Any, mask: np.ndarray
    ) -> None:
        from mcf_rotator.holography.mcf import far_field_intensity, far_field_matrix
        from mcf_rotator.holography.quality import beam_orientation_deg, correlation

        oversample = 8
        cand_angles = np.arange(self.n_steps * oversample) * (self.step_deg / oversample)
        cand = np.asarray(batch(ellipse_targets(self.grid, self.axes, cand_angles, self.centre)), np.float64)
        matrix = far_field_matrix(geometry, self.grid)
        realised = np.empty(len(cand))
        quality = np.empty(len(cand))
        for i0 in range(0, len(cand), 256):
            inten = far_field_intensity(cand[i0 : i0 + 256], matrix)
            realised[i0 : i0 + 256] = beam_orientation_deg(inten, mask)
            tg = ellipse_targets(self.grid, self.axes, realised[i0 : i0 + 256], self.centre)
            quality[i0 : i0 + 256] = correlation(inten, tg, mask)
        with self._lock:
            for k in missing:
                want = k * self.step_deg
                err = np.abs((realised - want + 90.0) % 180.0 - 90.0)
                # nearest orientation; among those within 0.25 step, the best-shaped spot
                close = err <= err.min() + 0.25 * self.step_deg
                best = np.flatnonzero(close)[np.argmax(quality[close])]
                self._phases[k] = cand[best]

    @property
    def n_cached(self) -> int:
        return len(self._phases)

    def corrected_core_phases(self, angle_deg: float) -> np.ndarray:
        """Hologram + calibration correction, per core (N,)."""
        return self.core_phases(angle_deg) + self._correction

    def phase_image(self, angle_deg: float) -> np.ndarray:
        """SLM phase image (H, W) float32 radians in [0, 2 pi) for the angle."""
        k = self.step_index(angle_deg)
        with self._lock:
            img = self._images.get(k)
            if img is not None:
                self._images.move_to_end(k)
                return img
        lut = np.append(self.corrected_core_phases(angle_deg), 0.0).astype(np.float32)
        if self._grating is None:  # wrap the per-core table, not the 2-megapixel image (~8x cheaper)
            img = np.mod(lut, np.float32(2 * np.pi))[self._labels]
        else:
            img = lut[self._labels]
            img += self._grating
            img = np.mod(img, np.float32(2 * np.pi), out=img)
        img.setflags(write=False)
        with self._lock:
            self._images[k] = img
            while len(self._images) > self._image_cache_size:
                self._images.popitem(last=False)
        return img

    def grey_image(self, angle_deg: float) -> np.ndarray:
        """The same pattern as 8-bit grey through the SLM's LUT (``two_pi_grey``)."""
        return phase_to_grey(self.phase_image(angle_deg), self.two_pi_grey)


class RotationDriver:
    """Advances the commanded angle at ``rate_deg_s`` and writes each new step to the SLM.

    Runs in its own daemon thread; the SLM is written only when the angle moves to a new
    step and never faster than ``slm.refresh_rate_hz``. ``angle_deg`` is cumulative (not
    wrapped). A device error stops the thread; ``error`` holds the message and ``on_error``
    (if given) is called with it from the driver thread.

    With ``clock`` (a function returning seconds, e.g. a simulated world's time) there is no
    thread: whoever owns that clock calls :meth:`tick` (the simulated camera before each
    frame), so the ellipse turns at ``rate_deg_s`` of *that* time however fast the CPU runs,
    and a device error is raised to the caller.

    A closed-loop controller (:mod:`mcf_rotator.rotation_control`) sets the rate with
    :meth:`command_rate` from the pipeline thread: clamped to ``[0, max_rate_deg_s]``, where
    ``max_rate_deg_s`` = ``max_step_per_refresh_deg`` x the SLM refresh rate.
    """

    def __init__(
        self,
        slm: SLM,
        sequencer: EllipseSequencer,
        rate_deg_s: float = 30.0,
        direction: int = 1,
        on_error: Callable[[str], None] | None = None,
        start_angle_deg: float = 0.0,
        clock: Callable[[], float] | None = None,
        max_step_per_refresh_deg: float = 20.0,
    ) -> None:
        self.slm = slm
        self.clock = clock
        self.sequencer = sequencer
        self._check_rate(rate_deg_s, direction)
        self._rate = float(rate_deg_s)
        self._direction = int(direction)
        self._angle = float(start_angle_deg)
        self._shown_step: int | None = None
        self._shown_angle: float | None = None
        self._frames = 0
        self._last_write_t = -float("inf")
        self._min_gap_s = 1.0 / max(float(getattr(slm, "refresh_rate_hz", 60.0)), 1e-3)
        if not (np.isfinite(max_step_per_refresh_deg) and max_step_per_refresh_deg > 0):
            raise ValueError(f"max_step_per_refresh_deg must be > 0 deg, got {max_step_per_refresh_deg}")
        self._max_step = float(max_step_per_refresh_deg)
        self._paused = False
        self._ticking = False  # clock mode: between start() and stop()
        self._last_tick = 0.0  # clock mode: clock reading at the last tick (set by start())
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.on_error = on_error
        self.error: str | None = None

    @staticmethod
    def _check_rate(rate: float, direction: int) -> None:
        if not np.isfinite(rate) or rate < 0:
            raise ValueError(f"rotation rate must be >= 0 deg/s, got {rate}")
        if direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {direction}")

    # -- state ----------------------------------------------------------------------
    @property
    def angle_deg(self) -> float:
        """Commanded cumulative angle (deg)."""
        with self._lock:
            return self._angle

    @property
    def shown_angle_deg(self) -> float | None:
        """Angle of the step currently on the SLM (None before the first write)."""
        with self._lock:
            return self._shown_angle

    @property
    def rate_deg_s(self) -> float:
        return self._rate

    @property
    def direction(self) -> int:
        return self._direction

    @property
    def frames_shown(self) -> int:
        return self._frames

    @property
    def is_running(self) -> bool:
        if self.clock is not None:
            return self._ticking
        return self._thread is not None and self._thread.is_alive()

    @property
    def is_paused(self) -> bool:
        return self._paused

    # -- commands -------------------------------------------------------------------
    def start(self) -> None:
        if self.is_running:
            return
        self.error = None
        if self.clock is not None:
            self._ticking = True
            self._last_tick = self.clock()
            self._write(force=True)
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rotation-driver", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._ticking = False
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout_s)
        self._thread = None

    def pause(self) -> None:
        """Hold the current angle (the pattern stays on the SLM, the cell keeps its pose)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def set_rate(self, rate_deg_s: float, direction: int | None = None) -> None:
        direction = self._direction if direction is None else int(direction)
        self._check_rate(rate_deg_s, direction)
        with self._lock:
            self._rate = float(rate_deg_s)
            self._direction = direction

    @property
    def max_rate_deg_s(self) -> float:
        """Fastest rate :meth:`command_rate` applies: the largest ellipse step per SLM refresh
        times the refresh rate (a faster ellipse would skip steps the cell needs to follow)."""
        return self._max_step / self._min_gap_s

    def command_rate(self, rate_deg_s: float, direction: int | None = None) -> float:
        """Apply a rate from a closed-loop controller (any thread): clamped to
        ``[0, max_rate_deg_s]`` instead of refused, and a non-finite rate holds the ellipse, so
        a bad estimate upstream can neither stop the loop with an exception nor spin the trap
        faster than the SLM can show. Returns the rate applied."""
        rate = float(rate_deg_s)
        rate = min(max(rate, 0.0), self.max_rate_deg_s) if np.isfinite(rate) else 0.0
        self.set_rate(rate, direction)
        return rate

    def show_now(self) -> None:
        """Write the pattern for the current angle immediately (e.g. after a new calibration)."""
        self._write(force=True)

    def tick(self) -> None:
        """Clock mode: advance the angle by the time since the last tick, show a new step."""
        if self.clock is None:
            raise RuntimeError("tick() is for a RotationDriver built with a clock; this one runs its own thread")
        if not self._ticking:
            return
        now = self.clock()
        self._advance(now - self._last_tick)
        self._last_tick = now
        self._write()

    def _advance(self, dt_s: float) -> None:
        with self._lock:
            if not self._paused:
                self._angle += self._direction * self._rate * dt_s

    # -- thread ---------------------------------------------------------------------
    def _write(self, force: bool = False) -> None:
        angle = self.angle_deg
        step = self.sequencer.step_index(angle)
        quantised = round(angle / self.sequencer.step_deg) * self.sequencer.step_deg
        if not force and step == self._shown_step:
            with self._lock:
                self._shown_angle = quantised
            return
        image = self.sequencer.phase_image(angle)
        # a slow hologram (cache miss, loaded CPU) must not lead to back-to-back writes: keep at
        # least one refresh period between two patterns, as the SLM cannot show them faster
        wait = self._min_gap_s - (time.monotonic() - self._last_write_t)
        if not force and self.clock is None and wait > 0 and self._stop.wait(wait):
            return
        self.slm.show_phase(image)
        self._last_write_t = time.monotonic()
        with self._lock:
            self._shown_step = step
            self._shown_angle = quantised
        self._frames += 1

    def _run(self) -> None:
        period = 1.0 / max(float(getattr(self.slm, "refresh_rate_hz", 60.0)), 1e-3)
        last = time.monotonic()
        next_tick = last
        try:
            self._write(force=True)
            while not self._stop.is_set():
                next_tick += period
                delay = next_tick - time.monotonic()
                if delay > 0:
                    if self._stop.wait(delay):
                        break
                else:
                    next_tick = time.monotonic()  # fell behind: do not burst to catch up
                now = time.monotonic()
                self._advance(now - last)
                last = now
                self._write()
        except Exception as exc:  # a device error must not kill the app silently
            msg = f"rotation stopped: {exc}"
            log.error(msg)
            self.error = msg
            if self.on_error is not None:
                self.on_error(msg)
