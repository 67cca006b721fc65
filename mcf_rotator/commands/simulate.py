"""``mcf-rotator simulate``: write a projection stack of a rotating cell with its ground truth.

By default the rotation is physical: the simulated trap is driven by a calibrated rotating
ellipse (the analytic cylindrical-lens pattern plus the exact fibre correction, refreshed at
the SLM rate and stepped like the sequencer), so the recorded cell shows the trap's lag,
Brownian jitter, wobbling axis tilt and drift. ``--ideal`` renders exactly uniform angles
with no tilt or drift instead. Outputs, for ``-o stack.tif``:

- ``stack.tif``: ImageJ hyperstack (T, H, W), uint8 or uint16, pixel size in um and the true
  frame interval in s (``--degrees-per-frame`` over the rotation rate);
- ``stack_truth.tif``: float32 attenuation volume (H, D, W) in the cell frame at angle 0,
  ImageJ stack with the voxel size in metadata;
- ``stack_angles.csv``: ``frame,angle_deg``, the true cumulative angle of each frame in that
  frame (physical mode: frame 0 is within the Brownian jitter, ~0.2 deg, of 0).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from mcf_rotator.errors import McfRotatorError, RecordingError

if TYPE_CHECKING:  # heavy imports stay inside run() so `mcf-rotator --help` is fast
    from mcf_rotator.config import RigConfig
    from mcf_rotator.simulation.world import SimulatedWorld

DEFAULT_FRAMES = 180


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="simulate a rotating cell: projection stack, ground-truth volume and true angles",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="number of projections (default 180)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output stack (.tif)")
    p.add_argument("--seed", type=int, default=None, help="cell/noise seed (default: the config's)")
    p.add_argument("--size", type=int, default=256, help="frame size in pixels, square crop around the trap (default 256)")
    p.add_argument("--degrees-per-frame", type=float, default=None,
                   help="rotation between frames (default: one full turn over --frames)")
    p.add_argument("--config", dest="sim_config", type=Path, default=None, help="rig configuration (YAML/JSON)")
    p.add_argument("--ideal", action="store_true", help="exact uniform angles, no lag/jitter/tilt/drift")
    p.add_argument("--truth-size", type=int, default=128, help="edge of the ground-truth volume in voxels (default 128)")
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=None, help="stack bit depth (default: camera's)")
    p.add_argument("--no-noise", action="store_true", help="noise-free images")
    p.add_argument("--montage", type=Path, default=None, help="also write a PNG montage of 12 frames with angles")
    p.add_argument("--overwrite", action="store_true", help="replace existing stack, truth, angles and montage files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mcf_rotator.config import load_config

    if args.frames < 1:
        raise McfRotatorError(f"--frames must be >= 1, got {args.frames}")
    if args.size < 32:
        raise McfRotatorError(f"--size must be >= 32 pixels, got {args.size}")
    if args.truth_size < 8:
        raise McfRotatorError(f"--truth-size must be >= 8 voxels, got {args.truth_size}")
    cli_config = getattr(args, "sim_config", None) or getattr(args, "config", None)
    config = load_config(cli_config).simulated()
    if args.seed is not None:
        config.simulation.seed = args.seed
    if args.no_noise:
        config.simulation.noise = False
    if args.bit_depth is not None:
        config.camera.bit_depth = args.bit_depth
    dpf = args.degrees_per_frame if args.degrees_per_frame is not None else 360.0 / args.frames
    out = Path(args.output)
    if out.suffix.lower() not in (".tif", ".tiff"):
        out = out.with_suffix(".tif")

    truth_path = out.with_name(out.stem + "_truth.tif")
    angles_path = out.with_name(out.stem + "_angles.csv")
    from mcf_rotator.reconstruction.io import refuse_overwrite

    refuse_overwrite((out, truth_path, angles_path, args.montage), getattr(args, "overwrite", False))
    with tqdm(total=args.frames, desc="simulate", unit="frame") as bar:
        stack, angles, pixel_um, world = simulate_stack(config, args.frames, dpf, args.size, args.ideal, bar.update)
    truth = world.ground_truth_volume(args.truth_size)
    voxel_um = world.voxel_um(args.truth_size)
    write_outputs(out, stack, pixel_um, truth_path, truth, voxel_um, angles_path, angles,
                  frame_interval_s=frame_interval_s(config, dpf))
    if args.montage is not None:
        write_montage(args.montage, stack, angles)
    print(f"wrote {out} {stack.shape} {stack.dtype}, {truth_path} {truth.shape}, {angles_path}")
    return 0


def simulate_stack(
    config: RigConfig,
    frames: int,
    degrees_per_frame: float,
    size: int,
    ideal: bool,
    progress: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, np.ndarray, float, SimulatedWorld]:
    """Render ``frames`` projections (T, size, size); returns (stack, true angles, pixel_um, world)."""
    from mcf_rotator.simulation.brightfield import CellInstance, render_scene
    from mcf_rotator.simulation.phantom import pose_matrix
    from mcf_rotator.simulation.world import SimulatedWorld

    from dataclasses import replace

    world = SimulatedWorld(config)
    optics = world.brightfield_optics()
    # a crop of the camera field sees only part of the illumination fall-off
    field = max(config.simulation.camera_shape)
    optics = replace(optics, vignetting=optics.vignetting * min(1.0, size / field) ** 2)
    rng = np.random.default_rng([config.simulation.seed, 2024])
    shape = (size, size)
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    stack = np.empty((frames, size, size), optics.dtype)
    angles = np.empty(frames)
    if ideal:
        for i in range(frames):
            angles[i] = i * degrees_per_frame
            cell = CellInstance(world.phantom, pose_matrix(angles[i]), centre)
            stack[i] = render_scene(shape, [cell], optics, rng, walls=False, noise=config.simulation.noise).image
            if progress:
                progress(1)
        return stack, angles, optics.pixel_um, world

    rot = config.rotation
    rate = rot.rate_deg_s
    direction = float(np.sign(degrees_per_frame) or 1.0)
    frame_dt = frame_interval_s(config, degrees_per_frame)
    refresh_dt = 1.0 / config.slm.refresh_rate_hz
    step = rot.angle_step_deg
    world.set_laser(True)

    def command(angle: float) -> None:
        # the sequencer shows holograms cached per angle step
        world.set_core_phases(world.fibre.ellipse_phases(step * np.round(angle / step)))

    command(0.0)
    world.advance(1.0)  # settle in the trap before recording
    t_cmd = 0.0
    for i in range(frames):
        with world.lock:
            angles[i] = world.true_angle_deg
            if not world.trapped:
                raise McfRotatorError(
                    f"simulated cell left the trap at frame {i} (check the rig config's fibre/trap settings)"
                )
            scene, _meta = world.render_brightfield(shape, optics, rng, centre, walls=False)
        stack[i] = scene.image
        # rotate on to the next frame, refreshing the SLM at its rate
        n_sub = max(1, int(np.ceil(frame_dt / refresh_dt)))
        for _ in range(n_sub):
            t_cmd += frame_dt / n_sub
            command(direction * rate * t_cmd)
            world.advance(frame_dt / n_sub)
        if progress:
            progress(1)
    return stack, angles, optics.pixel_um, world


def frame_interval_s(config: RigConfig, degrees_per_frame: float) -> float:
    """Seconds between simulated frames: the rotation between frames at the configured rate
    (the camera's frame period when the cell does not turn)."""
    rate = config.rotation.rate_deg_s
    return abs(degrees_per_frame) / rate if degrees_per_frame else 1.0 / config.camera.frame_rate_hz


def write_outputs(out: Path, stack: np.ndarray, pixel_um: float, truth_path: Path, truth: np.ndarray,
                  voxel_um: float, angles_path: Path, angles: np.ndarray, frame_interval_s: float = 1.0) -> None:
    """Write the ImageJ stack (pixel size, frame interval), the ImageJ float32 truth volume and
    the angles CSV; values rounded so no float noise reaches the metadata."""
    import tifffile

    from mcf_rotator.ome_metadata import rounded

    px, vox = rounded(pixel_um), rounded(voxel_um)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(out, stack, imagej=True, resolution=(1 / px, 1 / px),
                         metadata={"axes": "TYX", "unit": "um", "finterval": rounded(frame_interval_s)})
        tifffile.imwrite(truth_path, truth.astype(np.float32), imagej=True,
                         resolution=(1 / vox, 1 / vox),
                         metadata={"axes": "ZYX", "spacing": vox, "unit": "um"})
        with open(angles_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["frame", "angle_deg"])
            for i, a in enumerate(angles):
                w.writerow([i, f"{a:.6f}"])
    except OSError as exc:
        raise RecordingError(f"cannot write simulation output next to {out}: {exc}") from exc


def write_montage(path: Path, stack: np.ndarray, angles: np.ndarray, n: int = 12, cols: int = 4,
                  tile_px: int = 192) -> None:
    """Grey PNG grid of ``n`` evenly spaced frames (``tile_px`` wide), each labelled with its
    true angle; downsampled with area averaging so the file stays small."""
    import cv2

    idx = np.linspace(0, len(stack) - 1, min(n, len(stack))).round().astype(int)
    lo, hi = np.percentile(stack[idx], 0.5), np.percentile(stack[idx], 99.5)
    frames = []
    for i in idx:
        img = np.clip((stack[i].astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
        th = max(1, int(round(img.shape[0] * tile_px / img.shape[1])))
        img = cv2.resize(img, (tile_px, th), interpolation=cv2.INTER_AREA)
        font_scale = 0.5 * max(tile_px / 192, 0.6)
        label = f"#{i}  {angles[i]:.1f} deg"
        (tw, tht), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        cv2.rectangle(img, (0, 0), (tw + 8, tht + base + 6), 0, -1)
        cv2.putText(img, label, (4, tht + 3), cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255, 1, cv2.LINE_AA)
        img[:, -1] = 0  # tile separators
        img[-1, :] = 0
        frames.append(img)
    while len(frames) % cols:
        frames.append(np.zeros_like(frames[0]))
    rows = [np.hstack(frames[r : r + cols]) for r in range(0, len(frames), cols)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise RecordingError(f"{path}: cannot write the montage PNG")
