"""One plain message per cause, naming the file: holograms (saturated / no fringes / no light),
dataset yamls of ``evaluate-detector``, short writes on a full disk."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mcf_rotator.calibration.offaxis import retrieve_phase, saturated_fraction
from mcf_rotator.cli import main
from mcf_rotator.errors import CalibrationError
from mcf_rotator.holography.mcf import MCFGeometry

GEO = MCFGeometry.hexagonal()
PX = 0.5


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


# ----------------------------------------------------------------------------- holograms
HOLOGRAMS = [
    # name, image, full scale given to retrieve_phase, words of the one message expected
    ("all pixels at 8-bit max", lambda: np.full((128, 128), 255, np.uint8), 255.0, ["saturated", "100 %"]),
    ("all pixels at 16-bit max, scale unknown", lambda: np.full((128, 128), 65535, np.uint16), None,
     ["saturated", "100 %"]),
    ("40 % clipped", lambda: np.where(_rng().random((128, 128)) < 0.4, 4095, _rng().integers(200, 3000, (128, 128))),
     4095.0, ["saturated", "% of pixels at the maximum"]),
    ("uniform noise, 8-bit", lambda: _rng().integers(0, 256, (128, 128)).astype(np.uint8), 255.0,
     ["no fringes", "carrier peak"]),
    ("gaussian noise, scale unknown", lambda: _rng().normal(1000.0, 300.0, (128, 128)), None,
     ["no fringes", "carrier peak"]),
    ("dark", lambda: np.zeros((128, 128)), None, ["flat", "no light"]),
    ("read noise on an offset", lambda: _rng().normal(100.0, 2.0, (128, 128)), None, ["no light"]),
]


@pytest.mark.parametrize("name,make,full,words", HOLOGRAMS, ids=[h[0] for h in HOLOGRAMS])
def test_hologram_causes_are_told_apart(name: str, make, full: float | None, words: list[str]) -> None:  # noqa: ANN001
    with pytest.raises(CalibrationError) as info:
        retrieve_phase(np.asarray(make()), GEO, PX, full_scale=full)
    msg = str(info.value)
    assert all(w in msg for w in words), (name, msg)
    others = {"saturated", "no fringes", "no light"} - {w for w in words if w in ("saturated", "no fringes", "no light")}
    assert not any(o in msg for o in others), (name, msg)  # one cause per message


def test_noise_reaching_the_top_level_is_not_called_saturated() -> None:
    noise = _rng().integers(0, 256, (256, 256)).astype(np.uint8)
    assert noise.max() == 255 and saturated_fraction(noise.astype(float), 255.0) == 0.0
    clipped = noise.copy()
    clipped[:40] = 255
    assert saturated_fraction(clipped.astype(float), 255.0) > 0.15


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: np.full((128, 128), 255, np.uint8), ["saturated"]),
        (lambda: _rng().integers(0, 256, (128, 128)).astype(np.uint8), ["no fringes"]),
        (lambda: np.zeros((128, 128), np.uint8), ["flat", "no light"]),
    ],
)
def test_calibrate_image_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], make,  # noqa: ANN001
                                              words: list[str]) -> None:
    img = tmp_path / "holo.tif"
    tifffile.imwrite(img, make())
    rc = main(["calibrate", "--image", str(img), "--facet-um-per-px", str(PX), "--out", str(tmp_path / "cal")])
    err = capsys.readouterr().err
    assert rc == 2 and f"hologram image {img}" in err and "Traceback" not in err
    assert all(w in err for w in words), err


# ----------------------------------------------------------------------------- dataset yamls
def _dataset(root: Path) -> Path:
    (root / "images" / "train").mkdir(parents=True)
    return root


YAMLS = [
    ("unreadable yaml", "path: [unclosed\nval: images/val\n", ["data.yaml", "cannot read the dataset yaml"]),
    ("not a mapping", "- a\n- b\n", ["data.yaml", "not a mapping"]),
    ("missing key", "train: images/train\nnames: [cell]\n", ["data.yaml", "no 'val' key", "train, names"]),
    ("folder missing, yaml's folder", "train: images/train\nval: images/val\n",
     ["data.yaml", "'val: images/val' is not a folder", "relative to the yaml's folder"]),
    ("folder missing, path key", "path: {root}/elsewhere\ntrain: images/train\nval: images/val\n",
     ["data.yaml", "elsewhere/images/val", "relative to its 'path' key"]),
]


@pytest.mark.parametrize("name,text,words", YAMLS, ids=[y[0] for y in YAMLS])
def test_evaluate_detector_names_the_yaml_and_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          name: str, text: str, words: list[str]) -> None:
    root = _dataset(tmp_path / "ds")
    yml = root / "data.yaml"
    yml.write_text(text.format(root=root))
    rc = main(["evaluate-detector", "--data", str(yml)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert all(w in err for w in words), (name, err)


def test_evaluate_detector_dataset_folder_without_the_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path / "ds")
    assert main(["evaluate-detector", "--data", str(root), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert str(root) in err and "no images/test folder" in err
    assert main(["evaluate-detector", "--data", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: dataset not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- short writes
def test_a_short_write_on_a_full_drive_says_the_disk_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's tofile (under tifffile) reports a full disk as "N requested and M written", no errno."""
    import shutil
    from collections import namedtuple

    from mcf_rotator import recording

    usage = namedtuple("usage", "total used free")
    short = OSError("307200 requested and 29968 written")
    path = tmp_path / "rec.ome.tif"
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    msg = recording._describe_os_error(path, short, 12)
    assert msg.startswith(f"recording {path}: the disk is full") and "12 frame(s)" in msg
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 10**9, 10**11))
    msg = recording._describe_os_error(path, short, 12)
    assert "disk is full" not in msg and "stopped short" in msg
    assert "disk is full" in recording._describe_os_error(path, OSError(errno.ENOSPC, "No space left"), 0)
