"""``mcf-rotator evaluate volume.tif --truth truth.tif``: volume metrics against a ground truth."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mcf_rotator.errors import InputFileError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="compare a reconstructed volume with a ground truth")
    p.add_argument("volume", type=Path, help="reconstructed volume (32-bit float TIFF)")
    p.add_argument("--truth", type=Path, required=True, help="ground-truth volume of the same shape (TIFF)")
    p.add_argument("--normalisation", choices=("truth", "minmax", "none"), default="truth",
                   help="scale both volumes before comparing: by the truth's range, each to 0-1, or not (default truth)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mcf_rotator.reconstruction.io import read_volume
    from mcf_rotator.reconstruction.metrics import volume_metrics

    # read_volume refuses NaN/inf voxels (exit 2, file named): metrics of such a volume are meaningless
    volume, truth = read_volume(args.volume), read_volume(args.truth)
    if volume.shape != truth.shape:
        raise InputFileError(f"{args.volume}: volume of shape {volume.shape}, truth {args.truth} is {truth.shape}")
    m = volume_metrics(volume, truth, args.normalisation)
    if args.json:
        # strict JSON: an infinite PSNR (identical volumes) is null, never the non-standard Infinity
        print(json.dumps({k: _json_number(v) for k, v in m.items()}, indent=2, allow_nan=False))
    else:
        for k, v in m.items():
            print(f"{k:8s} {v:.6g}")
    return 0


def _json_number(value: object) -> object:
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return value
    return f if math.isfinite(f) else None
