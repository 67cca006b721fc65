"""``mcf-rotator batch INPUT... --out DIR``: many recordings reconstructed and measured on Dask.

``mcf-rotator batch --summary DIR`` prints a finished (or partial) batch's table summary and
writes ``DIR/summary.png``. The work lives in :mod:`mcf_rotator.batch`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mcf_rotator.errors import InputFileError, McfRotatorError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch", help="reconstruct and measure many recordings on Dask (resumable, per-cell results table)")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="recordings (TIFF / OME-TIFF / .ome.zarr), run folders, folders to search, or globs")
    p.add_argument("--out", type=Path, default=None, help="output folder (one sub-folder per cell, results table)")
    p.add_argument("--summary", type=Path, default=None, metavar="DIR",
                   help="print the results table summary of DIR and write DIR/summary.png, then stop")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes, one thread each (default: one per core)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on an existing Dask cluster (e.g. tcp://host:8786) instead of a local one")
    p.add_argument("--redo", action="store_true", help="reprocess cells that are already finished")
    p.add_argument("--force", action="store_true",
                   help="keep a cell's volume even when the quality gate finds no (consistent) cell or "
                        "untrustworthy angles (the reasons go into its report)")
    p.add_argument("--retries", type=int, default=1,
                   help="Dask retries of a cell whose worker died (default 1; bad recordings are not retried)")
    p.add_argument("--pixel-size", type=float, default=None,
                   help="camera pixel size in um (default: from each recording's metadata, else lengths in voxels)")
    p.add_argument("--roi", type=int, default=None, help="crop side in camera pixels (as for reconstruct)")
    p.add_argument("--size", type=int, default=None, help="reconstruction grid side (as for reconstruct)")
    p.add_argument("--cell-px", type=float, default=None, help="expected cell diameter in pixels (as for reconstruct)")
    p.add_argument("--direction", type=int, choices=(-1, 1), default=1, help="commanded rotation sign")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mcf_rotator import batch

    if args.summary is not None:
        print(batch.summarize(args.summary))
        return 0
    if not args.inputs:
        raise McfRotatorError("batch: give at least one INPUT (or --summary DIR)")
    if args.out is None:
        raise McfRotatorError("batch: --out DIR is required")
    if args.workers is not None and args.workers < 1:
        raise McfRotatorError(f"batch: --workers must be at least 1 (got {args.workers})")
    if args.pixel_size is not None and not args.pixel_size > 0:
        raise McfRotatorError(f"batch: --pixel-size must be positive (got {args.pixel_size})")
    if args.out.exists() and not args.out.is_dir():
        raise InputFileError(f"{args.out}: exists and is not a folder")
    cells = batch.find_cells(args.inputs, exclude=args.out)
    if not cells:
        raise InputFileError(f"{', '.join(args.inputs)}: no recording found")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputFileError(f"{args.out}: cannot create the output folder ({exc.strerror or exc})") from exc
    recon = {k: v for k, v in (("roi_px", args.roi), ("size", args.size), ("cell_px", args.cell_px)) if v is not None}
    recon["direction"] = args.direction
    client = batch.make_client(args.workers, args.scheduler)
    try:
        n_workers = len(client.scheduler_info().get("workers", {}))
        print(f"Dask: {n_workers} worker(s), dashboard {client.dashboard_link}", flush=True)
        rows = batch.run_batch(cells, args.out, client, pixel_size_um=args.pixel_size, redo=args.redo,
                               recon=recon, retries=max(0, args.retries), progress=not args.no_progress,
                               force=args.force)
    finally:
        batch.close_client(client)
    ok = sum(r["status"] == "ok" for r in rows)
    skipped = sum(bool(r.get("skipped")) for r in rows)
    failed = len(rows) - ok
    print(f"{args.out}: {len(rows)} cells, {ok} ok ({skipped} already done), {failed} failed; "
          f"table {args.out / batch.TABLE_PARQUET}")
    for r in rows:
        if r["status"] != "ok":
            print(f"failed {r['cell']}: {r['error']}")
    return 1 if failed else 0
