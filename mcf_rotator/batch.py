"""Batch reprocessing of many recordings on Dask distributed: the work behind ``mcf-rotator batch``.

One *cell* is one recording: a TIFF stack, an OME-TIFF recording, an ``.ome.zarr`` folder, or a
run folder holding ``recording.ome.tif`` / ``recording.ome.zarr``. Each is reconstructed with
the same settings as ``mcf-rotator reconstruct`` into ``OUT/<cell name>/`` (``volume.tif``,
``angles.csv``, ``report.json``) and measured (:mod:`mcf_rotator.reconstruction.morphology`).

Resumable: ``report.json`` is written last, atomically (temporary file + ``os.replace``), and is
the cell's completion marker; a cell that has one is skipped unless ``redo``. A failing cell
writes ``error.txt`` (and no marker, so the next run retries it) and never stops the others.

Scheduling, retries and spilling are Dask's: :func:`run_batch` submits one task per cell with
``client.submit`` and collects them with ``as_completed``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcf_rotator import strict_json
from mcf_rotator.errors import InputFileError, McfRotatorError

log = logging.getLogger(__name__)

__all__ = [
    "TABLE_COLUMNS",
    "Cell",
    "ThreadLimits",
    "find_cells",
    "process_cell",
    "read_table",
    "run_batch",
    "summarize",
    "write_table",
]

REPORT = "report.json"
ERROR = "error.txt"
VOLUME = "volume.tif"
ANGLES = "angles.csv"
TABLE_PARQUET = "results.parquet"
TABLE_CSV = "results.csv"
SUMMARY_PNG = "summary.png"
#: names a run folder's recording may have
RUN_RECORDINGS = ("recording.ome.tif", "recording.ome.tiff", "recording.ome.zarr")
_STACK_SUFFIXES = (".tif", ".tiff")
_BATCH_FILES = {VOLUME}  # our own outputs: never taken as inputs

#: the results table, one row per cell, in this order
TABLE_COLUMNS = [
    "cell", "input", "status", "error", "skipped",
    "frames_total", "frames_used", "coverage_deg", "angle_confidence", "mirror_residual_deg",
    "voxel_um", "units", "volume", "surface_area", "sphericity", "equivalent_diameter",
    "mean_attenuation", "integrated_attenuation", "dense_fraction",
    "read_s", "reconstruct_s", "measure_s", "total_s", "worker",
]


@dataclass(frozen=True)
class Cell:
    """One recording to process, and the name of its output folder."""

    name: str
    path: Path


# ----------------------------------------------------------------------------- discovery
def _is_recording(p: Path) -> bool:
    n = p.name.lower()
    if p.is_dir():
        return n.endswith(".zarr")
    return n.endswith(_STACK_SUFFIXES) and p.name not in _BATCH_FILES


def _run_recording(folder: Path) -> Path | None:
    for name in RUN_RECORDINGS:
        if (folder / name).exists():
            return folder / name
    return None


def _cell_for(p: Path) -> Cell:
    from mcf_rotator.recording import recording_stem

    if p.is_dir() and not p.name.lower().endswith(".zarr"):
        rec = _run_recording(p)
        if rec is None:
            raise InputFileError(f"{p}: not a run folder (no {' / '.join(RUN_RECORDINGS)})")
        return Cell(p.name, rec)
    if p.parent.is_dir() and p.name.lower() in RUN_RECORDINGS:  # a run folder's recording
        return Cell(p.parent.name, p)
    return Cell(recording_stem(p), p)


def _search(folder: Path) -> list[Path]:
    """Recordings and run folders under ``folder`` (not inside a found one)."""
    found: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and not entry.name.lower().endswith(".zarr"):
            found.extend([entry] if _run_recording(entry) else _search(entry))
        elif _is_recording(entry):
            found.append(entry)
    return found


def find_cells(inputs: Iterable[str | Path], exclude: Path | None = None) -> list[Cell]:
    """Cells from files, folders (searched for recordings and run folders) and glob patterns.

    A path that does not exist (and matches nothing as a glob) or a folder holding no
    recording raises :class:`InputFileError`. Output folders under ``exclude`` are skipped.
    Names are made unique (``name``, ``name-2``, ...) in input order.
    """
    paths: list[Path] = []
    for item in inputs:
        s = str(item)
        p = Path(s)
        if p.is_dir() and _run_recording(p) is None and not p.name.lower().endswith(".zarr"):
            sub = _search(p)
            if not sub:
                raise InputFileError(f"{p}: holds no recording (TIFF stack, OME-TIFF, .ome.zarr or run folder)")
            paths.extend(sub)
        elif p.exists():
            paths.append(p)
        elif glob.has_magic(s):
            hits = [Path(h) for h in sorted(glob.glob(s, recursive=True))]
            hits = [h for h in hits if _is_recording(h) or (h.is_dir() and _run_recording(h))]
            if not hits:
                raise InputFileError(f"{s}: no recording matches this pattern")
            paths.extend(hits)
        else:
            raise InputFileError(f"{p}: no such file or folder")
    if exclude is not None:
        ex = Path(exclude).resolve()
        paths = [p for p in paths if ex not in p.resolve().parents and p.resolve() != ex]
    cells: list[Cell] = []
    seen_paths: set[Path] = set()
    names: dict[str, int] = {}
    for p in paths:
        c = _cell_for(p)
        key = c.path.resolve()
        if key in seen_paths:
            continue
        seen_paths.add(key)
        k = names.get(c.name, 0) + 1
        names[c.name] = k
        cells.append(c if k == 1 else Cell(f"{c.name}-{k}", c.path))
    return cells


# ----------------------------------------------------------------------------- one cell
def recording_pixel_size(path: str | Path) -> float | None:
    """Camera pixel size (um) stored in a recording's metadata, or None: the same lookup as
    ``reconstruct`` (:func:`~mcf_rotator.reconstruction.io.read_pixel_size`: OME-XML, NGFF scale,
    ImageJ calibration, the frames.jsonl header)."""
    from mcf_rotator.reconstruction.io import read_pixel_size

    try:
        return read_pixel_size(path)[0]
    except Exception:  # noqa: BLE001 - no readable metadata: no pixel size
        return None


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            os.unlink(tmp)
        raise


def _limit_threads(n: int = 1) -> None:
    """Pin torch/BLAS/OpenCV thread counts in this (worker) process."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    except Exception as exc:  # noqa: BLE001 - no torch, or its pool is already fixed
        log.debug("torch threads not set: %s", exc)
    try:
        from mcf_rotator.reconstruction.ultralytics_env import configure_opencv_threads

        configure_opencv_threads()
    except Exception as exc:  # noqa: BLE001
        log.debug("OpenCV threads not set: %s", exc)
    from mcf_rotator.reconstruction import final_angles

    final_angles.ANGLE_THREADS = max(1, int(n))  # the angle stage's own threads, too


def _row_from_report(cell: Cell, report: dict[str, Any], skipped: bool) -> dict[str, Any]:
    conf = report.get("angle_confidence") or {}
    morph = report.get("morphology") or {}
    timings = report.get("batch_timings_s") or {}
    row: dict[str, Any] = {
        "cell": cell.name, "input": str(cell.path), "status": "ok", "error": "", "skipped": skipped,
        "frames_total": report.get("frames_total"), "frames_used": report.get("frames_used"),
        "coverage_deg": report.get("coverage_deg"), "angle_confidence": conf.get("level"),
        "mirror_residual_deg": conf.get("mirror_residual_deg"), "voxel_um": report.get("voxel_um"),
        "worker": report.get("batch_worker", ""),
    }
    for k in ("units", "volume", "surface_area", "sphericity", "equivalent_diameter", "mean_attenuation",
              "integrated_attenuation", "dense_fraction"):
        row[k] = morph.get(k)
    for k in ("read", "reconstruct", "measure", "total"):
        row[f"{k}_s"] = timings.get(k)
    return row


def _error_row(cell: Cell, message: str, total_s: float | None = None) -> dict[str, Any]:
    row = {c: None for c in TABLE_COLUMNS}
    row.update(cell=cell.name, input=str(cell.path), status="error", error=message, skipped=False,
               total_s=total_s, worker=socket.gethostname())
    return row


def process_cell(cell: Cell, out: str | Path, pixel_size_um: float | None = None, redo: bool = False,
                 recon: dict[str, Any] | None = None, threads: int = 1, force: bool = False) -> dict[str, Any]:
    """Reconstruct and measure one cell into ``out/<cell.name>/``; its results-table row.

    Never raises for a bad recording: the row says ``status="error"`` with the message, which
    is also written to ``error.txt``. ``recon`` holds extra keyword arguments for
    :func:`~mcf_rotator.reconstruction.stack.reconstruct_frames` (``roi_px``, ``size``,
    ``cell_px``, ``direction``). ``pixel_size_um`` None: from the recording's metadata, if any.
    The quality gate of ``reconstruct`` applies (:mod:`~mcf_rotator.reconstruction.quality`):
    a stack with no consistent cell, or angles that cannot be trusted, is an error row with the
    reasons and no volume, unless ``force`` (then the reasons go into the report's flags).
    """
    folder = Path(out) / cell.name
    marker = folder / REPORT
    if marker.is_file() and not redo:
        try:
            return _row_from_report(cell, json.loads(marker.read_text()), skipped=True)
        except (OSError, ValueError):
            pass  # a damaged marker: redo the cell
    t0 = time.perf_counter()
    try:
        _limit_threads(threads)
        folder.mkdir(parents=True, exist_ok=True)
        # a run killed here before left its marker unwritten, maybe a half-written temp file
        for stale in (marker, folder / ERROR, *folder.glob(".*.tmp")):
            if stale.exists():
                stale.unlink()
        from mcf_rotator.reconstruction import quality
        from mcf_rotator.reconstruction.io import read_stack, write_angles, write_volume
        from mcf_rotator.reconstruction.morphology import measure_cell
        from mcf_rotator.reconstruction.stack import reconstruct_frames

        frames = read_stack(cell.path)
        px = pixel_size_um if pixel_size_um else recording_pixel_size(cell.path)
        t1 = time.perf_counter()
        evidence = quality.frame_evidence(frames, cell_px=(recon or {}).get("cell_px"))  # cheap, first
        if (why := quality.frame_problem(evidence)) and not force:
            raise McfRotatorError(f"{cell.path}: {why} (--force reconstructs it anyway)")
        try:
            result = reconstruct_frames(frames, pixel_size_um=px, **(recon or {}))
        except McfRotatorError as exc:
            raise type(exc)(f"{cell.path}: {exc}") from exc
        verdict = quality.assess(result.report, evidence)
        if not verdict.ok and not force:
            raise McfRotatorError(f"{cell.path}: {'; '.join(verdict.reasons)} (--force keeps the volume anyway)")
        result.report["quality"] = verdict.as_dict()
        if not verdict.ok:
            result.report.setdefault("flags", []).extend(f"quality gate overridden: {r}" for r in verdict.reasons)
        t2 = time.perf_counter()
        write_volume(folder / VOLUME, result.volume, result.voxel_um)
        write_angles(folder / ANGLES, result.angles_deg)
        morph = measure_cell(result.volume, result.voxel_um)
        t3 = time.perf_counter()
        report = dict(result.report, input=str(cell.path), cell=cell.name, pixel_size_um=px,
                      morphology=morph.as_dict(), batch_worker=socket.gethostname())
        report["batch_timings_s"] = {"read": t1 - t0, "reconstruct": t2 - t1, "measure": t3 - t2,
                                     "total": time.perf_counter() - t0}
        _atomic_write_text(marker, strict_json.dumps(report, indent=2))  # the marker: last
        return _row_from_report(cell, report, skipped=False)
    except Exception as exc:  # noqa: BLE001 - one cell's failure never stops the batch
        msg = str(exc) if isinstance(exc, McfRotatorError) else f"{cell.path}: {type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            folder.mkdir(parents=True, exist_ok=True)
            detail = "" if isinstance(exc, McfRotatorError) else "\n" + traceback.format_exc()
            (folder / ERROR).write_text(msg + "\n" + detail)
        return _error_row(cell, msg, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- Dask
try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # no Dask: the batch command says so when it starts a client
    _WorkerPlugin = object  # type: ignore[assignment,misc]


class ThreadLimits(_WorkerPlugin):  # type: ignore[misc,valid-type]
    """Dask worker plugin: one thread for torch/BLAS/OpenCV in every worker process."""

    name = "mcf-rotator-thread-limits"

    def __init__(self, threads: int = 1) -> None:
        self.threads = int(threads)

    def setup(self, worker: Any) -> None:
        _limit_threads(self.threads)

    def teardown(self, worker: Any) -> None:
        return None


def default_workers() -> int:
    """Worker processes for a local cluster: one per core (at least 1)."""
    return max(1, os.cpu_count() or 1)


def make_client(workers: int | None = None, scheduler: str | None = None) -> Any:
    """A ``distributed.Client``: connected to ``scheduler``, or to a new ``LocalCluster`` of
    ``workers`` single-threaded worker processes (torch/BLAS pinned to 1 thread)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise McfRotatorError(f"batch needs Dask distributed (pip install 'dask[distributed]'): {exc}") from exc

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except Exception as exc:
            raise McfRotatorError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}") from exc
    else:
        n = int(workers or default_workers())
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, env=env,
                               dashboard_address=":0")
        client = Client(cluster)
    client.register_plugin(ThreadLimits(1))
    return client


def close_client(client: Any) -> None:
    """Close the client and, when it owns one, its local cluster."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def run_batch(
    cells: Sequence[Cell],
    out: str | Path,
    client: Any,
    pixel_size_um: float | None = None,
    redo: bool = False,
    recon: dict[str, Any] | None = None,
    retries: int = 0,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Every cell through :func:`process_cell` on ``client``; the table rows in input order.

    Finished cells (with a marker) are read here, not submitted. ``retries`` is Dask's (a
    worker lost mid-task); a bad recording is an error row, not a retry. The table is written
    to ``out`` after every finished cell, so a killed run leaves an up-to-date table.
    """
    from distributed import as_completed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    todo: list[Cell] = []
    for c in cells:
        marker = out / c.name / REPORT
        if marker.is_file() and not redo:
            rows[c.name] = process_cell(c, out)  # reads the marker, nothing else
        else:
            todo.append(c)
    futures = {}
    for c in todo:
        f = client.submit(process_cell, c, str(out), pixel_size_um, redo, recon, 1, force,
                          key=f"mcf-cell-{c.name}-{time.time_ns()}", pure=False, retries=retries)
        futures[f] = c
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(cells), initial=len(rows), desc="cells", unit="cell", mininterval=0.5)
        except ImportError:
            bar = None
    order = [c.name for c in cells]
    try:
        for f in as_completed(list(futures)):
            c = futures[f]
            try:
                row = f.result()
            except Exception as exc:  # noqa: BLE001 - the worker died or the task was lost
                row = _error_row(c, f"{c.path}: {type(exc).__name__}: {exc}")
            rows[c.name] = row
            if on_row is not None:
                on_row(row)
            if bar is not None:
                bar.update(1)
                if row["status"] != "ok":
                    bar.write(f"failed: {row['error']}")
            write_table([rows[n] for n in order if n in rows], out)
    finally:
        if bar is not None:
            bar.close()
    result = [rows[n] for n in order if n in rows]
    write_table(result, out)
    return result


# ----------------------------------------------------------------------------- table
def _frame(rows: Sequence[dict[str, Any]]) -> Any:
    import pandas as pd

    df = pd.DataFrame(list(rows), columns=TABLE_COLUMNS)
    for c in ("cell", "input", "status", "error", "angle_confidence", "units", "worker"):
        df[c] = df[c].astype("string")
    df["skipped"] = df["skipped"].astype("boolean")
    for c in TABLE_COLUMNS:
        if c not in ("cell", "input", "status", "error", "angle_confidence", "units", "worker", "skipped"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    return df


def write_table(rows: Sequence[dict[str, Any]], out: str | Path) -> None:
    """``results.parquet`` and ``results.csv`` in ``out`` (each replaced atomically)."""
    out = Path(out)
    df = _frame(rows)
    for name, write in ((TABLE_PARQUET, lambda p: df.to_parquet(p, index=False)),
                        (TABLE_CSV, lambda p: df.to_csv(p, index=False))):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, out / name)
        except BaseException:
            with contextlib.suppress(Exception):
                os.unlink(tmp)
            raise


def read_table(out: str | Path) -> Any:
    """The results table of a batch output folder (Parquet, else CSV) as a DataFrame."""
    import pandas as pd

    out = Path(out)
    if (out / TABLE_PARQUET).is_file():
        try:
            return pd.read_parquet(out / TABLE_PARQUET)
        except Exception as exc:
            raise InputFileError(f"{out / TABLE_PARQUET}: cannot be read ({exc})") from exc
    if (out / TABLE_CSV).is_file():
        try:
            return pd.read_csv(out / TABLE_CSV)
        except Exception as exc:
            raise InputFileError(f"{out / TABLE_CSV}: cannot be read ({exc})") from exc
    if not out.exists():
        raise InputFileError(f"{out}: no such folder")
    raise InputFileError(f"{out}: no {TABLE_PARQUET} or {TABLE_CSV} (not a batch output folder)")


_SUMMARY_MEASURES = [
    ("volume", "cell volume"),
    ("surface_area", "surface area"),
    ("sphericity", "sphericity"),
    ("equivalent_diameter", "equivalent diameter"),
    ("dense_fraction", "dense fraction"),
    ("coverage_deg", "coverage (deg)"),
    ("mirror_residual_deg", "mirror residual (deg)"),
    ("total_s", "time per cell (s)"),
]


_LENGTH_MEASURES = {"volume", "surface_area", "equivalent_diameter", "integrated_attenuation"}


def _main_units(ok: Any) -> str:
    """The units of most ok rows (``um`` on a tie): lengths in other units are not mixed in."""
    counts = ok["units"].dropna().value_counts()
    if not len(counts):
        return "um"
    return "um" if counts.get("um", 0) >= counts.max() else str(counts.idxmax())


def summarize(out: str | Path, figure: bool = True) -> str:
    """A short text summary of ``out``'s results table; writes ``summary.png`` there."""
    df = read_table(out)
    ok = df[df["status"] == "ok"]
    bad = df[df["status"] != "ok"]
    units = _main_units(ok)
    lines = [f"{len(df)} cells: {len(ok)} ok, {len(bad)} failed"]
    other = int((ok["units"].fillna(units) != units).sum())
    if other:
        lines.append(f"{other} ok cell(s) without a pixel size ({'voxel' if units == 'um' else 'um'}) "
                     "are left out of the volume/area/diameter figures")
    if len(ok):
        conf = ok["angle_confidence"].fillna("?").value_counts()
        lines.append("angle confidence: " + ", ".join(f"{k} {v}" for k, v in conf.items()))
        lines.append("median of the ok cells:")
        for col, label in _SUMMARY_MEASURES:
            sel = ok[ok["units"].fillna(units) == units] if col in _LENGTH_MEASURES else ok
            vals = sel[col].astype("float64").dropna()
            if len(vals):
                unit = {"volume": f" {units}^3", "surface_area": f" {units}^2",
                        "equivalent_diameter": f" {units}"}.get(col, "")
                lines.append(f"  {label:<24} {vals.median():.4g}{unit}")
    for _, r in bad.iterrows():
        lines.append(f"failed {r['cell']}: {r['error']}")
    if figure:
        path = write_summary_figure(df, Path(out) / SUMMARY_PNG, units)
        lines.append(f"figure: {path}")
    return "\n".join(lines)


def write_summary_figure(df: Any, path: Path, units: str = "um") -> Path:
    """Histograms of volume, sphericity, dense fraction and angle confidence (Agg backend)."""
    from matplotlib.figure import (
        Figure,  # no pyplot: rendered by Agg whatever the session's backend
    )

    ok = df[df["status"] == "ok"]
    fig = Figure(figsize=(10, 7.5), dpi=100)
    axes = fig.subplots(2, 2)
    panels = [("volume", f"cell volume ({units}$^3$)"), ("sphericity", "sphericity"),
              ("dense_fraction", "dense (nucleus-like) volume fraction")]
    for ax, (col, label) in zip(axes.ravel(), panels):
        sel = ok[ok["units"].fillna(units) == units] if col in _LENGTH_MEASURES else ok
        vals = sel[col].astype("float64").dropna().to_numpy()
        if vals.size:
            ax.hist(vals, bins=max(5, min(30, int(math.sqrt(vals.size)) * 2)), color="#4477aa", edgecolor="white")
            ax.axvline(float(np.median(vals)), color="#cc3311", lw=1.5, label=f"median {np.median(vals):.3g}")
            ax.legend(loc="upper right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel("cells")
    ax = axes[1, 1]
    levels = ok["angle_confidence"].fillna("unknown").astype(str)
    known = ("good", "uncertain", "unreliable")
    order = list(known) + sorted(set(levels) - set(known))
    counts = [int((levels == lv).sum()) for lv in order]
    ax.bar(order, counts, color="#228833")
    ax.set_xlabel("angle confidence")
    ax.set_ylabel("cells")
    fig.suptitle(f"{len(ok)} cells reconstructed, {len(df) - len(ok)} failed")
    fig.tight_layout()
    fig.savefig(path)
    return path
