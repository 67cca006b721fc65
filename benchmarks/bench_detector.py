"""Benchmark the learned cell detector: ms per full-field frame and per crop on CPU.

Usage: python benchmarks/bench_detector.py [--threads 2] [--sizes 256 320 416] [--json OUT]

Prints, for each network input size, the median time of ``detect`` with and without masks on
a 480x640 simulated frame, of the live path ``detect_boxes`` (what the pipeline calls), and of
``segment`` on a cell crop; plus how often the live detection must be scheduled (every N
frames) so it takes at most half of a 100 frames/s pipeline's 10 ms frame budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import statistics
import time
from pathlib import Path
from typing import Callable


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median ms of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    t = []
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return 1000 * statistics.median(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[192, 256, 320])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from mcf_rotator.reconstruction.ultralytics_env import setup_ultralytics

    setup_ultralytics(threads=args.threads)
    import numpy as np

    from mcf_rotator.reconstruction.yolo import YoloCellDetector, benchmark_detector
    from mcf_rotator.reconstruction.yolo_dataset import Conditions, render_sample

    cond = Conditions(p_empty=0.0, n_cells=(1, 1), p_crop=0.0, p_border=0.0)
    sample = render_sample(np.random.default_rng(0), (480, 640), cond)
    x0, y0, x1, y1 = (int(v) for v in sample.boxes[0])
    m = max(x1 - x0, y1 - y0) // 5
    crop = sample.image[max(0, y0 - m) : y1 + m, max(0, x0 - m) : x1 + m]
    rows = []
    for size in args.sizes:
        det = YoloCellDetector(args.weights, imgsz=size, segment_imgsz=min(size, 256), threads=args.threads)
        full = benchmark_detector(det, sample.image, args.repeats, with_masks=True)
        boxes_only = benchmark_detector(det, sample.image, args.repeats, with_masks=False)
        live = _median_ms(lambda: det.detect_boxes(sample.image), args.repeats)
        seg = _median_ms(lambda: det.segment(crop), args.repeats)
        every = int(np.ceil(live / 10.0 * 2))  # the live detection may take half of a 10 ms frame budget
        rows.append(dict(imgsz=size, detect_ms=full, detect_boxes_only_ms=boxes_only, detect_live_ms=live,
                         segment_crop_ms=seg, crop_shape=list(crop.shape), detect_every_n_frames_for_100fps=every))
        print(f"imgsz {size}: detect+masks {full:.1f} ms, boxes only {boxes_only:.1f} ms, live detect_boxes {live:.1f} ms, "
              f"segment crop {crop.shape} {seg:.1f} ms -> schedule detection every >= {every} frames for 100 frames/s",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(dict(threads=args.threads, frame_shape=[480, 640], results=rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
