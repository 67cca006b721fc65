"""``mcf-rotator train-detector``: fine-tune (or train) the YOLO cell detector/segmenter.

Default: fine-tune the shipped weights on the user's labelled frames (YOLO segmentation
format, e.g. made with ``mcf-rotator label``). ``--generate N`` first writes N synthetic
frames from the simulated rig into ``--data``; ``--from-scratch`` builds yolo11n-seg from its
yaml. Nothing is downloaded. Run folders go to ``--runs`` (a temp folder by default).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from mcf_rotator.errors import InputFileError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-detector",
        help="fine-tune the learned cell detector on labelled frames (YOLO format)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="dataset folder (images/, labels/) or data.yaml")
    p.add_argument("--output", "-o", type=Path, default=None, help="copy the trained weights (.pt) here")
    p.add_argument("--runs", type=Path, default=None, help="folder for ultralytics run files (default: temp)")
    p.add_argument("--epochs", type=int, default=30, help="passes over the training images (default 30)")
    p.add_argument("--imgsz", type=int, default=None, help="network input size (frames are letterboxed; default: the shipped weights' size)")
    p.add_argument("--batch", type=int, default=16, help="images per training batch (default 16)")
    p.add_argument("--weights", type=Path, default=None, help="weights to fine-tune (default: the shipped ones)")
    p.add_argument("--from-scratch", action="store_true", help="train a new yolo11n-seg from its yaml")
    p.add_argument("--lr0", type=float, default=None, help="initial learning rate (AdamW; default 0.0005 fine-tune, 0.002 from scratch)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--device", default="cpu", help='"cpu" (default) or a GPU index such as "0"')
    p.add_argument("--max-minutes", type=float, default=None, help="cap the training time (epochs are re-planned to fit)")
    p.add_argument("--generate", type=int, default=0, metavar="N", help="first write N synthetic frames into --data")
    p.add_argument("--seed", type=int, default=0, help="seed for --generate and training")
    p.add_argument("--hard-share", type=float, default=0.5, metavar="F",
                   help="share of --generate frames drawn from the tough end of every range (default 0.5)")
    p.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1), metavar="N",
                   help="processes rendering --generate frames (default: CPU count, at most 8)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="data-loading processes during training (default 1; 8-16 on a GPU machine)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mcf_rotator.reconstruction.ultralytics_env import setup_ultralytics

    setup_ultralytics(threads=args.threads)
    from mcf_rotator.reconstruction.yolo import DEFAULT_IMGSZ, train_detector
    from mcf_rotator.reconstruction.yolo_dataset import write_yolo_dataset

    if args.jobs < 1 or args.workers < 0:
        raise InputFileError("--jobs must be at least 1 and --workers at least 0")
    if args.epochs < 1:
        raise InputFileError("--epochs must be at least 1")
    if not 0.0 <= args.hard_share <= 1.0:
        raise InputFileError("--hard-share must be between 0 and 1")
    if args.generate > 0:
        n_val = max(2, args.generate // 10)
        print(f"writing {args.generate} synthetic training + {n_val} validation frames to {args.data}")
        write_yolo_dataset(
            args.data, args.generate, n_val, seed=args.seed, progress=True, hard_share=args.hard_share, processes=args.jobs
        )
    best = train_detector(
        args.data,
        out_dir=args.runs,
        epochs=args.epochs,
        imgsz=args.imgsz or DEFAULT_IMGSZ,
        batch=args.batch,
        weights=args.weights,
        from_scratch=args.from_scratch,
        threads=args.threads,
        lr0=args.lr0,
        seed=args.seed,
        time_hours=args.max_minutes / 60.0 if args.max_minutes else None,
        device=args.device,
        workers=args.workers,
    )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, args.output)
        best = args.output
    print(f"trained weights: {best}")
    print(f"use them with: mcf-rotator evaluate-detector --weights {best}   or set paths.detector_weights in the rig config")
    return 0
