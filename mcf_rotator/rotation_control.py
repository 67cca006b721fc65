"""Closed-loop rotation: steer the ellipse by the cell's measured rotation.

Why: a trapped cell does not follow a rotating ellipse evenly. The trap's torque is
``omega_max(phi) * sin(2 * lag)`` (``lag`` = ellipse angle minus cell angle, see
:mod:`mcf_rotator.simulation.trap`), and ``omega_max`` depends on how well the hologram at the
ellipse angle ``phi`` is realised: where the beam is weak the cell stalls, the lag grows, and
when the beam is strong again the cell catches up in a burst (stick-slip). The views of the
cell then bunch up (uneven angular sampling), and a run that stops on the *command's* coverage
may not have seen the cell all the way round.

:class:`RotationController` closes the loop. Per camera frame it takes the time, the tracked
cell angle (cumulative degrees, ``None`` when the tracker has no estimate) and the commanded
ellipse angle, and returns the ellipse rate to command:

``cell target = set_rate + gain * (reference - cell)``

where the reference turns at the set rate from the cell's first angle. The ellipse is then
put at ``cell + lag``, the lag whose modelled torque
``scale * strength(phi) * sin(2 (lag + orientation_error(phi)))`` turns the cell at that target
rate: ``scale`` is learnt online (least squares on the measured motion); ``strength`` and
``orientation_error`` per ellipse step come from the far-field model of the holograms
(:func:`beam_profiles`; optional, a uniform trap without them). A cell behind its reference
makes the ellipse lead more (more torque); a cell ahead makes it lead less. Where the lag the
trap needs swings widely over the ellipse angles (fast rotation, weak holograms) the model
steers deadbeat and the ellipse jumps ahead across weak stretches; where it swings less than
``model_min_swing_deg`` (within the tracker's error) a gentle law turns at the target rate with
a bounded pull towards the uniform-trap lag. Measured on the simulated rig:
``docs/closed_loop.md``. The error is kept within
``max_error_deg`` by dragging the reference along (a long stall costs time, not a catch-up
burst afterwards). Limits: the lag never exceeds ``max_lag_deg`` (the torque peaks at 45 deg
and reverses at 90 deg, where the cell would slip a half turn), the rate stays within
``[0, max_rate]`` with ``max_rate`` at most what the SLM can show (largest ellipse step per
SLM frame x refresh rate), and the rate changes at most ``max_accel_deg_s2``.

Detectors:

- stall: the cell's measured rate stays below ``stall_fraction`` of the target for
  ``stall_frames`` frames -> ``STALLED``: the target drops to ``stall_slowdown`` x the set rate;
  still stalled ``not_following_frames`` later -> ``NOT_FOLLOWING``: the ellipse is held (rate 0)
  until the cell moves towards it again;
- slip: the cell turned backwards by more than ``slip_back_deg`` from its furthest angle, or the
  lag passed 90 deg (the cell now sits half a turn behind, on the ellipse's other end) ->
  ``SLIPPED`` (slowed down for ``recover_frames``, then back to ``FOLLOWING``);
- tracker lost: no angle for ``lost_frames`` frames -> ``TRACKER_LOST``, the ellipse is held
  so the cell stays in the trap while the tracker re-acquires it.

The stop criterion of a run is the cell's coverage (:func:`cell_coverage_deg`), not the
command's: only angles the cell was actually seen at, closely enough spaced, count.

No Qt, no threads: the caller (pipeline thread) calls :meth:`RotationController.update` per
frame and applies the result to the ellipse driver (:class:`RotationLoop` does both).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Protocol

import numpy as np

__all__ = [
    "LoopState",
    "LoopEvent",
    "LoopSettings",
    "RotationStatus",
    "RotationController",
    "RotationLoop",
    "beam_profiles",
    "cell_coverage_deg",
    "largest_view_gap_deg",
    "rate_from_step_per_frame",
    "slm_rate_limit_deg_s",
]


class LoopState(enum.Enum):
    """What the loop is doing now (shown to the operator)."""

    STARTING = "starting"  # no cell angle yet
    FOLLOWING = "following"  # the cell turns with the ellipse
    STALLED = "stalled"  # the cell stopped following: slowed down
    NOT_FOLLOWING = "not following"  # slowing down did not help: ellipse held
    SLIPPED = "slipped"  # the cell turned back or fell half a turn behind: slowed down
    TRACKER_LOST = "tracker lost"  # no cell angle for a while: ellipse held
    ANGLE_AHEAD = "angle ahead"  # the tracked angle ran ahead of the ellipse: set rate, no loop


class LoopEvent(enum.Enum):
    """Transitions reported once, in the status of the frame they happen on."""

    STALL = "stall"
    STALL_CLEARED = "stall cleared"
    NOT_FOLLOWING = "not following"
    SLIP_BACKWARDS = "slip backwards"
    SLIP_HALF_TURN = "slip half turn"
    RECOVERED = "recovered"
    TRACKER_LOST = "tracker lost"
    TRACKER_FOUND = "tracker found"
    ANGLE_AHEAD = "angle ahead"


def slm_rate_limit_deg_s(max_step_per_frame_deg: float, refresh_hz: float) -> float:
    """Fastest ellipse rate the SLM can show: it changes the pattern once per refresh, and a
    step larger than ``max_step_per_frame_deg`` would jerk the cell (or, past 45 deg, let it
    fall towards the ellipse's other end)."""
    return float(max_step_per_frame_deg) * float(refresh_hz)


def rate_from_step_per_frame(step_deg: float, frame_rate_hz: float) -> float:
    """Set rate (deg/s) for a target angular step per camera frame (e.g. 0.5 deg at 60 Hz)."""
    if not (math.isfinite(step_deg) and step_deg > 0):
        raise ValueError(f"the angular step per frame must be > 0 deg, got {step_deg}")
    if not (math.isfinite(frame_rate_hz) and frame_rate_hz > 0):
        raise ValueError(f"the camera frame rate must be > 0 Hz, got {frame_rate_hz}")
    return float(step_deg) * float(frame_rate_hz)


@dataclass(frozen=True)
class LoopSettings:
    """Operator target and loop tuning. Defaults suit a ~60 Hz camera and SLM.

    Tuning (see the module docstring for the loop): a cell follows the ellipse like a first
    order lag with rate constant ``k = 2 pi omega_max / 180`` (1/s): ~14/s in a calibrated
    trap, ~2/s where a weak beam at low power barely holds it. The loop's characteristic
    equation ``s^2 + k s + k gain = 0`` is damped for ``gain`` up to ~k/2..k, so ``gain`` 3/s
    is well damped in the strong trap and still stable (damping ~0.4) in the weakest one,
    and keeps the tracker's noise (~0.5 deg) out of the command (3 x 0.5 = 1.5 deg/s).
    """

    rate_deg_s: float = 30.0
    direction: int = 1
    #: the cell's rate counts as on target within this fraction of the set rate
    tolerance: float = 0.15
    #: position gain (1/s): ellipse rate added per degree the cell is behind its reference
    gain_per_s: float = 3.0
    #: ellipse rate added per deg/s the cell turns slower than the target (rate feedback:
    #: damps the loop where the trap is weak, and reacts to a stall before the angle shows it)
    rate_gain: float = 0.0
    #: the reference is dragged along when the cell is further than this from it (deg)
    max_error_deg: float = 10.0
    #: largest ellipse-minus-cell angle allowed (deg); torque peaks at 45, reverses at 90
    max_lag_deg: float = 50.0
    #: operator's ceiling on the ellipse rate (deg/s); the SLM limit below applies too
    max_rate_deg_s: float = 1800.0
    #: the cell is overdamped (no inertia), so the ellipse may change rate fast: it must be able
    #: to jump across a weak stretch of holograms within a frame or two; the bound only keeps a
    #: wild estimate from whipping the ellipse about
    max_accel_deg_s2: float = 60000.0
    #: relative trap torque per ellipse step over 180 deg (any scale; e.g. efficiency x
    #: ellipticity of each realised hologram, :func:`strength_profile`); None = uniform
    strength_profile: tuple[float, ...] | None = None
    #: realised beam orientation minus the commanded angle per ellipse step over 180 deg (deg;
    #: from the same far-field model); the torque acts on the realised angle. None = zero
    orientation_error_deg: tuple[float, ...] | None = None
    #: first guess of the torque scale omega_max (deg/s at profile 1) before it is learnt
    torque_guess_deg_s: float = 200.0
    #: memory (s) of the online least-squares estimate of the torque scale
    torque_memory_s: float = 2.0
    #: learn the torque scale from the motion (off: ``torque_guess_deg_s`` is used as is)
    learn_torque: bool = True
    #: servo the ellipse on the cell angle smoothed by a line fit over ``control_window_s``
    #: instead of the raw angle (less noise, but the fit's delay measured worse on the
    #: simulated stick-slip trap: off by default)
    smooth_angle: bool = False
    #: camera frames in which the ellipse is brought to the angle the torque model asks for
    servo_frames: float = 1.0
    #: the hologram model steers only when the lag the trap needs swings by at least this much
    #: over the ellipse angles (deg): a smaller swing is within the tracker's error (noise +
    #: drift + model error, a few deg), and a deadbeat servo on it only feeds noise to the cell
    model_min_swing_deg: float = 20.0
    #: seconds of motion before the model may steer (the torque scale is a guess until then)
    model_warmup_s: float = 0.5
    #: pull (1/s) towards the uniform-trap lag when the model does not steer (gentle mode)
    gentle_servo_per_s: float = 20.0
    #: time from a frame's exposure (``time_s`` of :meth:`RotationController.update`) to the
    #: call with its angle (pipeline delay); the cell is predicted forward by it
    latency_s: float = 0.0
    slm_refresh_hz: float = 60.0
    #: largest ellipse step the SLM may show from one refresh to the next (deg): well below the
    #: 45 deg at which the cell could turn towards the ellipse's other end
    max_step_per_slm_frame_deg: float = 20.0
    #: ellipse angle minus cell angle when the first cell angle comes (the cell rests aligned)
    initial_lag_deg: float = 0.0
    #: window (s) of the least-squares cell rate shown and used by the stall detector
    rate_window_s: float = 0.25
    #: shorter window (s) of the cell rate the rate feedback uses (less delay, more noise)
    control_window_s: float = 0.1
    stall_fraction: float = 0.3
    stall_frames: int = 20
    stall_slowdown: float = 0.5
    not_following_frames: int = 90
    slip_back_deg: float = 5.0
    recover_frames: int = 30
    lost_frames: int = 10
    #: the tracked cell this far ahead of the ellipse (deg) means the tracker over-counts: a
    #: trapped cell always trails the ellipse (the torque pulls it back within a few degrees)
    ahead_limit_deg: float = 30.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_deg_s) and self.rate_deg_s >= 0):
            raise ValueError(f"the set rotation rate must be >= 0 deg/s, got {self.rate_deg_s}")
        if self.direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {self.direction}")
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise ValueError(f"latency_s must be >= 0 s, got {self.latency_s}")
        if not 0 < self.max_lag_deg < 90:
            raise ValueError(f"max_lag_deg must be between 0 and 90 deg (a slip), got {self.max_lag_deg}")
        for name in ("gain_per_s", "max_error_deg", "max_rate_deg_s", "max_accel_deg_s2",
                     "slm_refresh_hz", "max_step_per_slm_frame_deg", "torque_guess_deg_s", "torque_memory_s",
                     "servo_frames", "gentle_servo_per_s", "model_warmup_s", "rate_window_s", "control_window_s", "slip_back_deg",
                     "ahead_limit_deg"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be > 0, got {v}")
        for name in ("stall_frames", "not_following_frames", "recover_frames", "lost_frames"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def rate_limit_deg_s(self) -> float:
        """Ceiling of the commanded rate: the operator's and the SLM's, whichever is lower."""
        return min(self.max_rate_deg_s, slm_rate_limit_deg_s(self.max_step_per_slm_frame_deg, self.slm_refresh_hz))


@dataclass(frozen=True)
class RotationStatus:
    """One frame's loop output, for the driver and for the GUI.

    Rates are magnitudes in the set direction (deg/s, >= 0 for the command); ``lag_deg`` is
    the ellipse ahead of the cell (deg, positive when the ellipse leads).
    """

    time_s: float
    state: LoopState
    commanded_rate_deg_s: float
    direction: int
    set_rate_deg_s: float
    cell_rate_deg_s: float | None
    lag_deg: float | None
    within_tolerance: bool
    message: str
    events: tuple[LoopEvent, ...] = ()

    @property
    def holding(self) -> bool:
        """True when the ellipse is deliberately held (not following / tracker lost)."""
        return self.state in (LoopState.NOT_FOLLOWING, LoopState.TRACKER_LOST)


_MESSAGES = {
    LoopState.STARTING: "waiting for the cell's angle",
    LoopState.FOLLOWING: "the cell follows the ellipse",
    LoopState.STALLED: "the cell stopped following: slowing down",
    LoopState.NOT_FOLLOWING: "cell not following: ellipse held (check the trap power and the calibration)",
    LoopState.SLIPPED: "the cell slipped: slowing down",
    LoopState.TRACKER_LOST: "the tracker lost the cell: ellipse held",
    LoopState.ANGLE_AHEAD: ("the tracked angle ran ahead of the ellipse, which a trapped cell cannot do: the live "
                            "angle is not trustworthy, the ellipse turns at the set rate (open loop)"),
}


class RotationController:
    """Per-frame rotation controller (see the module docstring). Not thread-safe: one caller."""

    def __init__(self, settings: LoopSettings | None = None) -> None:
        self.settings = settings or LoopSettings()
        self.reset()

    # ------------------------------------------------------------------ configuration
    def reset(self) -> None:
        """Forget the cell (new run): the next angle restarts the reference and the lag offset."""
        self._state = LoopState.STARTING
        self._rate = 0.0  # commanded, forward frame
        self._t_last: float | None = None
        self._offset: float | None = None  # adds to the cell angle to get it in ellipse angles
        self._ref = 0.0
        self._furthest = -math.inf
        self._hist: deque[tuple[float, float]] = deque()
        self._missing = 0
        self._slow_count = 0
        self._fast_count = 0
        self._stall_age = 0
        self._recover_left = 0
        self._last_cell_rate: float | None = None
        self._last_lag: float | None = None
        prof = self.settings.strength_profile
        if prof is not None:
            arr = np.asarray(prof, float)
            if arr.ndim != 1 or arr.size < 2 or not np.isfinite(arr).all() or (arr < 0).any() or arr.mean() <= 0:
                raise ValueError("strength_profile must be >= 2 finite, non-negative values with a positive mean")
            self._profile: np.ndarray | None = arr / arr.mean()
        else:
            self._profile = None
        self._lag_grid = np.arange(0.0, self.settings.max_lag_deg + 1e-9, 0.25)
        self._sin_grid = np.sin(np.deg2rad(2.0 * self._lag_grid))
        self._model_on = False
        self._t_first: float | None = None
        orient = self.settings.orientation_error_deg
        if orient is not None:
            o = np.asarray(orient, float)
            if o.ndim != 1 or o.size < 2 or not np.isfinite(o).all() or np.abs(o).max() >= 45.0:
                raise ValueError("orientation_error_deg must be >= 2 finite values below 45 deg")
            self._orient: np.ndarray | None = o
        else:
            self._orient = None
        self._sxy = 0.0
        self._sss = 0.0
        self._prev: tuple[float, float] | None = None
        self._phis: deque[tuple[float, float]] = deque(maxlen=64)  # (call time, ellipse angle)

    def set_target(
        self,
        rate_deg_s: float | None = None,
        *,
        step_per_frame_deg: float | None = None,
        frame_rate_hz: float | None = None,
        direction: int | None = None,
    ) -> None:
        """Change the operator's target now: a rate in deg/s, or an angular step per camera
        frame at ``frame_rate_hz``. A new direction restarts the reference."""
        if step_per_frame_deg is not None:
            if frame_rate_hz is None:
                raise ValueError("a target step per frame needs the camera's frame rate")
            rate_deg_s = rate_from_step_per_frame(step_per_frame_deg, frame_rate_hz)
        changes: dict[str, Any] = {}
        if rate_deg_s is not None:
            changes["rate_deg_s"] = float(rate_deg_s)
        if direction is not None and int(direction) != self.settings.direction:
            changes["direction"] = int(direction)
        if not changes:
            return
        new = replace(self.settings, **changes)  # validates
        if new.direction != self.settings.direction:
            self.settings = new
            self.reset()
            return
        self.settings = new
        if self._offset is not None and self._hist:
            self._ref = self._hist[-1][1]  # re-anchor: no catch-up to an old reference

    def correct_angle(self, delta_deg: float) -> None:
        """The tracker revised its angle of the newest frame by ``delta_deg`` (a re-solve of the
        live angles): from the next frame on its angles carry that correction. The cell did not
        move: the rate history, the furthest angle and the reference are moved with it, so the
        correction is neither a burst nor a slip; the lag takes the corrected value."""
        d = self.settings.direction * float(delta_deg)
        if not math.isfinite(d) or d == 0.0 or self._offset is None:
            return
        self._hist = deque((t, a + d) for t, a in self._hist)
        self._furthest += d
        self._ref += d
        self._prev = None

    @property
    def state(self) -> LoopState:
        return self._state

    @property
    def commanded_rate_deg_s(self) -> float:
        return self._rate

    # ------------------------------------------------------------------ per frame
    def update(self, time_s: float, cell_angle_deg: float | None, ellipse_angle_deg: float,
               now_s: float | None = None) -> RotationStatus:
        """One camera frame: returns the ellipse rate to command (and the loop's status).

        ``time_s``: the frame's exposure; ``now_s``: the time of this call on the same clock
        (default ``time_s + settings.latency_s``). A pipeline behind a queue is late by a varying
        amount: with ``now_s`` the ellipse angle at the exposure and the cell's prediction to now
        use the actual delay."""
        s = self.settings
        f = s.direction
        events: list[LoopEvent] = []
        dt = 0.0 if self._t_last is None else max(float(time_s) - self._t_last, 0.0)
        self._t_last = float(time_s)
        latency = s.latency_s if now_s is None or not math.isfinite(now_s) else max(float(now_s) - float(time_s), 0.0)
        phi = f * float(ellipse_angle_deg)
        self._phis.append((float(time_s) + latency, phi))
        valid = cell_angle_deg is not None and math.isfinite(float(cell_angle_deg))

        if not valid:
            self._missing += 1
            self._prev = None
            if self._offset is not None and self._missing >= s.lost_frames and self._state != LoopState.TRACKER_LOST:
                self._state = LoopState.TRACKER_LOST
                events.append(LoopEvent.TRACKER_LOST)
            # coast on the last command for a few frames; held once the tracker is lost
            want = 0.0 if self._state in (LoopState.TRACKER_LOST, LoopState.STARTING, LoopState.NOT_FOLLOWING) else self._rate
            self._apply(want, dt)
            return self._status(time_s, None, self._last_lag, events)

        th = f * float(cell_angle_deg)
        if self._state == LoopState.ANGLE_AHEAD:  # sticky until reset(): the set rate, no loop
            self._apply(s.rate_deg_s, dt)
            return self._status(time_s, self._last_cell_rate, self._last_lag, events)
        if self._offset is None:  # first angle: the cell rests aligned with the ellipse
            self._offset = phi - s.initial_lag_deg - th
            self._t_first = float(time_s)
            self._ref = th
            self._furthest = th
            self._state = LoopState.FOLLOWING
        if self._missing and self._state == LoopState.TRACKER_LOST:
            events.append(LoopEvent.TRACKER_FOUND)
            self._enter_recovery()
            self._ref = th
        self._missing = 0

        # lag at the frame's exposure, re-based by half turns: past 90 deg the cell sits on the
        # ellipse's other end
        lag = self._phi_at(float(time_s), phi) - (th + self._offset)
        if lag < -s.ahead_limit_deg:
            # not a half-turn slip (that leaves the cell *behind*): the measurement is wrong
            self._state = LoopState.ANGLE_AHEAD
            self._last_lag = lag
            events.append(LoopEvent.ANGLE_AHEAD)
            self._apply(s.rate_deg_s, dt)
            return self._status(time_s, self._last_cell_rate, lag, events)
        if abs(lag) > 90.0:
            half_turns = round(lag / 180.0)
            self._offset += 180.0 * half_turns
            lag -= 180.0 * half_turns
            events.append(LoopEvent.SLIP_HALF_TURN)
            self._slip(th)
        self._last_lag = lag
        self._learn_torque(th, self._phi_at(float(time_s), phi), lag, dt)

        if th < self._furthest - s.slip_back_deg:
            events.append(LoopEvent.SLIP_BACKWARDS)
            self._slip(th)
        self._furthest = max(self._furthest, th)

        self._hist.append((float(time_s), th))
        while len(self._hist) > 2 and self._hist[0][0] < time_s - s.rate_window_s:
            self._hist.popleft()
        cell_rate = self._fit_rate(s.rate_window_s)
        fast_rate = self._fit_rate(s.control_window_s)
        self._last_cell_rate = cell_rate

        target = self._target_rate()
        self._detect_stall(cell_rate, target, lag, events)
        target = self._target_rate()  # the state may have changed

        if self._state == LoopState.NOT_FOLLOWING:
            want = 0.0
        else:
            self._ref += target * dt
            err = self._ref - th
            if abs(err) > s.max_error_deg:
                self._ref = th + math.copysign(s.max_error_deg, err)
                err = self._ref - th
            cell_target = target + s.gain_per_s * err
            if fast_rate is not None:
                cell_target += s.rate_gain * (target - fast_rate)
            # inverse trap model: the lag whose torque turns the cell at that rate, looked up at
            # the ellipse angle it needs (the beam is weak at some angles); the cell is predicted
            # forward over the pipeline delay
            ahead = fast_rate if fast_rate is not None else target
            base = self._fit_end(s.control_window_s) if s.smooth_angle else None
            cell_now = (th if base is None else base) + self._offset + latency * max(ahead, 0.0)
            if self.uses_hologram_model:
                # deadbeat: the ellipse goes to the angle the model asks for within servo_frames
                # (a feed-forward of the target rate on top measured worse: a frame of lag more)
                want_lag = self._lag_for(max(cell_target, 0.0), cell_now, True)
                frame_dt = dt if dt > 0 else 1.0 / s.slm_refresh_hz
                want = (cell_now + want_lag - phi) / (s.servo_frames * frame_dt)
            else:
                # gentle: turn at the cell's target rate, pull towards the uniform-trap lag
                want_lag = self._lag_for(max(cell_target, 0.0), cell_now, False)
                # (at most half the set rate either way: a cell starting from rest builds its
                # lag gradually, as in open loop, instead of being yanked to it)
                pull = s.gentle_servo_per_s * (cell_now + want_lag - phi)
                pull = min(max(pull, -0.5 * s.rate_deg_s), 0.5 * s.rate_deg_s)
                want = max(cell_target, 0.0) + pull
            # the lag's hard bound, in both laws: the ellipse never runs more than max_lag ahead
            # of the cell (the torque falls past 45 deg and reverses at 90: an ellipse that keeps
            # turning over a weak stretch laps the cell); past it the ellipse waits for the cell
            frame_dt = dt if dt > 0 else 1.0 / s.slm_refresh_hz
            want = min(want, max(ahead, 0.0) + (cell_now + s.max_lag_deg - phi) / frame_dt)
            if self._recover_left > 0:
                self._recover_left -= 1
                if self._recover_left == 0 and self._state == LoopState.SLIPPED:
                    self._state = LoopState.FOLLOWING
                    events.append(LoopEvent.RECOVERED)
        self._apply(want, dt)
        return self._status(time_s, cell_rate, lag, events)

    # ------------------------------------------------------------------ trap model
    def _profile_at(self, phi_deg: np.ndarray | float) -> np.ndarray:
        """Relative torque at ellipse angle(s): the nearest step (the SLM shows the nearest
        step's hologram), 180-deg periodic."""
        prof = self._profile
        if prof is None:
            return np.ones_like(np.asarray(phi_deg, float))
        n = prof.size
        return prof[np.round(np.asarray(phi_deg, float) / (180.0 / n)).astype(int) % n]

    def _orient_at(self, phi_deg: np.ndarray | float) -> np.ndarray:
        """Realised-minus-commanded beam angle at ellipse angle(s) (nearest step)."""
        err = self._orient
        if err is None:
            return np.zeros_like(np.asarray(phi_deg, float))
        n = err.size
        return err[np.round(np.asarray(phi_deg, float) / (180.0 / n)).astype(int) % n]

    def _phi_at(self, t: float, default: float) -> float:
        """Ellipse angle at time ``t`` (the exposure of a late frame), from the angles seen at
        earlier calls; ``default`` when ``t`` is not covered."""
        ph = self._phis
        if not ph or t >= ph[-1][0]:
            return default
        if t <= ph[0][0]:
            return ph[0][1]
        ts = np.fromiter((p[0] for p in ph), float, len(ph))
        vs = np.fromiter((p[1] for p in ph), float, len(ph))
        return float(np.interp(t, ts, vs))

    @property
    def torque_scale_deg_s(self) -> float:
        """Current estimate of omega_max at profile 1 (deg/s)."""
        return self._sxy / self._sss if self._sss > 1e-9 else self.settings.torque_guess_deg_s

    def _learn_torque(self, th: float, phi: float, lag: float, dt: float) -> None:
        """Least squares with forgetting of cell rate = scale x profile(phi) x sin(2 lag), from
        consecutive measured angles (the profile and lag of the previous frame drove the step)."""
        prev = self._prev
        true_lag = lag + float(self._orient_at(phi))
        self._prev = (th, float(self._profile_at(phi)) * math.sin(math.radians(2.0 * true_lag)))
        if prev is None or dt <= 0:
            return
        x = prev[1]
        if x < 0.05 or not self.settings.learn_torque:  # too little lag: tracker error dominates
            return
        y = (th - prev[0]) / dt
        forget = math.exp(-dt / self.settings.torque_memory_s)
        self._sxy = forget * self._sxy + x * y
        self._sss = forget * self._sss + x * x

    @property
    def uses_hologram_model(self) -> bool:
        """Whether the per-angle hologram model steers the ellipse now (``model_min_swing_deg``,
        with 25 % hysteresis so a fluctuating torque estimate does not flip the law each frame)."""
        if self._profile is None or self._t_first is None or self._t_last is None:
            return False
        if self._t_last - self._t_first < self.settings.model_warmup_s:
            return False  # the torque scale is still the first guess: no model-sized jumps yet
        swing, thr = self.lag_swing_deg(), self.settings.model_min_swing_deg
        if swing >= thr:
            self._model_on = True
        elif swing < 0.75 * thr:
            self._model_on = False
        return self._model_on

    def lag_swing_deg(self) -> float:
        """How much the lag the trap needs at the set rate varies over the ellipse angles
        (deg; 0 without a strength profile), with the current torque estimate."""
        if self._profile is None:
            return 0.0
        s = self.settings
        scale = max(self.torque_scale_deg_s, 1.05 * s.rate_deg_s, 1e-6)
        ratio = np.clip(s.rate_deg_s / (scale * np.maximum(self._profile, 1e-9)), 0.0, 1.0)
        lags = 0.5 * np.degrees(np.arcsin(ratio))
        return float(lags.max() - lags.min())

    def _lag_for(self, rate: float, cell_deg: float, model: bool = True) -> float:
        """The smallest lag (deg, <= max_lag) whose modelled torque comes closest to ``rate``.

        Closest, not "at least": where the holograms ahead of the cell are weak, the lag that
        would reach the rate may sit beyond the weak stretch, with a strong beam and a large
        lag that throws the cell forward in a burst. Turning a little slower at the weak angles
        (largest torque the weak beam gives) samples the cell more evenly."""
        lags = self._lag_grid
        # a trap that cannot turn the cell at the set rate is no trap for this run: after a
        # stall the estimate may fall near zero, and the loop must still try with a real lag
        scale = max(self.torque_scale_deg_s, 1.05 * self.settings.rate_deg_s, 1e-6)
        if model:
            phis = cell_deg + lags
            torque = scale * self._profile_at(phis) * np.sin(np.deg2rad(2.0 * (lags + self._orient_at(phis))))
        else:
            torque = scale * self._sin_grid
        miss = np.abs(torque - rate)
        ok = np.flatnonzero(miss <= miss.min() + 0.02 * max(rate, 1e-6))
        return float(lags[ok[0]])

    # ------------------------------------------------------------------ internals
    def _target_rate(self) -> float:
        s = self.settings
        if self._state in (LoopState.STALLED, LoopState.SLIPPED):
            return s.rate_deg_s * s.stall_slowdown
        if self._state in (LoopState.NOT_FOLLOWING, LoopState.TRACKER_LOST, LoopState.STARTING):
            return 0.0
        return s.rate_deg_s

    def _fit_end(self, window_s: float) -> float | None:
        """Cell angle at the newest sample from a line fit over ``window_s`` (None: too few)."""
        recent = [h for h in self._hist if h[0] >= self._hist[-1][0] - window_s] if self._hist else []
        if len(recent) < 3:
            return None
        t = np.fromiter((h[0] for h in recent), float, len(recent))
        a = np.fromiter((h[1] for h in recent), float, len(recent))
        slope, icept = np.polyfit(t - t[-1], a, 1)
        return float(icept)

    def _fit_rate(self, window_s: float) -> float | None:
        """Least-squares slope of the cell angles of the last ``window_s`` (deg/s); None with
        fewer than 3 samples."""
        recent = [h for h in self._hist if h[0] >= self._hist[-1][0] - window_s] if self._hist else []
        if len(recent) < 3:
            return None
        t = np.fromiter((h[0] for h in recent), float, len(recent))
        a = np.fromiter((h[1] for h in recent), float, len(recent))
        t = t - t.mean()
        denom = float(t @ t)
        if denom <= 0:
            return None
        return float(t @ (a - a.mean()) / denom)

    def _slip(self, th: float) -> None:
        self._prev = None
        self._ref = th
        self._furthest = th
        self._hist.clear()
        self._slow_count = 0
        if self._state != LoopState.NOT_FOLLOWING:
            self._state = LoopState.SLIPPED
            self._recover_left = self.settings.recover_frames

    def _enter_recovery(self) -> None:
        self._state = LoopState.SLIPPED
        self._recover_left = self.settings.recover_frames
        self._hist.clear()
        self._slow_count = 0

    def _detect_stall(self, cell_rate: float | None, target: float, lag: float, events: list[LoopEvent]) -> None:
        s = self.settings
        if cell_rate is None or target <= 0 and self._state != LoopState.NOT_FOLLOWING:
            return
        if self._t_first is not None and self._t_last is not None and self._t_last - self._t_first < 2 * s.rate_window_s:
            return  # starting from rest: the rate window still holds the standstill
        if self._state == LoopState.NOT_FOLLOWING:
            # held: the cell turning towards the ellipse again (lag taken back) means it follows
            if lag < 0.25 * s.max_lag_deg or cell_rate > s.stall_fraction * s.rate_deg_s * s.stall_slowdown:
                self._state = LoopState.STALLED
                self._stall_age = 0
                self._fast_count = 0
                self._ref = self._hist[-1][1]
                events.append(LoopEvent.RECOVERED)
            return
        slow = cell_rate < s.stall_fraction * target
        self._slow_count = self._slow_count + 1 if slow else 0
        if self._state == LoopState.STALLED:
            self._stall_age += 1
            fast = cell_rate >= (1.0 - s.tolerance) * target
            self._fast_count = self._fast_count + 1 if fast else 0
            if self._fast_count >= s.stall_frames:
                self._state = LoopState.FOLLOWING
                events.append(LoopEvent.STALL_CLEARED)
                self._ref = self._hist[-1][1]
            elif self._stall_age >= s.not_following_frames and self._slow_count >= s.stall_frames:
                self._state = LoopState.NOT_FOLLOWING
                events.append(LoopEvent.NOT_FOLLOWING)
            return
        if self._slow_count >= s.stall_frames and self._state in (LoopState.FOLLOWING, LoopState.SLIPPED):
            self._state = LoopState.STALLED
            self._stall_age = 0
            self._fast_count = 0
            self._slow_count = 0
            self._ref = self._hist[-1][1]
            events.append(LoopEvent.STALL)

    def _apply(self, want: float, dt: float) -> None:
        """Rate limit [0, ceiling] and acceleration limit (a first frame jumps no more than
        one frame's worth of acceleration at the SLM refresh)."""
        s = self.settings
        want = min(max(want, 0.0), s.rate_limit_deg_s)
        step_dt = dt if dt > 0 else 1.0 / s.slm_refresh_hz
        dv = s.max_accel_deg_s2 * step_dt
        self._rate = min(max(want, self._rate - dv), self._rate + dv)
        self._rate = min(max(self._rate, 0.0), s.rate_limit_deg_s)

    def _status(self, time_s: float, cell_rate: float | None, lag: float | None, events: list[LoopEvent]) -> RotationStatus:
        s = self.settings
        within = cell_rate is not None and abs(cell_rate - s.rate_deg_s) <= s.tolerance * s.rate_deg_s
        return RotationStatus(
            time_s=float(time_s),
            state=self._state,
            commanded_rate_deg_s=self._rate,
            direction=s.direction,
            set_rate_deg_s=s.rate_deg_s,
            cell_rate_deg_s=cell_rate,
            lag_deg=lag,
            within_tolerance=bool(within),
            message=_MESSAGES[self._state],
            events=tuple(events),
        )


class RateDriver(Protocol):
    """What :class:`RotationLoop` needs of the ellipse driver
    (:class:`~mcf_rotator.holography.sequencer.RotationDriver` has it)."""

    @property
    def angle_deg(self) -> float: ...

    def command_rate(self, rate_deg_s: float, direction: int | None = None) -> float: ...


@dataclass
class RotationLoop:
    """Controller + ellipse driver: one :meth:`step` per camera frame (pipeline thread).

    Reads the commanded ellipse angle from the driver, runs the controller, and applies the
    result through the driver's thread-safe ``command_rate``. ``history`` keeps the
    statuses for the angle/lag plot (bounded)."""

    controller: RotationController
    driver: RateDriver
    history_size: int = 100_000
    history: deque[RotationStatus] = field(default_factory=deque)

    def step(self, time_s: float, cell_angle_deg: float | None, now_s: float | None = None) -> RotationStatus:
        status = self.controller.update(time_s, cell_angle_deg, self.driver.angle_deg, now_s=now_s)
        self.driver.command_rate(status.commanded_rate_deg_s, status.direction)
        self.history.append(status)
        while len(self.history) > self.history_size:
            self.history.popleft()
        return status


# ---------------------------------------------------------------------- hologram model
def beam_profiles(sequencer: Any, geometry: Any, grid_size: int = 64) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(strength, orientation error) per ellipse step of ``sequencer``, from the far-field model.

    Why: the trap's torque at an ellipse angle is set by the hologram shown there (how bright
    and how elongated its spot is), and it acts on the *realised* spot orientation. Both are
    known before a run from the same model the sequencer's precompute uses; the controller
    then leads the cell more where the hologram is weak instead of discovering each weak
    stretch by stalling on it. Strength = efficiency x ellipticity (see
    :mod:`mcf_rotator.simulation.trap`), for a perfectly calibrated fibre of uniform cores; the
    orientation error is realised minus commanded angle, wrapped to +-90 deg.
    """
    from mcf_rotator.holography.mcf import FarFieldGrid, far_field_intensity, far_field_matrix
    from mcf_rotator.simulation.trap import FarFieldAnalyser

    grid = FarFieldGrid.for_geometry(geometry, grid_size)
    matrix = far_field_matrix(geometry, grid)
    analyse = FarFieldAnalyser(geometry, grid, far_field_intensity(np.zeros(geometry.n_cores), matrix))
    strength, orient = [], []
    for k in range(sequencer.n_steps):
        angle = sequencer.step_angle(k)
        b = analyse(far_field_intensity(sequencer.core_phases(angle), matrix))
        strength.append(float(b.efficiency * b.ellipticity))
        orient.append(float((b.angle_deg - angle + 90.0) % 180.0 - 90.0))
    return tuple(strength), tuple(orient)


# ---------------------------------------------------------------------- coverage
def cell_coverage_deg(angles_deg: Iterable[float], max_step_deg: float = 5.0) -> float:
    """Degrees of the cell's orientation (modulo 360) seen by views spaced no more than
    ``max_step_deg`` apart; at most 360.

    Why not ``max - min`` of the angles (the command's view of coverage): a cell that slips
    back and turns the same stretch twice, or jumps ahead in a burst, has not been *seen*
    over the whole range. Each pair of consecutive views spans the arc between them; arcs
    longer than ``max_step_deg`` (a gap in the sampling) count nothing; the union of the arcs
    on the circle is the coverage. A run stops on this reaching the target, computed from the
    cell's measured (refined, when available) angles. ``None`` / non-finite angles (frames
    without a tracker estimate) are skipped: what counts is how far apart the views that
    do have an angle are.
    """
    a = np.asarray([np.nan if v is None else float(v) for v in angles_deg], dtype=float)
    a = a[np.isfinite(a)]
    if a.size < 2:
        return 0.0
    lo = np.minimum(a[:-1], a[1:])
    hi = np.maximum(a[:-1], a[1:])
    ok = np.isfinite(lo) & np.isfinite(hi) & (hi - lo <= max_step_deg) & (hi > lo)
    lo, hi = lo[ok], hi[ok]
    if lo.size == 0:
        return 0.0
    if float((hi - lo).max()) >= 360.0:
        return 360.0
    start = np.mod(lo, 360.0)
    end = start + (hi - lo)
    # split arcs that cross 360 into two
    wrap = end > 360.0
    starts = np.concatenate([start, np.zeros(int(wrap.sum()))])
    ends = np.concatenate([np.minimum(end, 360.0), end[wrap] - 360.0])
    order = np.argsort(starts)
    starts, ends = starts[order], ends[order]
    covered = 0.0
    cur_s, cur_e = starts[0], ends[0]
    for s0, e0 in zip(starts[1:], ends[1:]):
        if s0 <= cur_e:
            cur_e = max(cur_e, e0)
        else:
            covered += cur_e - cur_s
            cur_s, cur_e = s0, e0
    covered += cur_e - cur_s
    return float(min(covered, 360.0))


def largest_view_gap_deg(angles_deg: Iterable[float]) -> float:
    """Largest angular gap between neighbouring views on the circle (mod 360, after sorting):
    the worst-sampled direction of the reconstruction. 360 with fewer than two views."""
    a = np.asarray([v for v in angles_deg if v is not None and math.isfinite(float(v))], dtype=float)
    if a.size < 2:
        return 360.0
    w = np.sort(np.mod(a, 360.0))
    gaps = np.diff(np.concatenate([w, [w[0] + 360.0]]))
    return float(gaps.max())
