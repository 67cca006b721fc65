"""Batch throughput on Dask: cells per minute with 1 and 2 local workers, and their ratio.

    python benchmarks/bench_batch.py [--cells 20] [--frames 60] [--size 96] [--workers 1,2]

Writes ``--cells`` simulated recordings (random cells, 12 um, 0.2 um pixels: ~60 px across,
uniform rotation over 360 deg, brightfield noise), then for each worker count starts a fresh
``LocalCluster`` and runs :func:`mcf_rotator.batch.run_batch` on all of them into a fresh
output folder. The time per run covers the cells only (cluster start-up is reported apart).
The machine may be shared: the figures are for this run, compare ratios rather than rates.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PIXEL_UM = 0.2


def write_recordings(folder: Path, n: int, frames: int, size: int) -> list[Path]:
    """``n`` TIFF stacks of simulated rotating cells (seeds 100, 101, ...)."""
    import tifffile

    from mcf_rotator.simulation.phantom import CellPhantom, projection_stack

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        seed = 100 + i
        od = projection_stack(CellPhantom.random(seed), np.linspace(0, 360, frames, endpoint=False), size,
                              voxel_um=PIXEL_UM)
        rng = np.random.default_rng(seed)
        stack = np.clip(200 * np.exp(-od * 12) + rng.normal(0, 1, od.shape), 0, 255).astype(np.uint8)
        p = folder / f"cell{i:03d}.tif"
        tifffile.imwrite(p, stack)
        paths.append(p)
    return paths


def run_once(paths: list[Path], out: Path, workers: int) -> dict:
    from mcf_rotator import batch

    cells = batch.find_cells(paths)
    t0 = time.perf_counter()
    client = batch.make_client(workers)
    startup = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        rows = batch.run_batch(cells, out, client, pixel_size_um=PIXEL_UM, progress=False)
        wall = time.perf_counter() - t1
    finally:
        batch.close_client(client)
    ok = sum(r["status"] == "ok" for r in rows)
    per_cell = [r["total_s"] for r in rows if r.get("total_s") is not None]
    return {
        "workers": workers, "cells": len(rows), "ok": ok, "wall_s": wall, "startup_s": startup,
        "cells_per_min": 60.0 * len(rows) / wall, "median_cell_s": float(np.median(per_cell)) if per_cell else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=20, help="simulated recordings (default 20)")
    ap.add_argument("--frames", type=int, default=60, help="frames per recording (default 60)")
    ap.add_argument("--size", type=int, default=96, help="frame side in pixels (default 96)")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        t = time.perf_counter()
        paths = write_recordings(tmp / "data", args.cells, args.frames, args.size)
        print(f"{args.cells} recordings of {args.frames} frames ({args.size} px) written in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        results = []
        for w in counts:
            r = run_once(paths, tmp / f"out-{w}", w)
            results.append(r)
            print(f"{w} worker(s): {r['cells']} cells ({r['ok']} ok) in {r['wall_s']:.1f} s = "
                  f"{r['cells_per_min']:.2f} cells/min (median {r['median_cell_s']:.1f} s per cell; "
                  f"cluster start {r['startup_s']:.1f} s)", flush=True)
        base = results[0]["cells_per_min"]
        for r in results[1:]:
            print(f"speed-up {r['workers']} vs {results[0]['workers']} worker(s): {r['cells_per_min'] / base:.2f}x")
        if args.json:
            args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results},
                                            indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":  # the guard matters: Dask's worker processes re-import this file
    sys.exit(main())
