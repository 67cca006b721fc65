"""Bad inputs and output paths: exit 2 with a message naming the file and the cause, never a
traceback, and always before the work starts (table-driven; every stack here is tiny)."""

from __future__ import annotations

import errno
import json
import logging
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tifffile

from mcf_rotator.cli import main
from mcf_rotator.errors import InputFileError
from mcf_rotator.reconstruction import io


# ----------------------------------------------------------------------------- fixtures
def _stack(path: Path, n: int = 5, dtype: type = np.uint8, hw: tuple[int, int] = (32, 32)) -> Path:
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, (rng.random((n, *hw)) * 200).astype(dtype))
    return path


def _float_stack(path: Path, bad: float) -> Path:
    a = np.random.default_rng(1).random((5, 16, 16)).astype(np.float32)
    a[2, 3, 4] = bad
    a[4, 0, 0] = bad
    tifffile.imwrite(path, a)
    return path


def _csv(path: Path, body: str) -> Path:
    path.write_text("frame,angle_deg\n" + body)
    return path


def _recording(path: Path, n: int = 10) -> Path:
    from mcf_rotator.recording import Recorder

    rng = np.random.default_rng(2)
    rec = Recorder(path)
    for i in range(n):
        rec.write(rng.integers(0, 255, (32, 48), dtype=np.uint8), float(i), angle_deg=2.0 * i)
    summary = rec.close()
    assert summary.frames_written == n
    return path


def _cut_in_half(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _interrupt_zarr(path: Path, keep: int) -> Path:
    """As if the recorder died after ``keep`` frames' metadata reached the disk."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    group.attrs["mcf_rotator"] = {"complete": False}
    side = path / "frames.jsonl"
    lines = side.read_text().splitlines()
    side.write_text("\n".join(lines[: 1 + keep]) + "\n")
    return path


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _no_traceback(out: str, err: str) -> None:
    assert "Traceback" not in out + err
    assert "LinAlgError" not in out + err


# ----------------------------------------------------------------------------- reconstruct inputs
# (name, build(tmp) -> argv, words that must be in stderr)
Case = tuple[str, Callable[[Path], list[str]], list[str]]

RECONSTRUCT_CASES: list[Case] = [
    ("nan stack", lambda t: ["reconstruct", str(_float_stack(t / "nan.tif", np.nan)), "-o", str(t / "v.tif")],
     ["nan.tif", "2 of 5 frames", "NaN or inf"]),
    ("inf stack", lambda t: ["reconstruct", str(_float_stack(t / "inf.tif", np.inf)), "-o", str(t / "v.tif")],
     ["inf.tif", "NaN or inf"]),
    ("two frames", lambda t: ["reconstruct", str(_stack(t / "two.tif", 2)), "-o", str(t / "v.tif")],
     ["two.tif", "2 frames", "at least 3"]),
    ("one image", lambda t: ["reconstruct", str(_stack(t / "one.tif", 1)), "-o", str(t / "v.tif")],
     ["one.tif", "1 frame", "at least 3"]),
    ("not a tiff", lambda t: ["reconstruct", str(_write(t / "x.tif", b"not a tiff")), "-o", str(t / "v.tif")],
     ["x.tif", "cannot be read"]),
    ("empty tiff", lambda t: ["reconstruct", str(_write(t / "e.tif", b"")), "-o", str(t / "v.tif")],
     ["e.tif"]),
    ("a plain folder", lambda t: ["reconstruct", str(_mkdir(t / "frames")), "-o", str(t / "v.tif")],
     ["frames", "is a folder"]),
    ("missing file", lambda t: ["reconstruct", str(t / "nope.tif"), "-o", str(t / "v.tif")],
     ["nope.tif", "no such file"]),
    ("unsupported suffix", lambda t: ["reconstruct", str(_write(t / "s.png", b"x")), "-o", str(t / "v.tif")],
     ["s.png", "unsupported format"]),
    ("nan angle", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o", str(t / "v.tif"), "--angles",
                             str(_csv(t / "a.csv", "0,0\n1,2\n2,nan\n3,6\n4,8\n"))],
     ["a.csv", "row 4", "not a finite number"]),
    ("inf angle", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o", str(t / "v.tif"), "--angles",
                             str(_csv(t / "a.csv", "0,0\n1,inf\n2,4\n3,6\n4,8\n"))],
     ["a.csv", "row 3", "not a finite number"]),
    ("duplicate frame", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o", str(t / "v.tif"), "--angles",
                                   str(_csv(t / "a.csv", "0,0\n1,2\n1,4\n3,6\n4,8\n"))],
     ["a.csv", "row 4", "frame 1 is listed twice", "row 3"]),
    ("missing angle", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o", str(t / "v.tif"), "--angles",
                                 str(_csv(t / "a.csv", "0,0\n1,\n2,4\n3,6\n4,8\n"))],
     ["a.csv", "row 3"]),
    ("text angle", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o", str(t / "v.tif"), "--angles",
                              str(_csv(t / "a.csv", "0,0\n1,abc\n2,4\n3,6\n4,8\n"))],
     ["a.csv", "row 3", "not a number"]),
    ("wrong header", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o", str(t / "v.tif"), "--angles",
                                str(_write(t / "a.csv", b"idx,deg\n0,0\n"))],
     ["a.csv", "frame,angle_deg"]),
    ("empty angle table", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o", str(t / "v.tif"), "--angles",
                                     str(_csv(t / "a.csv", ""))],
     ["a.csv", "no rows"]),
    ("angle count", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o", str(t / "v.tif"), "--angles",
                               str(_csv(t / "a.csv", "0,0\n1,2\n"))],
     ["a.csv", "2 angles for 5 frames"]),
    # output paths: refused before any work (the input is valid)
    ("output under a file", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o",
                                       str(_write(t / "f.txt", b"x") / "v.tif")],
     ["cannot write", "f.txt", "not a folder"]),
    ("output is a folder", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o", str(_mkdir(t / "outdir"))],
     ["cannot write", "outdir", "is an existing folder"]),
    ("report under a file", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o", str(t / "v.tif"),
                                       "--report", str(_write(t / "f.txt", b"x") / "sub" / "r.json")],
     ["cannot write", "r.json", "not a folder"]),
    ("angles-out under a file", lambda t: ["reconstruct", str(_stack(t / "s.tif")), "-o", str(t / "v.tif"),
                                           "--angles-out", str(_write(t / "f.txt", b"x") / "a.csv")],
     ["cannot write", "a.csv", "not a folder"]),
    # recordings are read (OME-Zarr folder, truncated OME-TIFF): the output check comes next
    ("ome-zarr recording is read", lambda t: ["reconstruct", str(_recording(t / "rec.ome.zarr")), "-o",
                                              str(_write(t / "f.txt", b"x") / "v.tif")],
     ["cannot write", "not a folder"]),
    ("truncated ome-tiff is read", lambda t: ["reconstruct", str(_cut_in_half(_recording(t / "rec.ome.tif"),
                                                                              t / "cut.ome.tif")),
                                              "-o", str(_write(t / "f.txt", b"x") / "v.tif")],
     ["cannot write", "not a folder"]),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("name,build,words", RECONSTRUCT_CASES, ids=[c[0] for c in RECONSTRUCT_CASES])
def test_reconstruct_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                       build: Callable[[Path], list[str]], words: list[str]) -> None:
    argv = build(tmp_path)
    rc, out, err = _run(capsys, argv)
    assert rc == 2, (name, out, err)
    for w in words:
        assert w in err, (name, w, err)
    _no_traceback(out, err)
    assert not (tmp_path / "v.tif").exists()  # refused before the work


def test_output_permission_denied_is_refused_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder that cannot be written (read-only mount, no permission; simulated: tests run as root)."""
    src = _stack(tmp_path / "s.tif")
    (tmp_path / "ro").mkdir()

    def denied(*a: object, **k: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    rc, out, err = _run(capsys, ["reconstruct", str(src), "-o", str(tmp_path / "ro" / "v.tif")])
    assert rc == 2 and "cannot write" in err and "permission denied" in err and "v.tif" in err
    _no_traceback(out, err)
    rc, out, err = _run(capsys, ["demo", "--headless", "--no-progress", "-o", str(tmp_path / "ro" / "demo")])
    assert rc == 2 and "cannot write" in err and "permission denied" in err and "demo" in err
    _no_traceback(out, err)

    def read_only(*a: object, **k: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    rc, out, err = _run(capsys, ["demo", "--headless", "--no-progress", "-o", str(tmp_path / "ro")])
    assert rc == 2 and "read-only" in err and "ro" in err


def test_output_folders_are_created_up_front(tmp_path: Path) -> None:
    target = tmp_path / "nodir" / "sub" / "v.tif"
    assert io.prepare_output_file(target) == target
    assert target.parent.is_dir() and not target.exists()
    assert not list(target.parent.iterdir())  # the write probe leaves nothing behind
    assert io.prepare_output_dir(tmp_path / "a" / "b").is_dir()


# ----------------------------------------------------------------------------- demo output
DEMO_CASES: list[Case] = [
    ("output is a file", lambda t: ["demo", "--headless", "--no-progress", "-o", str(_write(t / "f.txt", b"x"))],
     ["cannot write", "f.txt", "is an existing file"]),
    ("output under a file", lambda t: ["demo", "--headless", "--no-progress", "-o",
                                       str(_write(t / "f.txt", b"x") / "sub")],
     ["cannot write", "f.txt", "not a folder"]),
]


@pytest.mark.parametrize("name,build,words", DEMO_CASES, ids=[c[0] for c in DEMO_CASES])
def test_demo_refuses_bad_output(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                 build: Callable[[Path], list[str]], words: list[str]) -> None:
    _assert_refused(capsys, build(tmp_path), name, words)


def _assert_refused(capsys: pytest.CaptureFixture[str], argv: list[str], name: str, words: list[str]) -> str:
    """Exit 2, every word in the message, no traceback; returns stdout."""
    rc, out, err = _run(capsys, argv)
    assert rc == 2, (name, out, err)
    for w in words:
        assert w in err, (name, w, err)
    _no_traceback(out, err)
    return out


# ----------------------------------------------------------------------------- evaluate
def _volume(path: Path, bad: float | None = None, shape: tuple[int, int, int] = (8, 8, 8)) -> Path:
    v = np.random.default_rng(3).random(shape).astype(np.float32)
    if bad is not None:
        v[1, 2, 3] = bad
    io.write_volume(path, v)
    return path


EVALUATE_CASES: list[Case] = [
    ("nan volume", lambda t: ["evaluate", str(_volume(t / "v.tif", np.nan)), "--truth", str(_volume(t / "t.tif"))],
     ["v.tif", "NaN or inf"]),
    ("inf truth", lambda t: ["evaluate", str(_volume(t / "v.tif")), "--truth", str(_volume(t / "t.tif", np.inf))],
     ["t.tif", "NaN or inf"]),
    ("shape mismatch", lambda t: ["evaluate", str(_volume(t / "v.tif")), "--truth",
                                  str(_volume(t / "t.tif", shape=(8, 8, 6)))],
     ["v.tif", "t.tif"]),
    ("missing volume", lambda t: ["evaluate", str(t / "v.tif"), "--truth", str(_volume(t / "t.tif"))],
     ["v.tif", "no such file"]),
]


@pytest.mark.parametrize("name,build,words", EVALUATE_CASES, ids=[c[0] for c in EVALUATE_CASES])
def test_evaluate_refuses_bad_volume(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                     build: Callable[[Path], list[str]], words: list[str]) -> None:
    out = _assert_refused(capsys, build(tmp_path), name, words)
    assert "nan" not in out.lower()


def test_evaluate_json_is_strict_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v = _volume(tmp_path / "v.tif")
    rc, out, err = _run(capsys, ["evaluate", str(v), "--truth", str(v), "--json"])
    assert rc == 0, err

    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    m = json.loads(out, parse_constant=refuse)
    assert m["psnr_db"] is None  # identical volumes: infinite PSNR
    assert m["mse"] == 0


# ----------------------------------------------------------------------------- label
def test_label_refuses_a_malformed_label_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _stack(tmp_path / "cells.tif", 3)
    lab = tmp_path / "ds" / "labels" / "train" / "cells_00000.txt"
    lab.parent.mkdir(parents=True)
    lab.write_text("0 0.1 0.1 0.2 0.1 0.2 0.2\n0 0.5 zz 0.6\n")
    rc, out, err = _run(capsys, ["label", str(src), "--out", str(tmp_path / "ds"), "--every", "1"])
    assert rc == 2 and "cells_00000.txt" in err and "line 2" in err
    _no_traceback(out, err)


def test_label_without_a_display_is_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("displays are always there off Linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    src = _stack(tmp_path / "cells.tif", 3)
    rc, out, err = _run(capsys, ["label", str(src), "--out", str(tmp_path / "ds")])
    assert rc == 2 and "no display" in err
    _no_traceback(out, err)


# ----------------------------------------------------------------------------- recordings through read_stack
def test_read_stack_reads_an_ome_zarr_recording(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mcf_rotator.recording import open_recording

    path = _recording(tmp_path / "rec.ome.zarr")
    with caplog.at_level(logging.WARNING):
        data = io.read_stack(path)
    frames, _ = open_recording(path)
    assert data.shape == (10, 32, 48)
    np.testing.assert_array_equal(data, np.asarray(frames))
    assert not caplog.records  # a finished recording: nothing dropped, nothing to say


def test_read_stack_interrupted_zarr_keeps_complete_frames(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _interrupt_zarr(_recording(tmp_path / "rec.ome.zarr"), keep=6)
    with caplog.at_level(logging.WARNING):
        data = io.read_stack(path)
    assert data.shape[0] == 6
    assert any("interrupted" in r.getMessage() and "rec.ome.zarr" in r.getMessage() for r in caplog.records)


def test_read_stack_truncated_ome_tiff_keeps_complete_frames(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mcf_rotator.recording import open_recording

    full = _recording(tmp_path / "rec.ome.tif")
    cut = _cut_in_half(full, tmp_path / "cut.ome.tif")
    with pytest.raises(Exception):
        tifffile.imread(cut)  # the plain reader refuses it
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        data = io.read_stack(cut)
    records = list(caplog.records)
    frames, _ = open_recording(cut)
    n = len(frames)
    frames.close()
    assert 3 <= n < 10 and data.shape == (n, 32, 48)
    np.testing.assert_array_equal(data, tifffile.imread(full)[:n])
    msgs = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert any("cut.ome.tif" in m and f"{n} complete frames" in m for m in msgs), msgs
    assert not any(r.name == "tifffile" for r in records)  # one warning, not tag noise


def test_read_stack_damaged_tiff_says_so(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="x.tif: holds no image data"):
        io.read_stack(_write(tmp_path / "x.tif", b"II*\x00garbage"))
    with pytest.raises(InputFileError, match="y.tif: cannot be read as an image stack"):
        io.read_stack(_write(tmp_path / "y.tif", b"not a tiff at all"))
