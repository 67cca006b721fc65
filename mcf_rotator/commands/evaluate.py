"""``mcf-rotator evaluate volume.tif --truth truth.tif``: volume metrics against a ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="compare a reconstructed volume with a ground truth")
    p.add_argument("volume", type=Path)
    p.add_argument("--truth", type=Path, required=True)
    p.add_argument("--normalisation", choices=("truth", "minmax", "none"), default="truth")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mcf_rotator.reconstruction.io import read_volume
    from mcf_rotator.reconstruction.metrics import volume_metrics

    m = volume_metrics(read_volume(args.volume), read_volume(args.truth), args.normalisation)
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        for k, v in m.items():
            print(f"{k:8s} {v:.6g}")
    return 0
