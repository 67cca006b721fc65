"""Recorder: every frame and its metadata survive a clean close, a SIGKILL and a full disk."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mcf_rotator.errors import InputFileError, RecordingError
from mcf_rotator.recording import Recorder, open_recording, sidecar_path


def _frame(i: int, shape: tuple[int, int] = (24, 32)) -> np.ndarray:
    img = np.zeros(shape, np.uint16)
    img[0, 0] = i
    return img


@pytest.mark.parametrize("name", ["run.ome.tif", "run.ome.zarr"])
def test_roundtrip_with_metadata_and_annotations(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    rec = Recorder(p, pixel_um=0.25, metadata={"calibration_id": "cal-7"})
    for i in range(30):
        idx = rec.write(_frame(i), timestamp=10 + i / 60, slm_angle_deg=0.5 * i, hologram_id=i % 180)
        assert idx == i
    rec.annotate(4, tracked_angle_deg=2.1)
    summary = rec.close()
    assert summary.frames_written == 30 and summary.frames_lost == 0 and summary.error is None
    frames, meta = open_recording(p)
    assert frames.shape == (30, 24, 32) and frames.dtype == np.uint16
    assert [int(f[0, 0]) for f in frames] == list(range(30))
    assert meta[4]["tracked_angle_deg"] == 2.1 and "tracked_angle_deg" not in meta[5]
    assert meta[7]["slm_angle_deg"] == 3.5 and meta[7]["timestamp_s"] == pytest.approx(10 + 7 / 60)
    assert np.asarray(frames).shape == (30, 24, 32)


def test_ome_tiff_is_valid_ome_after_close(tmp_path: Path) -> None:
    p = tmp_path / "run.ome.tif"
    rec = Recorder(p, pixel_um=0.25)
    for i in range(5):
        rec.write(_frame(i), timestamp=i * 0.1)
    rec.close()
    with tifffile.TiffFile(p) as tif:
        assert tif.is_ome
        assert tif.series[0].shape == (5, 24, 32)
        xml = tif.ome_metadata
    assert 'SizeT="5"' in xml and 'PhysicalSizeX="0.25"' in xml and "DeltaT" in xml


_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from mcf_rotator.recording import Recorder
    rec = Recorder(sys.argv[1])
    i = 0
    while True:
        img = np.zeros((64, 64), np.uint8); img[0, 0] = i % 256
        rec.write(img, timestamp=i * 0.01, slm_angle_deg=float(i))
        i += 1
        if i == 40:
            print("ready", flush=True)
        time.sleep(0.002)
    """
)


@pytest.mark.parametrize("name", ["crash.ome.tif", "crash.ome.zarr"])
def test_sigkill_mid_run_leaves_readable_recording(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(p)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    frames, meta = open_recording(p)
    n = len(frames)
    assert n >= 40
    assert [int(f[0, 0]) for f in frames] == [i % 256 for i in range(n)]
    with_meta = [m for m in meta if "slm_angle_deg" in m]
    assert len(with_meta) >= n - 1  # at most the frame being written when killed lacks its line
    assert all(m["slm_angle_deg"] == m["frame"] for m in with_meta)


def test_torn_last_page_is_dropped(tmp_path: Path) -> None:
    p = tmp_path / "t.ome.tif"
    rec = Recorder(p)
    for i in range(6):
        rec.write(_frame(i, (32, 32)), timestamp=i)
    rec._thread.join(0.0)
    # simulate a crash mid-page: copy the file while open, cut inside the last page's pixels
    deadline = time.monotonic() + 5
    while rec.frames_written < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    data = p.read_bytes()
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(data[:-100])
    rec.close()
    frames, _ = open_recording(cut)
    assert len(frames) == 5
    assert [int(f[0, 0]) for f in frames] == list(range(5))


def test_a_last_page_of_another_shape_is_dropped(tmp_path: Path) -> None:
    """A page torn by a SIGKILL can decode to a strip of another shape, not raise."""
    import tifffile

    p = tmp_path / "odd.ome.tif"
    with tifffile.TiffWriter(p) as tw:
        for i in range(3):
            tw.write(_frame(i, (32, 32)), contiguous=False, photometric="minisblack")
        tw.write(np.zeros((1, 7), np.uint8), contiguous=False, photometric="minisblack")
    frames, _ = open_recording(p)
    assert len(frames) == 3 and [int(f[0, 0]) for f in frames] == [0, 1, 2]


def test_disk_full_raises_recording_error_and_keeps_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcf_rotator import recording

    p = tmp_path / "full.ome.tif"
    errors: list[str] = []
    rec = Recorder(p, on_error=errors.append)
    original = recording._TiffBackend.append
    calls = {"n": 0}

    def flaky(self, image):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, image)

    monkeypatch.setattr(recording._TiffBackend, "append", flaky)
    for i in range(25):
        rec.write(_frame(i), timestamp=i)
    summary = rec.close()
    assert summary.frames_written == 10 and summary.frames_lost == 15
    assert errors and "disk is full" in errors[0] and "10 frame(s)" in errors[0]
    assert summary.error == errors[0]
    frames, meta = open_recording(p)
    assert len(frames) == 10 and [int(f[0, 0]) for f in frames] == list(range(10))
    with pytest.raises(RecordingError):
        rec.write(_frame(99), timestamp=99)


def test_unwritable_folder_gives_recording_error(tmp_path: Path) -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(RecordingError, match="permission denied"):
            Recorder(d / "x.ome.tif")
    finally:
        d.chmod(0o700)


def test_permission_error_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_open = builtins.open

    def deny(path, *a, **k):  # noqa: ANN001
        if str(path).endswith(".frames.jsonl"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(RecordingError, match="permission denied"):
        Recorder(tmp_path / "x.ome.tif")


def test_open_recording_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        open_recording(tmp_path / "missing.ome.tif")
    empty = tmp_path / "empty.ome.tif"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError, match="empty"):
        open_recording(empty)


def test_sidecar_location(tmp_path: Path) -> None:
    assert sidecar_path(tmp_path / "a.ome.tif") == tmp_path / "a.frames.jsonl"
    assert sidecar_path(tmp_path / "a.ome.zarr") == tmp_path / "a.ome.zarr" / "frames.jsonl"
