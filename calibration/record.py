"""Calibration record: the per-core phase correction and how it was measured, as versioned JSON."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mcf_rotator.errors import CalibrationError, InputFileError

RECORD_VERSION = 1


def _new_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


@dataclass
class CalibrationRecord:
    """Correction = -(fibre distortion), piston removed, radians per core (added to every SLM pattern)."""

    fibre_id: str
    correction_rad: list[float]
    carrier_cyc_per_px: tuple[float, float]
    fit_quality: dict = field(default_factory=dict)
    residual_rms_rad: float | None = None
    facet_um_per_px: float | None = None
    core_centres_px: list[list[float]] | None = None
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    calibration_id: str = field(default_factory=_new_id)
    version: int = RECORD_VERSION

    @property
    def n_cores(self) -> int:
        return len(self.correction_rad)

    @property
    def correction(self) -> np.ndarray:
        return np.asarray(self.correction_rad, float)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["carrier_cyc_per_px"] = list(self.carrier_cyc_per_px)
        return d

    def save(self, path: str | Path) -> Path:
        """Write JSON (atomically: a crash never leaves half a record)."""
        path = Path(path)
        if path.is_dir():
            path = path / f"calibration-{self.calibration_id}.json"
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationRecord":
        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"calibration record {path}: file not found")
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputFileError(f"calibration record {path}: not valid JSON ({exc})") from exc
        if not isinstance(d, dict) or d.get("version") != RECORD_VERSION:
            raise InputFileError(
                f"calibration record {path}: version {d.get('version') if isinstance(d, dict) else '?'} "
                f"is not supported (expected {RECORD_VERSION})"
            )
        try:
            rec = cls(**{k: d[k] for k in d if k in cls.__dataclass_fields__})
            rec.carrier_cyc_per_px = tuple(rec.carrier_cyc_per_px)  # type: ignore[assignment]
            corr = np.asarray(rec.correction_rad, float)
        except (TypeError, ValueError) as exc:
            raise InputFileError(f"calibration record {path}: bad field ({exc})") from exc
        if corr.ndim != 1 or not np.isfinite(corr).all():
            raise InputFileError(f"calibration record {path}: correction_rad must be a list of finite numbers")
        return rec

    def check_fibre(self, fibre_id: str, n_cores: int) -> None:
        """Refuse a record measured on another fibre (it would scramble the beam)."""
        if self.n_cores != n_cores:
            raise CalibrationError(
                f"calibration {self.calibration_id} has {self.n_cores} cores, the fibre has {n_cores}"
            )
        if self.fibre_id != fibre_id:
            raise CalibrationError(
                f"calibration {self.calibration_id} was measured on fibre '{self.fibre_id}', not '{fibre_id}'"
            )


def latest_record(directory: str | Path) -> CalibrationRecord | None:
    """Newest valid record in a folder (by timestamp), or None."""
    best: CalibrationRecord | None = None
    for p in sorted(Path(directory).glob("calibration-*.json")):
        try:
            rec = CalibrationRecord.load(p)
        except InputFileError:
            continue
        if best is None or rec.timestamp > best.timestamp:
            best = rec
    return best
