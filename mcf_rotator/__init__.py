"""mcf-rotator: AI-driven optical projection tomography on a multi-core fibre cell rotator.

Sub-packages (each a top-level folder of the repository, installed under ``mcf_rotator``):

- ``mcf_rotator.drivers``        device protocols and implementations (simulated, IDS, Holoeye, replay)
- ``mcf_rotator.holography``     MCF optics model, CoreNet, Gerchberg-Saxton, rotating-ellipse sequencer
- ``mcf_rotator.calibration``    off-axis holographic per-core phase calibration (no Qt)
- ``mcf_rotator.reconstruction`` detection, segmentation, tracking, sinograms, back-projection (no Qt)
- ``mcf_rotator.simulation``     the simulated rig's physics (phantom, fibre, trap, cameras)
- ``mcf_rotator.gui``            Qt widgets only
"""

from __future__ import annotations

try:
    from importlib.metadata import version as _version

    __version__ = _version("mcf-rotator")
except Exception:  # pragma: no cover - running from a source tree without install
    __version__ = "0.1.0"

__all__ = ["__version__"]
