"""Strict JSON for every file and line we write: ``null`` for NaN/inf (never the non-standard
``NaN``/``Infinity`` that Python's json emits and other languages' parsers refuse), NumPy
scalars and arrays as plain numbers and lists, paths and other objects as strings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def clean(obj: Any) -> Any:
    """``obj`` with every value JSON can hold strictly (non-finite numbers become ``None``)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`clean` ``(obj)``; raises if anything non-standard slipped through."""
    return json.dumps(clean(obj), allow_nan=False, **kwargs)
