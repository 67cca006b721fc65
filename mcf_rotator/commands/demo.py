"""``mcf-rotator demo``: the whole trap -> rotate -> reconstruct run on the simulated rig.

``--headless`` runs it as fast as the CPU allows (simulated time, no real-time pacing) and
writes ``volume.tif``, ``angles.csv``, ``recording.ome.tif``, ``report.json`` and
``summary.png`` into the output folder. Without ``--headless`` the GUI starts on the
simulated rig.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from mcf_rotator import strict_json
from mcf_rotator.errors import McfRotatorError

log = logging.getLogger(__name__)

#: files a run writes into its folder (an earlier run's are kept unless --overwrite)
DEMO_OUTPUTS = ("volume.tif", "angles.csv", "recording.ome.tif", "recording.ome.zarr", "recording.frames.jsonl",
                "report.json", "summary.png")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="trap, rotate and reconstruct a simulated cell (GUI, or --headless to files)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--headless", action="store_true", help="no GUI: run as fast as possible and write files")
    p.add_argument("-o", "--output", type=Path, default=Path("mcf-rotator-demo"), help="output folder")
    p.add_argument("--frames", type=int, default=400, help="camera frames to record (default 400)")
    p.add_argument("--seed", type=int, default=0, help="random cell / noise seed")
    p.add_argument("--config", dest="demo_config", type=Path, default=None, help="rig configuration (YAML/JSON)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in the folder")
    p.add_argument("--closed-loop", action="store_true",
                   help="steer the ellipse by the cell's tracked rotation (headless; the GUI has a switch)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config_path = getattr(args, "demo_config", None) or getattr(args, "config", None)
    if not args.headless:
        try:
            from mcf_rotator.gui.app import run_app
        except ImportError as exc:
            raise McfRotatorError(f"the GUI cannot start ({exc}); use --headless") from exc
        return int(run_app(config_path=config_path, simulate=True) or 0)
    summary = run_headless(
        args.output, frames=args.frames, seed=args.seed, config_path=config_path, progress=not args.no_progress,
        overwrite=args.overwrite, loop="closed" if getattr(args, "closed_loop", False) else None,
    )
    print(strict_json.dumps(summary, indent=2))
    return 0


def run_headless(
    output: str | Path,
    frames: int = 400,
    seed: int = 0,
    config_path: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    loop: str | None = None,
) -> dict[str, Any]:
    """Run the simulated demo into ``output``; returns the headline numbers (also in report.json).

    Refuses (naming the file) to replace an earlier run's outputs unless ``overwrite``.
    ``loop``: "open" or "closed" rotation loop (default: the config's).
    """
    from mcf_rotator.config import RigConfig, load_config
    from mcf_rotator.controller import RigController
    from mcf_rotator.rig import build_rig

    if frames < 30:
        raise McfRotatorError(f"--frames must be at least 30 (got {frames})")
    cfg = (load_config(config_path) if config_path else RigConfig()).simulated()
    cfg.simulation.seed = int(seed)
    if loop is not None:
        cfg.rotation.loop = loop
    # keep the rotation rate the trap can follow and spread the frames over the target
    # coverage (+25 % margin: the run also waits for the ellipse to pass the target) by choosing
    # the camera frame rate
    duration_s = cfg.rotation.target_coverage_deg * 1.25 / cfg.rotation.rate_deg_s
    cfg.camera.frame_rate_hz = float(min(max(frames / duration_s, 1.0), 10_000.0))
    from mcf_rotator.reconstruction.io import prepare_output_dir, refuse_overwrite

    refuse_overwrite([Path(output) / name for name in DEMO_OUTPUTS], overwrite)
    out = prepare_output_dir(output)  # created (or refused with the cause) before the run starts
    t0 = time.perf_counter()
    rig = build_rig(cfg, realtime=False)
    # the demo starts from a calibrated fibre: the simulator's ideal per-core correction stands
    # in for a calibration wizard run (without it the distorted fibre scrambles the ellipse)
    calibration = SimpleNamespace(
        correction_rad=rig.world.fibre.correction(), calibration_id=f"simulated-ideal-seed{seed}"
    )
    ctl = RigController(cfg, rig=rig, output_dir=out, calibration=calibration,
                        pipeline_factory=_prebuilt_pipeline(cfg))
    ctl.run_dir_override = out
    ctl.max_frames = int(frames)
    bar = _progress(frames, progress)
    try:
        ctl.run_all(trap_timeout_s=60.0, wait=False)
        while not ctl.wait_finished(0.25):
            if bar is not None:
                st = ctl.stats()
                n = min(st["recorded_frames"], frames)
                if n != bar.n:
                    bar.update(n - bar.n)
                    bar.set_postfix(processed=st["processed_frames"], coverage=f"{st['coverage_deg']:.0f}", refresh=False)
    except BaseException:
        ctl.shutdown()
        raise
    finally:
        if bar is not None:
            bar.close()
    if ctl.last_error:
        rig.disconnect()
        raise McfRotatorError(f"demo run failed: {ctl.last_error}")
    result = ctl.last_result
    rig.disconnect()
    if result is None or result.reconstruction is None:
        raise McfRotatorError(f"demo run gave no volume: {result.error if result else 'no result'}")
    elapsed = time.perf_counter() - t0
    numbers = _evaluate(result, rig.world)
    try:
        numbers.update(_volume_numbers(result, rig.world))
    except Exception as exc:  # noqa: BLE001 - metrics are a convenience, the data are saved
        log.warning("volume metrics failed: %s", exc)
    numbers.update(wall_time_s=round(elapsed, 2), frames_recorded=result.recording.frames_written if result.recording else 0)
    report = dict(result.report)
    report["demo"] = numbers
    result.report_path.write_text(strict_json.dumps(report, indent=2))
    try:
        write_summary_figure(out / "summary.png", result, rig.world, numbers)
    except Exception as exc:  # noqa: BLE001 - the figure is a convenience, the data are saved
        log.warning("summary figure failed: %s", exc)
    return {"output": str(out), **numbers}


def _prebuilt_pipeline(cfg: Any) -> Callable[[Any], Any]:
    """A pipeline factory whose first pipeline is built now, before the camera thread starts.

    Why: the simulated camera runs as fast as the CPU allows and the controller starts the
    pipeline only after the rotation (and its recording) began; building it then (loading the
    learned detector takes seconds) let ~20 recorded frames pass unprocessed, so a 30-frame
    demo always failed with "only 10-17 frames with a cell". Built here, on the main thread
    and before any worker thread exists (the import also configures OpenCV's threads), the
    gap is a few frames."""
    from mcf_rotator.controller import default_pipeline_factory, prepare_learned_detector

    prepare_learned_detector(cfg)
    ready = [default_pipeline_factory(cfg)]
    return lambda config: ready.pop() if ready else default_pipeline_factory(config)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="demo", unit="frame", mininterval=1.0)


def _recorded_angles(result: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, true angle, refined angle) for the frames the pipeline used."""
    from mcf_rotator.recording import open_recording

    frames, meta = open_recording(result.recording.path)
    frames.close()
    rows = [(m["frame"], m.get("true_angle_deg"), m.get("refined_angle_deg")) for m in meta]
    rows = [r for r in rows if r[1] is not None and r[2] is not None]
    if not rows:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    a = np.array(rows, float)
    return a[:, 0], a[:, 1], a[:, 2]


def _evaluate(result: Any, world: Any) -> dict[str, Any]:
    """Angle error against the simulator's truth (both start at the first processed frame)."""
    _, true, est = _recorded_angles(result)
    out: dict[str, Any] = {"n_projections": int(len(result.reconstruction.angles_deg))}
    if len(true):
        t = true - true[0]
        e = est - est[0]
        err = np.abs(e - t)
        out.update(
            angle_mae_deg=round(float(err.mean()), 3),
            angle_max_error_deg=round(float(err.max()), 3),
            true_coverage_deg=round(float(np.ptp(t)), 1),
        )
        if len(t) > 2:  # how evenly the cell was sampled (what a closed loop is for)
            from mcf_rotator.rotation_control import largest_view_gap_deg

            steps = np.abs(np.diff(t))
            out.update(true_step_spread=round(float(steps.std() / max(steps.mean(), 1e-9)), 3),
                       true_largest_view_gap_deg=round(largest_view_gap_deg(t), 2))
    return out


def aligned_truth(result: Any, world: Any, size: int) -> np.ndarray | None:
    """Ground truth in the reconstruction's frame: the phantom turned to the first processed
    frame's true angle and voxelised at the reconstruction's voxel size."""
    if world is None:
        return None
    from mcf_rotator.simulation.phantom import CellPhantom, Ellipsoid, rotation_y

    _, true, _ = _recorded_angles(result)
    voxel = float(result.report.get("voxel_um") or 0.0)
    if not len(true) or voxel <= 0:
        return None
    r = rotation_y(float(true[0]))
    ph = world.phantom
    turned = CellPhantom(
        [Ellipsoid(r @ p.centre, p.semi_axes, r @ p.rotation, p.mu, p.kind) for p in ph.parts], ph.radius_um, ph.seed
    )
    return turned.voxelize(size, voxel_um=voxel)


def _volume_numbers(result: Any, world: Any) -> dict[str, Any]:
    """PSNR / MS-SSIM etc. against the aligned ground truth (after a least-squares gain)."""
    from mcf_rotator.reconstruction.metrics import volume_metrics

    vol = np.asarray(result.reconstruction.volume, np.float32)
    truth = aligned_truth(result, world, vol.shape[0])
    if truth is None or truth.shape != vol.shape:
        return {}
    gain = float((vol * truth).sum() / max(float((vol * vol).sum()), 1e-30))
    m = volume_metrics(vol * gain, truth, normalisation="none")
    return {f"volume_{k}": round(float(v), 5) for k, v in m.items()}


def write_summary_figure(path: Path, result: Any, world: Any, numbers: dict[str, Any]) -> None:
    """Camera frames with overlays, tracked vs true angle, orthogonal MIPs vs ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mcf_rotator.recording import open_recording

    frames, meta = open_recording(result.recording.path)
    volume = np.asarray(result.reconstruction.volume, np.float32)
    truth = aligned_truth(result, world, volume.shape[0])
    fig = plt.figure(figsize=(13, 8), constrained_layout=True)
    gs = fig.add_gridspec(3, 4)
    picks = np.linspace(0, len(frames) - 1, 3).astype(int)
    for k, i in enumerate(picks):
        ax = fig.add_subplot(gs[0, k])
        ax.imshow(frames[int(i)], cmap="gray")
        m = meta[int(i)]
        text = f"frame {i}\nSLM {m.get('slm_angle_deg', float('nan')):.0f} deg"
        if "true_angle_deg" in m:
            text += f"\ntrue {m['true_angle_deg']:.0f} deg"
        if "tracked_angle_deg" in m:
            text += f"\ntracked {m['tracked_angle_deg']:.0f} deg"
        ax.text(4, 4, text, color="yellow", va="top", fontsize=8)
        ax.set_axis_off()
    frames.close()
    ax = fig.add_subplot(gs[0, 3])
    f, true, est = _recorded_angles(result)
    if len(f):
        ax.plot(f, true - true[0], label="true", lw=2)
        ax.plot(f, est - est[0], "--", label="tracked + refined")
        ax.set_xlabel("frame")
        ax.set_ylabel("angle (deg)")
        ax.legend(fontsize=8)
    ax.set_title(f"angle MAE {numbers.get('angle_mae_deg', float('nan'))} deg", fontsize=9)
    names = ["MIP along depth (y-x)", "MIP along x (y-z)", "MIP along y (z-x)"]
    for row, (vol, label) in enumerate([(volume, "reconstruction"), (truth, "ground truth")], start=1):
        if vol is None:
            continue
        for k in range(3):
            ax = fig.add_subplot(gs[row, k])
            ax.imshow(vol.max(axis=[1, 2, 0][k]), cmap="magma")
            ax.set_title(f"{label}: {names[k]}", fontsize=8)
            ax.set_axis_off()
    ax = fig.add_subplot(gs[1:, 3])
    ax.axis("off")
    ax.text(0, 1, json.dumps(numbers, indent=1), va="top", family="monospace", fontsize=8)
    fig.savefig(path, dpi=80)
    plt.close(fig)
