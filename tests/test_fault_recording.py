"""Recordings survive faults: kill -9 early, mid-run and during finalize, in both formats, and a
real full disk (a 2 MiB tmpfs, where the test runs as root).

After each fault every frame the recorder wrote is read back by ``open_recording`` with its
own pixels (frame i carries i in its first pixel). The mid-run kill of a steady stream is in
tests/test_core_recording.py; here the moments around it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from mcf_rotator.errors import InputFileError
from mcf_rotator.recording import Recorder, open_recording

FORMATS = ["rec.ome.tif", "rec.ome.zarr"]

# The child records frames whose first pixel is the frame number and prints a marker at the
# moment the parent kills it: "early" after the first frame is on disk, "mid" with 30 frames
# on disk and a burst still queued, "finalize" inside close() (the queue drained and the
# format's metadata being written).
_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from mcf_rotator import recording
    from mcf_rotator.recording import Recorder

    path, moment = sys.argv[1], sys.argv[2]

    def frame(i):
        img = np.zeros((96, 128), np.uint16)
        img[0, 0] = i
        return img

    rec = Recorder(path)
    if moment == "early":
        rec.write(frame(0), timestamp=0.0, slm_angle_deg=0.0)
        while rec.frames_written < 1:
            time.sleep(0.001)
        print("kill", flush=True)
        for i in range(1, 10**6):
            rec.write(frame(i), timestamp=i * 0.01, slm_angle_deg=float(i))
            time.sleep(0.001)
    elif moment == "mid":
        for i in range(60):
            rec.write(frame(i), timestamp=i * 0.01, slm_angle_deg=float(i))
        while rec.frames_written < 30:
            time.sleep(0.001)
        print("kill", flush=True)  # frames still queued and one being written
        for i in range(60, 10**6):
            rec.write(frame(i), timestamp=i * 0.01, slm_angle_deg=float(i))
    else:
        for i in range(40):
            rec.write(frame(i), timestamp=i * 0.01, slm_angle_deg=float(i))
        while rec.frames_written < 40:
            time.sleep(0.001)
        backend = type(rec._backend)
        original = backend.close

        def close(self, *a, **k):
            print("kill", flush=True)  # the parent kills while the metadata is being written
            time.sleep(0.002)
            return original(self, *a, **k)

        backend.close = close
        rec.close()
        time.sleep(60)
    """
)


def _kill_at(path: Path, moment: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), moment], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "kill"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def _assert_every_frame_readable(path: Path, at_least: int) -> int:
    frames, meta = open_recording(path)
    try:
        n = len(frames)
        assert n >= at_least
        assert [int(frames[i][0, 0]) for i in range(n)] == list(range(n))
        assert all(frames[i].shape == (96, 128) for i in range(n))
    finally:
        frames.close()
    with_meta = [m for m in meta if "slm_angle_deg" in m]
    assert len(with_meta) >= n - 1 and all(m["slm_angle_deg"] == m["frame"] for m in with_meta)
    return n


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize(("moment", "at_least"), [("early", 1), ("mid", 30), ("finalize", 40)])
def test_kill_9_keeps_every_recorded_frame(tmp_path: Path, name: str, moment: str, at_least: int) -> None:
    path = tmp_path / name
    _kill_at(path, moment)
    _assert_every_frame_readable(path, at_least)


# ----------------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201 - a generator fixture
    """A 2 MiB tmpfs mounted in the test folder (root only; skipped elsewhere)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    d = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.mark.parametrize("name", FORMATS)
def test_full_disk_says_so_and_keeps_the_frames(small_disk: Path, name: str) -> None:
    path = small_disk / name
    errors: list[str] = []
    rec = Recorder(path, on_error=errors.append)
    frame = np.zeros((480, 640), np.uint8)  # 300 KiB: the 2 MiB disk takes a handful
    for i in range(30):
        f = frame.copy()
        f[0, 0] = i
        rec.write(f, timestamp=i * 0.01)
    summary = rec.close()
    assert summary.error is not None and len(errors) == 1 and errors[0] == summary.error
    assert summary.error.startswith(f"recording {path}: the disk is full"), summary.error
    assert f"{summary.frames_written} frame(s) written so far are kept" in summary.error
    assert 0 < summary.frames_written < 30 and summary.frames_lost == 30 - summary.frames_written
    try:
        frames, _ = open_recording(path)
    except InputFileError as exc:  # the disk filled before the first frame: said plainly
        assert summary.frames_written == 0, exc
        return
    try:
        assert len(frames) >= summary.frames_written - 1  # the frame being written may be torn
        assert [int(frames[i][0, 0]) for i in range(len(frames))] == list(range(len(frames)))
    finally:
        frames.close()
