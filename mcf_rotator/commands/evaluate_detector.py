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
    p.add_argument("--conditions", choices=["hard", "train"], default="hard",
                   help="imaging conditions of the synthetic set: the harder held-out ranges or the training ranges "
                   "(default hard)")
    p.add_argument("--imgsz", type=int, default=None, help="network input size (default: the shipped weights' training size)")
    p.add_argument("--conf", type=float, default=0.5, help="operating confidence threshold")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for inference (default 2)")
    p.add_argument("--json", type=Path, default=None, help="also write the scores as JSON here")
    p.set_defaults(func=run)


def check_dataset(data: Path, split: str) -> None:
    """Refuse a labelled dataset whose ``split`` images cannot be found, before the detector
    loads, naming the yaml (or folder) and what is wrong with it: unreadable yaml, no such
    key, or a folder missing relative to the path it was resolved against."""
    import yaml

    from mcf_rotator.errors import InputFileError

    if not data.exists():
        raise InputFileError(f"{data}: dataset not found (expected a data.yaml file or a YOLO dataset folder)")
    if data.is_dir():
        if not (data / "images" / split).is_dir():
            raise InputFileError(f"{data}: dataset folder has no images/{split} folder ({data / 'images' / split})")
        return
    try:
        cfg = yaml.safe_load(data.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        why = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise InputFileError(f"{data}: cannot read the dataset yaml ({why})") from exc
    if not isinstance(cfg, dict):
        raise InputFileError(f"{data}: the dataset yaml is not a mapping of keys (path, train, {split}, names)")
    if split not in cfg:
        keys = ", ".join(map(str, cfg)) or "none"
        raise InputFileError(f"{data}: the dataset yaml has no '{split}' key (keys: {keys}); use --split to pick one")
    if not isinstance(cfg[split], str):
        raise InputFileError(f"{data}: '{split}' in the dataset yaml must be one folder, got {cfg[split]!r}")
    # resolved as the reader does: against the yaml's 'path' key, else the yaml's folder
    if cfg.get("path"):
        base = Path(str(cfg["path"]))
        against = f"its 'path' key {base}" + ("" if base.is_absolute() else f", itself relative to {Path.cwd()}")
    else:
        base, against = data.parent, "the yaml's folder"
    folder = base / cfg[split]
    if not folder.is_dir():
        raise InputFileError(f"{data}: '{split}: {cfg[split]}' is not a folder: {folder} (relative to {against}) "
                             "does not exist")


def run(args: argparse.Namespace) -> int:
    if args.data is not None:
        check_dataset(args.data, args.split)
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
        from mcf_rotator import strict_json

        args.json.write_text(strict_json.dumps(d, indent=2))  # null, never NaN
    return 0
