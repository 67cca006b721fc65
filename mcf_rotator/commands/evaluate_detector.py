"""``mcf-rotator evaluate-detector``: precision / recall / mAP50 / mask IoU of the cell detector.

Default: the shipped weights on a held-out synthetic set rendered with another seed and
harder conditions (low contrast, defocus, noise, debris, cells cut by the border), with exact
truth. ``--data`` scores a labelled YOLO folder instead (e.g. your own frames).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate-detector",
        help="score the cell detector on a held-out synthetic or labelled set",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--weights", type=Path, default=None, help="YOLO weights (default: shipped)")
    p.add_argument("--data", type=Path, default=None, help="labelled YOLO folder or data.yaml (default: synthetic)")
    p.add_argument("--split", default="val", help="split of --data to score (default val)")
    p.add_argument("-n", "--frames", type=int, default=200, help="synthetic held-out frames")
    p.add_argument("--seed", type=int, default=12345, help="seed of the synthetic held-out set")
    p.add_argument("--conditions", choices=["hard", "train"], default="hard")
    p.add_argument("--imgsz", type=int, default=None, help="network input size (default: the shipped weights' training size)")
    p.add_argument("--conf", type=float, default=0.5, help="operating confidence threshold")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write the scores as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mcf_rotator.reconstruction.ultralytics_env import setup_ultralytics

    setup_ultralytics(threads=args.threads)
    from mcf_rotator.reconstruction.yolo import DEFAULT_IMGSZ, YoloCellDetector, evaluate_detector
    from mcf_rotator.reconstruction.yolo_dataset import HARD, TRAIN, generate_samples, read_yolo_split

    args.imgsz = args.imgsz or DEFAULT_IMGSZ
    det = YoloCellDetector(args.weights, imgsz=args.imgsz, conf=args.conf, threads=args.threads)
    if args.data is not None:
        samples = read_yolo_split(args.data, args.split)
        source = f"{args.data} ({args.split})"
    else:
        cond = HARD if args.conditions == "hard" else TRAIN
        samples = generate_samples(args.frames, args.seed, cond=cond)
        source = f"synthetic '{cond.name}' set, {args.frames} frames, seed {args.seed}"
    s = evaluate_detector(det, samples)
    print(f"weights: {det.weights}")
    print(f"data: {source}: {s.n_images} frames, {s.n_cells} cells")
    print(f"box precision @IoU0.5, conf {args.conf}: {100 * s.precision:.2f} %  ({s.true_positives} TP, {s.false_positives} FP)")
    print(f"box recall    @IoU0.5, conf {args.conf}: {100 * s.recall:.2f} %  ({s.false_negatives} missed)")
    print(f"box mAP50: {100 * s.map50:.2f} %")
    print(f"mask IoU (matched cells): {s.mask_iou:.4f}")
    print(f"inference: {s.ms_per_frame:.1f} ms/frame at imgsz {args.imgsz} ({args.threads} threads, masks at full resolution)")
    if args.json is not None:
        d = s.as_dict()
        d.update(weights=str(det.weights), data=source, imgsz=args.imgsz, conf=args.conf, threads=args.threads)
        args.json.write_text(json.dumps(d, indent=2))
    return 0
