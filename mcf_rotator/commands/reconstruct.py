"""``mcf-rotator reconstruct INPUT -o volume.tif``: tomogram from a recorded rotation."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mcf_rotator.errors import ReconstructionError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("reconstruct", help="reconstruct a volume from a TIFF/AVI/MP4 rotation recording")
    p.add_argument("input", type=Path, help="TIFF stack, AVI/MP4 movie or OME-TIFF recording")
    p.add_argument("-o", "--output", type=Path, required=True, help="output volume (32-bit float TIFF)")
    p.add_argument("--angles", type=Path, default=None, help="known angles CSV (frame,angle_deg); skips tracking")
    p.add_argument("--angles-out", type=Path, default=None, help="write the per-frame angles CSV here")
    p.add_argument("--pixel-size", type=float, default=None, help="camera pixel size in um (voxel size metadata)")
    p.add_argument("--report", type=Path, default=None, help="write a JSON report here")
    p.add_argument("--roi", type=int, default=None,
                   help="crop side in camera pixels (default: the measured cell diameter plus a margin)")
    p.add_argument("--size", type=int, default=None,
                   help="reconstruction grid side (default: the crop at the camera's resolution; smaller bins)")
    p.add_argument("--cell-px", type=float, default=None,
                   help="expected cell diameter in pixels (default: measured from the first detections)")
    p.add_argument("--direction", type=int, choices=(-1, 1), default=1, help="commanded rotation sign")
    p.set_defaults(func=run)


def _frames_with_progress(frames: np.ndarray, name: str) -> Iterable[np.ndarray]:
    """The frames, with a progress bar on stderr where tqdm is installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return frames
    return tqdm(frames, desc=name, unit="frame", mininterval=1.0, leave=False)


def run(args: argparse.Namespace) -> int:
    from mcf_rotator.reconstruction.io import read_angles, read_stack, write_angles, write_volume
    from mcf_rotator.reconstruction.stack import reconstruct_frames

    t0 = time.perf_counter()
    frames = read_stack(args.input)
    known = read_angles(args.angles) if args.angles else None
    if known is not None and known.size != frames.shape[0]:
        raise ReconstructionError(f"{args.angles}: {known.size} angles for {frames.shape[0]} frames in {args.input}")
    from mcf_rotator.reconstruction.io import prepare_output_file

    for target in (args.output, args.angles_out, args.report):  # refused now, not after the work
        if target is not None:
            prepare_output_file(target)
    try:
        # progress on stderr (stdout keeps the result lines): frames, then the steps of the final angles
        out = reconstruct_frames(frames, known, pixel_size_um=args.pixel_size, roi_px=args.roi, size=args.size,
                                 cell_px=args.cell_px, direction=args.direction,
                                 progress=lambda step: print(f"final angles: {step}", file=sys.stderr, flush=True),
                                 frame_iter=lambda f: _frames_with_progress(f, args.input.name))
    except ReconstructionError as exc:
        raise ReconstructionError(f"{args.input}: {exc}") from exc
    write_volume(args.output, out.volume, out.voxel_um)
    if args.angles_out:
        write_angles(args.angles_out, out.angles_deg)
    report = dict(out.report, input=str(args.input))
    report["timings_s"]["total"] = time.perf_counter() - t0
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, default=float))
    for flag in report["flags"]:
        print(f"warning: {flag}")
    conf = report.get("angle_confidence", {}).get("level")
    print(f"{args.output}: volume {out.volume.shape}, {out.used.size} frames, coverage {report['coverage_deg']:.1f} deg"
          + (f", angles {conf}" if conf else ""))
    return 0
