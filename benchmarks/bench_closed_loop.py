"""Benchmark: open- vs closed-loop rotation on the simulated stick-slip trap.

The plant is the simulated rig's own physics, stepped at the camera frame rate:

- beam: the real ellipse holograms. The rig's default generator (CoreNet, else GS) fills an
  :class:`~mcf_rotator.holography.sequencer.EllipseSequencer` exactly as the controller does
  (orientation-true precompute, 1 deg steps, perfect calibration of the simulated fibre); the
  :class:`~mcf_rotator.simulation.trap.BeamState` the simulated world computes for each step is
  tabulated once. Where the realised spot is round or dim (``efficiency x ellipticity`` low) the
  trap's torque drops ~4x: that is what makes the cell stall and then catch up;
- trap: :class:`~mcf_rotator.simulation.trap.RotationalTrap` (torque ``omega_max sin(2 lag)``,
  Brownian rotation, lateral escape when the beam is too weak: a lost cell) at three laser powers;
- ellipse: the real :class:`~mcf_rotator.holography.sequencer.RotationDriver` in clock mode,
  ticked once per SLM refresh; closed loop sets its rate through ``command_rate``;
- tracker model: measured angle = true angle + white noise (``--noise`` deg, default 0.6)
  + a random-walk drift (``--drift`` deg/sqrt(s), default 0.3) + a scale error drawn per seed
  in +-2 % (optical flow under/over-counts), with 1 % of frames missing (``None``) and the
  estimate reaching the controller ``--latency`` frames late (default 2: pipeline delay).

Open and closed loop run at the same set rate; each run ends when the cell's *measured*
coverage (:func:`~mcf_rotator.rotation_control.cell_coverage_deg`) reaches 360 deg, when the
cell is lost, or after 3x the nominal time. Figures from the cell's *true* angles: spread of
the per-frame step (std / mean), largest gap between neighbouring views (mod 360), cells lost,
time to 360 deg and the achieved mean rate; median and worst over seeds, and closed/open ratios.
A comparison plot goes to ``docs/closed_loop.png``.

Usage: ``python benchmarks/bench_closed_loop.py [--seeds 5] [--rates 30 90] [--powers 100 60 45] [--no-model]``.
The volume's fine-structure correlation needs full rig runs (rendering + reconstruction) and is
not part of this benchmark.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcf_rotator.holography.sequencer import RotationDriver
from mcf_rotator.rotation_control import (
    LoopSettings,
    beam_profiles,
    RotationController,
    cell_coverage_deg,
    largest_view_gap_deg,
)
from mcf_rotator.simulation.trap import BeamState, RotationalTrap, TrapParameters


# ---------------------------------------------------------------------- plant pieces
def beam_table(step_deg: float = 1.0, seed: int = 0) -> tuple[list[BeamState], str, tuple, tuple]:
    """BeamState per ellipse step of the real holograms through a calibrated simulated fibre
    (the plant), and the controller's model of them (:func:`beam_profiles`: uniform cores)."""
    from mcf_rotator.config import RigConfig
    from mcf_rotator.controller import default_hologram_generator
    from mcf_rotator.holography.sequencer import EllipseSequencer
    from mcf_rotator.simulation.world import SimulatedWorld

    cfg = RigConfig()
    cfg.simulation.seed = seed
    world = SimulatedWorld(cfg)
    gen = default_hologram_generator(cfg, world.geometry)
    seq = EllipseSequencer(gen, world.mapping, correction=world.fibre.correction(), step_deg=step_deg,
                           axes=cfg.rotation.ellipse_axes)
    seq.precompute()
    table = []
    for k in range(seq.n_steps):
        world.set_core_phases(seq.corrected_core_phases(seq.step_angle(k)))
        table.append(world.beam_state())
    strength, orient = beam_profiles(seq, world.geometry)
    return table, type(gen).__name__, strength, orient


class TableSequencer:
    """The sequencer interface RotationDriver uses, showing a step index instead of an image
    (the beam for each step is already tabulated: no 2-megapixel pattern per refresh)."""

    def __init__(self, n_steps: int, step_deg: float) -> None:
        self.n_steps = n_steps
        self.step_deg = step_deg

    def step_index(self, angle_deg: float) -> int:
        return int(np.round(angle_deg / self.step_deg)) % self.n_steps

    def phase_image(self, angle_deg: float) -> np.ndarray:
        return np.array(self.step_index(angle_deg))


class TableSLM:
    """Fake SLM: remembers the step shown."""

    def __init__(self, refresh_rate_hz: float) -> None:
        self.refresh_rate_hz = refresh_rate_hz
        self.step = 0

    def show_phase(self, image: np.ndarray) -> None:
        self.step = int(image)


@dataclass
class Tracker:
    """Live tracker error model (see the module docstring)."""

    rng: np.random.Generator
    noise_deg: float
    drift_deg_sqrt_s: float
    dropout: float = 0.01

    def __post_init__(self) -> None:
        self.scale = 1.0 + self.rng.uniform(-0.02, 0.02)
        self.drift = 0.0

    def measure(self, true_deg: float, dt: float) -> float | None:
        self.drift += self.drift_deg_sqrt_s * np.sqrt(dt) * self.rng.standard_normal()
        value = self.scale * true_deg + self.drift + self.noise_deg * self.rng.standard_normal()
        return None if self.rng.random() < self.dropout else float(value)


@dataclass
class RunResult:
    closed: bool
    power_mw: float
    seed: int
    t: np.ndarray
    commanded: np.ndarray
    true: np.ndarray
    lost: bool
    time_to_360_s: float | None
    states: list[str]

    @property
    def steps(self) -> np.ndarray:
        return np.diff(self.true)

    @property
    def spread(self) -> float:
        st = self.steps
        return float(np.std(st) / np.mean(st)) if st.size and np.mean(st) > 0 else float("inf")

    @property
    def largest_gap(self) -> float:
        return largest_view_gap_deg(self.true)

    @property
    def mean_rate(self) -> float:
        return float((self.true[-1] - self.true[0]) / max(self.t[-1] - self.t[0], 1e-9))


def simulate(
    table: list[BeamState],
    closed: bool,
    power_mw: float,
    seed: int,
    rate_deg_s: float,
    camera_hz: float = 60.0,
    slm_hz: float = 60.0,
    noise_deg: float = 0.6,
    drift_deg_sqrt_s: float = 0.3,
    latency_frames: int = 2,
    step_deg: float = 1.0,
    settings: LoopSettings | None = None,
    model: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> RunResult:
    """One run (see the module docstring)."""
    rng = np.random.default_rng([seed, 2020])
    trap = RotationalTrap(TrapParameters(), seed=seed)
    tracker = Tracker(rng, noise_deg, drift_deg_sqrt_s)
    now = [0.0]
    slm = TableSLM(slm_hz)
    seq = TableSequencer(len(table), step_deg)
    drv = RotationDriver(slm, seq, rate_deg_s=rate_deg_s if not closed else 0.0, clock=lambda: now[0])
    trap.theta_deg = float(table[0].angle_deg)  # the cell rests aligned with the first ellipse
    ctl = RotationController(settings or LoopSettings(
        rate_deg_s=rate_deg_s, slm_refresh_hz=slm_hz, latency_s=latency_frames / camera_hz,
        strength_profile=model[0] if model else None, orientation_error_deg=model[1] if model else None))
    drv.start()
    n_sub = max(1, int(round(slm_hz / camera_hz)))
    frame_dt = 1.0 / camera_hz
    t_max = 3.0 * 360.0 / rate_deg_s
    ts, cmd, true, meas, states = [0.0], [drv.angle_deg], [trap.theta_deg], [tracker.measure(trap.theta_deg, 0.0)], []
    pending: list[tuple[float, float | None]] = [(0.0, meas[0])] * latency_frames
    lost, t360 = False, None
    while now[0] < t_max:
        for _ in range(n_sub):
            h = frame_dt / n_sub
            now[0] += h
            drv.tick()
            trap.step(h, table[slm.step], power_mw, True)
        m = tracker.measure(trap.theta_deg, frame_dt)
        ts.append(now[0])
        cmd.append(drv.angle_deg)
        true.append(trap.theta_deg)
        meas.append(m)
        pending.append((now[0], m))
        exposed_at, seen = pending.pop(0)
        if closed:
            status = ctl.update(exposed_at, seen, drv.angle_deg)
            drv.command_rate(status.commanded_rate_deg_s, status.direction)
            states.append(status.state.value)
        if not trap.trapped:
            lost = True
            break
        if len(meas) % 10 == 0 and cell_coverage_deg(meas) >= 360.0:
            t360 = now[0]
            break
    return RunResult(closed, power_mw, seed, np.array(ts), np.array(cmd), np.array(true), lost, t360, states)


# ---------------------------------------------------------------------- report
def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None or not np.isfinite(v) else format(v, spec)


def summarise(results: dict[tuple[float, bool], list[RunResult]], powers: list[float], n_seeds: int) -> str:
    """Table: median (worst) per case, closed/open ratios of the medians."""
    lines = []
    head = (f"{'power':>6} {'loop':>6} {'step spread':>16} {'largest gap':>18} {'lost':>6} "
            f"{'t to 360 (s)':>18} {'mean rate':>10}")
    lines.append(head)
    lines.append("-" * len(head))
    med: dict[tuple[float, bool], dict[str, float]] = {}
    for p in powers:
        for closed in (False, True):
            rs = results[(p, closed)]
            kept = [r for r in rs if not r.lost]
            spread = np.array([r.spread for r in kept]) if kept else np.array([np.inf])
            gap = np.array([r.largest_gap for r in kept]) if kept else np.array([np.inf])
            t360 = np.array([r.time_to_360_s if r.time_to_360_s is not None else np.inf for r in kept]) if kept else np.array([np.inf])
            rate = np.array([r.mean_rate for r in kept]) if kept else np.array([np.nan])
            n_lost = sum(r.lost for r in rs)
            med[(p, closed)] = {"spread": float(np.median(spread)), "gap": float(np.median(gap)),
                                "t360": float(np.median(t360)), "spread_w": float(spread.max()),
                                "gap_w": float(gap.max()), "lost": n_lost}
            lines.append(
                f"{p:>6.0f} {'closed' if closed else 'open':>6} "
                f"{_fmt(np.median(spread)):>7} ({_fmt(spread.max()):>6}) "
                f"{_fmt(np.median(gap), '.1f'):>8} ({_fmt(gap.max(), '.1f'):>6}) "
                f"{n_lost:>3}/{n_seeds:<2} "
                f"{_fmt(np.median(t360), '.1f'):>8} ({_fmt(t360.max(), '.1f'):>6}) "
                f"{_fmt(np.median(rate), '.1f'):>10}"
            )
    lines.append("")
    lines.append("closed / open (medians; worst over seeds in brackets):")
    for p in powers:
        o, c = med[(p, False)], med[(p, True)]
        lines.append(
            f"{p:>6.0f} mW: spread {_fmt(c['spread'] / o['spread'])} ({_fmt(c['spread_w'] / o['spread_w'])}), "
            f"gap {_fmt(c['gap'] / o['gap'])} ({_fmt(c['gap_w'] / o['gap_w'])}), "
            f"time to 360 {_fmt(c['t360'] / o['t360'])}, lost open {o['lost']} closed {c['lost']}"
        )
    return "\n".join(lines)


def plot(by_rate: dict[float, dict[tuple[float, bool], list[RunResult]]], powers: list[float], path: Path) -> None:
    """Per rate and power (first seed): commanded vs cell angle, and the cell's per-frame step,
    open vs closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = list(by_rate)
    fig, axes = plt.subplots(len(powers), 2 * len(rates), figsize=(6.5 * len(rates) * 2 / 1.3, 3.0 * len(powers)),
                             squeeze=False)
    for ci, rate in enumerate(rates):
        for row, p in zip(axes, powers):
            a_ang, a_step = row[2 * ci], row[2 * ci + 1]
            for closed, colour in ((False, "tab:red"), (True, "tab:blue")):
                r = by_rate[rate][(p, closed)][0]
                name = "closed" if closed else "open"
                a_ang.plot(r.t, r.commanded, color=colour, lw=0.8, ls="--", label=f"{name}: ellipse")
                a_ang.plot(r.t, r.true, color=colour, lw=1.2, label=f"{name}: cell")
                a_step.plot(r.t[1:], r.steps, color=colour, lw=0.7, alpha=0.8,
                            label=f"{name}: std/mean {r.spread:.2f}, gap {r.largest_gap:.1f} deg"
                            + (", LOST" if r.lost else ""))
            a_ang.set_title(f"{rate:g} deg/s, {p:g} mW: ellipse and cell angle", fontsize=9)
            a_ang.set_xlabel("time (s)")
            a_ang.set_ylabel("angle (deg)")
            a_ang.legend(fontsize=6)
            a_step.set_title(f"{rate:g} deg/s, {p:g} mW: cell step per frame", fontsize=9)
            a_step.set_xlabel("time (s)")
            a_step.set_ylabel("deg/frame")
            a_step.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rates", type=float, nargs="+", default=[30.0, 90.0],
                    help="set rates, deg/s (each the same for open and closed loop)")
    ap.add_argument("--powers", type=float, nargs="+", default=[100.0, 60.0, 45.0], help="laser powers, mW")
    ap.add_argument("--noise", type=float, default=0.6, help="tracker white noise, deg")
    ap.add_argument("--drift", type=float, default=0.3, help="tracker drift, deg/sqrt(s)")
    ap.add_argument("--latency", type=int, default=2, help="frames from exposure to angle")
    ap.add_argument("--no-model", action="store_true",
                    help="closed loop without the holograms' strength/orientation model (uniform trap)")
    ap.add_argument("--plot", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "closed_loop.png")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    table, gen_name, strength, orient = beam_table()
    model = None if args.no_model else (strength, orient)
    torque = np.array([b.efficiency * b.ellipticity for b in table]) * TrapParameters().torque_gain_deg_s
    print(f"beam table ({gen_name}, {len(table)} steps): omega_max at 100 mW {torque.min():.0f}-{torque.max():.0f} "
          f"deg/s (median {np.median(torque):.0f}), efficiency {min(b.efficiency for b in table):.2f}-"
          f"{max(b.efficiency for b in table):.2f}  [{time.perf_counter() - t0:.1f} s]")
    by_rate: dict[float, dict[tuple[float, bool], list[RunResult]]] = {}
    for rate in args.rates:
        results: dict[tuple[float, bool], list[RunResult]] = {}
        for p in args.powers:
            for closed in (False, True):
                results[(p, closed)] = [
                    simulate(table, closed, p, seed, rate, noise_deg=args.noise,
                             drift_deg_sqrt_s=args.drift, latency_frames=args.latency, model=model)
                    for seed in range(args.seeds)
                ]
        by_rate[rate] = results
        print(f"\nset rate {rate:g} deg/s ({rate / 60.0:.2f} deg/frame at 60 Hz), {args.seeds} seeds; "
              f"median (worst) over seeds not lost\n")
        print(summarise(results, args.powers, args.seeds))
    plot(by_rate, args.powers, args.plot)
    print(f"\nplot: {args.plot}  [{time.perf_counter() - t0:.1f} s]")


if __name__ == "__main__":
    main()
