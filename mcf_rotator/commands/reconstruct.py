"""``mcf-rotator reconstruct INPUT -o volume.tif``: tomogram from a recorded rotation."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mcf_rotator import strict_json
from mcf_rotator.errors import ReconstructionError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("reconstruct", help="reconstruct a volume from a TIFF/AVI/MP4 rotation recording")
    p.add_argument("input", type=Path, help="TIFF stack, AVI/MP4 movie or OME-TIFF recording")
    p.add_argument("-o", "--output", type=Path, required=True, help="output volume (32-bit float TIFF)")
    p.add_argument("--angles", type=Path, default=None,
                   help="known angles CSV (frame,angle_deg; gaps allowed, frames without an angle are left out); "
                   "skips tracking")
    p.add_argument("--angles-out", type=Path, default=None, help="write the per-frame angles CSV here")
    p.add_argument("--pixel-size", type=float, default=None,
                   help="object-side pixel size in um (default: from the OME-XML, ImageJ calibration or "
                   "frames.jsonl header of the input; without any the volume is written without a unit)")
    p.add_argument("--report", type=Path, default=None, help="write a JSON report here")
    p.add_argument("--roi", type=int, default=None,
                   help="crop side in camera pixels (default: the measured cell diameter plus a margin)")
    p.add_argument("--size", type=int, default=None,
                   help="reconstruction grid side (default: the crop at the camera's resolution; smaller bins)")
    p.add_argument("--cell-px", type=float, default=None,
                   help="expected cell diameter in pixels (default: measured from the first detections)")
    p.add_argument("--direction", type=int, choices=(-1, 1), default=1, help="commanded rotation sign")
    p.add_argument("--overwrite", action="store_true", help="replace existing output, angles and report files")
    p.add_argument("--force", action="store_true",
                   help="write the volume even when the quality gate finds no (consistent) cell or unusable "
                   "angles (the report and a warning say why)")
    p.set_defaults(func=run)


def _frames_with_progress(frames: np.ndarray, name: str) -> Iterable[np.ndarray]:
    """The frames, with a progress bar on stderr where tqdm is installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return frames
    return tqdm(frames, desc=name, unit="frame", mininterval=1.0, leave=False)


def _write_report(args: argparse.Namespace, report: dict) -> None:
    """The JSON report (when asked for), also after a refusal: it holds the evidence."""
    if args.report:
        Path(args.report).write_text(strict_json.dumps(dict(report, input=str(args.input)), indent=2))


def _gate(args: argparse.Namespace, reasons: list[str], report: dict) -> None:
    """Refuse (exit 2, nothing but the report written) when the quality gate gave reasons;
    with ``--force`` they become warnings in the report's flags."""
    if not reasons:
        return
    if args.force:
        report.setdefault("flags", []).extend(f"quality gate overridden: {r}" for r in reasons)
        return
    _write_report(args, report)
    raise ReconstructionError(f"{args.input}: " + "; ".join(reasons) + "; no volume written"
                              + (f" (evidence in {args.report})" if args.report else "")
                              + " (--force writes it anyway)")


def run(args: argparse.Namespace) -> int:
    from mcf_rotator.reconstruction.io import (
        read_angle_table, read_pixel_size, read_stack, refuse_overwrite, select_angle_frames, write_angles,
        write_volume,
    )
    from mcf_rotator.reconstruction.stack import reconstruct_frames

    t0 = time.perf_counter()
    frames = read_stack(args.input)
    known, frame_numbers, left_out = None, None, 0
    if args.angles:  # by the frame column: a run's table starts at its first processed frame
        frame_numbers, known = read_angle_table(args.angles)
        n_total = frames.shape[0]
        frames, known, left_out = select_angle_frames(frames, frame_numbers, known, args.input, args.angles)
        if left_out:
            print(f"{args.angles}: {left_out} of {n_total} frames have no angle and are left out", file=sys.stderr)
    pixel_um, pixel_source = ((args.pixel_size, "--pixel-size") if args.pixel_size else read_pixel_size(args.input))
    refuse_overwrite((args.output, args.angles_out, args.report), args.overwrite)
    from mcf_rotator.reconstruction.io import prepare_output_file

    for target in (args.output, args.angles_out, args.report):  # refused now, not after the work
        if target is not None:
            prepare_output_file(target)
    from mcf_rotator.reconstruction import quality
    from mcf_rotator.reconstruction.live import LivePipelineConfig

    need = LivePipelineConfig().min_frames
    if frames.shape[0] < need:  # readable, but too short for the angle stage: say so before the work
        raise ReconstructionError(f"{args.input}: holds {frames.shape[0]} frames; a reconstruction needs at least "
                                  f"{need} frames with the cell in view")

    evidence = quality.frame_evidence(frames, cell_px=args.cell_px)  # cheap: before the expensive run
    early = [r] if (r := quality.frame_problem(evidence)) else []
    _gate(args, early, {"quality": dict(evidence, ok=not early, reasons=early)})
    try:
        # progress on stderr (stdout keeps the result lines): frames, then the steps of the final angles
        out = reconstruct_frames(frames, known, pixel_size_um=pixel_um, roi_px=args.roi, size=args.size,
                                 cell_px=args.cell_px, direction=args.direction,
                                 progress=lambda step: print(f"final angles: {step}", file=sys.stderr, flush=True),
                                 frame_iter=lambda f: _frames_with_progress(f, args.input.name))
    except ReconstructionError as exc:
        _write_report(args, {"quality": dict(evidence, ok=False, reasons=[str(exc)])})
        raise ReconstructionError(f"{args.input}: {exc}") from exc
    report = dict(out.report, input=str(args.input), pixel_size_um=pixel_um, pixel_size_source=pixel_source,
                  frames_without_angle=left_out)
    report["timings_s"]["total"] = time.perf_counter() - t0
    verdict = quality.assess(report, evidence)
    report["quality"] = verdict.as_dict()
    _gate(args, verdict.reasons, report)
    if pixel_um is None:
        report["flags"].append("pixel size unknown: the volume is written without a unit (pass --pixel-size)")
    write_volume(args.output, out.volume, out.voxel_um)
    if args.angles_out:
        write_angles(args.angles_out, out.angles_deg, frame_numbers)
    if args.report:
        Path(args.report).write_text(strict_json.dumps(report, indent=2))
    for flag in report["flags"]:
        print(f"warning: {flag}")
    conf = report.get("angle_confidence", {}).get("level")
    print(f"{args.output}: volume {out.volume.shape}, {out.used.size} frames, coverage {report['coverage_deg']:.1f} deg"
          + (f", angles {conf}" if conf else ""))
    return 0
