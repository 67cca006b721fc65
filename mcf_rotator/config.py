"""Rig configuration: a validated pydantic model loaded from YAML or JSON.

``load_config(path)`` raises :class:`~mcf_rotator.errors.ConfigError` whose message names the
file and each bad field. The default rig (fully simulated) ships as
``mcf_rotator/resources/default_rig.yaml``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mcf_rotator.errors import ConfigError

CameraDriver = Literal["simulated", "ueye", "ids_peak", "replay"]
SLMDriver = Literal["simulated", "holoeye_sdk", "screen"]
TrapDriver = Literal["simulated", "manual"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CameraConfig(_Strict):
    driver: CameraDriver = "simulated"
    device_id: int = Field(0, ge=0, description="camera index / id for the vendor SDK")
    serial: str | None = None
    exposure_ms: float = Field(5.0, gt=0, le=10_000)
    frame_rate_hz: float = Field(60.0, gt=0, le=10_000)
    gain: float = Field(1.0, ge=0)
    roi: tuple[int, int, int, int] | None = Field(None, description="x, y, width, height in pixels")
    replay_path: Path | None = Field(None, description="file or folder played by the replay camera")
    replay_loop: bool = True
    bit_depth: Literal[8, 10, 12, 16] = 8


class SLMConfig(_Strict):
    driver: SLMDriver = "simulated"
    width: int = Field(1920, gt=0)
    height: int = Field(1080, gt=0)
    pixel_pitch_um: float = Field(8.0, gt=0)
    refresh_rate_hz: float = Field(60.0, gt=0)
    screen_index: int = Field(1, ge=0, description="monitor index of the SLM for the screen driver")
    two_pi_grey: int = Field(255, ge=1, le=255, description="grey level giving 2 pi at the wavelength")
    lut_path: Path | None = None
    grating_period_px: float | None = Field(None, gt=0)


class FibreConfig(_Strict):
    core_map: Path | None = Field(None, description="CSV/JSON of core centres; hexagonal if empty")
    rings: int = Field(4, ge=1, le=12)
    pitch_um: float = Field(15.0, gt=0)
    mode_field_diameter_um: float = Field(4.0, gt=0)
    wavelength_um: float = Field(1.064, gt=0.2, lt=3.0)
    slm_to_facet_magnification: float = Field(1 / 12.0, gt=0)
    fibre_id: str = "default-hex61"


class OpticsConfig(_Strict):
    camera_pixel_um: float = Field(3.45, gt=0)
    magnification: float = Field(40.0, gt=0)
    imaging_wavelength_um: float = Field(0.55, gt=0)

    @property
    def object_pixel_um(self) -> float:
        return self.camera_pixel_um / self.magnification


class RotationConfig(_Strict):
    rate_deg_s: float = Field(30.0, gt=0, le=3600)
    direction: Literal[1, -1] = 1
    target_coverage_deg: float = Field(360.0, ge=180.0)
    angle_step_deg: float = Field(1.0, gt=0, le=30)
    ellipse_axes: tuple[float, float] = (6.0, 2.5)
    #: "open": the ellipse turns at ``rate_deg_s``; "closed": it is steered by the cell's
    #: tracked rotation so that the *cell* turns at that rate (mcf_rotator.rotation_control)
    loop: Literal["open", "closed"] = "open"
    #: closed loop: the cell's target step per camera frame (deg) instead of ``rate_deg_s``
    step_per_frame_deg: float | None = Field(None, gt=0, le=30)


class SimulationConfig(_Strict):
    seed: int = 0
    cell_diameter_um: float = Field(12.0, gt=1)
    camera_shape: tuple[int, int] = (480, 640)
    noise: bool = True
    defocus_um: float = 0.0
    brownian_deg: float = Field(0.2, ge=0)
    drift_um_s: float = Field(0.05, ge=0)
    axis_tilt_deg: float = 1.0


class PathsConfig(_Strict):
    output_dir: Path = Path("mcf-rotator-data")
    calibration_dir: Path | None = None
    detector_weights: Path | None = None
    corenet_weights: Path | None = None


class RigConfig(_Strict):
    """Everything the application needs to know about the rig."""

    name: str = "simulated rig"
    camera: CameraConfig = CameraConfig()
    slm: SLMConfig = SLMConfig()
    trap: TrapDriver = "simulated"
    fibre: FibreConfig = FibreConfig()
    optics: OpticsConfig = OpticsConfig()
    rotation: RotationConfig = RotationConfig()
    simulation: SimulationConfig = SimulationConfig()
    paths: PathsConfig = PathsConfig()
    record_format: Literal["ome-tiff", "ome-zarr"] = "ome-tiff"

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @property
    def is_simulated(self) -> bool:
        return self.camera.driver == "simulated" or self.slm.driver == "simulated"

    def simulated(self) -> "RigConfig":
        """A copy with every device switched to its simulation."""
        cfg = self.model_copy(deep=True)
        cfg.camera.driver = "simulated"
        cfg.slm.driver = "simulated"
        cfg.trap = "simulated"
        return cfg

    def save(self, path: str | Path) -> None:
        path = Path(path)
        data = json.loads(self.model_dump_json())
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(data, indent=2))
        else:
            path.write_text(yaml.safe_dump(data, sort_keys=False))


def default_config_path() -> Path:
    return Path(str(resources.files("mcf_rotator.resources").joinpath("default_rig.yaml")))


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid rig configuration ({exc.error_count()} problem(s))"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  - {loc}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None) -> RigConfig:
    """Load and validate a rig configuration (YAML or JSON); ``None`` gives the default rig."""
    path = Path(path) if path is not None else default_config_path()
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({exc})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    try:
        cfg = RigConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None
    # relative paths are relative to the config file
    base = path.parent
    if cfg.fibre.core_map is not None and not cfg.fibre.core_map.is_absolute():
        cfg.fibre.core_map = base / cfg.fibre.core_map
    if cfg.camera.replay_path is not None and not cfg.camera.replay_path.is_absolute():
        cfg.camera.replay_path = base / cfg.camera.replay_path
    return cfg
