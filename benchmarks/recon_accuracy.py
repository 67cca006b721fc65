"""Accuracy part of the reconstruction benchmark: simulated sweeps, angle error, volume quality.

Imported by ``bench_reconstruction.py`` (run that script); kept apart from the speed part so
each can change on its own.
"""

from __future__ import annotations

import copy
import time

import cv2
import numpy as np

from mcf_rotator.reconstruction.fbp import fbp
from mcf_rotator.reconstruction.final_angles import estimate_angles
from mcf_rotator.reconstruction.metrics import angle_errors, volume_metrics
from mcf_rotator.reconstruction.tracking import RotationTracker, TrackerConfig
from mcf_rotator.simulation.brightfield import BrightfieldOptics, CellInstance, render_scene
from mcf_rotator.simulation.phantom import CellPhantom, pose_matrix


def sweep_angles(n: int, rng: np.random.Generator, lo: float = 1.0, hi: float = 3.0, jitter: float = 0.3,
                 period: float = 120.0) -> np.ndarray:
    """Cumulative angles: a rate varying smoothly between lo and hi deg/frame plus jitter."""
    t = np.arange(n - 1)
    rate = (lo + hi) / 2 + (hi - lo) / 2 * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return np.concatenate([[0.0], np.cumsum(np.clip(rate + rng.normal(0, jitter, n - 1), 0.2, None))])


def stick_slip_angles(n: int, rng: np.random.Generator, step: float = 1.0, jitter: float = 0.25) -> np.ndarray:
    """Cumulative angles of a cell dragged by a beam turning ``step`` deg/frame, as on the rig.

    Twice per half turn the trap's torque is weak (the realised ellipse is poor at some beam
    orientations): the cell's lag behind the beam grows from ~2 to ~18 deg while the beam turns
    ~16 deg (a stall, ~0.1 deg/frame, with slight slips back from the Brownian jitter) and is
    released in ~4 frames (bursts of ~5 deg/frame). ``jitter``: stationary std (deg) of an
    Ornstein-Uhlenbeck orientation noise.
    """
    phi = np.arange(n) * step
    lag = np.full(n, 2.0)
    p = np.mod(phi, 180.0)
    for start, grow in ((45.0, 16.0), (145.0, 14.0)):
        ramp = (p >= start) & (p < start + grow)
        lag[ramp] += (p[ramp] - start) / grow * (grow + 2.0) * (16.0 / grow)
        rel = (p >= start + grow) & (p < start + grow + 4 * step)
        lag[rel] += 16.0 * (1 - (p[rel] - start - grow) / (4 * step))
    noise = np.zeros(n)
    k = 0.3
    for i in range(1, n):
        noise[i] = (1 - k) * noise[i - 1] + jitter * np.sqrt(1 - (1 - k) ** 2) * rng.normal()
    a = phi - lag + noise
    return a - a[0]


def render_sweep(phantom: CellPhantom, angles: np.ndarray, size: int, pixel_um: float, rng: np.random.Generator,
                 offset_px: float, tilt_deg: float, electrons_per_count: float,
                 frame: int | None = None, phase_halo: float = 0.0) -> tuple[np.ndarray, np.ndarray, BrightfieldOptics]:
    """Brightfield frames (T, F, F) with the cell at the centre (+ axis offset) and its masks."""
    optics = BrightfieldOptics(pixel_um=pixel_um, electrons_per_count=electrons_per_count, vignetting=0.0,
                               illumination_tilt=0.0, phase_halo=phase_halo)
    f = frame or size
    c = (f - 1) / 2.0
    imgs, masks = [], []
    for a in angles:
        sc = render_scene((f, f), [CellInstance(phantom, pose_matrix(a, tilt_deg), (c, c + offset_px))], optics, rng,
                          walls=False)
        imgs.append(sc.image)
        masks.append(sc.masks[0])
    return np.stack(imgs), np.stack(masks), optics


def jittered(od: np.ndarray, sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Every projection moved sideways by its own random sub-pixel shift (normal, ``sigma_px``).

    Why: a change to the angle estimation judged on a handful of seeds is judged largely on
    noise, since 0.05 px of such jitter already moves the result of some seeds by tenths of a
    degree; the error averaged over a few draws is the fairer figure.
    """
    h, w = od.shape[1:]
    return np.stack([cv2.warpAffine(o, np.float32([[1, 0, dx], [0, 1, 0]]), (w, h), flags=cv2.INTER_LINEAR)
                     for o, dx in zip(od, rng.normal(0.0, sigma_px, len(od)))])


def bench_angles_and_volume(n_frames: int, size: int, seed: int, epc: float, phase_halo: float = 0.0,
                            filter_name: str = "hann", motion: str = "smooth", cell_span: float = 0.9,
                            jitter_draws: int = 0, jitter_px: float = 0.05) -> dict:
    rng = np.random.default_rng(seed)
    ph = CellPhantom.random(seed)
    # the default voxel fits the cell in the crop with a 10 % margin (cell_span 0.9); the rig's
    # crops are about twice the cell (cell_span ~0.5)
    voxel = ph.default_voxel_um(size) * 0.9 / cell_span
    ang = sweep_angles(n_frames, rng) if motion == "smooth" else stick_slip_angles(n_frames, rng)
    offset, tilt = 2.5, 1.0
    t0 = time.perf_counter()
    frames, masks, optics = render_sweep(ph, ang, size, voxel, rng, offset, tilt, epc, phase_halo=phase_halo)
    t_render = time.perf_counter() - t0
    i0 = optics.mean_level
    od = -np.log(np.clip(frames.astype(np.float32) / i0, 1e-3, None))
    # the commanded rate (2 deg/frame) is the nominal step; the cell's true rate varies around it
    tracker = RotationTracker(TrackerConfig(nominal_step_deg=2.0 if motion == "smooth" else 1.0))
    t0 = time.perf_counter()
    for img, m in zip(frames, masks):
        tracker.update(img, m)
    t_track = (time.perf_counter() - t0) / n_frames
    live = np.asarray(tracker.angles_deg)
    t0 = time.perf_counter()
    fitted = tracker.solve()
    final, ref, info = estimate_angles(tracker, od)
    t_final = time.perf_counter() - t0
    # outside the timing; each draw on its own copy of the tracker (solve records its fit there)
    jitter = [angle_errors(estimate_angles(copy.deepcopy(tracker), jittered(od, jitter_px, np.random.default_rng(k)))[0],
                           ang)["mean_abs_deg"] for k in range(1, jitter_draws + 1)]
    out = {
        "frames": n_frames, "size": size, "sweep_deg": float(ang[-1]), "electrons_per_count": epc,
        "phase_halo": phase_halo, "filter": filter_name, "motion": motion, "cell_span": cell_span,
        "render_s": t_render, "track_ms_per_frame": 1e3 * t_track, "angles_s": t_final,
        "angles": {
            "live": angle_errors(live, ang),
            "tracked_fit": angle_errors(fitted, ang),
            "final": angle_errors(final, ang),
            # the same with the best constant offset removed: what is left when frame 0 (the
            # reference of every angle) is exact; the difference to "final" is its error
            "final, offset-free": angle_errors(final - np.median(final - ang), ang),
        },
        "axis": {"true_offset_px": offset, "true_tilt_deg": tilt,
                 "offset_px": ref.axis_offset_px if ref else None, "tilt_deg": ref.tilt_deg if ref else None},
        "angles_under_jitter": {"px": jitter_px, "mean_abs_deg": jitter},
        "flags": info["flags"],
        "angle_stages": {k: info[k] for k in ("rate_deg_per_frame", "orbit_fits", "orbit_fit_spread_deg", "per_frame", "axis_shift_px") if k in info},
    }
    truth = ph.voxelize(size, voxel_um=voxel)
    vols = {
        "final angles": fbp(od, final, axis_offset_px=ref.axis_offset_px if ref else 0.0,
                            tilt_deg=ref.tilt_deg if ref else 0.0, pixel_size=voxel, weights="circular",
                            filter_name=filter_name),
        "true angles + geometry": fbp(od, ang, axis_offset_px=offset, tilt_deg=tilt, pixel_size=voxel,
                                      weights="circular", filter_name=filter_name),
    }
    lim = ang <= 160.0
    vols["limited 160 deg (true angles)"] = fbp(od[lim], ang[lim], axis_offset_px=offset, tilt_deg=tilt,
                                                pixel_size=voxel, filter_name=filter_name)
    out["volume"] = {k: volume_metrics(v, truth) for k, v in vols.items()}
    return out
