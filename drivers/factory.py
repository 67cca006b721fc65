"""Build devices from the rig configuration.

Why a factory: the rig, the CLI and the GUI name devices only by ``config.camera.driver`` /
``config.slm.driver`` / ``config.trap``; each implementation (and its vendor SDK) is imported
only when selected, so a simulated rig never touches hardware software.
"""

from __future__ import annotations

import logging
from typing import Any

from mcf_rotator.config import CameraConfig, RigConfig, SLMConfig
from mcf_rotator.drivers.base import BaseDevice
from mcf_rotator.errors import ConfigError

log = logging.getLogger(__name__)


def _need_world(world: Any, what: str) -> Any:
    if world is None:
        raise ConfigError(f"the simulated {what} needs a SimulatedWorld (pass world=...)")
    return world


def make_camera(config: CameraConfig, world: Any = None, *, realtime: bool = True) -> Any:
    """Camera for ``config.driver``: simulated, ueye, ids_peak or replay (not yet connected).

    ``realtime`` paces a replay camera at its frame rate, as a real camera would be.
    """
    driver = config.driver
    if driver == "simulated":
        from mcf_rotator.drivers.simulated import SimulatedCamera

        return SimulatedCamera(_need_world(world, "camera"))
    if driver == "ueye":
        from mcf_rotator.drivers.ueye import UEyeCamera

        return UEyeCamera(config)
    if driver == "ids_peak":
        from mcf_rotator.drivers.ids_peak import IDSPeakCamera

        return IDSPeakCamera(config)
    if driver == "replay":
        if config.replay_path is None:
            raise ConfigError("camera.driver is 'replay' but camera.replay_path is not set")
        from mcf_rotator.drivers.replay import ReplayCamera

        return ReplayCamera(config.replay_path, loop=config.replay_loop, frame_rate_hz=config.frame_rate_hz,
                            realtime=realtime)
    raise ConfigError(f"unknown camera driver {driver!r} (simulated, ueye, ids_peak, replay)")


def make_slm(config: SLMConfig, world: Any = None) -> Any:
    """SLM for ``config.driver``: simulated, holoeye_sdk or screen (not yet connected)."""
    driver = config.driver
    if driver == "simulated":
        from mcf_rotator.drivers.simulated import SimulatedSLM

        return SimulatedSLM(_need_world(world, "SLM"))
    if driver == "holoeye_sdk":
        from mcf_rotator.drivers.holoeye import HoloeyeSLM

        return HoloeyeSLM(config)
    if driver == "screen":
        from mcf_rotator.drivers.screen_slm import ScreenSLM

        return ScreenSLM(config)
    raise ConfigError(f"unknown SLM driver {driver!r} (simulated, holoeye_sdk, screen)")


class ManualTrap(BaseDevice):
    """A trapping laser switched by hand: keeps the commanded state so the app can log and prompt.

    Rigs without a computer-controlled laser use this; ``set_enabled`` logs what the operator
    must do and emits ``property_changed`` so the GUI can show the prompt.
    """

    def __init__(self, name: str = "trap", power_mw: float = 0.0) -> None:
        super().__init__(name)
        self._power_mw = float(power_mw)
        self._enabled = False

    @property
    def power_mw(self) -> float:
        return self._power_mw

    @power_mw.setter
    def power_mw(self, value: float) -> None:
        if value < 0:
            raise ValueError("trap power must be >= 0 mW")
        self._set_property("power_mw", float(value))
        log.info("%s: set the trapping laser to %.1f mW by hand", self.name, value)

    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        self._set_property("enabled", bool(enabled))
        log.info("%s: switch the trapping laser %s by hand", self.name, "ON" if enabled else "OFF")


def make_trap(config: RigConfig | str, world: Any = None) -> Any:
    """Trap for ``config.trap`` (or a driver name): simulated or manual."""
    driver = config.trap if isinstance(config, RigConfig) else str(config)
    if driver == "simulated":
        from mcf_rotator.drivers.simulated import SimulatedTrap

        return SimulatedTrap(_need_world(world, "trap"))
    if driver == "manual":
        return ManualTrap()
    raise ConfigError(f"unknown trap driver {driver!r} (simulated, manual)")
