"""Speed part of the reconstruction benchmark: batch FBP vs skimage iradon, incremental update,
per-frame pipeline rate.

Imported by ``bench_reconstruction.py`` (run that script); kept apart from the accuracy part so
each can change on its own.
"""

from __future__ import annotations

import os
import time

import numpy as np

from mcf_rotator.reconstruction.fbp import fbp
from mcf_rotator.reconstruction.incremental import IncrementalReconstructor
from mcf_rotator.reconstruction.live import LivePipeline, LivePipelineConfig
from mcf_rotator.simulation.phantom import CellPhantom

from recon_accuracy import render_sweep, sweep_angles


def bench_fbp_speed(size: int = 128, views: int = 180, iradon_slices: int = 16) -> dict:
    from skimage.transform import iradon

    ph = CellPhantom.random(1)
    from mcf_rotator.simulation.phantom import projection_stack

    ang = np.linspace(0, 180, views, endpoint=False)
    proj = projection_stack(ph, ang, size)
    threads = os.cpu_count() or 1
    fbp(proj, ang, weights=None, threads=threads)  # warm up: thread pool, FFT plans, page faults
    runs = []
    for _ in range(5):  # median of 5: the machine may be shared
        t0 = time.perf_counter()
        vol = fbp(proj, ang, weights=None, threads=threads)
        runs.append(time.perf_counter() - t0)
    t_ours = float(np.median(runs))
    rows = np.linspace(0, size - 1, iradon_slices).astype(int)
    iradon(proj[:, rows[0], :].T, theta=ang, filter_name="ramp", circle=True)  # warm up
    t0 = time.perf_counter()
    for r in rows:
        iradon(proj[:, r, :].T, theta=ang, filter_name="ramp", circle=True)
    t_sk = (time.perf_counter() - t0) / iradon_slices * size
    del vol
    return {"size": size, "views": views, "fbp_s": t_ours, "iradon_s_scaled": t_sk, "iradon_slices_timed": iradon_slices,
            "speedup": t_sk / t_ours}


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


def bench_pipeline(n_frames: int = 120, roi: int = 256, seed: int = 2) -> dict:
    """LivePipeline.process on full 320x320 frames (cell ~190 px), ROI 256, volume 128."""
    rng = np.random.default_rng(seed)
    ph = CellPhantom.random(seed)
    cell_px = 0.75 * roi
    px = 2 * ph.radius_um / cell_px
    ang = sweep_angles(n_frames, rng)
    frames, _m, _o = render_sweep(ph, ang, roi, px, rng, 0.0, 0.0, 1.0, frame=roi + 64)
    pipe = LivePipeline(LivePipelineConfig(roi_px=roi, volume_size=128, cell_px=cell_px))
    times = []
    for i, f in enumerate(frames):
        t0 = time.perf_counter()
        pipe.process(f, float(i))
        times.append(time.perf_counter() - t0)
    t = np.array(times[5:])
    return {"frames": n_frames, "roi": roi, "volume": 128, "ms_per_frame_mean": 1e3 * t.mean(),
            "ms_per_frame_p95": 1e3 * float(np.percentile(t, 95)), "fps": 1.0 / t.mean()}
