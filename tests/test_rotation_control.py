"""Closed-loop rotation controller on scripted, deterministic plants; coverage helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcf_rotator.holography.sequencer import RotationDriver
from mcf_rotator.rotation_control import (
    LoopEvent,
    LoopSettings,
    LoopState,
    RotationController,
    RotationLoop,
    cell_coverage_deg,
    largest_view_gap_deg,
    rate_from_step_per_frame,
    slm_rate_limit_deg_s,
)

FPS = 60.0
DT = 1.0 / FPS


class TrapPlant:
    """Noise-free overdamped trap: d theta/dt = w * sin(2 (phi - theta)), exact sub-steps."""

    def __init__(self, w_deg_s: float = 300.0) -> None:
        self.w = w_deg_s
        self.theta = 0.0
        self.phi = 0.0

    def step(self, rate: float, direction: int = 1) -> None:
        for _ in range(20):
            self.phi += direction * rate * DT / 20
            self.theta += DT / 20 * self.w * math.sin(math.radians(2.0 * (self.phi - self.theta)))


def run(ctl: RotationController, plant: TrapPlant, n: int, t0: float = 0.0, measure=None):
    statuses = []
    for i in range(n):
        t = t0 + i * DT
        angle = plant.theta if measure is None else measure(i, plant)
        st = ctl.update(t, angle, plant.phi)
        statuses.append(st)
        plant.step(st.commanded_rate_deg_s, st.direction)
    return statuses


@pytest.mark.parametrize("direction", [1, -1])
def test_cell_settles_at_the_set_rate_with_the_physical_lag(direction: int) -> None:
    plant = TrapPlant(300.0)
    ctl = RotationController(LoopSettings(rate_deg_s=60.0, direction=direction))
    sts = run(ctl, plant, int(3 * FPS))
    last = sts[-1]
    assert last.state == LoopState.FOLLOWING and last.within_tolerance
    assert last.cell_rate_deg_s == pytest.approx(60.0, rel=0.05)
    assert abs(plant.theta) == pytest.approx(60.0 * 3.0, abs=15.0)  # the plant itself turned at the rate
    expected_lag = 0.5 * math.degrees(math.asin(60.0 / 300.0))
    assert last.lag_deg == pytest.approx(expected_lag, abs=1.5)
    assert ctl.torque_scale_deg_s == pytest.approx(300.0, rel=0.15)  # learnt from the motion
    assert np.sign(plant.phi) == direction


def test_step_per_frame_target_and_slm_limit() -> None:
    assert rate_from_step_per_frame(0.5, 60.0) == pytest.approx(30.0)
    with pytest.raises(ValueError, match="frame rate"):
        rate_from_step_per_frame(0.5, 0.0)
    ctl = RotationController()
    ctl.set_target(step_per_frame_deg=0.25, frame_rate_hz=120.0)
    assert ctl.settings.rate_deg_s == pytest.approx(30.0)
    with pytest.raises(ValueError, match="frame rate"):
        ctl.set_target(step_per_frame_deg=0.5)
    s = LoopSettings(max_rate_deg_s=300.0, max_step_per_slm_frame_deg=1.0, slm_refresh_hz=60.0)
    assert s.rate_limit_deg_s == pytest.approx(slm_rate_limit_deg_s(1.0, 60.0)) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="max_lag"):
        LoopSettings(max_lag_deg=95.0)


def test_rate_and_acceleration_stay_bounded() -> None:
    """A cell reported far behind and then far ahead: the command saturates, never jumps."""
    s = LoopSettings(rate_deg_s=40.0, max_step_per_slm_frame_deg=1.0, slm_refresh_hz=60.0, max_accel_deg_s2=300.0)
    plant = TrapPlant(2000.0)
    ctl = RotationController(s)

    def measure(i: int, p: TrapPlant) -> float:
        return p.theta - (30.0 if 30 <= i < 90 else 0.0) + (30.0 if 120 <= i < 180 else 0.0)

    rates = np.array([st.commanded_rate_deg_s for st in run(ctl, plant, 240, measure=measure)])
    assert rates.max() <= s.rate_limit_deg_s + 1e-9 and rates.min() >= 0.0
    assert np.abs(np.diff(rates)).max() <= s.max_accel_deg_s2 * DT + 1e-9
    assert rates.max() == pytest.approx(s.rate_limit_deg_s)  # it did saturate


def test_stuck_cell_is_a_stall_then_not_following_and_the_lag_stays_bounded() -> None:
    s = LoopSettings(rate_deg_s=30.0, stall_frames=10, not_following_frames=30)
    plant = TrapPlant(0.0)  # no torque: the cell never moves
    ctl = RotationController(s)
    sts = run(ctl, plant, 240)
    events = [e for st in sts for e in st.events]
    assert events.index(LoopEvent.STALL) < events.index(LoopEvent.NOT_FOLLOWING)
    last = sts[-1]
    assert last.state == LoopState.NOT_FOLLOWING and last.holding and "not following" in last.message
    assert last.commanded_rate_deg_s == 0.0
    assert max(st.lag_deg for st in sts) < s.max_lag_deg + 5.0  # never near the 90 deg slip
    # the trap comes back (more power): the cell turns towards the ellipse, the loop resumes
    plant.w = 300.0
    sts = run(ctl, plant, 240, t0=4.0)
    assert LoopEvent.RECOVERED in [e for st in sts for e in st.events]
    assert sts[-1].state == LoopState.FOLLOWING and sts[-1].cell_rate_deg_s == pytest.approx(30.0, rel=0.15)


def test_backward_slip_is_detected_and_recovered() -> None:
    s = LoopSettings(rate_deg_s=30.0, recover_frames=20)
    plant = TrapPlant(300.0)
    ctl = RotationController(s)
    run(ctl, plant, 60)
    plant.theta -= 12.0  # the cell turns back
    sts = run(ctl, plant, 120, t0=1.0)
    assert LoopEvent.SLIP_BACKWARDS in sts[0].events and sts[0].state == LoopState.SLIPPED
    assert LoopEvent.RECOVERED in [e for st in sts for e in st.events]
    assert sts[-1].state == LoopState.FOLLOWING


def test_half_turn_slip_rebases_the_lag() -> None:
    plant = TrapPlant(300.0)
    ctl = RotationController(LoopSettings(rate_deg_s=30.0))
    run(ctl, plant, 30)
    st = ctl.update(30 * DT, plant.theta - 175.0, plant.phi)  # the cell sits on the other end
    assert LoopEvent.SLIP_HALF_TURN in st.events and abs(st.lag_deg) <= 90.0


def test_tracker_loss_holds_the_ellipse_then_resumes() -> None:
    s = LoopSettings(rate_deg_s=30.0, lost_frames=5)
    plant = TrapPlant(300.0)
    ctl = RotationController(s)
    run(ctl, plant, 60)
    sts = run(ctl, plant, 30, t0=1.0, measure=lambda i, p: None)
    assert sts[3].state == LoopState.FOLLOWING  # a few missing frames: coasts on
    assert LoopEvent.TRACKER_LOST in sts[4].events
    assert sts[-1].state == LoopState.TRACKER_LOST and sts[-1].commanded_rate_deg_s == 0.0
    back = run(ctl, plant, 120, t0=1.5)
    assert LoopEvent.TRACKER_FOUND in back[0].events
    assert back[-1].state == LoopState.FOLLOWING and back[-1].commanded_rate_deg_s > 0


def test_strength_profile_gives_more_lag_where_the_beam_is_weak() -> None:
    prof = np.ones(180)
    prof[60:120] = 0.25
    ctl = RotationController(LoopSettings(rate_deg_s=30.0, strength_profile=tuple(prof), torque_guess_deg_s=300.0))
    strong = ctl._lag_for(30.0, 0.0)
    weak = ctl._lag_for(30.0, 80.0)
    assert weak > 2 * strong
    with pytest.raises(ValueError, match="strength_profile"):
        RotationController(LoopSettings(strength_profile=(1.0, -1.0)))


class _Seq:
    step_deg = 1.0

    def step_index(self, a: float) -> int:
        return int(round(a)) % 180

    def phase_image(self, a: float) -> np.ndarray:
        return np.zeros((2, 2))


class _SLM:
    refresh_rate_hz = 60.0

    def show_phase(self, img: np.ndarray) -> None:
        pass


def test_loop_drives_the_real_rotation_driver_within_its_limits() -> None:
    now = [0.0]
    drv = RotationDriver(_SLM(), _Seq(), rate_deg_s=0.0, clock=lambda: now[0], max_step_per_refresh_deg=2.0)
    assert drv.max_rate_deg_s == pytest.approx(120.0)
    assert drv.command_rate(1e6) == pytest.approx(120.0) and drv.rate_deg_s == pytest.approx(120.0)
    assert drv.command_rate(-5.0) == 0.0 and drv.command_rate(float("nan")) == 0.0
    drv.start()
    loop = RotationLoop(RotationController(LoopSettings(rate_deg_s=30.0)), drv)
    w, theta = 300.0, 0.0
    for i in range(180):
        st = loop.step(now[0], theta)
        for _ in range(10):
            now[0] += DT / 10
            drv.tick()
            theta += DT / 10 * w * math.sin(math.radians(2.0 * (drv.angle_deg - theta)))
    assert st.state == LoopState.FOLLOWING and st.cell_rate_deg_s == pytest.approx(30.0, rel=0.1)
    assert 0.0 <= drv.rate_deg_s <= drv.max_rate_deg_s
    assert theta == pytest.approx(30.0 * 3.0, abs=10.0) and len(loop.history) == 180


def test_cell_coverage_counts_only_angles_seen_closely_spaced() -> None:
    ramp = np.arange(0.0, 360.5, 0.5)
    assert cell_coverage_deg(ramp) == pytest.approx(360.0)
    assert cell_coverage_deg(ramp[:361]) == pytest.approx(180.0)
    back_and_forth = np.concatenate([np.arange(0, 90, 0.5), np.arange(90, 0, -0.5), np.arange(0, 90, 0.5)])
    assert cell_coverage_deg(back_and_forth) == pytest.approx(90.0, abs=0.6)  # not 270
    burst = np.concatenate([np.arange(0, 100, 1.0), np.arange(140, 200, 1.0)])  # a 41-deg jump
    assert cell_coverage_deg(burst) == pytest.approx(99.0 + 59.0)
    with_gaps = [0.0, 1.0, None, 2.0, float("nan"), 3.0]
    assert cell_coverage_deg(with_gaps) == pytest.approx(3.0)
    assert cell_coverage_deg([350.0, 355.0, 360.0, 365.0]) == pytest.approx(15.0)  # wraps at 360
    assert cell_coverage_deg([]) == 0.0


def test_largest_view_gap_on_the_circle() -> None:
    assert largest_view_gap_deg(np.arange(0, 360, 2.0)) == pytest.approx(2.0)
    assert largest_view_gap_deg([10.0, 20.0, 370.0 + 5.0]) == pytest.approx(350.0)  # 375 -> 15
    assert largest_view_gap_deg([1.0]) == 360.0


def test_beam_profiles_from_the_far_field_model() -> None:
    """The analytic elliptical beam: uniform strength, orientation within the lattice's ~1.3 deg."""
    from mcf_rotator.holography.mcf import MCFGeometry
    from mcf_rotator.rotation_control import beam_profiles
    from mcf_rotator.simulation.fibre import cylindrical_lens_phases

    geometry = MCFGeometry.hexagonal(4)

    class Lens:
        n_steps = 36

        def step_angle(self, k: int) -> float:
            return 5.0 * k

        def core_phases(self, angle: float) -> np.ndarray:
            return cylindrical_lens_phases(geometry, angle)

    strength, orient = beam_profiles(Lens(), geometry)
    assert len(strength) == len(orient) == 36
    assert 0.2 < min(strength) and max(strength) < 1.5 * min(strength)
    assert max(abs(o) for o in orient) < 2.0
    ctl = RotationController(LoopSettings(strength_profile=strength, orientation_error_deg=orient))
    assert ctl._orient_at(5.0) == pytest.approx(orient[1])
    with pytest.raises(ValueError, match="orientation_error"):
        RotationController(LoopSettings(orientation_error_deg=(50.0, 0.0)))


def test_hologram_model_steers_only_when_the_needed_lag_swings_widely() -> None:
    weak = np.ones(180)
    weak[60:120] = 0.2
    for profile, expect in ((weak, True), (np.linspace(1.0, 0.9, 180), False)):
        ctl = RotationController(LoopSettings(rate_deg_s=60.0, strength_profile=tuple(profile)))
        plant = TrapPlant(300.0)
        run(ctl, plant, 12)
        assert not ctl.uses_hologram_model  # still warming up: the torque scale is a guess
        run(ctl, plant, 60, t0=12 * DT)
        assert ctl.uses_hologram_model is expect, ctl.lag_swing_deg()


def test_call_time_gives_the_actual_pipeline_delay() -> None:
    """``now_s`` (a queue's varying delay) does what a fixed ``latency_s`` of the same size does,
    and a different delay commands differently."""
    def commands(settings: LoopSettings, delay: float | None) -> list[float]:
        ctl, plant, out = RotationController(settings), TrapPlant(200.0), []
        for i in range(120):
            t = i * DT
            st = ctl.update(t, plant.theta, plant.phi, now_s=None if delay is None else t + delay)
            out.append(st.commanded_rate_deg_s)
            plant.step(st.commanded_rate_deg_s)
        return out

    fixed = commands(LoopSettings(rate_deg_s=30.0, latency_s=0.05), None)
    given = commands(LoopSettings(rate_deg_s=30.0), 0.05)
    assert given == pytest.approx(fixed, abs=1e-9)
    none = commands(LoopSettings(rate_deg_s=30.0, latency_s=0.05), 0.0)  # now_s wins over latency_s
    assert max(abs(a - b) for a, b in zip(none, fixed)) > 1e-3


def test_a_tracker_that_over_counts_hands_back_to_the_set_rate() -> None:
    """A trapped cell trails the ellipse: a tracked angle far ahead of it is a wrong measurement
    (the simulated rig's live tracker read 2x the turn when the cell turned slower than nominal)."""
    plant = TrapPlant(300.0)
    ctl = RotationController(LoopSettings(rate_deg_s=30.0))
    statuses = run(ctl, plant, 400, measure=lambda i, p: 2.0 * p.theta)
    ahead = [i for i, st in enumerate(statuses) if st.state == LoopState.ANGLE_AHEAD]
    assert ahead, "the over-counting tracker was not noticed"
    first = ahead[0]
    assert LoopEvent.ANGLE_AHEAD in statuses[first].events
    assert all(st.state == LoopState.ANGLE_AHEAD for st in statuses[first:])  # sticky
    assert statuses[-1].commanded_rate_deg_s == pytest.approx(30.0)
    assert not any(LoopEvent.SLIP_HALF_TURN in st.events for st in statuses)  # not taken for a slip


def test_a_revised_angle_is_a_correction_not_a_burst_or_a_slip() -> None:
    def jump_run(correct: bool) -> list:
        plant, ctl, out = TrapPlant(300.0), RotationController(LoopSettings(rate_deg_s=30.0)), []
        for i in range(200):
            bias = -8.0 if i >= 100 else 0.0  # a re-solve revised the angles by -8 deg at frame 100
            st = ctl.update(i * DT, plant.theta + bias, plant.phi)
            if correct and i == 99:
                ctl.correct_angle(-8.0)
            out.append(st)
            plant.step(st.commanded_rate_deg_s)
        return out

    plain, corrected = jump_run(False), jump_run(True)
    assert any(LoopEvent.SLIP_BACKWARDS in st.events for st in plain[100:])
    assert not any(LoopEvent.SLIP_BACKWARDS in st.events for st in corrected[100:])
    assert all(st.state == LoopState.FOLLOWING for st in corrected[100:])
