"""``mcf-rotator batch``: morphology on shapes of known size, cell discovery, and a real Dask
LocalCluster (2 worker processes) on three tiny simulated recordings, one of them broken."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
from mcf_rotator.reconstruction import morphology as morph

from mcf_rotator.cli import main
from mcf_rotator.errors import InputFileError
from mcf_rotator.simulation.phantom import CellPhantom, projection_stack


# ----------------------------------------------------------------------------- morphology
def _ellipsoid(shape, axes, value=1.0):
    c = [(s - 1) / 2 for s in shape]
    z, y, x = np.ogrid[tuple(slice(0, s) for s in shape)]
    r2 = ((z - c[0]) / axes[0]) ** 2 + ((y - c[1]) / axes[1]) ** 2 + ((x - c[2]) / axes[2]) ** 2
    return np.where(r2 <= 1, value, 0).astype(np.float32)


def _ellipsoid_area(a, b, c, p=1.6075):
    """Knud Thomsen's approximation (error under 1.1 %)."""
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


@pytest.mark.parametrize("axes", [(15, 15, 15), (20, 14, 10), (9, 9, 9)])
def test_morphology_of_voxelised_ellipsoids(axes):
    vox = 0.25
    m = morph.measure_cell(_ellipsoid((56, 56, 56), axes), voxel_um=vox)
    a, b, c = (s * vox for s in axes)
    vol = 4 / 3 * math.pi * a * b * c
    area = _ellipsoid_area(a, b, c)
    assert m.units == "um"
    assert m.volume == pytest.approx(vol, rel=0.03)
    assert m.surface_area == pytest.approx(area, rel=0.04)
    assert m.sphericity == pytest.approx(math.pi ** (1 / 3) * (6 * vol) ** (2 / 3) / area, rel=0.05)
    assert m.equivalent_diameter == pytest.approx(2 * (a * b * c) ** (1 / 3), rel=0.02)
    assert m.mean_attenuation == pytest.approx(1.0, rel=0.01)
    assert m.integrated_attenuation == pytest.approx(m.volume, rel=0.01)
    assert m.dense_fraction == 0.0  # uniform: nothing above mean + 2 std


def test_morphology_sphere_in_voxel_units_with_noise_and_a_dense_core():
    rng = np.random.default_rng(1)
    body = _ellipsoid((64, 64, 64), (20, 20, 20), 0.01)
    core = _ellipsoid((64, 64, 64), (10, 10, 10), 0.02)  # 1/8 of the cell's volume
    vol = body + core + rng.normal(0, 0.001, body.shape).astype(np.float32)
    m = morph.measure_cell(vol)
    assert m.units == "voxel"
    assert m.volume == pytest.approx(4 / 3 * math.pi * 20**3, rel=0.03)
    assert m.surface_area == pytest.approx(4 * math.pi * 20**2, rel=0.04)
    assert m.sphericity == pytest.approx(1.0, abs=0.04)
    assert m.dense_fraction == pytest.approx(1 / 8, rel=0.25)  # reads low: the edge is above the 50 % level
    assert m.mean_attenuation == pytest.approx(0.01 + 0.02 / 8, rel=0.05)


def test_morphology_keeps_the_largest_component_and_fills_holes():
    vol = _ellipsoid((48, 48, 48), (14, 14, 14))
    vol -= _ellipsoid((48, 48, 48), (5, 5, 5))  # a hollow inside: filled
    vol[:4, :4, :4] = 1.0  # a speck: dropped
    mask, thr = morph.cell_mask(vol)
    assert 0 < thr < 1
    assert not mask[:4, :4, :4].any()
    assert mask[24, 24, 24]
    assert mask.sum() == pytest.approx(4 / 3 * math.pi * 14**3, rel=0.04)


def test_morphology_of_a_flat_volume_is_empty():
    m = morph.measure_cell(np.zeros((16, 16, 16), np.float32), voxel_um=0.5)
    assert m.mask_voxels == 0 and m.volume == 0 and m.surface_area == 0 and math.isnan(m.sphericity)


# ----------------------------------------------------------------------------- inputs
PIXEL_UM = 0.2  # 12 um cells are 60 px across


def _frames(seed: int, n: int = 40, size: int = 80) -> tuple[np.ndarray, CellPhantom]:
    ph = CellPhantom.random(seed)
    od = projection_stack(ph, np.linspace(0, 360, n, endpoint=False), size, voxel_um=PIXEL_UM)
    rng = np.random.default_rng(seed)
    return np.clip(200 * np.exp(-od * 12) + rng.normal(0, 1, od.shape), 0, 255).astype(np.uint8), ph


def _write_run_folder(folder, frames, pixel_um=PIXEL_UM):
    from mcf_rotator.recording import Recorder

    with Recorder(folder / "recording.ome.tif", pixel_um=pixel_um) as rec:
        for i, f in enumerate(frames):
            rec.write(f, 0.01 * i)


def test_find_cells_files_run_folders_globs_and_errors(tmp_path):
    from mcf_rotator.batch import find_cells, recording_pixel_size

    frames = np.zeros((4, 8, 8), np.uint8)
    (tmp_path / "data" / "day1").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "data" / "a.tif", frames)
    tifffile.imwrite(tmp_path / "data" / "day1" / "b.ome.tif", frames)
    _write_run_folder(tmp_path / "data" / "run7", frames)
    (tmp_path / "data" / "notes.txt").write_text("x")
    names = {c.name: c.path.name for c in find_cells([tmp_path / "data"])}
    assert names == {"a": "a.tif", "b": "b.ome.tif", "run7": "recording.ome.tif"}
    assert [c.name for c in find_cells([str(tmp_path / "data" / "*.tif")])] == ["a"]
    assert [c.name for c in find_cells([tmp_path / "data" / "run7"])] == ["run7"]
    assert recording_pixel_size(tmp_path / "data" / "run7" / "recording.ome.tif") == pytest.approx(PIXEL_UM)
    assert recording_pixel_size(tmp_path / "data" / "a.tif") is None
    from mcf_rotator.recording import Recorder

    with Recorder(tmp_path / "zarr" / "recording.ome.zarr", pixel_um=0.15) as rec:
        for i, f in enumerate(frames):
            rec.write(f, 0.01 * i)
    assert [(c.name, c.path.name) for c in find_cells([tmp_path / "zarr"])] == [("zarr", "recording.ome.zarr")]
    assert recording_pixel_size(tmp_path / "zarr" / "recording.ome.zarr") == pytest.approx(0.15)
    with pytest.raises(InputFileError, match="nothing.tif"):
        find_cells([tmp_path / "nothing.tif"])
    with pytest.raises(InputFileError, match="no recording matches"):
        find_cells([str(tmp_path / "*.zarr")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="empty"):
        find_cells([tmp_path / "empty"])


def test_batch_cli_refuses_bad_input(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.tif" in capsys.readouterr().err
    assert main(["batch", "--summary", str(tmp_path)]) == 2
    assert "results.parquet" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the cluster
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_batch_on_a_local_cluster_resumes_and_summarises(tmp_path, capsys):
    import pandas as pd

    data = tmp_path / "data"
    data.mkdir()
    frames_a, ph_a = _frames(3)
    tifffile.imwrite(data / "cellA.tif", frames_a)  # no pixel size: voxel units
    frames_b, ph_b = _frames(4)
    _write_run_folder(data / "run-b", frames_b)  # pixel size from the OME metadata
    (data / "broken.tif").write_bytes(b"II*\x00" + b"garbage" * 50)
    out = tmp_path / "out"

    rc = main(["batch", str(data), "--out", str(out), "--workers", "2", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1  # one cell failed, the others finished
    assert "dashboard" in text and "2 worker(s)" in text
    df = pd.read_parquet(out / "results.parquet")
    assert list(df["cell"]) == ["broken", "cellA", "run-b"]
    assert len(pd.read_csv(out / "results.csv")) == 3
    rows = df.set_index("cell")
    assert rows.loc["broken", "status"] == "error" and "broken.tif" in rows.loc["broken", "error"]
    assert (out / "broken" / "error.txt").read_text().startswith(str(data / "broken.tif"))
    for name, ph, vox in (("cellA", ph_a, 1 / PIXEL_UM), ("run-b", ph_b, 1.0)):
        r = rows.loc[name]
        assert r["status"] == "ok" and not r["skipped"]
        assert r["frames_used"] == 40 and r["coverage_deg"] > 300
        assert r["angle_confidence"] in ("good", "uncertain", "unreliable")
        for f in ("volume.tif", "angles.csv", "report.json"):
            assert (out / name / f).is_file()
        assert tifffile.imread(out / name / "volume.tif").ndim == 3
        body = 4 / 3 * math.pi * np.prod(ph.parts[0].semi_axes) * vox**3  # um^3 or voxel^3
        assert r["volume"] == pytest.approx(body, rel=0.15)
        assert 0.85 < r["sphericity"] <= 1.05
        nucleus = np.prod(ph.parts[1].semi_axes) / np.prod(ph.parts[0].semi_axes)
        assert r["dense_fraction"] == pytest.approx(nucleus, abs=0.06)
    assert rows.loc["run-b", "voxel_um"] == pytest.approx(PIXEL_UM) and rows.loc["run-b", "units"] == "um"
    assert rows.loc["cellA", "units"] == "voxel"

    # a run killed while writing cellA: no marker, a stale temp file; run-b is finished
    (out / "cellA" / "report.json").unlink()
    (out / "cellA" / ".report.json.x.tmp").write_text("{")
    mtime_b = (out / "run-b" / "report.json").stat().st_mtime_ns
    rc = main(["batch", str(data), "--out", str(out), "--workers", "2", "--no-progress"])
    assert rc == 1
    assert "1 already done" in capsys.readouterr().out
    rows = pd.read_parquet(out / "results.parquet").set_index("cell")
    assert bool(rows.loc["run-b", "skipped"]) and not bool(rows.loc["cellA", "skipped"])
    assert rows.loc["cellA", "status"] == "ok" and rows.loc["broken", "status"] == "error"
    assert (out / "run-b" / "report.json").stat().st_mtime_ns == mtime_b
    assert json.loads((out / "cellA" / "report.json").read_text())["morphology"]["units"] == "voxel"

    assert main(["batch", "--summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 cells: 2 ok, 1 failed" in text and "sphericity" in text and "failed broken" in text
    png = out / "summary.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_batch_resumes_after_a_real_kill_9(tmp_path):
    """The whole batch (its process group: the client, the scheduler and the Dask worker
    processes) is killed with SIGKILL once the first cell has finished; a second run skips the
    finished cells untouched, redoes the one that was cut off and finishes the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import pandas as pd

    data = tmp_path / "data"
    data.mkdir()
    names = [f"cell{i}" for i in range(5)]
    for i, name in enumerate(names):
        tifffile.imwrite(data / f"{name}.tif", _frames(10 + i)[0])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mcf_rotator", "batch", str(data), "--out", str(out), "--workers", "1",
           "--no-progress", "--pixel-size", str(PIXEL_UM)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("*/report.json")):
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "no cell finished within 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group, workers included
        proc.wait(timeout=30)
    for _ in range(100):  # nothing of the killed batch survives (its workers were in the group)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a process of the killed batch is still running")
    done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    assert 1 <= len(done) < len(names), f"the kill came too late to test anything: {sorted(done)}"
    assert not (out / "results.parquet").exists()  # the table is written at the end of a run

    rc = main(["batch", str(data), "--out", str(out), "--workers", "1", "--no-progress",
               "--pixel-size", str(PIXEL_UM)])
    assert rc == 0
    rows = pd.read_parquet(out / "results.parquet").set_index("cell")
    assert sorted(rows.index) == names and (rows["status"] == "ok").all()
    for name in names:
        assert bool(rows.loc[name, "skipped"]) == (name in done), name
        assert tifffile.imread(out / name / "volume.tif").ndim == 3
    for name, mtime in done.items():  # finished cells were read, not rewritten
        assert (out / name / "report.json").stat().st_mtime_ns == mtime
    assert not list(out.glob("*/.*.tmp"))  # no temporary file of the cut-off cell is left behind


def test_a_cell_the_quality_gate_refuses_is_an_error_row_without_a_volume(tmp_path):
    """Pure camera noise has no cell: the batch says so for that cell, as ``reconstruct`` does,
    and writes no volume (never a silently wrong one)."""
    from mcf_rotator import batch

    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.tif"
    tifffile.imwrite(noise, rng.normal(128, 12, (40, 80, 80)).clip(0, 255).astype(np.uint8))
    row = batch.process_cell(batch.find_cells([noise])[0], tmp_path / "out")
    assert row["status"] == "error"
    assert str(noise) in row["error"] and "--force" in row["error"]
    assert "cell" in row["error"].lower()
    assert not (tmp_path / "out" / "noise" / "volume.tif").exists()
    assert (tmp_path / "out" / "noise" / "error.txt").read_text().startswith(str(noise))
