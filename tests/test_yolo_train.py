"""Training and fine-tuning run offline for one tiny epoch; run folders stay out of the cwd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcf_rotator.reconstruction.ultralytics_env import setup_ultralytics

setup_ultralytics(threads=1)

from mcf_rotator.cli import main  # noqa: E402
from mcf_rotator.errors import InputFileError  # noqa: E402
from mcf_rotator.reconstruction.yolo import YoloCellDetector, default_weights_path, train_detector  # noqa: E402
from mcf_rotator.reconstruction.yolo_dataset import write_yolo_dataset  # noqa: E402


def test_cli_generates_and_trains_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "model.pt"
    rc = main([
        "train-detector", "--data", str(tmp_path / "ds"), "--generate", "4", "--from-scratch",
        "--epochs", "1", "--imgsz", "64", "--batch", "4", "--threads", "1",
        "--runs", str(tmp_path / "runs"), "--output", str(out),
    ])
    assert rc == 0
    assert out.is_file() and out.stat().st_size > 100_000
    assert str(out) in capsys.readouterr().out
    assert len(list((tmp_path / "ds" / "images" / "train").glob("*.png"))) == 4
    assert (tmp_path / "runs" / "train" / "weights").is_dir()  # the run folder went where asked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "model.pt", "runs"]  # nothing else in the cwd
    det = YoloCellDetector(out, imgsz=64, threads=1)
    dets = det.detect(np.full((120, 160), 200, np.uint8))
    assert isinstance(dets, list)


@pytest.mark.skipif(not default_weights_path().is_file(), reason="shipped detector weights not trained yet")
def test_fine_tune_shipped_weights(tmp_path: Path) -> None:
    write_yolo_dataset(tmp_path / "ds", n_train=4, n_val=2, seed=5, shape=(240, 320))
    best = train_detector(tmp_path / "ds", out_dir=tmp_path / "runs", epochs=1, imgsz=64, batch=4, threads=1, val=False, progress=False)
    assert best.is_file() and best.parent.parent.parent == tmp_path / "runs"
    import torch

    tuned = torch.load(best, map_location="cpu", weights_only=False)
    shipped = torch.load(default_weights_path(), map_location="cpu", weights_only=False)
    a = dict(tuned["model"].float().named_parameters())
    b = dict(shipped["model"].float().named_parameters())
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the weights moved
    # ...but only a little: fine-tuning starts from the shipped weights, not from a fresh model
    drift = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert drift < 0.05, f"fine-tuned weights moved {drift:.3f} from the shipped ones (trained from scratch?)"


def test_training_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputFileError, match="weights to fine-tune not found"):
        write_yolo_dataset(tmp_path / "ds", n_train=1, n_val=1, seed=0, shape=(120, 160))
        train_detector(tmp_path / "ds", weights=tmp_path / "nope.pt", out_dir=tmp_path / "runs")
    rc = main(["train-detector", "--data", str(tmp_path / "missing"), "--epochs", "1"])
    assert rc == 2
    assert "missing" in capsys.readouterr().err
