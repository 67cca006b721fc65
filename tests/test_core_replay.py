"""File-replay camera: every supported source plays frames; every bad file names the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from mcf_rotator.drivers.protocols import Camera
from mcf_rotator.drivers.replay import ReplayCamera, ReplayFinished
from mcf_rotator.errors import InputFileError
from mcf_rotator.recording import Recorder


def _stack(n: int = 6, shape: tuple[int, int] = (12, 16), dtype=np.uint16) -> np.ndarray:
    return (np.arange(n)[:, None, None] * 10 + np.zeros((n, *shape))).astype(dtype)


def _read_all(cam: ReplayCamera, n: int) -> list:
    cam.connect()
    cam.start_acquisition()
    return [cam.read_frame() for _ in range(n)]


def test_tiff_stack_plays_in_order_and_loops(tmp_path: Path) -> None:
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, _stack())
    cam = ReplayCamera(p, loop=True, frame_rate_hz=20)
    assert isinstance(cam, Camera)
    assert cam.shape == (12, 16) and cam.dtype == np.uint16 and cam.n_frames == 6
    frames = _read_all(cam, 8)
    assert [int(f.image[0, 0]) for f in frames] == [0, 10, 20, 30, 40, 50, 0, 10]
    assert [f.index for f in frames] == list(range(8))
    assert frames[2].timestamp == pytest.approx(2 / 20)
    cam.close()


def test_non_looping_replay_ends(tmp_path: Path) -> None:
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, _stack(3))
    cam = ReplayCamera(p, loop=False)
    _read_all(cam, 3)
    with pytest.raises(ReplayFinished):
        cam.read_frame()


def test_tiff_pages_written_one_by_one(tmp_path: Path) -> None:
    p = tmp_path / "pages.tif"
    with tifffile.TiffWriter(p) as tw:
        for img in _stack(4, dtype=np.uint8):
            tw.write(img, contiguous=False)
    cam = ReplayCamera(p)
    assert cam.n_frames == 4
    assert [int(f.image[0, 0]) for f in _read_all(cam, 4)] == [0, 10, 20, 30]


def test_float_stack_converted_to_float32(tmp_path: Path) -> None:
    p = tmp_path / "float.tif"
    tifffile.imwrite(p, _stack(dtype=np.float64) / 7.0)
    cam = ReplayCamera(p)
    assert cam.dtype == np.float32
    assert _read_all(cam, 2)[1].image[0, 0] == pytest.approx(10 / 7.0)


def test_rgb_stack_converted_to_mono(tmp_path: Path) -> None:
    p = tmp_path / "rgb.tif"
    rgb = np.zeros((3, 8, 8, 3), np.uint8)
    rgb[..., 1] = 200  # pure green
    tifffile.imwrite(p, rgb, photometric="rgb")
    cam = ReplayCamera(p)
    assert cam.shape == (8, 8) and cam.dtype == np.uint8
    assert _read_all(cam, 1)[0].image[0, 0] == pytest.approx(0.587 * 200, abs=1)


def test_complex_stack_rejected(tmp_path: Path) -> None:
    p = tmp_path / "complex.tif"
    tifffile.imwrite(p, _stack(dtype=np.complex64))
    with pytest.raises(InputFileError, match="complex"):
        ReplayCamera(p)


def test_single_image_is_not_a_stack(tmp_path: Path) -> None:
    p = tmp_path / "one.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint8))
    with pytest.raises(InputFileError, match="not a stack") as info:
        ReplayCamera(p)
    assert "one.tif" in str(info.value)


def test_truncated_tiff_named(tmp_path: Path) -> None:
    p = tmp_path / "cut.tif"
    tifffile.imwrite(p, _stack(5, (64, 64)))
    data = p.read_bytes()
    cut = tmp_path / "cut2.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError) as info:
        ReplayCamera(cut)
    assert "cut2.tif" in str(info.value)
    assert "truncated" in str(info.value) or "damaged" in str(info.value) or "readable" in str(info.value)


def test_missing_and_empty_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        ReplayCamera(tmp_path / "nope.tif")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError, match="empty"):
        ReplayCamera(empty)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a tiff at all" * 10)
    with pytest.raises(InputFileError, match="junk.tif"):
        ReplayCamera(junk)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(InputFileError, match="unsupported file type"):
        ReplayCamera(other)


def test_folder_of_frames_natural_order(tmp_path: Path) -> None:
    import cv2

    d = tmp_path / "frames"
    d.mkdir()
    for i in (0, 1, 2, 10):
        cv2.imwrite(str(d / f"f{i}.png"), np.full((6, 9), i * 5, np.uint8))
    cam = ReplayCamera(d)
    assert cam.n_frames == 4
    assert [int(f.image[0, 0]) for f in _read_all(cam, 4)] == [0, 5, 10, 50]


def test_folder_problems(tmp_path: Path) -> None:
    import cv2

    d = tmp_path / "empty_dir"
    d.mkdir()
    with pytest.raises(InputFileError, match="no .tif"):
        ReplayCamera(d)
    d2 = tmp_path / "mixed"
    d2.mkdir()
    cv2.imwrite(str(d2 / "a1.png"), np.zeros((6, 9), np.uint8))
    cv2.imwrite(str(d2 / "a2.png"), np.zeros((7, 9), np.uint8))
    with pytest.raises(InputFileError, match="differ in size"):
        ReplayCamera(d2)


def test_movie_converted_to_mono(tmp_path: Path) -> None:
    import cv2

    p = tmp_path / "movie.avi"
    vw = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 24))
    if not vw.isOpened():
        pytest.skip("no AVI encoder in this OpenCV build")
    for i in range(5):
        vw.write(np.full((24, 32, 3), 40 * i, np.uint8))
    vw.release()
    cam = ReplayCamera(p)
    assert cam.shape == (24, 32) and cam.n_frames == 5
    assert cam.frame_rate_hz == pytest.approx(25.0)
    vals = [float(f.image.mean()) for f in _read_all(cam, 5)]
    assert vals == pytest.approx([0, 40, 80, 120, 160], abs=4)


def test_corrupt_movie(tmp_path: Path) -> None:
    p = tmp_path / "bad.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    with pytest.raises(InputFileError, match="bad.mp4"):
        ReplayCamera(p)


@pytest.mark.parametrize("name", ["rec.ome.tif", "rec.ome.zarr"])
def test_replays_our_recording_with_metadata(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    rec = Recorder(p)
    for i, img in enumerate(_stack(5, dtype=np.uint8)):
        rec.write(img, timestamp=100 + i * 0.5, slm_angle_deg=3.0 * i)
    rec.close()
    cam = ReplayCamera(p, loop=False)
    frames = _read_all(cam, 5)
    assert [f.metadata["slm_angle_deg"] for f in frames] == [0, 3, 6, 9, 12]
    assert frames[3].timestamp == pytest.approx(101.5)
    assert cam.frame_rate_hz == pytest.approx(2.0)
