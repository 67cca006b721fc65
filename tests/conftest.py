"""Test-session set-up shared by every test module."""

from __future__ import annotations

import os
import sys

# Two cores on CI: oversubscribed BLAS/torch threads make everything 10x slower.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

# GUI tests (Mesa llvmpipe) and torch tests share this process: keep Triton out, see
# mcf_rotator/gui/__init__.py for why.
import mcf_rotator.gui  # noqa: E402,F401

# Modules with shared test helpers (drv_fakes, ...) live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))
