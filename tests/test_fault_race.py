"""No SIGFPE when ultralytics is imported while another thread runs OpenCV.

``import ultralytics`` calls ``cv2.setNumThreads(0)``. Changing OpenCV's thread count while a
camera thread is inside ``cv2.connectedComponentsWithStats`` killed ~6 % of demo runs with a
floating point exception (one such change crashes ~15 % of tries). The start-up set-up pins
OpenCV's count first, so the import no longer changes it. Each repetition below is a fresh
process: start-up set-up, a thread hammering ``connectedComponentsWithStats``, then our
ultralytics set-up on the main thread (against a stand-in ultralytics whose import makes the
same ``cv2.setNumThreads(0)`` call, so a repetition costs a fraction of a second).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPEATS = 30

STUB_TORCH = "def set_num_threads(n):\n    pass\n"
STUB_ULTRALYTICS = textwrap.dedent(
    """
    import os
    if not os.environ.get("OMP_NUM_THREADS"):
        os.environ["OMP_NUM_THREADS"] = "1"
    from ultralytics.utils import SETTINGS  # noqa: F401
    YOLO = None
    """
)
STUB_ULTRALYTICS_UTILS = textwrap.dedent(
    """
    import cv2
    cv2.setNumThreads(0)  # what ultralytics/utils/__init__.py does at import

    class _Settings(dict):
        def update(self, *a, **k):
            dict.update(self, *a, **k)

    SETTINGS = _Settings()
    """
)

SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    stub, cfg, real = sys.argv[1], sys.argv[2], sys.argv[3] == "real"
    if not real:
        sys.path.insert(0, stub)
        sys.modules["matplotlib"] = None  # font look-up: skip matplotlib's slow import
    from mcf_rotator.cli import configure_threads

    configure_threads()  # what the CLI entry does before any command runs
    import numpy as np
    import cv2

    img = (np.random.default_rng(0).random((512, 512)) > 0.5).astype(np.uint8)
    stop = threading.Event()
    running = threading.Event()

    def camera():
        while not stop.is_set():
            cv2.connectedComponentsWithStats(img, connectivity=8)
            running.set()

    t = threading.Thread(target=camera, daemon=True)
    t.start()
    running.wait(5)
    from mcf_rotator.reconstruction.ultralytics_env import import_ultralytics, setup_ultralytics

    setup_ultralytics(config_dir=cfg)
    import_ultralytics()
    time.sleep(0.01)
    stop.set()
    t.join(5)
    assert cv2.getNumThreads() == 1, cv2.getNumThreads()
    print("RACE-OK")
    """
)


def _stub(root: Path) -> Path:
    (root / "torch").mkdir(parents=True)
    (root / "torch" / "__init__.py").write_text(STUB_TORCH)
    (root / "ultralytics" / "utils").mkdir(parents=True)
    (root / "ultralytics" / "__init__.py").write_text(STUB_ULTRALYTICS)
    (root / "ultralytics" / "utils" / "__init__.py").write_text(STUB_ULTRALYTICS_UTILS)
    return root


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env["HOME"] = str(tmp_path / "home")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["PYTHONFAULTHANDLER"] = "1"
    return env


def _run(tmp_path: Path, stub: Path, mode: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(stub), str(tmp_path / "cfg"), mode],
        capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=timeout,
    )


def test_ultralytics_setup_while_opencv_runs_never_crashes(tmp_path: Path) -> None:
    stub = _stub(tmp_path / "stub")
    failures = []
    for i in range(REPEATS):
        proc = _run(tmp_path, stub, "stub", 60)
        if proc.returncode != 0 or "RACE-OK" not in proc.stdout:
            failures.append(f"run {i}: exit {proc.returncode}\n{proc.stderr[-1500:]}")
    assert not failures, f"{len(failures)}/{REPEATS} runs failed:\n" + "\n".join(failures[:3])


def test_real_ultralytics_import_leaves_opencv_threads_alone(tmp_path: Path) -> None:
    """The real import (torch and all) while the camera-like thread runs: no crash, no change."""
    proc = _run(tmp_path, tmp_path, "real", 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RACE-OK" in proc.stdout
    assert "changed OpenCV's thread count" not in proc.stderr
