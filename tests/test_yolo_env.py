"""ultralytics runs fully offline after ``setup_ultralytics`` (checked with the network blocked)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import os, socket, sys
    from pathlib import Path

    def _blocked(*a, **k):
        raise OSError("network access attempted during an offline test")

    socket.socket.connect = _blocked
    socket.socket.connect_ex = _blocked
    socket.getaddrinfo = _blocked
    socket.create_connection = _blocked

    from mcf_rotator.reconstruction.ultralytics_env import setup_ultralytics

    cfg = Path(sys.argv[1])
    user_dir = setup_ultralytics(config_dir=cfg, threads=1)
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "0"
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert user_dir == cfg / "Ultralytics", user_dir
    assert (user_dir / "Arial.ttf").stat().st_size > 10000
    import numpy as np
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR
    from ultralytics.utils.checks import check_font

    assert SETTINGS["sync"] is False
    assert Path(USER_CONFIG_DIR) == user_dir
    assert Path(check_font("Arial.ttf")) == user_dir / "Arial.ttf"
    model = YOLO("yolo11n-seg.yaml", task="segment")
    res = model.predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, device="cpu", verbose=False)
    assert len(res) == 1
    print("OFFLINE-OK")
    """
)


def test_ultralytics_offline_no_network(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_") and k != "OMP_NUM_THREADS"}
    env["HOME"] = str(tmp_path / "home")  # nothing may land in the real home either
    env["XDG_CONFIG_HOME"] = str(tmp_path / "home" / ".config")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "cfg")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "OFFLINE-OK" in proc.stdout
    assert not (tmp_path / "runs").exists()  # predict(save=False) writes no run folder
    assert not (tmp_path / "home" / ".config" / "Ultralytics").exists()
