"""The set of devices one run uses, built from a rig configuration.

A :class:`Rig` is plain data so tests can assemble one from fakes. :func:`build_rig` makes
one :class:`~mcf_rotator.simulation.world.SimulatedWorld` whenever any device is simulated,
so the simulated camera sees the cell that the simulated SLM and trap move.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mcf_rotator.config import RigConfig
from mcf_rotator.drivers.protocols import SLM, Camera, Trap
from mcf_rotator.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Rig:
    """Devices of one microscope; ``world`` is the simulation behind simulated devices."""

    camera: Camera
    slm: SLM
    trap: Trap
    calibration_camera: Camera | None = None
    world: Any | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def devices(self) -> list[Any]:
        devs: list[Any] = [self.camera, self.slm, self.trap]
        if self.calibration_camera is not None:
            devs.append(self.calibration_camera)
        return devs

    @property
    def is_simulated(self) -> bool:
        return self.world is not None

    def connect(self) -> None:
        """Connect every device; on failure disconnect those already opened and re-raise."""
        opened: list[Any] = []
        try:
            for dev in (self.camera, self.slm, self.trap):
                dev.connect()
                opened.append(dev)
        except Exception:
            for dev in reversed(opened):
                try:
                    dev.disconnect()
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    log.exception("disconnect of %s failed", getattr(dev, "name", dev))
            raise

    def disconnect(self) -> None:
        """Disconnect everything, logging (not raising) individual failures."""
        for dev in reversed(self.devices):
            try:
                dev.disconnect()
            except Exception:  # noqa: BLE001
                log.exception("disconnect of %s failed", getattr(dev, "name", dev))


def build_rig(config: RigConfig, realtime: bool = False) -> Rig:
    """Devices for ``config``; a shared simulated world when any driver is ``simulated``.

    ``realtime`` paces the simulated world with the wall clock (GUI); otherwise simulated
    time advances one frame per camera read (demos, tests: as fast as the CPU allows).
    """
    world = None
    if config.camera.driver == "simulated" or config.slm.driver == "simulated" or config.trap == "simulated":
        from mcf_rotator.simulation.world import SimulatedWorld

        world = SimulatedWorld(config, realtime=realtime)
    try:
        from mcf_rotator.drivers import factory
    except ModuleNotFoundError as exc:
        if exc.name != "mcf_rotator.drivers.factory":
            raise
        factory = None
    if factory is not None:
        camera = factory.make_camera(config.camera, world=world, realtime=realtime)
        slm = factory.make_slm(config.slm, world=world)
        trap = factory.make_trap(config.trap, world=world)
    else:  # the device factory is not part of this build: only the simulated rig exists
        if not (config.camera.driver == config.slm.driver == config.trap == "simulated"):
            raise ConfigError("this build has no hardware drivers; use the simulated rig (--simulate)")
        from mcf_rotator.drivers.simulated import SimulatedCamera, SimulatedSLM, SimulatedTrap

        camera, slm, trap = SimulatedCamera(world), SimulatedSLM(world), SimulatedTrap(world)
    calibration_camera = None
    if world is not None:
        try:
            from mcf_rotator.drivers.simulated import SimulatedCalibrationCamera

            calibration_camera = SimulatedCalibrationCamera(world)
        except ImportError:
            calibration_camera = None
    return Rig(camera=camera, slm=slm, trap=trap, calibration_camera=calibration_camera, world=world)
