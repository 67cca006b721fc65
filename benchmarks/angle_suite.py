"""Accuracy suite of the rotation-angle + registration stage on data from three generators.

    python benchmarks/angle_suite.py [--quick] [--only SUBSTRING] [--generator NAME]
                                     [--json out.json] [--jobs N]

Every case of :func:`suite_data.suite_cases` is generated, then reconstructed exactly as the
``reconstruct`` command does (:func:`reconstruct_frames` on the raw frames, nothing else given).
Per case:

- angles over the used frames, estimate and truth both referenced to the first used frame:
  MAE, offset-free MAE (best constant removed), max error, whether the direction is right;
- fine-structure correlation (difference-of-Gaussians band, inside the cell) of the product's
  volume with the truth, after resampling it to camera pixels and registering it by
  translation; the same for the ideal reconstruction (true angles, centres and tilt), and the
  ratio product / ideal;
- timings: the final angle stage (``report["timings_s"]["finalize"]``) and the whole call.

One line per case as it finishes, then per generator and overall: median, 90th percentile and
worst of the angle MAE and of the correlation ratio (its 10th percentile and minimum, low being
bad), and how many cases with >= 180 deg of coverage have a ratio below 0.95.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # one BLAS/FFT thread per case unless told otherwise (set before numpy)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import scipy.ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))

import suite_data as sd  # noqa: E402

RATIO_BAR = 0.95


# ------------------------------------------------------------------------------- metrics
def angle_metrics(est_all: np.ndarray, truth_all: np.ndarray, used: np.ndarray) -> dict[str, Any]:
    used = np.asarray(used, int)
    est = np.asarray(est_all, np.float64)[used]
    tru = np.asarray(truth_all, np.float64)[used]
    ok = np.isfinite(est)
    est, tru = est[ok], tru[ok]
    if est.size < 2:
        return {"n": int(est.size)}
    e = est - est[0]
    t = tru - tru[0]
    err = e - t
    slope = float(np.polyfit(t, e, 1)[0]) if np.ptp(t) > 0 else float("nan")
    return {
        "n": int(est.size),
        "mae_deg": float(np.mean(np.abs(err))),
        "mae_offset_free_deg": float(np.mean(np.abs(err - np.median(err)))),
        "max_err_deg": float(np.max(np.abs(err))),
        "direction_ok": bool(slope > 0),
        "coverage_true_deg": float(np.ptp(t)),
        "coverage_est_deg": float(np.ptp(e)),
        "first_used": int(used[0]),
    }


def _place_centred(vol: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``vol`` centred in a zero array of ``shape`` (cropped where larger)."""
    out = np.zeros(shape, np.float32)
    src, dst = [], []
    for n_in, n_out in zip(vol.shape, shape):
        if n_in <= n_out:
            o = (n_out - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(o, o + n_in))
        else:
            o = (n_in - n_out) // 2
            src.append(slice(o, o + n_out))
            dst.append(slice(0, n_out))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def register_to_truth(vol: np.ndarray, voxel_px: float, truth: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The product's volume at camera pixels, translated onto ``truth``, in ``truth``'s shape."""
    from skimage.registration import phase_cross_correlation

    v = np.asarray(vol, np.float32)
    if abs(voxel_px - 1.0) > 1e-6:
        v = ndi.zoom(v, voxel_px, order=1).astype(np.float32)
    common = tuple(max(a, b) for a, b in zip(v.shape, truth.shape))
    big_t = _place_centred(truth, common)
    big_v = _place_centred(v, common)
    shift, _err, _ph = phase_cross_correlation(big_t, big_v, upsample_factor=4)
    big_v = ndi.shift(big_v, shift, order=1, mode="constant").astype(np.float32)
    # back to the truth's region (the truth sits centred in the common array)
    sl = tuple(slice((c - n) // 2, (c - n) // 2 + n) for c, n in zip(common, truth.shape))
    return big_v[sl], [float(s) for s in shift]


# ------------------------------------------------------------------------------- one case
def run_case(case: sd.SuiteCase) -> dict[str, Any]:
    warnings.simplefilter("ignore")
    res: dict[str, Any] = {"name": case.name, "generator": case.generator, "params": case.params,
                           "regression": case.regression}
    try:
        from mcf_rotator.reconstruction.stack import reconstruct_frames

        t0 = time.perf_counter()
        ds = sd.generate(case)
        res["generate_s"] = time.perf_counter() - t0
        res["frames_shape"] = list(ds.frames.shape)
        t0 = time.perf_counter()
        ideal = sd.ideal_reconstruction(ds)
        res["ideal_s"] = time.perf_counter() - t0
        mask = sd.cell_mask(ds.truth)
        res["ideal_corr"] = sd.fine_structure_correlation(ideal, ds.truth, mask)
        del ideal
        t0 = time.perf_counter()
        out = reconstruct_frames(ds.frames)
        res["total_s"] = time.perf_counter() - t0
        res["finalize_s"] = float(out.report.get("timings_s", {}).get("finalize", float("nan")))
        res["angles"] = angle_metrics(out.angles_deg, ds.angles_deg, out.used)
        res["frames_used"] = int(out.used.size)
        res["flags"] = list(out.report.get("flags", []))
        res["per_frame"] = out.report.get("per_frame")
        res["angle_confidence"] = out.report.get("angle_confidence")
        res["orbit_fits"] = out.report.get("orbit_fits")
        res["voxel_px"] = float(out.voxel_px)
        ref = int(out.used[0])
        truth_ref = sd.truth_in_pose(ds.truth, float(ds.angles_deg[ref]))
        mask_ref = sd.cell_mask(truth_ref)
        reg, shift = register_to_truth(out.volume, out.voxel_px, truth_ref)
        res["registration_shift_px"] = shift
        res["corr"] = sd.fine_structure_correlation(reg, truth_ref, mask_ref)
        res["ratio"] = res["corr"] / res["ideal_corr"] if res["ideal_corr"] > 0 else float("nan")
        res["ok"] = True
    except Exception as exc:  # one failure must not stop the suite
        res["ok"] = False
        res["error"] = f"{type(exc).__name__}: {exc}"
        res["traceback"] = traceback.format_exc(limit=6)
    return res


def case_line(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"{r['name']:<44} FAILED {r.get('error', '')}"
    a = r["angles"]
    if "mae_deg" not in a:
        return f"{r['name']:<44} too few frames used ({a.get('n')})"
    return (f"{r['name']:<44} T={r['frames_shape'][0]:4d} used {r['frames_used']:4d} cov {a['coverage_true_deg']:5.0f} "
            f"MAE {a['mae_deg']:6.2f} off-free {a['mae_offset_free_deg']:6.2f} max {a['max_err_deg']:6.1f} "
            f"dir {'ok' if a['direction_ok'] else 'WRONG'} | corr {r['corr']:.3f} ideal {r['ideal_corr']:.3f} "
            f"ratio {r['ratio']:.3f} | final {r['finalize_s']:5.1f}s total {r['total_s']:5.1f}s")


# ------------------------------------------------------------------------------- summary
def _stats(values: list[float], low_is_bad: bool) -> tuple[float, float, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return (float("nan"),) * 3
    if low_is_bad:
        return float(np.median(v)), float(np.percentile(v, 10)), float(v.min())
    return float(np.median(v)), float(np.percentile(v, 90)), float(v.max())


def summary(results: list[dict[str, Any]]) -> list[str]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["generator"], []).append(r)
    groups["overall"] = list(results)
    lines = [f"{'group':<10} {'n':>3} {'fail':>4} | {'MAE med':>7} {'p90':>6} {'worst':>6} | "
             f"{'ratio med':>9} {'p10':>6} {'worst':>6} | <{RATIO_BAR} (>=180deg) | ideal med"]
    for g, rs in groups.items():
        good = [r for r in rs if r.get("ok") and "mae_deg" in r.get("angles", {})]
        mae = _stats([r["angles"]["mae_deg"] for r in good], False)
        ratio = _stats([r["ratio"] for r in good], True)
        ideal = _stats([r["ideal_corr"] for r in good], True)
        full = [r for r in good if r["angles"]["coverage_true_deg"] >= 180.0]
        below = sum(1 for r in full if not r["ratio"] >= RATIO_BAR)
        lines.append(f"{g:<10} {len(rs):3d} {len(rs) - len(good):4d} | {mae[0]:7.2f} {mae[1]:6.2f} {mae[2]:6.2f} | "
                     f"{ratio[0]:9.3f} {ratio[1]:6.3f} {ratio[2]:6.3f} | {below:3d} of {len(full):3d}        | "
                     f"{ideal[0]:.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller cells and shorter sweeps")
    ap.add_argument("--only", default=None, help="run the cases whose name contains this")
    ap.add_argument("--generator", choices=sd.GENERATORS, default=None)
    ap.add_argument("--regression", action="store_true", help="only the regression subset")
    ap.add_argument("--json", type=Path, default=None, help="write all per-case results here")
    ap.add_argument("--jobs", type=int, default=1, help="cases run in parallel (processes)")
    args = ap.parse_args(argv)

    cases = sd.suite_cases(quick=args.quick)
    if args.generator:
        cases = [c for c in cases if c.generator == args.generator]
    if args.only:
        cases = [c for c in cases if args.only in c.name]
    if args.regression:
        cases = [c for c in cases if c.regression]
    if not cases:
        print("no case selected", file=sys.stderr)
        return 2
    print(f"{len(cases)} cases ({'quick' if args.quick else 'full'}), jobs {args.jobs}", flush=True)
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    if args.jobs <= 1:
        for c in cases:
            r = run_case(c)
            results.append(r)
            print(case_line(r), flush=True)
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futs = {pool.submit(run_case, c): c for c in cases}
            for f in as_completed(futs):
                try:
                    r = f.result()
                except Exception as exc:  # a crashed worker process
                    c = futs[f]
                    r = {"name": c.name, "generator": c.generator, "params": c.params, "ok": False,
                         "error": f"{type(exc).__name__}: {exc}"}
                results.append(r)
                print(case_line(r), flush=True)
        order = {c.name: i for i, c in enumerate(cases)}
        results.sort(key=lambda r: order[r["name"]])
    wall = time.perf_counter() - t0
    print()
    for line in summary(results):
        print(line)
    print(f"wall time {wall:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"wall_s": wall, "quick": args.quick, "cases": results}, indent=1,
                                        default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
