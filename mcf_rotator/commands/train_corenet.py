"""``mcf-rotator train-corenet``: train CoreNet weights for a fibre (CPU in minutes; GPU if present)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-corenet",
        help="train the CoreNet hologram network for the fibre",
        description="Train CoreNet unsupervised through the far-field model on random ellipse targets "
        "and save the weights (default: the shipped default weights are not overwritten; give --out).",
    )
    p.add_argument("--out", type=Path, default=Path("corenet.pt"), help="weights file to write")
    p.add_argument("--core-map", type=Path, default=None, help="measured core map (CSV/JSON); default: hexagonal 61 cores")
    p.add_argument("--steps", type=int, default=4000, help="training steps (default 4000)")
    p.add_argument("--batch", type=int, default=256, help="random ellipse targets per step (default 256)")
    p.add_argument("--hidden", type=int, default=256, help="width of the network's hidden layers (default 256)")
    p.add_argument("--grid", type=int, default=64, help="far-field grid size M")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the training targets (default 0)")
    p.add_argument("--moment-weight", type=float, default=0.0,
                   help="weight of the beam-orientation (second-moment) term in the loss (0: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mcf_rotator.holography.corenet import TrainSettings, train_corenet
    from mcf_rotator.holography.mcf import FarFieldGrid, MCFGeometry, far_field_matrix, far_field_intensity
    from mcf_rotator.holography.quality import correlation, efficiency
    from mcf_rotator.holography.targets import central_mask, ellipse_targets

    import numpy as np

    geometry = MCFGeometry.from_file(args.core_map) if args.core_map else MCFGeometry.hexagonal()
    settings = TrainSettings(steps=args.steps, batch=args.batch, hidden=args.hidden, seed=args.seed,
                             threads=args.threads, moment_weight=args.moment_weight)
    bar = tqdm(total=args.steps, unit="step")

    def progress(done: int, total: int, loss: float) -> None:
        bar.n = done
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.refresh()

    bundle = train_corenet(geometry, args.grid, settings, device=args.device, progress=progress)
    bar.close()
    bundle.save(args.out)
    # report quality on the rotating-ellipse targets the sequencer uses
    from mcf_rotator.holography.corenet import CoreNetHologramGenerator

    gen = CoreNetHologramGenerator(bundle)
    grid: FarFieldGrid = bundle.grid
    targets = ellipse_targets(grid, (6.0, 2.5), np.arange(0, 180, 5.0))
    inten = far_field_intensity(gen.phases_batch(targets), far_field_matrix(geometry, grid))
    mask = central_mask(grid, geometry)
    print(
        f"saved {args.out}: loss {bundle.info['final_loss']:.4f}, "
        f"ellipse correlation {correlation(inten, targets, mask).mean():.3f}, "
        f"efficiency {efficiency(inten, targets, mask).mean():.3f}, {bundle.info['train_seconds']} s"
    )
    return 0
