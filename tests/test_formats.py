"""Files that open right everywhere: the ecosystem's validators (ome-types, ome-zarr-models) and
napari's own reader path on every output type; pixel size and angles carried end to end;
--overwrite; strict JSON; help text on every option."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mcf_rotator.cli import build_parser, main
from mcf_rotator.config import RigConfig
from mcf_rotator.ome_metadata import AcquisitionInfo
from mcf_rotator.reconstruction import io
from mcf_rotator.recording import Recorder, open_recording

PIXEL_UM = 0.08625000000000001  # what 3.45 um / 40x gives in floating point


def _record(path: Path, n: int = 6, dt: float = 0.05, acquisition: AcquisitionInfo | None = None) -> Path:
    rec = Recorder(path, acquisition=acquisition or AcquisitionInfo.from_config(RigConfig()),
                   metadata={"rig": "test"})
    for i in range(n):
        img = np.full((24, 32), i, np.uint8)
        rec.write(img, timestamp=7.0 + i * dt, slm_angle_deg=2.0 * i, true_angle_deg=2.0 * i + 0.5)
    rec.close()
    return path


def _validate_ome(path: Path) -> None:
    """Page 0's OME-XML against the OME schema (raises on any violation)."""
    import ome_types

    with tifffile.TiffFile(path) as tif:
        xml = tif.pages.first.description
    ome_types.validate_xml(xml.strip())


def _ome_zarr_image(path: Path):
    import zarr
    from ome_zarr_models.v05.image import Image

    return Image.from_zarr(zarr.open_group(str(path), mode="r"))


def _napari_read(path: Path):
    import npe2
    from napari.plugins.io import read_data_with_plugins

    npe2.PluginManager.instance().discover()
    layers, plugin = read_data_with_plugins([str(path)], plugin="mcf-rotator")
    assert plugin == "mcf-rotator" and layers
    return layers[0]


# ----------------------------------------------------------------------------- recordings
def test_ome_tiff_recording_is_rich_valid_ome(tmp_path: Path) -> None:
    import ome_types

    p = _record(tmp_path / "run.ome.tif", n=6, dt=0.05)
    _validate_ome(p)
    ome = ome_types.from_tiff(p)
    img = ome.images[0]
    px = img.pixels
    assert (px.size_t, px.size_y, px.size_x) == (6, 24, 32)
    assert px.physical_size_x == pytest.approx(0.08625) and "0.08625000" not in ome.to_xml()
    assert px.time_increment == pytest.approx(0.05)
    assert [pl.delta_t for pl in px.planes] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])
    assert all(pl.exposure_time == pytest.approx(0.005) for pl in px.planes)
    assert img.acquisition_date is not None
    assert ome.instruments[0].objectives[0].nominal_magnification == pytest.approx(40.0)
    assert ome.instruments[0].detectors[0].model and px.significant_bits == 8
    ch = px.channels[0]
    assert ch.name == "brightfield" and ch.contrast_method.value == "Brightfield"
    with tifffile.TiffFile(p) as tif:
        assert tif.is_ome and tif.series[0].shape == (6, 24, 32)


def test_ome_tiff_in_progress_has_valid_minimal_ome_from_the_first_page(tmp_path: Path) -> None:
    import ome_types

    p = tmp_path / "live.ome.tif"
    rec = Recorder(p, pixel_um=PIXEL_UM)
    for i in range(3):
        rec.write(np.full((16, 16), i, np.uint8), timestamp=i * 0.1)
    deadline = time.monotonic() + 10
    while rec.frames_written < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    copy = tmp_path / "copy.ome.tif"  # what a crash would leave
    shutil.copy(p, copy)
    rec.close()
    _validate_ome(copy)
    ome = ome_types.from_tiff(copy)
    assert ome.images[0].pixels.physical_size_x == pytest.approx(0.08625)
    assert 1 <= ome.images[0].pixels.size_t <= 3
    assert io.read_stack(copy, min_frames=1).shape == (3, 16, 16)  # every page, not the stale count


def test_ome_zarr_recording_is_valid_ngff_05_with_the_true_frame_interval(tmp_path: Path) -> None:
    p = _record(tmp_path / "run.ome.zarr", n=5, dt=0.05)
    image = _ome_zarr_image(p)  # ome-zarr-models: dimension names, axes, datasets
    ms = image.ome_attributes.multiscales[0]
    assert [a.name for a in ms.axes] == ["t", "y", "x"]
    assert [a.unit for a in ms.axes] == ["second", "micrometer", "micrometer"]
    assert list(ms.datasets[0].coordinateTransformations[0].scale) == pytest.approx([0.05, 0.08625, 0.08625])
    frames, meta = open_recording(p)
    assert len(frames) == 5 and meta[2]["slm_angle_deg"] == 4.0


def test_ome_zarr_without_pixel_size_states_no_unit(tmp_path: Path) -> None:
    p = _record(tmp_path / "px.ome.zarr", acquisition=AcquisitionInfo())
    ms = _ome_zarr_image(p).ome_attributes.multiscales[0]
    assert ms.axes[1].unit is None and ms.axes[0].unit == "second"
    assert io.read_pixel_size(p)[0] is None


# ----------------------------------------------------------------------------- pixel size
def test_pixel_size_from_ome_imagej_and_sidecar(tmp_path: Path) -> None:
    rec = _record(tmp_path / "r.ome.tif")
    assert io.read_pixel_size(rec) == (pytest.approx(0.08625), "OME-XML PhysicalSizeX")
    ij = tmp_path / "ij.tif"
    tifffile.imwrite(ij, np.zeros((3, 8, 8), np.uint8), imagej=True, resolution=(1 / PIXEL_UM, 1 / PIXEL_UM),
                     metadata={"axes": "TYX", "unit": "um"})
    assert io.read_pixel_size(ij)[0] == pytest.approx(0.08625)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((3, 8, 8), np.uint8))
    assert io.read_pixel_size(plain)[0] is None
    (tmp_path / "plain.frames.jsonl").write_text(json.dumps({"kind": "header", "pixel_um": 0.1}) + "\n")
    assert io.read_pixel_size(plain) == (pytest.approx(0.1), "plain.frames.jsonl header")


def test_volume_without_voxel_size_has_no_unit(tmp_path: Path) -> None:
    io.write_volume(tmp_path / "v.tif", np.zeros((4, 4, 4)), None)
    io.write_volume(tmp_path / "w.tif", np.zeros((4, 4, 4)), PIXEL_UM * 2)
    with tifffile.TiffFile(tmp_path / "v.tif") as tif:
        assert "unit" not in tif.imagej_metadata
    with tifffile.TiffFile(tmp_path / "w.tif") as tif:
        assert tif.imagej_metadata["unit"] == "um" and tif.imagej_metadata["spacing"] == 0.1725
    assert io.read_voxel_size(tmp_path / "v.tif") is None
    assert io.read_voxel_size(tmp_path / "w.tif") == pytest.approx(0.1725)


# ----------------------------------------------------------------------------- angles
def test_angle_table_by_frame_column_with_gaps(tmp_path: Path) -> None:
    table = tmp_path / "angles.csv"
    io.write_angles(table, np.array([0.0, 5.0, 10.0, 20.0]), frames=[16, 17, 18, 20])
    frames_no, angles = io.read_angle_table(table)
    assert list(frames_no) == [16, 17, 18, 20] and list(angles) == [0.0, 5.0, 10.0, 20.0]
    stack = np.arange(25)[:, None, None] * np.ones((1, 4, 4))
    sel, a, left_out = io.select_angle_frames(stack, frames_no, angles, "s.tif", table)
    assert [int(f[0, 0]) for f in sel] == [16, 17, 18, 20] and left_out == 21
    from mcf_rotator.errors import InputFileError

    with pytest.raises(InputFileError, match="names frame 20"):
        io.select_angle_frames(stack[:19], frames_no, angles, "s.tif", table)


# ----------------------------------------------------------------------------- napari
def test_napari_reads_recordings_with_time_and_pixel_scale(tmp_path: Path) -> None:
    for name in ("run.ome.tif", "run.ome.zarr"):
        p = _record(tmp_path / name, n=5, dt=0.05)
        data, kw, kind = _napari_read(p)
        assert kind == "image" and np.asarray(data).shape == (5, 24, 32)
        assert kw["scale"] == pytest.approx((0.05, 0.08625, 0.08625)) and kw["units"] == ("s", "µm", "µm")
        assert kw["metadata"]["timestamps_s"] == pytest.approx([0, 0.05, 0.1, 0.15, 0.2])
        assert kw["metadata"]["angles_deg"] == pytest.approx([0.5, 2.5, 4.5, 6.5, 8.5])


def test_napari_reads_volume_and_angles_and_writes_volumes(tmp_path: Path) -> None:
    from mcf_rotator.napari_plugin import write_volume

    vol = np.random.default_rng(0).random((6, 6, 6)).astype(np.float32)
    io.write_volume(tmp_path / "volume.tif", vol, 0.1725)
    data, kw, kind = _napari_read(tmp_path / "volume.tif")
    assert kind == "image" and np.allclose(data, vol)
    assert kw["scale"] == pytest.approx((0.1725,) * 3) and kw["units"] == ("µm",) * 3
    out = tmp_path / "saved.tif"
    assert write_volume(str(out), data, kw) == [str(out)]
    assert io.read_voxel_size(out) == pytest.approx(0.1725) and np.allclose(io.read_volume(out), vol)
    io.write_angles(tmp_path / "angles.csv", np.array([0.0, 3.0, 6.0]), frames=[16, 17, 18])
    data, kw, kind = _napari_read(tmp_path / "angles.csv")
    assert kind == "points" and data.tolist() == [[16, 0], [17, 3], [18, 6]]
    assert list(kw["features"]["frame"]) == [16, 17, 18]


def test_plugin_manifest_is_packaged() -> None:
    from importlib.metadata import entry_points
    from importlib.resources import files

    eps = [ep for ep in entry_points(group="napari.manifest") if ep.name == "mcf-rotator"]
    assert eps and eps[0].value == "mcf_rotator:napari.yaml"
    import npe2

    manifest = npe2.PluginManifest.from_file(str(files("mcf_rotator") / "napari.yaml"))
    assert manifest.name == "mcf-rotator" and manifest.contributions.readers and manifest.contributions.writers


# ----------------------------------------------------------------------------- simulate / reconstruct
@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "stack.tif"
    assert main(["simulate", "--frames", "24", "-o", str(out), "--size", "96", "--ideal", "--degrees-per-frame", "6",
                 "--truth-size", "16"]) == 0
    return out


def test_simulate_states_the_true_frame_interval_and_opens_in_napari(simulated: Path) -> None:
    with tifffile.TiffFile(simulated) as tif:
        ij = tif.imagej_metadata
    assert ij["finterval"] == pytest.approx(6.0 / RigConfig().rotation.rate_deg_s)  # 0.2 s, not 1
    data, kw, kind = _napari_read(simulated)
    assert kw["scale"][0] == pytest.approx(0.2) and kw["units"][1] == "µm"
    _, kw, _ = _napari_read(simulated.with_name("stack_truth.tif"))
    assert kw["units"] == ("µm",) * 3


def test_simulate_refuses_to_overwrite(simulated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--frames", "3", "-o", str(simulated), "--size", "32", "--truth-size", "8"]) == 2
    err = capsys.readouterr().err
    assert str(simulated) in err and "--overwrite" in err


def test_reconstruct_round_trip_with_partial_angles_and_pixel_size(
    simulated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    angles = np.loadtxt(simulated.with_name("stack_angles.csv"), delimiter=",", skiprows=1)
    table = tmp_path / "angles.csv"  # like a run's table: starts later, a frame missing
    keep = [i for i in range(2, 24) if i != 10]
    io.write_angles(table, angles[keep, 1] - angles[keep[0], 1], frames=keep)
    out, report = tmp_path / "vol.tif", tmp_path / "report.json"
    args = ["reconstruct", str(simulated), "-o", str(out), "--angles", str(table), "--report", str(report),
            "--size", "32", "--force"]
    assert main(args) == 0
    rep = json.loads(report.read_text())  # strict JSON: json.loads would accept NaN, so check the text
    assert "NaN" not in report.read_text() and "Infinity" not in report.read_text()
    assert rep["frames_without_angle"] == 3 and rep["pixel_size_source"] == "ImageJ calibration"
    assert rep["pixel_size_um"] == pytest.approx(RigConfig().optics.object_pixel_um, rel=1e-6)
    assert io.read_voxel_size(out) is not None
    _, kw, _ = _napari_read(out)
    assert kw["units"] == ("µm",) * 3
    capsys.readouterr()
    assert main(args) == 2  # the outputs exist now
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err
    assert main(args + ["--overwrite"]) == 0


def test_reconstruct_without_pixel_size_says_so(simulated: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, tifffile.imread(simulated))  # no calibration at all
    out, report = tmp_path / "v.tif", tmp_path / "r.json"
    assert main(["reconstruct", str(plain), "-o", str(out), "--report", str(report), "--size", "32", "--force"]) == 0
    rep = json.loads(report.read_text())
    assert rep["pixel_size_um"] is None and "pixel size unknown" in rep["pixel_size_source"]
    with tifffile.TiffFile(out) as tif:
        assert "unit" not in tif.imagej_metadata


# ----------------------------------------------------------------------------- CLI hygiene
def test_every_cli_option_has_help() -> None:
    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, sp in action.choices.items():
                    walk(sp, sub)
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "mcf-rotator")
    assert not missing, missing


def test_strict_json_writes_null_for_non_finite() -> None:
    from mcf_rotator import strict_json

    text = strict_json.dumps({"psnr": float("inf"), "x": np.float32(np.nan), "n": np.int64(3), "a": np.arange(2)})
    assert json.loads(text) == {"psnr": None, "x": None, "n": 3, "a": [0, 1]}


def test_demo_refuses_to_overwrite_an_earlier_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "volume.tif").write_bytes(b"")
    assert main(["demo", "--headless", "--no-progress", "-o", str(tmp_path), "--frames", "30"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "volume.tif") in err and "--overwrite" in err


# ----------------------------------------------------------------------------- demo outputs (slow)
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ome-tiff", "ome-zarr"])
def test_demo_outputs_validate_and_reconstruct_from_their_angles(
    tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import ome_types

    cfg = tmp_path / "rig.yaml"
    cfg.write_text(f"record_format: {fmt}\n")
    out = tmp_path / "demo"
    assert main(["demo", "--headless", "--no-progress", "-o", str(out), "--frames", "60", "--config", str(cfg)]) == 0
    rec = out / ("recording.ome.tif" if fmt == "ome-tiff" else "recording.ome.zarr")
    if fmt == "ome-tiff":
        _validate_ome(rec)
        assert ome_types.from_tiff(rec).images[0].pixels.physical_size_x == pytest.approx(0.08625)
    else:
        assert _ome_zarr_image(rec).ome_attributes.multiscales[0].axes[0].unit == "second"
    for path in (rec, out / "volume.tif", out / "angles.csv"):
        _napari_read(path)
    json.loads((out / "report.json").read_text())
    with open(out / "angles.csv", newline="") as fh:
        first = int(next(iter(csv.DictReader(fh)))["frame"])
    assert first >= 0
    vol = tmp_path / "again.tif"
    assert main(["reconstruct", str(rec), "--angles", str(out / "angles.csv"), "-o", str(vol), "--force"]) == 0
    assert io.read_voxel_size(vol) is not None


def test_recordings_of_older_versions_still_open(tmp_path: Path) -> None:
    """Before NGFF metadata came from ome-zarr-models: no dimension names, scale 1 'micrometer'
    when the pixel size was unknown; TIFFs interrupted before close had a plain-text page 0."""
    import zarr

    old = tmp_path / "old.ome.zarr"
    g = zarr.open_group(str(old), mode="w", zarr_format=3)
    arr = g.create_array("0", shape=(3, 8, 8), chunks=(1, 8, 8), dtype=np.uint8, fill_value=0)
    arr[:] = np.arange(3, dtype=np.uint8)[:, None, None]
    axes = [{"name": "t", "type": "time", "unit": "second"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    g.attrs.update({"ome": {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]}]}]},
        "mcf_rotator": {"complete": True, "n_frames": 3}})
    frames, _ = open_recording(old)
    assert [int(f[0, 0]) for f in frames] == [0, 1, 2]
    assert io.read_pixel_size(old)[0] is None  # the old placeholder 1 um is not a calibration
    tif = tmp_path / "old.ome.tif"
    with tifffile.TiffWriter(tif, bigtiff=True) as tw:
        for i in range(4):
            tw.write(np.full((8, 8), i, np.uint8), contiguous=False, photometric="minisblack", metadata=None,
                     **({"description": "mcf-rotator recording in progress (OME-XML written on close)"} if i == 0 else {}))
    assert io.read_stack(tif).shape == (4, 8, 8)
    frames, _ = open_recording(tif)
    assert len(frames) == 4
    frames.close()
