"""Run every benchmark script in turn (``make benchmark``); each prints its own table.

The detector benchmark is skipped when no trained detector weights are present.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRIPTS = [
    ["bench_reconstruction.py"],
    ["bench_holography.py"],
    ["bench_detector.py"],
    ["bench_gui.py", "--seconds", "20"],
]


def main() -> int:
    from mcf_rotator.reconstruction.yolo import default_weights_path

    failed = []
    for script, *args in SCRIPTS:
        if script == "bench_detector.py" and not Path(default_weights_path()).is_file():
            print(f"== {script}: skipped (no detector weights shipped)")
            continue
        print(f"== {script} {' '.join(args)}", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / script), *args])
        if rc:
            failed.append(script)
    if failed:
        print("benchmarks that did not meet their targets or failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
