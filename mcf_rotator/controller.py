"""The rig controller: one state machine from "trap" to a saved volume, testable without Qt.

States::

    IDLE -> TRAPPING -> ROTATING -> RECONSTRUCTING -> FINISHING -> IDLE
      any state --(device / pipeline / recording error)--> ERROR --reset()--> IDLE

Threads (no signal per frame crosses them; the GUI pulls):

- camera thread: ``camera.read_frame`` -> recorder (every frame, from ``rotate()`` on) and
  ring buffer (drops oldest; back-pressure instead on the as-fast-as-possible simulated rig).
- pipeline thread (from ``reconstruct()``): ring buffer -> ``LivePipeline.process`` -> latest
  result, angle trace, volume snapshot (``events.volume_updated`` at <= 5 Hz). When the
  tracked coverage reaches ``config.rotation.target_coverage_deg`` (or ``stop()``) it runs
  FINISHING: stop rotation and camera, ``finalize()``, write volume/angles/report, close the
  recording, IDLE, ``events.finished(result)``.
- rotation: :class:`~mcf_rotator.holography.sequencer.RotationDriver` (own thread, wall-clock)
  or, when the simulated world runs on simulated time, the same driver on the world's clock,
  ticked by the camera thread so the ellipse turns at ``rate_deg_s`` of *simulated* time.
"""

from __future__ import annotations

import atexit
import enum
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
from psygnal import Signal, SignalGroup

from mcf_rotator.config import RigConfig
from mcf_rotator.drivers.protocols import Frame
from mcf_rotator.errors import FrameTimeoutError, McfRotatorError, ReconstructionError, RecordingError
from mcf_rotator.recording import Recorder, RecordingSummary
from mcf_rotator.rig import Rig, build_rig
from mcf_rotator.ringbuffer import BufferClosed, FrameRingBuffer
from mcf_rotator import strict_json

log = logging.getLogger(__name__)

VOLUME_EVENT_MIN_INTERVAL_S = 0.2  # volume_updated at <= 5 Hz
#: the ellipse must have turned this much more than the target before a run ends by coverage
COMMAND_MARGIN = 1.1
#: closed loop on the simulated world's own time: the camera runs at most this many frames ahead
#: of the pipeline (the world waits for it); a full 64-frame queue would delay the loop by ~1 s
LOOP_QUEUE_FRAMES = 2
#: the camera thread looks for the trapped cell at most this often (cell_centroid costs a few ms)
TRAP_CHECK_INTERVAL_S = 0.1
#: a cell is trapped when seen in this many consecutive checks within TRAP_TOLERANCE_PX
TRAP_STABLE_FRAMES = 5
TRAP_TOLERANCE_PX = 3.0
#: a trapped cell counts as lost after this many checks without it (or when it left the trap)
TRAP_LOST_CHECKS = 10


class RigState(str, enum.Enum):
    IDLE = "idle"
    TRAPPING = "trapping"
    ROTATING = "rotating"
    RECONSTRUCTING = "reconstructing"
    FINISHING = "finishing"
    ERROR = "error"


class InvalidTransitionError(McfRotatorError):
    """A command that the current state does not allow (message says what to do instead)."""


class ControllerEvents(SignalGroup):
    #: old state, new state (RigState)
    state_changed = Signal(object, object)
    #: level ("info" | "warning" | "error"), text
    message = Signal(str, str)
    error = Signal(str)
    #: version of the newest volume snapshot (emitted at most 5 times per second)
    volume_updated = Signal(int)
    #: RunResult
    finished = Signal(object)


@dataclass
class RunResult:
    """What a finished run produced (files are in ``run_dir``)."""

    run_dir: Path
    recording: RecordingSummary | None
    reconstruction: Any | None = None
    volume_path: Path | None = None
    angles_path: Path | None = None
    report_path: Path | None = None
    report: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# ----------------------------------------------------------------------------- trapped check
def cell_centroid(image: np.ndarray) -> tuple[float, float] | None:
    """(x, y) of the largest absorbing blob in a brightfield image, or None if there is none.

    Optical depth -log(I / background) with the median as background, minus its per-column
    median (capillary walls run along the columns); the blob is what is darker than half of
    the strongest absorption (and clearly above the noise).
    """
    import cv2

    img = np.asarray(image, np.float32)
    if img.ndim != 2 or img.size == 0:
        return None
    small = cv2.resize(img, (max(1, img.shape[1] // 2), max(1, img.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    bg = float(np.median(small))
    if bg <= 0:
        return None
    od = -np.log(np.clip(small / bg, 1e-3, None))
    # capillary walls are dark columns along the whole frame: remove what every row shares,
    # so a wall is never taken for the cell (a cell covers well under half of the rows)
    od = od - np.median(od, axis=0, keepdims=True)
    od = cv2.GaussianBlur(od, (5, 5), 1.5)
    noise = 1.4826 * float(np.median(np.abs(od - np.median(od)))) + 1e-6
    peak = float(od.max())
    if peak < max(6 * noise, 0.01):
        return None
    mask = (od > 0.5 * peak).astype(np.uint8)
    n, labels, stats, cents = cv2.connectedComponentsWithStats(mask)
    if n < 2:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[k, cv2.CC_STAT_AREA] < 4:
        return None
    cx, cy = cents[k]
    return float(cx * img.shape[1] / small.shape[1]), float(cy * img.shape[0] / small.shape[0])


class StableSpot:
    """Consecutive cell positions; ``add`` returns them once ``n`` in a row lie within
    ``tolerance_px`` of their mean (the cell is held still), else None. A miss starts over."""

    def __init__(self, n: int, tolerance_px: float) -> None:
        self.seen: deque[tuple[float, float]] = deque(maxlen=n)
        self.tolerance_px = float(tolerance_px)

    def clear(self) -> None:
        self.seen.clear()

    def add(self, c: tuple[float, float] | None) -> np.ndarray | None:
        if c is None:
            self.seen.clear()
            return None
        self.seen.append(c)
        if len(self.seen) < (self.seen.maxlen or 0):
            return None
        pts = np.array(self.seen)
        return pts if float(np.max(np.linalg.norm(pts - pts.mean(0), axis=1))) <= self.tolerance_px else None


# ----------------------------------------------------------------------------- defaults
def default_pipeline_factory(config: RigConfig) -> Any:
    """The live reconstruction pipeline sized for this rig's cell and rotation."""
    from mcf_rotator.reconstruction import live

    return live.LivePipeline(live_pipeline_config(config))


def live_pipeline_config(config: RigConfig) -> Any:
    """LivePipelineConfig from the rig: expected cell size in pixels, direction, step per frame."""
    from mcf_rotator.reconstruction.live import LivePipelineConfig

    cell_px = config.simulation.cell_diameter_um / config.optics.object_pixel_um
    h, w = config.simulation.camera_shape if config.camera.driver == "simulated" else (10**6, 10**6)
    roi = int(min(max(64, round(cell_px * 1.6 / 16) * 16), h, w))
    return LivePipelineConfig(
        roi_px=roi,
        cell_px=float(cell_px),
        direction=int(config.rotation.direction),
        nominal_step_deg=float(config.rotation.rate_deg_s / config.camera.frame_rate_hz),
        detector=learned_detector(config),
    )


def learned_detector(config: RigConfig) -> Any:
    """The YOLO cell detector (user weights from ``paths.detector_weights``, else the shipped
    ones), or None so the pipeline uses its classical detector sized for this rig's cell.

    Detection runs every few frames (``LivePipelineConfig.detect_every``), so its tens of ms on
    a CPU do not limit the frame rate.
    """
    from mcf_rotator.reconstruction.yolo import YoloCellDetector, default_weights_path

    weights = config.paths.detector_weights or default_weights_path()
    if not Path(weights).is_file():
        if config.paths.detector_weights:
            log.warning("detector weights %s not found; using the classical detector", weights)
        return None
    try:
        return YoloCellDetector(weights, threads=1)
    except Exception as exc:  # noqa: BLE001 - any load problem falls back, with the reason
        log.warning("learned cell detector unavailable (%s); using the classical detector", exc)
        return None


def prepare_learned_detector(config: RigConfig) -> None:
    """Import ultralytics now, on the calling thread, when :func:`learned_detector` will need it.

    Called before the camera thread starts, so the import (seconds, and it touches OpenCV's
    threading) never overlaps the camera's ``cv2`` calls; a failure is left for
    :func:`learned_detector` to report and fall back on.
    """
    from mcf_rotator.reconstruction.ultralytics_env import configure_opencv_threads

    configure_opencv_threads()
    from mcf_rotator.reconstruction.yolo import default_weights_path

    weights = config.paths.detector_weights or default_weights_path()
    if not Path(weights).is_file():
        return
    try:
        from mcf_rotator.reconstruction.ultralytics_env import setup_ultralytics

        setup_ultralytics(threads=1)
    except Exception as exc:  # noqa: BLE001 - learned_detector says why and falls back
        log.debug("ultralytics not preloaded: %s", exc)


def volume_voxel_um(config: RigConfig, pipeline: Any, recon: Any) -> float:
    """Voxel size of a volume: the final one's ``voxel_px`` camera pixels (its report), else the
    live preview's (the crop resampled to the live grid)."""
    v = getattr(recon, "voxel_um", None)
    if v:
        return float(v)
    px = float(config.optics.object_pixel_um)
    report = getattr(recon, "report", None)
    if isinstance(report, dict) and report.get("voxel_px"):
        return px * float(report["voxel_px"])
    roi = getattr(pipeline, "roi_px", None)
    live = getattr(getattr(pipeline, "recon", None), "w", None)
    if isinstance(roi, (int, float)) and roi and isinstance(live, int) and live:
        return px * float(roi) / live
    return px


def default_hologram_generator(config: RigConfig, geometry: Any) -> Any:
    """CoreNet when its weights load for this fibre, else weighted Gerchberg-Saxton.

    Weights come from ``config.paths.corenet_weights`` or the shipped default; weights
    trained for another fibre are refused by CoreNet itself and we fall back to GS.
    """
    try:
        from mcf_rotator.holography.corenet import CoreNetHologramGenerator, load_default_corenet

        bundle = load_default_corenet(config.paths.corenet_weights)
        return CoreNetHologramGenerator(bundle, geometry)
    except Exception as exc:  # noqa: BLE001 - any CoreNet problem falls back to GS
        log.warning("CoreNet unavailable (%s); using weighted GS holograms", exc)
    from mcf_rotator.holography.gs import GSHologramGenerator

    return GSHologramGenerator(geometry)


# ----------------------------------------------------------------------------- controller
class RigController:
    """Runs trap -> rotate -> reconstruct on a :class:`~mcf_rotator.rig.Rig`.

    ``pipeline_factory(config)`` makes the live pipeline; ``sequencer`` (an
    ``EllipseSequencer``-like object with ``phase_image``/``step_index``) overrides the one
    built from ``hologram_generator`` (default CoreNet, else GS). ``lockstep`` (default: the
    rig has a non-realtime simulated world) turns the ellipse on simulated time and makes the
    ring buffer apply back-pressure, so every frame is processed.
    """

    def __init__(
        self,
        config: RigConfig,
        rig: Rig | None = None,
        pipeline_factory: Callable[[RigConfig], Any] | None = None,
        hologram_generator: Any | None = None,
        *,
        sequencer: Any | None = None,
        calibration: Any | None = None,
        output_dir: str | Path | None = None,
        ring_capacity: int = 64,
        lockstep: bool | None = None,
    ) -> None:
        self.config = config
        self.rig = rig if rig is not None else build_rig(config)
        self.events = ControllerEvents()
        self.pipeline_factory = pipeline_factory or default_pipeline_factory
        self.hologram_generator = hologram_generator
        self.calibration = calibration
        self.output_dir = Path(output_dir) if output_dir is not None else Path(config.paths.output_dir)
        world = self.rig.world
        self.lockstep = bool(lockstep) if lockstep is not None else (world is not None and not getattr(world, "realtime", False))
        self.ring: FrameRingBuffer[Frame] = FrameRingBuffer(ring_capacity)
        self._ring_capacity = int(ring_capacity)
        #: stop recording (and finish) after this many frames; None = until coverage is reached
        self.max_frames: int | None = None
        #: write into exactly this folder instead of a new time-stamped one under output_dir
        self.run_dir_override: Path | None = None

        self._state = RigState.IDLE
        self._state_lock = threading.RLock()
        self._sequencer = sequencer
        self._fibre: tuple[Any, Any] | None = None
        self._rotation: Any = None
        #: closed loop (config.rotation.loop == "closed"): RotationLoop stepped by the pipeline
        self._loop: Any = None
        self._loop_status: Any = None
        self._loop_fallback: str | None = None  # why a closed loop fell back to open loop
        self._loop_correction = 0.0  # revision of the live angle by a re-solve, for the loop
        self._loop_fallback_frame: int | None = None
        self._beam_profiles: tuple[Any, Any] | None = None
        self._recorder: Recorder | None = None
        self._pipeline: Any = None
        self._camera_thread: threading.Thread | None = None
        self._pipeline_thread: threading.Thread | None = None
        self._camera_stop = threading.Event()
        self._pipeline_stop = threading.Event()
        self._pause = threading.Event()
        self._cancel = threading.Event()
        self._run_done = threading.Event()
        self._run_done.set()
        # set by stop() / cancel() / shutdown(): a running run_all() sequence ends at its next step
        self._sequence_abort = threading.Event()
        # FINISHING bookkeeping: steps so far (for the progress bar) and whether it was abandoned
        self._finish_lock = threading.RLock()
        self._finish_generation = 0
        self._finish_steps: list[str] = []
        self._finish_stage = 0
        self._finish_committed = False
        self._final_version: int | None = None
        self._close_lock = threading.Lock()
        self._stopping = False
        self._drops_at_reconstruct = 0
        self._closed_summary: RecordingSummary | None = None
        # monotonic time the rotation started (the angle plot's time zero)
        self._trace_origin: float | None = None
        self._latest_result: Any = None
        self._snapshot: Any = None
        self._trace_t: list[float] = []
        self._trace_a: list[float] = []
        # commanded (ellipse) angle at the exposure of every frame of the trace, for the plot
        self._trace_cmd: list[tuple[float, float]] = []
        self._processed_record_idx: list[int] = []
        # recording index of every frame that got an angle (the pipeline keeps only those)
        self._traced_record_idx: list[int] = []
        self._resolves_seen = 0  # live-angle re-solves of the pipeline reflected in the trace
        self._frame_times: deque[float] = deque(maxlen=60)
        self._frames_read = 0
        self._coverage = 0.0
        self._rotation_start_deg = 0.0
        self._last_volume_emit = 0.0
        self._run_dir: Path | None = None
        self._last_result: RunResult | None = None
        self._error_text: str | None = None
        self._connected = False
        # trap watch (camera thread): is a cell held still in the trap?
        self._trapped = False
        self._trapped_at: tuple[float, float] | None = None
        self._trap_seen = StableSpot(TRAP_STABLE_FRAMES, TRAP_TOLERANCE_PX)
        self._trap_misses = 0
        self._trap_next_check = 0.0
        for dev in self.rig.devices:
            dev.events.error.connect(self._make_device_error_handler(dev))

    # ================================================================== state
    @property
    def state(self) -> RigState:
        return self._state

    @property
    def last_error(self) -> str | None:
        return self._error_text

    @property
    def last_result(self) -> RunResult | None:
        return self._last_result

    @property
    def run_dir(self) -> Path | None:
        return self._run_dir

    def _set_state(self, new: RigState) -> None:
        with self._state_lock:
            old = self._state
            if old == new:
                return
            self._state = new
        log.info("rig state %s -> %s", old.value, new.value)
        self.events.state_changed.emit(old, new)

    def _require(self, command: str, *allowed: RigState) -> None:
        if self._stopping and command in ("rotate", "reconstruct"):
            raise InvalidTransitionError(f"cannot {command}: the run is being stopped")
        if self._state not in allowed:
            hint = {
                RigState.ERROR: "reset() after reading the error first",
                RigState.FINISHING: "wait until the run has finished",
            }.get(self._state, "allowed from " + ", ".join(s.value for s in allowed))
            raise InvalidTransitionError(f"cannot {command} while the rig is {self._state.value}: {hint}")

    def _info(self, text: str, level: str = "info") -> None:
        getattr(log, "warning" if level == "warning" else "info")(text)
        self.events.message.emit(level, text)

    # ================================================================== commands
    def trap(self) -> None:
        """Connect devices, laser on, ellipse at 0 deg, start the camera: TRAPPING."""
        with self._state_lock:
            self._require("trap", RigState.IDLE)
            self._set_state(RigState.TRAPPING)
        try:
            self._reset_run_data()
            self.rig.connect()
            self._connected = True
            self._ensure_sequencer()
            if self._stopped_while("trap"):
                return
            self.rig.trap.set_enabled(True)
            self.rig.slm.show_phase(self._sequencer.phase_image(0.0))
            if self.pipeline_factory is default_pipeline_factory:
                prepare_learned_detector(self.config)  # before the camera thread exists
            if self._stopped_while("trap"):
                return
            self._start_camera()
            if self._stopped_while("trap"):
                return
            self._info("trap on: ellipse at 0 deg, camera running")
        except Exception as exc:  # noqa: BLE001 - every failure is shown to the operator
            if self._state != RigState.TRAPPING:
                return  # stopped meanwhile: the failure belongs to a run that no longer exists
            self._fail(f"trap failed: {_describe(exc)}")
            raise

    def _stopped_while(self, command: str) -> bool:
        """True (after undoing what ``command`` started) when stop() ended TRAPPING meanwhile.

        Stop runs beside a slow command (devices connect, holograms are built), so the command
        checks between its steps instead of starting a camera on an idle rig.
        """
        if self._state == RigState.TRAPPING:
            return False
        self._teardown()
        log.info("%s abandoned: the rig was stopped meanwhile", command)
        return True

    def wait_trapped(self, timeout_s: float = 10.0, n_stable: int = 5, tolerance_px: float = 3.0) -> bool:
        """True once a cell is detected in ``n_stable`` consecutive new frames within ``tolerance_px``."""
        deadline = time.monotonic() + timeout_s
        spot = StableSpot(n_stable, tolerance_px)
        last_index = -1
        while (time.monotonic() < deadline and self._state == RigState.TRAPPING and not self._cancel.is_set()
               and not self._sequence_abort.is_set()):
            frame = self.ring.latest()
            if frame is None or frame.index == last_index:
                time.sleep(0.01)
                continue
            last_index = frame.index
            pts = spot.add(cell_centroid(frame.image))
            if pts is not None:
                self._mark_trapped(pts)
                return True
        if self._state == RigState.TRAPPING and not self._cancel.is_set() and not self._sequence_abort.is_set():
            self._info(f"no stable cell detected within {timeout_s:g} s", "warning")
        return False

    @property
    def trapped(self) -> bool:
        """True while a cell is held still in the trap (watched on the camera frames)."""
        return self._trapped

    def _mark_trapped(self, pts: np.ndarray) -> None:
        """A stable cell was seen at ``pts`` (K, 2) xy: set the flag, say so once."""
        with self._state_lock:
            was = self._trapped
            self._trapped = True
            self._trapped_at = (float(pts[:, 0].mean()), float(pts[:, 1].mean()))
            self._trap_misses = 0
        if not was:
            x, y = self._trapped_at
            self._info(f"cell trapped at x={x:.0f}, y={y:.0f} px")

    def _watch_trap(self, image: np.ndarray) -> None:
        """Camera thread, throttled: keep the ``trapped`` flag up to date, announce changes."""
        now = time.monotonic()
        if now < self._trap_next_check or self._state not in (
            RigState.TRAPPING, RigState.ROTATING, RigState.RECONSTRUCTING
        ):
            return
        self._trap_next_check = now + TRAP_CHECK_INTERVAL_S
        c = cell_centroid(image)
        if not self._trapped:
            pts = self._trap_seen.add(c)
            if pts is not None:
                self._mark_trapped(pts)
            return
        # trapped: lost when the cell disappears or leaves the trap (it turns in place)
        cell_px = self.config.simulation.cell_diameter_um / self.config.optics.object_pixel_um
        far = c is not None and self._trapped_at is not None and (
            float(np.hypot(c[0] - self._trapped_at[0], c[1] - self._trapped_at[1])) > max(10.0, 0.5 * cell_px)
        )
        self._trap_misses = self._trap_misses + 1 if (c is None or far) else 0
        if self._trap_misses >= TRAP_LOST_CHECKS:
            with self._state_lock:
                self._trapped = False
                self._trap_seen.clear()
                self._trap_misses = 0
            self._info("the cell left the trap", "warning")

    def rotate(self) -> None:
        """Start recording and turning the ellipse: ROTATING."""
        with self._state_lock:
            self._require("rotate", RigState.TRAPPING)
            try:
                self._start_recording()
                rot = self.config.rotation
                from mcf_rotator.holography.sequencer import RotationDriver

                # on the simulated world's own time the camera thread ticks the driver, so the
                # cell turns at the set rate per simulated second however loaded the machine is
                world = self._world_clock_source()
                # closed loop: the ellipse waits, with the cell at rest and aligned, until the
                # loop (from Reconstruct on) steers it with the tracked angles
                self._rotation = RotationDriver(
                    self.rig.slm, self._sequencer, 0.0 if rot.loop == "closed" else rot.rate_deg_s, rot.direction,
                    on_error=self._on_thread_error,
                    clock=(lambda: float(world.time_s)) if world is not None else None,
                )
                self._rotation.start()
                self._trace_origin = time.monotonic()
                self._set_state(RigState.ROTATING)
            except Exception as exc:  # noqa: BLE001
                self._fail(f"rotation failed to start: {_describe(exc)}")
                raise
        if self.config.rotation.loop == "closed":
            self._info(f"closed loop: the ellipse turns once the cell is tracked (Reconstruct), the cell at "
                       f"{self.config.rotation.rate_deg_s:g} deg/s; recording to {self._recorder.path}")
        else:
            self._info(f"rotating at {self.config.rotation.rate_deg_s:g} deg/s, recording to {self._recorder.path}")

    def _world_clock_source(self) -> Any:
        """The simulated world whose clock the camera advances (frames carry its time), or None.

        Realtime or not, a simulated camera advances the world by one frame period per frame;
        when frames come slower than the wall clock (a busy machine) the world's time lags
        it, and an ellipse turned on the wall clock would spin the cell faster per frame.
        """
        world = self.rig.world
        if world is None or not hasattr(world, "time_s"):
            return None
        cam_world = getattr(self.rig.camera, "world", None)
        return world if (cam_world is world or self.lockstep) else None

    def reconstruct(self) -> None:
        """Start the live pipeline on the camera frames: RECONSTRUCTING."""
        with self._state_lock:
            self._require("reconstruct", RigState.ROTATING)
            try:
                self._pipeline = self.pipeline_factory(self.config)
            except Exception as exc:  # noqa: BLE001
                self._fail(f"reconstruction pipeline failed to start: {_describe(exc)}")
                raise
            self.ring.clear()  # start with fresh frames (all of them are in the recording)
            self._drops_at_reconstruct = self.ring.dropped
            if self.lockstep:
                self.ring.block_when_full = True
            self._pipeline_stop.clear()
            self._rotation_start_deg = float(self._rotation.angle_deg) if self._rotation is not None else 0.0
            self._start_rotation_loop()
            self._pipeline_thread = threading.Thread(target=self._pipeline_loop, name="pipeline", daemon=True)
            self._set_state(RigState.RECONSTRUCTING)
            self._pipeline_thread.start()
        loop = " (closed loop: the ellipse follows the cell)" if self._loop is not None else ""
        self._info(f"reconstructing until {self.config.rotation.target_coverage_deg:g} deg are covered{loop}")

    def stop(self) -> None:
        """End the run now: reconstruct what was seen (if reconstructing), save, IDLE."""
        self._sequence_abort.set()  # a run_all() sequence in progress takes no further step
        with self._state_lock:
            state = self._state
            if state in (RigState.TRAPPING, RigState.ROTATING):
                if self._stopping:
                    return
                self._stopping = True  # rotate()/reconstruct() now refuse: the run is ending
        if state == RigState.RECONSTRUCTING:
            self._pipeline_stop.set()
        elif state in (RigState.TRAPPING, RigState.ROTATING):
            try:
                self._teardown()
                if self._recorder is not None:
                    self._close_recording()
            finally:
                self._set_state(RigState.IDLE)
                self._stopping = False
                self._run_done.set()
            self._info("stopped")
        elif state == RigState.ERROR:
            raise InvalidTransitionError("the rig is in error: reset() first")

    def cancel(self) -> None:
        """Abandon the run now (recording kept, no reconstruction).

        During FINISHING the final reconstruction is abandoned at once: the recording is
        closed and the rig is IDLE while the refinement already running is left to end on
        its own (its result is dropped).
        """
        self._cancel.set()
        self._sequence_abort.set()
        if self._state == RigState.FINISHING:
            self._abandon_finishing()
        elif self._state in (RigState.TRAPPING, RigState.ROTATING, RigState.RECONSTRUCTING):
            self._pipeline_stop.set()
            if self._state != RigState.RECONSTRUCTING:
                self.stop()

    def pause(self) -> None:
        """Hold the rotation and the pipeline (camera and recording keep running)."""
        self._require("pause", RigState.ROTATING, RigState.RECONSTRUCTING)
        self._pause.set()
        if self._rotation is not None:
            self._rotation.pause()
        self._info("paused")

    def resume(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.controller.reset()  # the pause is no stall: the reference restarts from the cell
        self._pause.clear()
        if self._rotation is not None:
            self._rotation.resume()
        self._info("resumed")

    @property
    def is_paused(self) -> bool:
        return self._pause.is_set()

    def set_rotation(self, rate_deg_s: float, direction: int | None = None) -> None:
        """Change rate/direction now (and for the next run)."""
        if direction not in (None, 1, -1):
            raise ValueError(f"direction must be +1 or -1, got {direction}")
        self.config.rotation.rate_deg_s = float(rate_deg_s)
        if direction is not None:
            self.config.rotation.direction = direction
        loop = self._loop
        if loop is not None:  # closed loop: the cell's target; the loop commands the ellipse
            if self.config.rotation.step_per_frame_deg is None:
                loop.controller.set_target(float(rate_deg_s), direction=direction)
            else:
                loop.controller.set_target(direction=direction)
            return
        if self._rotation is not None:
            self._rotation.set_rate(rate_deg_s, direction)

    def set_rotation_loop(self, loop: str, step_per_frame_deg: float | None = None) -> None:
        """Open loop (the ellipse turns at the set rate) or closed loop (it is steered so that the
        cell turns at the set rate, or at ``step_per_frame_deg`` per camera frame).

        Closed loop starts with the next run: the loop needs the cell at rest, aligned with the
        ellipse, when the first angle comes (the tracker measures turns, not the lag). Back to
        open loop, and a new target step, apply at once."""
        if loop not in ("open", "closed"):
            raise ValueError(f"loop must be 'open' or 'closed', got {loop!r}")
        rot = self.config.rotation
        rot.loop = loop  # validated (pydantic)
        rot.step_per_frame_deg = step_per_frame_deg
        if loop == "open" and self._loop is not None:
            self._loop = None
            self.ring.capacity = self._ring_capacity
            if self._rotation is not None:
                self._rotation.set_rate(rot.rate_deg_s, rot.direction)
            self._info("open loop: the ellipse turns at the set rate")
        elif loop == "closed" and self._loop is not None:
            self._apply_loop_target(self._loop.controller)
        elif loop == "closed" and self._state in (RigState.ROTATING, RigState.RECONSTRUCTING):
            self._info("closed loop starts with the next run (it needs the cell at rest when it starts)")

    def set_calibration(self, calibration: Any) -> None:
        """Apply a CalibrationRecord (per-core correction) from now on."""
        self.calibration = calibration
        if self._sequencer is not None and hasattr(self._sequencer, "set_correction"):
            self._sequencer.set_correction(calibration)

    def calibration_wizard(self) -> Any:
        """A :class:`~mcf_rotator.calibration.wizard.CalibrationWizard` on this rig's SLM and
        calibration camera (only between runs: the trap must not be holding a cell).

        Its calibration mode opens the SLM, calibration camera and laser (the fibre must be
        lit to show fringes) and ``leave_calibration_mode()`` switches the laser off again;
        ``apply`` installs the new correction here (:meth:`set_calibration`), so the next run
        uses it. Each call builds a new wizard starting from the active calibration.
        """
        from mcf_rotator.calibration.wizard import CalibrationWizard
        from mcf_rotator.errors import CalibrationError

        self._require("calibrate", RigState.IDLE, RigState.ERROR)
        rig = self.rig
        if rig.calibration_camera is None:
            raise CalibrationError("this rig has no calibration camera configured")
        geometry, mapping = self._fibre_model()

        def enter() -> None:
            if self._state not in (RigState.IDLE, RigState.ERROR):
                raise InvalidTransitionError(
                    f"cannot calibrate while the rig is {self._state.value}: stop the run first"
                )
            for dev in (rig.slm, rig.calibration_camera, rig.trap):
                if not dev.is_connected:
                    dev.connect()
            if not rig.trap.enabled:
                rig.trap.set_enabled(True)

        def leave() -> None:
            try:
                if rig.trap.is_connected and rig.trap.enabled and self._state in (RigState.IDLE, RigState.ERROR):
                    rig.trap.set_enabled(False)
                cam = rig.calibration_camera
                if cam is not None and cam.is_connected and getattr(cam, "is_acquiring", False):
                    cam.stop_acquisition()
            except Exception as exc:  # noqa: BLE001 - reported, never fatal
                log.warning("leaving calibration mode: %s", exc)

        return CalibrationWizard(
            rig.slm,
            rig.calibration_camera,
            geometry,
            mapping,
            on_apply=self.set_calibration,
            previous=self.calibration,
            grating_period_px=self.config.slm.grating_period_px,
            on_enter=enter,
            on_leave=leave,
        )

    def reset(self) -> None:
        """Leave ERROR (or abort anything) and return to IDLE with devices released."""
        self._sequence_abort.set()
        if self._state == RigState.FINISHING:
            self._abandon_finishing()  # never wait minutes for the final refinement
        self._teardown()
        if self._recorder is not None:
            self._close_recording()
        if self._connected:
            self.rig.disconnect()
            self._connected = False
        self._pause.clear()
        self._cancel.clear()
        self._set_state(RigState.IDLE)
        self._run_done.set()

    def shutdown(self) -> None:
        """Stop everything and release devices (GUI closing mid-run). Safe to call twice.

        Returns within seconds in every state: FINISHING is abandoned (recording kept).
        """
        self._cancel.set()
        self._sequence_abort.set()
        if self._state == RigState.FINISHING:
            self._abandon_finishing()
        self._pipeline_stop.set()
        t = self._pipeline_thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            self.ring.close()
            deadline = time.monotonic() + 10.0
            while t.is_alive() and time.monotonic() < deadline:
                if self._state == RigState.FINISHING:  # it got there before it saw the cancel
                    self._abandon_finishing()
                    break
                t.join(0.05)
        self.reset()

    def run_all(self, trap_timeout_s: float = 20.0, wait: bool = True, timeout_s: float | None = None) -> RunResult | None:
        """Trap, wait for a stable cell, rotate, reconstruct; with ``wait`` block until finished.

        A sequence, not one command: :meth:`stop`, :meth:`cancel` or :meth:`shutdown` from
        another thread end it at its next step (returning None), and pause / rate / direction
        act on the running rig meanwhile.
        """
        self._cancel.clear()
        self._sequence_abort.clear()
        aborted = self._sequence_abort.is_set

        def step(command: Callable[[], None]) -> bool:
            """Run one step unless the sequence was stopped; False when it was."""
            if aborted() or self._cancel.is_set():
                return False
            try:
                command()
            except InvalidTransitionError:
                if aborted() or self._cancel.is_set():
                    return False  # stopped between the check and the step
                raise
            return not (aborted() or self._cancel.is_set()) or self._state == RigState.RECONSTRUCTING

        if not step(self.trap):
            self._stop_quietly()
            return None
        trapped = self.wait_trapped(trap_timeout_s)
        self._raise_if_error()
        if aborted() or self._cancel.is_set():
            self._stop_quietly()
            return None
        if not trapped:
            self.stop()
            raise McfRotatorError(
                f"no cell was trapped within {trap_timeout_s:g} s: check the cell supply and the focus"
            )
        if not step(self.rotate) or not step(self.reconstruct):
            self._stop_quietly()
            return None
        if not wait:
            return None
        return self._wait_result(timeout_s)

    def _stop_quietly(self) -> None:
        """End a stopped sequence: whatever state it left behind goes to IDLE (ERROR stays)."""
        if self._state in (RigState.TRAPPING, RigState.ROTATING):
            self.stop()

    def _wait_result(self, timeout_s: float | None) -> RunResult | None:
        if not self.wait_finished(timeout_s):
            raise McfRotatorError(f"the run did not finish within {timeout_s:g} s")
        self._raise_if_error()
        return self._last_result

    def _raise_if_error(self) -> None:
        if self._state == RigState.ERROR:
            raise McfRotatorError(self._error_text or "the run failed")

    def wait_finished(self, timeout_s: float | None = None) -> bool:
        """Block until the current run ended (IDLE or ERROR)."""
        return self._run_done.wait(timeout_s)

    # ================================================================== pull accessors
    def latest_frame(self) -> Frame | None:
        return self.ring.latest()

    def latest_result(self) -> Any:
        return self._latest_result

    def volume_snapshot(self) -> Any:
        return self._snapshot

    def volume_voxel_um(self) -> float:
        """Voxel size (um) of the volume on show: the final one after a run, else the live one."""
        recon = self._last_result.reconstruction if self._last_result is not None else None
        return volume_voxel_um(self.config, self._pipeline, recon)

    def save_volume(self, path: str | Path) -> Path:
        """Write the volume on show as an ImageJ float32 TIFF with its voxel size.

        After a finished run that is the final volume (refined angles), the one in the run
        folder; during a run, the live volume. Raises :class:`McfRotatorError` if there is none.
        """
        recon = self._last_result.reconstruction if self._last_result is not None else None
        if recon is not None:
            volume = recon.volume
        else:
            snap = self._snapshot
            if snap is None:
                raise McfRotatorError("no volume yet - reconstruct first")
            volume = snap.volume
        from mcf_rotator.reconstruction.io import write_volume

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_volume(path, volume, volume_voxel_um(self.config, self._pipeline, recon))
        return path

    def save_angles(self, path: str | Path) -> Path:
        """Write ``frame,angle_deg`` (frame: index in the recording): after a finished run the
        refined angles of its volume, during a run the live tracked angles."""
        recon = self._last_result.reconstruction if self._last_result is not None else None
        if recon is not None:
            angles = np.asarray(recon.angles_deg, float)
        else:
            _t, angles = self.angle_trace()
            if angles.size == 0:
                raise McfRotatorError("no tracked angles yet")
        from mcf_rotator.reconstruction.io import write_angles

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_angles(path, angles, self._record_frames(len(angles)))
        return path

    def _record_frames(self, n: int) -> list[int]:
        """Recording frame index of each of the ``n`` frames with an angle (0..n-1 if unknown).

        Frames without a cell get no angle and no projection, so the angles skip them.
        """
        idx = list(self._traced_record_idx)
        return idx if len(idx) == n and all(i >= 0 for i in idx) else list(range(n))

    @property
    def trace_origin_s(self) -> float | None:
        """Wall-clock (monotonic) time the rotation started: the angle plot's time zero."""
        return self._trace_origin

    def angle_trace(self) -> tuple[np.ndarray, np.ndarray]:
        """(wall-clock acquisition time s (monotonic), cumulative angle deg) of the frames with
        an angle: the live tracked angles during a run, the refined ones after it."""
        n = min(len(self._trace_t), len(self._trace_a))
        return np.asarray(self._trace_t[:n], float), np.asarray(self._trace_a[:n], float)

    def stats(self) -> dict[str, Any]:
        ft = list(self._frame_times)
        fps = (len(ft) - 1) / (ft[-1] - ft[0]) if len(ft) > 1 and ft[-1] > ft[0] else 0.0
        rec = self._recorder
        dropped = self.ring.dropped
        recorded = rec.frames_written if rec else 0
        return {
            "state": self._state.value,
            # contract names (GUI, status line)
            "fps": fps,
            "dropped": dropped,
            "queue_depth": self.ring.depth,
            "recorded": recorded,
            "coverage_deg": self._coverage,
            "trapped": self._trapped,
            # longer names kept for existing callers
            "camera_fps": fps,
            "frames_read": self._frames_read,
            "dropped_frames": dropped,
            "recorded_frames": recorded,
            "recording_backlog": rec.backlog if rec else 0,
            # frames the live preview (pipeline) skipped since Reconstruct; the recording keeps all
            "preview_skipped": (dropped - self._drops_at_reconstruct)
            if self._state in (RigState.RECONSTRUCTING, RigState.FINISHING) else 0,
            "recording_lost": getattr(rec, "frames_lost", 0) if rec else 0,
            "processed_frames": len(self._processed_record_idx),
            "commanded_angle_deg": self._rotation.angle_deg if self._rotation is not None else None,
            **self._loop_stats(),
        }

    def _loop_stats(self) -> dict[str, Any]:
        """The rotation loop's figures for the status line and the report."""
        st = self._loop_status if self._loop is not None else None
        out: dict[str, Any] = {"rotation_loop": self.config.rotation.loop}
        if self._loop_fallback:
            out["loop_message"] = f"closed loop off: {self._loop_fallback}"
        if st is not None:
            out.update(loop_state=st.state.value, loop_message=st.message, lag_deg=st.lag_deg,
                       cell_rate_deg_s=st.cell_rate_deg_s, commanded_rate_deg_s=st.commanded_rate_deg_s,
                       set_rate_deg_s=st.set_rate_deg_s)
        return out

    def slm_image(self, max_side: int | None = None) -> np.ndarray | None:
        """Grey levels on the SLM; with ``max_side``, every n-th pixel so no side exceeds it.

        A display preview needs ~1/16 of the 1920x1080 pixels: an SLM that can make the
        strided image directly (``grey_preview``, the simulated one converts phase to grey on
        demand) is asked for it instead of converting every pixel.
        """
        slm = self.rig.slm
        if max_side:
            preview = getattr(slm, "grey_preview", None)
            if preview is not None:
                return preview(int(max_side))
        grey = slm.current_grey
        if grey is None or not max_side:
            return grey
        step = _stride_for(grey.shape, int(max_side))
        return grey[::step, ::step] if step > 1 else grey

    def beam_image(self) -> np.ndarray | None:
        world = self.rig.world
        if world is None or not hasattr(world, "beam_far_field"):
            return None
        return world.beam_far_field()

    # ================================================================== internals: setup
    def _reset_run_data(self) -> None:
        self._pipeline_stop.clear()
        self._camera_stop.clear()
        self._pause.clear()
        self._cancel.clear()  # a cancel of an earlier run must not cancel this one
        self._run_done.clear()
        self._latest_result = None
        self._snapshot = None
        self._trace_t, self._trace_a, self._trace_cmd = [], [], []
        self._loop = None
        self.ring.capacity = self._ring_capacity
        self._loop_status = None
        self._loop_fallback = None
        self._loop_correction = 0.0
        self._processed_record_idx = []
        self._traced_record_idx = []
        self._resolves_seen = 0
        self._frame_times.clear()
        self._frames_read = 0
        self._coverage = 0.0
        self._trapped = False
        self._trapped_at = None
        self._trap_seen.clear()
        self._trap_misses = 0
        self._trap_next_check = 0.0
        self._error_text = None
        self._last_result = None
        self._final_version = None
        self._closed_summary = None
        self._trace_origin = None
        self._stopping = False
        self._drops_at_reconstruct = 0
        with self._finish_lock:
            self._finish_steps = []
            self._finish_stage = 0
            self._finish_committed = False
        self._rotation = None
        self._pipeline = None
        self.ring = FrameRingBuffer(self.ring.capacity)

    def _ensure_sequencer(self) -> None:
        if self._sequencer is not None:
            if self.calibration is not None and hasattr(self._sequencer, "set_correction"):
                self._sequencer.set_correction(self.calibration)
            return
        from mcf_rotator.holography.sequencer import EllipseSequencer

        geometry, mapping = self._fibre_model()
        gen = self.hologram_generator or default_hologram_generator(self.config, geometry)
        self.hologram_generator = gen
        self._sequencer = EllipseSequencer(
            gen,
            mapping,
            correction=self.calibration,
            step_deg=self.config.rotation.angle_step_deg,
            two_pi_grey=self.config.slm.two_pi_grey,
            axes=self.config.rotation.ellipse_axes,
            grating_period_px=self.config.slm.grating_period_px,
        )
        # one batched pass: every angle step gets the hologram whose realised beam points at
        # the command, so the cell turns evenly (and the SLM thread never waits for a hologram)
        try:
            self._sequencer.precompute()
        except Exception as exc:  # noqa: BLE001 - the lazy per-step path still works
            log.warning("hologram precompute failed (%s); holograms are made on demand", exc)

    def _fibre_model(self) -> tuple[Any, Any]:
        """(MCFGeometry, SLMCoreMapping) of this rig: the simulated world's, else from the config
        (built once per controller)."""
        world = self.rig.world
        if world is not None:
            return world.geometry, world.mapping
        if self._fibre is None:
            from mcf_rotator.holography.mcf import SLMCoreMapping
            from mcf_rotator.simulation.world import geometry_from_config

            geometry = geometry_from_config(self.config)
            s = self.config.slm
            mapping = SLMCoreMapping.build(
                geometry, (s.height, s.width), s.pixel_pitch_um, self.config.fibre.slm_to_facet_magnification
            )
            self._fibre = (geometry, mapping)
        return self._fibre

    def _new_run_dir(self) -> Path:
        if self.run_dir_override is not None:
            d = Path(self.run_dir_override)
        else:
            d = self.output_dir / datetime.now().strftime("run-%Y%m%d-%H%M%S")
            k = 1
            while d.exists():
                d = self.output_dir / (datetime.now().strftime("run-%Y%m%d-%H%M%S") + f"-{k}")
                k += 1
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingError(f"cannot create the run folder {d}: {exc.strerror or exc}") from exc
        return d

    def _start_recording(self) -> None:
        self._run_dir = self._new_run_dir()
        ext = ".ome.zarr" if self.config.record_format == "ome-zarr" else ".ome.tif"
        meta = {
            "rig": self.config.name,
            "calibration_id": self._calibration_id(),
            "pixel_um": self.config.optics.object_pixel_um,
            "rotation_rate_deg_s": self.config.rotation.rate_deg_s,
            "direction": self.config.rotation.direction,
            "simulated": self.rig.is_simulated,
        }
        from mcf_rotator.ome_metadata import AcquisitionInfo

        self._recorder = Recorder(
            self._run_dir / f"recording{ext}",
            pixel_um=self.config.optics.object_pixel_um,
            metadata=meta,
            on_error=self._on_recording_error,
            acquisition=AcquisitionInfo.from_config(self.config),  # objective, camera, exposure in the OME-XML
        )

    def _calibration_id(self) -> str | None:
        cal = self.calibration
        return None if cal is None else str(getattr(cal, "calibration_id", cal))

    def _start_camera(self) -> None:
        from mcf_rotator.reconstruction.ultralytics_env import configure_opencv_threads

        configure_opencv_threads()  # OpenCV's threading is fixed before its first worker thread
        cam = self.rig.camera
        cam.start_acquisition()
        self._camera_stop.clear()
        self._camera_thread = threading.Thread(target=self._camera_loop, name="camera", daemon=True)
        self._camera_thread.start()

    # ================================================================== internals: threads
    def _camera_loop(self) -> None:
        cam = self.rig.camera
        cal_id = self._calibration_id()
        try:
            while not self._camera_stop.is_set():
                rot = self._rotation
                if rot is not None and rot.clock is not None:
                    rot.tick()
                try:
                    frame = cam.read_frame(0.5)
                except FrameTimeoutError as exc:
                    if type(exc).__name__ == "ReplayFinished":
                        self._info("replay reached the end of its file")
                        self._end_of_input()
                        return
                    continue
                self._frames_read += 1
                now = time.monotonic()
                self._frame_times.append(now)
                frame.metadata["wall_s"] = now  # the run's wall-clock time axis (angle plot)
                if rot is not None:
                    frame.metadata["slm_angle_deg"] = float(rot.angle_deg)  # the command at this exposure
                try:
                    self._watch_trap(frame.image)
                except Exception:  # noqa: BLE001 - the trap watch never stops the camera
                    log.debug("trap watch failed", exc_info=True)
                rec = self._recorder
                rot = self._rotation
                if (
                    rec is not None
                    and rot is not None
                    and not rec.closed
                    and self._state in (RigState.ROTATING, RigState.RECONSTRUCTING)
                ):
                    if self.max_frames is not None and rec.frames_queued >= self.max_frames:
                        self._end_of_input()
                        return
                    meta: dict[str, Any] = {"camera_index": frame.index, "calibration_id": cal_id}
                    meta["slm_angle_deg"] = float(rot.angle_deg)
                    if self._sequencer is not None and hasattr(self._sequencer, "step_index"):
                        meta["hologram_id"] = int(self._sequencer.step_index(rot.angle_deg))
                    # the simulator's truth, kept for scoring a run (demo) and studying the pipeline
                    for key in ("true_angle_deg", "sim_time_s", "cell_centre_px"):
                        if key in frame.metadata:
                            meta[key] = frame.metadata[key]
                    frame.metadata["record_index"] = rec.write(frame.image, frame.timestamp, **meta)
                while not self._camera_stop.is_set():
                    try:
                        if self.ring.put(frame, timeout_s=0.2):
                            break
                    except BufferClosed:
                        return
        except Exception as exc:  # noqa: BLE001 - camera failure ends the run in ERROR
            self._on_thread_error(f"camera: {_describe(exc)}")

    def _end_of_input(self) -> None:
        """No more frames (frame budget or end of replay): let the pipeline drain and finish."""
        self.ring.close()
        if self._state in (RigState.TRAPPING, RigState.ROTATING):
            threading.Thread(target=self.stop, daemon=True).start()

    def _pipeline_loop(self) -> None:
        target = self.config.rotation.target_coverage_deg
        cancelled = False
        try:
            while True:
                if self._pipeline_stop.is_set():
                    cancelled = self._cancel.is_set()
                    break
                if self._pause.is_set():
                    time.sleep(0.02)
                    continue
                try:
                    frame = self.ring.get(0.2)
                except BufferClosed:
                    break
                if frame is None:
                    continue
                result = self._pipeline.process(frame.image, frame.timestamp)
                self._latest_result = result
                rec_idx = frame.metadata.get("record_index", -1)
                self._processed_record_idx.append(rec_idx)
                angle = getattr(result, "angle_deg", None)
                if angle is not None:
                    t_wall = float(frame.metadata.get("wall_s", time.monotonic()))
                    self._trace_t.append(t_wall)
                    self._trace_a.append(float(angle))
                    self._trace_cmd.append((t_wall, float(frame.metadata.get("slm_angle_deg", math.nan))))
                    self._traced_record_idx.append(rec_idx)
                    if self._recorder is not None and rec_idx >= 0:
                        self._recorder.annotate(rec_idx, tracked_angle_deg=float(angle))
                if getattr(self._pipeline, "n_resolves", 0) != self._resolves_seen:
                    self._adopt_resolved_angles()
                self._step_rotation_loop(frame, angle)
                self._update_snapshot()
                if self._coverage >= target and self._commanded_coverage() >= COMMAND_MARGIN * target:
                    self._info(f"coverage {self._coverage:.0f} deg reached")
                    break
        except Exception as exc:  # noqa: BLE001
            self._on_thread_error(f"reconstruction: {_describe(exc)}")
            return
        self._finish(cancelled)

    # ================================================================== internals: closed loop
    def _start_rotation_loop(self) -> None:
        """Closed loop (``config.rotation.loop``): a :class:`~mcf_rotator.rotation_control.RotationLoop`
        on this run's ellipse driver, stepped by the pipeline thread with every frame's tracked
        angle. The trap model (strength and orientation error per ellipse step) comes from the
        holograms this run shows (:func:`~mcf_rotator.rotation_control.beam_profiles`)."""
        rot_cfg = self.config.rotation
        self._loop = None
        if rot_cfg.loop != "closed" or self._rotation is None or not hasattr(self._rotation, "command_rate"):
            return
        from mcf_rotator.rotation_control import LoopSettings, RotationController, RotationLoop

        strength, orient = self._loop_profiles()
        slm_hz = float(getattr(self.rig.slm, "refresh_rate_hz", 60.0) or 60.0)
        max_rate = float(getattr(self._rotation, "max_rate_deg_s", math.inf))
        settings = LoopSettings(
            rate_deg_s=float(rot_cfg.rate_deg_s), direction=int(rot_cfg.direction), slm_refresh_hz=slm_hz,
            max_rate_deg_s=max_rate if math.isfinite(max_rate) and max_rate > 0 else 1800.0,
            strength_profile=strength, orientation_error_deg=orient,
        )
        ctl = RotationController(settings)
        self._apply_loop_target(ctl)
        self._loop = RotationLoop(ctl, self._rotation)
        if self.lockstep:  # the world waits for the pipeline: the loop sees fresh frames
            self.ring.capacity = min(self._ring_capacity, LOOP_QUEUE_FRAMES)

    def _apply_loop_target(self, ctl: Any) -> None:
        rot_cfg = self.config.rotation
        if rot_cfg.step_per_frame_deg is not None:
            ctl.set_target(step_per_frame_deg=float(rot_cfg.step_per_frame_deg),
                           frame_rate_hz=float(self.config.camera.frame_rate_hz))
        else:
            ctl.set_target(float(rot_cfg.rate_deg_s))

    def _loop_profiles(self) -> tuple[Any, Any]:
        """(strength, orientation error) per ellipse step of this run's holograms, computed once
        per sequencer; (None, None) (a uniform trap) where the far-field model cannot run."""
        if self._beam_profiles is not None and self._beam_profiles[0] is self._sequencer:
            return self._beam_profiles[1]
        profiles: tuple[Any, Any] = (None, None)
        try:
            from mcf_rotator.rotation_control import beam_profiles

            profiles = beam_profiles(self._sequencer, self._fibre_model()[0])
        except Exception as exc:  # noqa: BLE001 - the loop runs without the model, and says so
            self._info(f"closed loop without the hologram model ({_describe(exc)}): the trap is taken as uniform",
                       "warning")
        self._beam_profiles = (self._sequencer, profiles)
        return profiles

    def _step_rotation_loop(self, frame: Frame, angle: float | None) -> None:
        """One closed-loop step on this frame's tracked angle (pipeline thread). The exposure and
        the present are read on the driver's clock (the simulated world's, or the wall clock)."""
        loop = self._loop
        if loop is None or self._pause.is_set():
            return
        rot = self._rotation
        clock = getattr(rot, "clock", None)
        if clock is not None:
            exposure, now = float(frame.timestamp), float(clock())
        else:
            now = time.monotonic()
            exposure = float(frame.metadata.get("wall_s", now))
        prev = self._loop_status
        status = loop.step(exposure, None if angle is None else float(angle), now_s=now)
        self._loop_status = status
        if self._loop_correction:  # a re-solve revised the live angles from the next frame on
            loop.controller.correct_angle(self._loop_correction)
            self._loop_correction = 0.0
        from mcf_rotator.rotation_control import LoopState

        if status.state == LoopState.ANGLE_AHEAD:
            # the live angle cannot be trusted to steer: open loop for the rest of the run
            self._loop = None
            self._loop_fallback = status.message
            self._loop_fallback_frame = len(self._processed_record_idx)
            self.ring.capacity = self._ring_capacity
            rot.set_rate(self.config.rotation.rate_deg_s, self.config.rotation.direction)
            self._info(f"closed loop off: {status.message}", "warning")
            return
        if prev is None or status.state != prev.state:
            if status.state in (LoopState.STALLED, LoopState.NOT_FOLLOWING, LoopState.SLIPPED,
                                LoopState.TRACKER_LOST):
                self._info(f"closed loop: {status.message}", "warning")
            elif prev is not None and status.state == LoopState.FOLLOWING:
                self._info(f"closed loop: {status.message}")

    def loop_status(self) -> Any:
        """The closed loop's newest :class:`~mcf_rotator.rotation_control.RotationStatus`, or
        None (open loop, or no frame yet)."""
        return self._loop_status if self._loop is not None else None

    def command_trace(self) -> tuple[np.ndarray, np.ndarray]:
        """(wall-clock time s, commanded ellipse angle deg) at the exposure of every frame that
        got a live angle, zero at the first, like :meth:`angle_trace`: the plot shows the
        command and the cell together and their difference is the lag (up to the lag at the
        first frame)."""
        pts = np.asarray(list(self._trace_cmd), float).reshape(-1, 2)
        cmd = pts[:, 1]
        known = np.flatnonzero(np.isfinite(cmd))  # (a frame read as the rotation started has none)
        if known.size:
            cmd = cmd - cmd[known[0]]
        return pts[:, 0], cmd

    def _adopt_resolved_angles(self) -> None:
        """The pipeline re-solved its live angles: the angle trace and the coverage follow them
        (the coverage may drop: the causal estimate it replaces can run ahead of the cell)."""
        self._resolves_seen = getattr(self._pipeline, "n_resolves", 0)
        angles = [float(a) for a in getattr(self._pipeline, "angles", [])]
        if angles and len(angles) == len(self._trace_a):
            if self._loop is not None:  # the closed loop takes the revision as a correction, not motion
                self._loop_correction = angles[-1] - self._trace_a[-1]
            self._trace_a = angles  # a new list: readers of the old one see a consistent trace
            self._coverage = abs(angles[-1] - angles[0])

    def _cell_coverage(self) -> float:
        """Coverage of the live angles by :func:`~mcf_rotator.rotation_control.cell_coverage_deg`
        (at most 360 deg; a longer target counts the span of the angles beyond it)."""
        from mcf_rotator.rotation_control import cell_coverage_deg

        trace = list(self._trace_a)
        if len(trace) < 2:
            return 0.0
        cov = cell_coverage_deg(trace)
        span = abs(trace[-1] - trace[0])
        return span if cov >= 360.0 and span > 360.0 else cov

    def _commanded_coverage(self) -> float:
        """How far the ellipse has been turned this run (inf when the rig has no rotation driver).

        The live tracked angle is a rough causal estimate that can run ahead of the cell; the
        cell lags the ellipse, so also requiring the command to be a margin past the target
        keeps a run from stopping short of the coverage it asked for.
        """
        rot = self._rotation
        if rot is None:
            return float("inf")
        return abs(float(rot.angle_deg) - self._rotation_start_deg)

    def _update_snapshot(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_volume_emit < VOLUME_EVENT_MIN_INTERVAL_S:
            if self._trace_a and self._loop is None:
                self._coverage = max(self._coverage, abs(self._trace_a[-1] - self._trace_a[0]))
            return
        snap = self._pipeline.snapshot()
        if self._loop is not None:
            # closed loop: the cell's coverage, views no more than 5 deg apart (a held ellipse,
            # a slip or a burst does not count as seen), from the re-solved live angles
            self._coverage = self._cell_coverage()
        elif self._trace_a:
            self._coverage = max(self._coverage, abs(self._trace_a[-1] - self._trace_a[0]))
        if snap is None:
            return
        if self._loop is None:
            self._coverage = max(self._coverage, float(getattr(snap, "coverage_deg", 0.0) or 0.0))
        prev = self._snapshot
        self._snapshot = snap
        if prev is None or getattr(prev, "version", None) != getattr(snap, "version", None):
            self._last_volume_emit = now
            self.events.volume_updated.emit(int(getattr(snap, "version", 0)))

    # ================================================================== internals: finishing
    #: what FINISHING does, in order (the GUI's progress bar counts these)
    FINISH_STAGES: tuple[str, ...] = (
        "stopping the rotation and the camera",
        "final angles and volume",
        "writing volume, angles and report",
        "closing the recording",
    )

    def finishing_progress(self) -> dict[str, Any]:
        """Where FINISHING is: ``stage`` (1-based index into ``stages``), ``stages``, and
        ``step``, the newest step name (the final angles report their own sub-steps)."""
        with self._finish_lock:
            steps = list(self._finish_steps)
            return {"stage": self._finish_stage, "stages": list(self.FINISH_STAGES),
                    "step": steps[-1] if steps else "", "steps": steps}

    def _finish_step(self, generation: int, stage: int | None, text: str) -> None:
        """Record a FINISHING step (and say it); raises _FinishAbandoned once cancelled."""
        with self._finish_lock:
            if generation != self._finish_generation:
                raise _FinishAbandoned()
            if stage is not None:
                self._finish_stage = stage
            self._finish_steps.append(text)
        self._info(text)

    def _finish(self, cancelled: bool) -> None:
        with self._state_lock:
            if self._state != RigState.RECONSTRUCTING:
                return  # an error (or reset) got there first; it cleans up
            with self._finish_lock:
                self._finish_generation += 1
                generation = self._finish_generation
                self._finish_committed = False
                self._finish_steps = []
                self._finish_stage = 0
            self._set_state(RigState.FINISHING)
        try:
            self._finish_run(cancelled, generation)
        except _FinishAbandoned:
            log.info("finishing abandoned (cancel): the final reconstruction's result is dropped")

    def _finish_run(self, cancelled: bool, generation: int) -> None:
        step = lambda stage, text: self._finish_step(generation, stage, text)  # noqa: E731
        step(1, self.FINISH_STAGES[0])
        self._stop_rotation_and_camera()
        # a cancel (e.g. shutdown() right after stop() when the window closes) that arrived
        # while the camera stopped still skips the reconstruction: it is the next step boundary
        cancelled = cancelled or self._cancel.is_set()
        run_dir = self._run_dir or self._new_run_dir()
        result = RunResult(run_dir=run_dir, recording=None)
        try:
            if not cancelled:
                try:
                    step(2, "finalising the reconstruction (angle refinement)")
                    recon = self._pipeline.finalize(progress=lambda name: step(None, f"final angles: {name}"))
                    step(3, self.FINISH_STAGES[2])
                    result.reconstruction = recon
                    report = getattr(recon, "report", None)
                    conf = report.get("angle_confidence") if isinstance(report, dict) else None
                    if conf:  # the operator reads whether the angles can be trusted, in words
                        reasons = "; ".join(conf.get("reasons") or [])
                        self._info(f"angles {conf['level']}" + (f": {reasons}" if reasons else ""),
                                   "info" if conf["level"] == "good" else "warning")
                    if isinstance(report, dict):  # the gate of `reconstruct`: a live run keeps its volume
                        from mcf_rotator.reconstruction import quality

                        verdict = quality.assess(report)
                        report["quality"] = verdict.as_dict()
                        if not verdict.ok:
                            report.setdefault("flags", []).extend(f"quality gate: {r}" for r in verdict.reasons)
                            self._info("the volume is kept but cannot be trusted: " + "; ".join(verdict.reasons),
                                       "warning")
                    self._publish_final_volume(recon)
                    self._write_outputs(result, recon)
                except ReconstructionError as exc:
                    result.error = str(exc)
                    self._info(f"no volume: {exc}", "warning")
            else:
                self._info("run cancelled: recording kept, no reconstruction", "warning")
                close = getattr(self._pipeline, "close", None)
                if close is not None:
                    close()  # background work of the live pipeline (angle re-solves)
                result.error = "cancelled"
            with self._finish_lock:  # from here on a cancel has nothing left to save time on
                if generation != self._finish_generation:
                    raise _FinishAbandoned()
                self._finish_committed = True
                self._finish_steps.append(self.FINISH_STAGES[3])
                self._finish_stage = 4
            result.recording = self._close_recording()
            result.report.setdefault("recording", str(result.recording.path) if result.recording else None)
            if result.report_path is None:
                result.report_path = run_dir / "report.json"
                result.report.update(self._run_report(None))
                result.report["error"] = result.error
            result.report_path.write_text(strict_json.dumps(result.report, indent=2))
        except _FinishAbandoned:
            raise
        except Exception as exc:  # noqa: BLE001
            self._on_thread_error(f"finishing: {_describe(exc)}")
            return
        finally:
            self._laser_off()
        self._end_run(result)

    def _laser_off(self) -> None:
        """The trapping laser off at the end of a run, finished or cancelled (a failure is logged)."""
        if self.rig.trap.is_connected:
            try:
                self.rig.trap.set_enabled(False)
            except Exception:  # noqa: BLE001
                log.exception("laser off failed")

    def _end_run(self, result: RunResult) -> None:
        """FINISHING -> IDLE with ``result``; says which files the run folder holds."""
        self._last_result = result
        self._cancel.clear()
        with self._state_lock:
            if self._state != RigState.FINISHING:
                return
            self._set_state(RigState.IDLE)
        self._run_done.set()
        self._info(saved_files_text(result))
        self.events.finished.emit(result)

    def _abandon_finishing(self) -> None:
        """Cancel during FINISHING: keep the recording, drop the final reconstruction, IDLE now.

        The refinement keeps its thread until its next step (it cannot be interrupted inside
        one); that thread finds the run abandoned and drops its result.
        """
        with self._finish_lock:
            if self._state != RigState.FINISHING or self._finish_committed:
                return  # not finishing, or only closing the recording is left: let it end
            self._finish_generation += 1
        self._info("finishing cancelled: recording kept, no final volume", "warning")
        t = self._pipeline_thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            _ABANDONED_THREADS.append(t)  # joined at interpreter exit (see _join_abandoned)
        self._pipeline_thread = None  # not joined now: it may be inside a minutes-long step
        try:
            self._stop_rotation_and_camera()
        except Exception:  # noqa: BLE001
            log.exception("stopping the camera failed")
        run_dir = self._run_dir or self._new_run_dir()
        result = RunResult(run_dir=run_dir, recording=self._close_recording(), error="cancelled")
        try:
            result.report_path = run_dir / "report.json"
            result.report.update(self._run_report(None))
            result.report.update(error="cancelled during finishing",
                                 recording=str(result.recording.path) if result.recording else None)
            result.report_path.write_text(strict_json.dumps(result.report, indent=2))
        except OSError as exc:
            self._info(f"cannot write {result.report_path}: {exc.strerror or exc}", "error")
        finally:
            self._laser_off()
        self._end_run(result)

    def _publish_final_volume(self, recon: Any) -> None:
        """Show the final volume and angles (refined) instead of the live ones, a version later.

        The live volume was back-projected at the causal tracked angles, which drift by tens of
        degrees over a sweep; the view, the angle plot, the coverage and the Save buttons must
        show what the run folder holds.
        """
        from mcf_rotator.reconstruction.incremental import VolumeSnapshot

        live = self._pipeline.snapshot() or self._snapshot
        angles = np.asarray(recon.angles_deg, float)
        version = int(getattr(live, "version", 0) or 0) + 1
        coverage = float(np.ptp(angles)) if angles.size else 0.0
        self._snapshot = VolumeSnapshot(version, np.asarray(recon.volume, np.float32), int(angles.size), coverage)
        self._final_version = version
        if angles.size:  # the angle plot shows the refined angles, on the run's time axis
            times = list(self._trace_t)
            if len(times) != angles.size:
                t0, t1 = (times[0], times[-1]) if times else (0.0, 0.0)
                times = [float(t) for t in np.linspace(t0, t1, angles.size)]
            self._trace_t = times
            self._trace_a = [float(a) for a in angles]
        self._coverage = coverage
        self._last_volume_emit = time.monotonic()
        self.events.volume_updated.emit(version)

    @property
    def final_volume_version(self) -> int | None:
        """Version of the snapshot that is the run's final volume (None during a run)."""
        return self._final_version

    def _write_outputs(self, result: RunResult, recon: Any) -> None:
        from mcf_rotator.reconstruction.io import write_angles, write_volume

        run_dir = result.run_dir
        voxel_um = volume_voxel_um(self.config, self._pipeline, recon)
        result.volume_path = run_dir / "volume.tif"
        write_volume(result.volume_path, recon.volume, voxel_um)
        angles = np.asarray(recon.angles_deg, float)
        frames = self._record_frames(len(angles))
        result.angles_path = run_dir / "angles.csv"
        write_angles(result.angles_path, angles, frames)
        if self._recorder is not None and len(frames) == len(angles):
            for f, a in zip(frames, angles):
                self._recorder.annotate(int(f), refined_angle_deg=float(a))
        result.report_path = run_dir / "report.json"
        report = self._run_report(recon)
        report.update(volume=result.volume_path.name, angles=result.angles_path.name, voxel_um=voxel_um)
        result.report = report

    def _run_report(self, recon: Any) -> dict[str, Any]:
        rep: dict[str, Any] = {
            "rig": self.config.name,
            "finished": datetime.now().isoformat(timespec="seconds"),
            "calibration_id": self._calibration_id(),
            "rotation_rate_deg_s": self.config.rotation.rate_deg_s,
            "rotation_loop": self._loop_report(recon),
            "target_coverage_deg": self.config.rotation.target_coverage_deg,
            "stats": self.stats(),
        }
        if recon is not None:
            rep.update(
                n_projections=int(len(recon.angles_deg)),
                coverage_deg=float(np.ptp(np.asarray(recon.angles_deg, float))) if len(recon.angles_deg) else 0.0,
                axis_offset_px=_num(getattr(recon, "axis_offset_px", None)),
                tilt_deg=_num(getattr(recon, "tilt_deg", None)),
                volume_shape=list(np.shape(recon.volume)),
                pipeline_report=getattr(recon, "report", None),
            )
            pipe = getattr(recon, "report", None)
            if isinstance(pipe, dict) and "quality" in pipe:
                rep["quality"] = pipe["quality"]  # where `reconstruct` puts it, top level
        return rep

    def _loop_report(self, recon: Any) -> dict[str, Any]:
        """Open or closed loop, its last state, and how evenly the final angles sample the cell
        (spread of the per-frame step, std / mean, and the largest gap between views)."""
        from mcf_rotator.rotation_control import largest_view_gap_deg

        rot = self.config.rotation
        out: dict[str, Any] = {"mode": rot.loop, "set_rate_deg_s": rot.rate_deg_s,
                               "step_per_frame_deg": rot.step_per_frame_deg}
        st = self._loop_status
        if rot.loop == "closed" and st is not None:
            out.update(last_state=st.state.value, last_message=st.message)
        if rot.loop == "closed" and self._loop_fallback:
            out["fell_back_to_open_loop"] = self._loop_fallback
            out["fell_back_at_processed_frame"] = self._loop_fallback_frame
        angles = np.asarray(getattr(recon, "angles_deg", []) if recon is not None else [], float)
        angles = angles[np.isfinite(angles)]
        if angles.size > 2:
            steps = np.abs(np.diff(angles))
            mean = float(steps.mean())
            out.update(step_spread=float(steps.std() / mean) if mean > 0 else None,
                       mean_step_deg=mean, largest_view_gap_deg=largest_view_gap_deg(angles))
        return out

    def _close_recording(self) -> RecordingSummary | None:
        """Close this run's recording once (later calls, from any thread, get the same summary)."""
        with self._close_lock:
            rec = self._recorder
            if rec is None:
                return None
            if self._closed_summary is not None and self._closed_summary.path == rec.path:
                return self._closed_summary
            try:
                summary = rec.close()
            except RecordingError as exc:
                self._info(str(exc), "error")
                return None
            self._closed_summary = summary
        if summary.error is None:
            self._info(f"recording closed: {summary.frames_written} frames in {summary.path}")
        return summary

    def _stop_rotation_and_camera(self) -> None:
        if self._rotation is not None:
            try:
                self._rotation.stop()
            except Exception:  # noqa: BLE001
                log.exception("stopping the rotation failed")
        self._camera_stop.set()
        self.ring.close()
        t = self._camera_thread
        if t is not None and t is not threading.current_thread():
            t.join(5.0)
        self._camera_thread = None
        try:
            if self.rig.camera.is_connected and self.rig.camera.is_acquiring:
                self.rig.camera.stop_acquisition()
        except Exception:  # noqa: BLE001
            log.exception("stopping the camera failed")

    def _teardown(self) -> None:
        """Stop rotation, camera and pipeline threads (does not change the state)."""
        self._pipeline_stop.set()
        self._stop_rotation_and_camera()
        t = self._pipeline_thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(10.0)
        self._pipeline_thread = None
        try:
            if self.rig.trap.is_connected:
                self.rig.trap.set_enabled(False)
        except Exception:  # noqa: BLE001
            log.exception("laser off failed")

    # ================================================================== errors
    def _make_device_error_handler(self, dev: Any) -> Callable[[str], None]:
        def handler(message: str) -> None:
            self._on_thread_error(message if message.startswith(f"{dev.name}:") else f"{dev.name}: {message}")

        return handler

    def _on_recording_error(self, message: str) -> None:
        self._on_thread_error(message)

    def _on_thread_error(self, message: str) -> None:
        if self._state in (RigState.ERROR, RigState.IDLE):
            log.error("%s (while %s)", message, self._state.value)
            return
        # do the cleanup off the failing thread so it can exit (it may be the camera thread)
        threading.Thread(target=self._fail, args=(message,), name="controller-fail", daemon=True).start()

    def _fail(self, message: str) -> None:
        with self._state_lock:
            if self._state == RigState.ERROR:
                return
            self._error_text = message
            self._set_state(RigState.ERROR)
        log.error(message)
        self.events.error.emit(message)
        self.events.message.emit("error", message)
        try:
            self._teardown()
        finally:
            summary = self._close_recording()
            if summary is not None:
                self._info(f"recording kept: {summary.frames_written} frame(s) in {summary.path}", "warning")
            self._run_done.set()


#: finishing threads whose result was abandoned; they end at their next step
_ABANDONED_THREADS: list[threading.Thread] = []
#: how long interpreter exit waits for them (a daemon thread killed inside native code, e.g. a
#: BLAS or OpenCV pool, can abort the process on exit)
ABANDONED_JOIN_S = 60.0


@atexit.register
def _join_abandoned() -> None:
    """Interpreter exit: let abandoned final reconstructions reach their next step and end."""
    deadline = time.monotonic() + ABANDONED_JOIN_S
    for t in _ABANDONED_THREADS:
        if t.is_alive():
            log.info("waiting for an abandoned final reconstruction to stop")
            t.join(max(0.0, deadline - time.monotonic()))


class _FinishAbandoned(Exception):
    """FINISHING was cancelled: the finishing thread drops what it was doing."""


def saved_files_text(result: RunResult) -> str:
    """One line naming what a finished run saved, and where (for the log and status bar)."""
    names = [p.name for p in (result.volume_path, result.angles_path, result.report_path) if p is not None]
    rec = result.recording
    if rec is not None and getattr(rec, "path", None) is not None:
        names.append(f"{Path(rec.path).name} ({rec.frames_written} frames)")
    if not names:
        return f"nothing was saved in {result.run_dir}"
    what = ", ".join(names)
    note = f"; no volume: {result.error}" if result.error and result.volume_path is None else ""
    return f"saved {what} in {result.run_dir}{note}"


def _stride_for(shape: tuple[int, ...], max_side: int) -> int:
    """Smallest step so that ``shape[:2][::step]`` has no side above ``max_side``."""
    return max(1, math.ceil(max(shape[:2]) / max(1, max_side)))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, McfRotatorError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _num(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None
