"""Speed part of the reconstruction benchmark: batch FBP vs skimage iradon, incremental update,
per-frame pipeline rate (classical detector on small frames; the learned detector on full
camera frames).

Imported by ``bench_reconstruction.py`` (run that script); kept apart from the accuracy part so
each can change on its own.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from mcf_rotator.config import RigConfig
from mcf_rotator.reconstruction.fbp import BackProjector, clear_plan_cache, fbp, filter_projections
from mcf_rotator.reconstruction.incremental import IncrementalReconstructor
from mcf_rotator.reconstruction.live import LivePipeline, LivePipelineConfig
from mcf_rotator.simulation.phantom import CellPhantom

from recon_accuracy import render_sweep, sweep_angles


def _median_time(fn: Callable[[], object], runs: int, before: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` over ``runs`` calls (the machine may be shared); ``before``
    runs untimed ahead of each call."""
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_fbp_speed(size: int = 128, views: int = 180, iradon_slices: int = 16, runs: int = 7) -> dict:
    """Batch FBP (first call for a geometry, and repeated), the scipy operator, skimage iradon.

    "cold" clears the plan cache before every timed call, so it pays the whole geometry
    (what a new sweep costs); "warm" repeats the same angles (cached taps). The process itself
    is warmed up first (imports, thread pools, page faults), and so is iradon. iradon is timed
    on ``iradon_slices`` slices spread over the volume and scaled to all of them; the FBP and
    iradon timings alternate so machine load hits both alike.
    """
    from skimage.transform import iradon

    from mcf_rotator.simulation.phantom import projection_stack

    ph = CellPhantom.random(1)
    ang = np.linspace(0, 180, views, endpoint=False)
    proj = projection_stack(ph, ang, size)
    threads = os.cpu_count() or 1
    w = np.full(views, np.pi / views)

    def ours() -> None:
        fbp(proj, ang, weights=None, threads=threads)

    def scipy_operator() -> None:  # the torch-less path: explicit sparse matrix, FFT filter
        BackProjector(ang, size, size, 0.0, w, threads).apply(filter_projections(proj))

    rows = np.linspace(0, size - 1, iradon_slices).astype(int)

    def skimage_all() -> None:
        for r in rows:
            iradon(proj[:, r, :].T, theta=ang, filter_name="ramp", circle=True)

    ours()
    scipy_operator()
    iradon(proj[:, rows[0], :].T, theta=ang, filter_name="ramp", circle=True)
    cold, warm, sk = [], [], []
    for _ in range(3):  # interleaved rounds
        cold.append(_median_time(ours, runs, before=clear_plan_cache))
        warm.append(_median_time(ours, runs))
        sk.append(_median_time(skimage_all, 1) / iradon_slices * size)
    t_scipy = _median_time(scipy_operator, 3)
    t_cold, t_warm, t_sk = (float(np.median(v)) for v in (cold, warm, sk))
    return {"size": size, "views": views, "threads": threads, "fbp_s": t_cold, "fbp_warm_s": t_warm,
            "scipy_operator_s": t_scipy, "iradon_s_scaled": t_sk, "iradon_slices_timed": iradon_slices,
            "speedup": t_sk / t_cold, "speedup_warm": t_sk / t_warm, "load_avg_1min": _load_avg()}


def _load_avg() -> float | None:
    """1-minute load average (timings on a shared machine need it), None where unknown."""
    try:
        return round(float(os.getloadavg()[0]), 2)
    except (AttributeError, OSError):
        return None


def bench_incremental(size: int = 128, n: int = 200) -> dict:
    rng = np.random.default_rng(0)
    rec = IncrementalReconstructor((size, size))
    projs = rng.random((8, size, size), dtype=np.float32)
    filtered = [rec.filter(p) for p in projs]
    for i in range(10):
        rec.add_filtered(filtered[i % 8], i * 1.5)
    t0 = time.perf_counter()
    for i in range(n):
        rec.add_filtered(filtered[i % 8], 15 + i * 1.5)
    t_bp = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):
        rec.add(projs[i % 8], 400 + i * 1.5)
    t_full = (time.perf_counter() - t0) / n
    return {"size": size, "backproject_ms": 1e3 * t_bp, "filter_and_backproject_ms": 1e3 * t_full}


def bench_pipeline(n_frames: int = 180, roi: int = 256, seed: int = 2) -> dict:
    """LivePipeline.process on full 320x320 frames (cell ~190 px), ROI 256, volume 128.

    Run twice on the same frames: without the live-angle re-solve (the per-frame work alone)
    and as the application runs it (re-solves on a worker thread, competing for the same
    cores: at this as-fast-as-possible rate the whole sweep lasts about a second, so the
    worker runs during most of it). Each run waits for its worker before the next starts. Also
    the live (preview) angle error of each, mean over the sweep and at its end, once the last
    re-solve is adopted.
    """
    rng = np.random.default_rng(seed)
    ph = CellPhantom.random(seed)
    cell_px = 0.75 * roi
    px = 2 * ph.radius_um / cell_px
    ang = sweep_angles(n_frames, rng)
    frames, _m, _o = render_sweep(ph, ang, roi, px, rng, 0.0, 0.0, 1.0, frame=roi + 64)
    out: dict = {"frames": n_frames, "roi": roi, "volume": 128, "sweep_deg": float(ang[-1])}
    for key, every in (("without_resolve", 0), ("with_resolve", LivePipelineConfig().resolve_every)):
        pipe = LivePipeline(LivePipelineConfig(roi_px=roi, volume_size=128, cell_px=cell_px, resolve_every=every))
        times = []
        for i, f in enumerate(frames):
            t0 = time.perf_counter()
            pipe.process(f, float(i))
            times.append(time.perf_counter() - t0)
        # the last re-solve in flight, adopted: what the view shows once it is done (a camera
        # is slower than this loop, so on the rig it is done before the sweep ends)
        pipe.wait_resolve()
        t = np.array(times[5:])
        live = np.asarray(pipe.angles) - ang[: len(pipe.angles)]
        out[key] = {"ms_per_frame_mean": 1e3 * t.mean(), "ms_per_frame_p95": 1e3 * float(np.percentile(t, 95)),
                    "fps": 1.0 / t.mean(), "resolves": pipe.n_resolves,
                    "live_angle_mae_deg": float(np.mean(np.abs(live))), "live_angle_end_error_deg": float(live[-1])}
    return out


def render_rig_sweep(n_frames: int, seed: int = 0) -> tuple[np.ndarray, float, RigConfig]:
    """Full camera frames of the default (simulated) rig: its camera shape, optics, cell and
    capillary walls, the cell turning at the rig's rate (deg/frame) with jitter and its axis
    tilt. Returns (frames (T, H, W) uint8, cell diameter px, rig config)."""
    from mcf_rotator.config import load_config
    from mcf_rotator.simulation.brightfield import CellInstance, render_scene
    from mcf_rotator.simulation.phantom import pose_matrix
    from mcf_rotator.simulation.world import SimulatedWorld

    cfg = load_config()
    world = SimulatedWorld(cfg)
    optics = world.brightfield_optics()
    h, w = cfg.simulation.camera_shape
    rng = np.random.default_rng(seed)
    step = cfg.rotation.rate_deg_s / cfg.camera.frame_rate_hz
    ang = np.concatenate([[0.0], np.cumsum(np.clip(step + rng.normal(0, 0.2 * step, n_frames - 1), 0, None))])
    centre = ((h - 1) / 2 + 3.0, (w - 1) / 2 - 5.0)
    frames = np.stack([
        render_scene((h, w), [CellInstance(world.phantom, pose_matrix(a, cfg.simulation.axis_tilt_deg), centre)],
                     optics, rng, walls=True, noise=cfg.simulation.noise).image
        for a in ang
    ])
    return frames, 2 * world.phantom.radius_um / optics.pixel_um, cfg


def bench_pipeline_learned(n_frames: int = 150, threads: int = 2, detector_threads: int = 1,
                           detect_every: int | None = None, seed: int = 0) -> dict:
    """LivePipeline.process with the shipped YOLO detector on full camera frames of the default rig.

    Sized as the application sizes it (ROI ~1.6 cell diameters, multiple of 16; 128^3 volume).
    ``threads``: the process set-up (``setup_ultralytics`` first, so nothing touches the
    network); ``detector_threads``: torch threads of the detector (1, as the application:
    on a loaded 2-core machine a 2-thread network call measured 3-70x slower, and the other
    core is left to the camera and GUI); ``detect_every``: the schedule (None: the
    ``LivePipelineConfig`` default). Reports frames/s over all frames (detections included),
    the detection interval and the ms per detection, and the per-frame cost without detection.
    """
    from mcf_rotator.reconstruction.ultralytics_env import setup_ultralytics

    setup_ultralytics(threads=threads)
    from mcf_rotator.reconstruction.yolo import YoloCellDetector

    frames, cell_px, cfg = render_rig_sweep(n_frames + 10, seed)
    h, w = frames.shape[1:]
    roi = int(min(max(64, round(cell_px * 1.6 / 16) * 16), h, w))
    detector = YoloCellDetector(threads=detector_threads)
    detector.detect_boxes(frames[0])  # warm-up: network copy, input buffer, thread pool
    kw = {} if detect_every is None else {"detect_every": int(detect_every)}
    pipe = LivePipeline(LivePipelineConfig(roi_px=roi, volume_size=128, cell_px=cell_px, detector=detector,
                                           direction=cfg.rotation.direction,
                                           nominal_step_deg=cfg.rotation.rate_deg_s / cfg.camera.frame_rate_hz, **kw))
    for i, f in enumerate(frames[:10]):  # warm-up frames (first detection, tracker start)
        pipe.process(f, i / cfg.camera.frame_rate_hz)
    n0, d0 = pipe.n_detections, pipe.detect_seconds
    ok = 0
    t0 = time.perf_counter()
    for i, f in enumerate(frames[10:], start=10):
        ok += pipe.process(f, i / cfg.camera.frame_rate_hz).ok
    total = time.perf_counter() - t0
    pipe.close()  # a live-angle re-solve in flight (it runs beside the frames, as in the application)
    n_det, t_det = pipe.n_detections - n0, pipe.detect_seconds - d0
    return {"frames": n_frames, "frame_shape": [int(h), int(w)], "roi": roi, "volume": 128, "threads": threads,
            "detector_threads": detector_threads,
            "detect_every": pipe.cfg.detect_every, "detections": n_det, "frames_ok": ok,
            "ms_per_detection": 1e3 * t_det / max(n_det, 1), "ms_per_frame": 1e3 * total / n_frames,
            "ms_per_frame_without_detection": 1e3 * (total - t_det) / n_frames, "fps": n_frames / total,
            "load_avg_1min": _load_avg()}
