"""Operator preferences persisted between sessions (JSON in the user config directory).

Settings are a convenience: a missing, unreadable or corrupt file falls back to defaults with
a logged warning and never blocks start-up.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SETTINGS_ENV = "MCF_ROTATOR_SETTINGS"


def default_settings_path() -> Path:
    """``$MCF_ROTATOR_SETTINGS`` or the platform's per-user config dir."""
    env = os.environ.get(SETTINGS_ENV)
    if env:
        return Path(env)
    try:
        from qtpy.QtCore import QStandardPaths

        base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppConfigLocation)
    except Exception:  # Qt missing or no app yet
        base = ""
    if not base:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        base = str(Path(base) / "mcf-rotator")
    return Path(base) / "gui_settings.json"


@dataclass
class UserSettings:
    """What the operator chose last time."""

    config_path: str | None = None
    #: per-device choice: "simulated" or "real" (real = use the driver named in the rig config)
    camera_mode: str = "config"
    slm_mode: str = "config"
    trap_mode: str = "config"
    rotation_rate_deg_s: float | None = None
    rotation_direction: int | None = None
    #: "open" / "closed" rotation loop, and the closed loop's target step per frame (deg)
    rotation_loop: str | None = None
    step_per_frame_deg: float | None = None
    output_dir: str | None = None
    live_fps: float = 40.0
    #: napari repaints of a 128^3 volume cost ~0.2 s on software GL: 1 Hz keeps the live view smooth
    volume_refresh_hz: float = 1.0
    window_geometry: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "UserSettings":
        """Read settings; any problem gives defaults and a warning, never an exception."""
        path = Path(path) if path is not None else default_settings_path()
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            known = {f.name for f in fields(cls)}
            kwargs = {k: v for k, v in data.items() if k in known}
            settings = cls(**kwargs)
            settings._validate()
            return settings
        except Exception as exc:
            log.warning("user settings %s unusable (%s); using defaults", path, exc)
            return cls()

    def _validate(self) -> None:
        for name in ("camera_mode", "slm_mode", "trap_mode"):
            if getattr(self, name) not in ("config", "simulated", "real"):
                raise ValueError(f"{name}={getattr(self, name)!r}")
        if self.rotation_loop not in (None, "open", "closed"):
            raise ValueError(f"rotation_loop={self.rotation_loop!r}")
        if self.step_per_frame_deg is not None and not (0.0 < float(self.step_per_frame_deg) <= 30.0):
            raise ValueError(f"step_per_frame_deg={self.step_per_frame_deg!r}")
        if not (1.0 <= float(self.live_fps) <= 240.0):
            raise ValueError(f"live_fps={self.live_fps!r}")
        if not (0.1 <= float(self.volume_refresh_hz) <= 10.0):
            raise ValueError(f"volume_refresh_hz={self.volume_refresh_hz!r}")
        if self.rotation_direction not in (None, 1, -1):
            raise ValueError(f"rotation_direction={self.rotation_direction!r}")

    def save(self, path: str | Path | None = None) -> bool:
        """Write settings; failure is logged and reported by the return value only."""
        path = Path(path) if path is not None else default_settings_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps(asdict(self), indent=2))
            tmp.replace(path)
            return True
        except OSError as exc:
            log.warning("cannot save user settings to %s (%s)", path, exc)
            return False

    @property
    def any_simulated(self) -> bool:
        return "simulated" in (self.camera_mode, self.slm_mode, self.trap_mode)


def apply_device_modes(config: Any, settings: UserSettings, simulate: bool = False) -> Any:
    """Return a rig config copy with the per-device simulated/real choices applied."""
    cfg = config.simulated() if simulate else config.model_copy(deep=True)
    if simulate:
        return cfg
    if settings.camera_mode == "simulated":
        cfg.camera.driver = "simulated"
    if settings.slm_mode == "simulated":
        cfg.slm.driver = "simulated"
    if settings.trap_mode == "simulated":
        cfg.trap = "simulated"
    return cfg
