"""Every device driver the rig file can name, what it needs, and whether that is installed here.

Why: ``check-hardware`` must say something useful about drivers the rig file does not select
(the default rig is simulated, so before this it said nothing about uEye or Holoeye) and about
drivers whose SDK is missing. Probes import the vendor SDK but open no device.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module, util
from typing import Callable

from mcf_rotator.errors import McfRotatorError


@dataclass(frozen=True)
class DriverInfo:
    """One value of ``camera.driver`` / ``slm.driver`` / ``trap``."""

    kind: str  # "camera", "slm" or "trap"
    name: str  # the value in the rig file
    device: str  # what it drives
    needs: str  # what must be installed for it
    probe: Callable[[], str]  # returns a status line or raises McfRotatorError with the fix


@dataclass(frozen=True)
class DriverStatus:
    """A probe's answer: ``ready`` with what was found, or not with what to install."""

    info: DriverInfo
    ready: bool
    detail: str


def _built_in() -> str:
    return "built in"


def _module_probe(module: str) -> Callable[[], str]:
    def probe() -> str:
        return import_module(f"mcf_rotator.drivers.{module}").probe()

    return probe


def _qt_probe() -> str:
    if util.find_spec("PySide6") is None and util.find_spec("PyQt6") is None and util.find_spec("PyQt5") is None:
        raise McfRotatorError("no Qt binding installed (pip install PySide6-Essentials)")
    return "Qt installed; the SLM must be a monitor of this desktop (check-hardware --list-screens)"


DRIVERS: tuple[DriverInfo, ...] = (
    DriverInfo("camera", "simulated", "simulated rig camera", "nothing", _built_in),
    DriverInfo("camera", "replay", "recorded OME-TIFF / OME-Zarr / TIFF stack played back", "camera.replay_path",
               _built_in),
    DriverInfo("camera", "ueye", "IDS uEye USB/GigE camera (uEye API)",
               "IDS Software Suite (uEye driver) + pip install mcf-rotator[pyueye]", _module_probe("ueye")),
    DriverInfo("camera", "ids_peak", "IDS peak (GenICam) camera",
               "IDS peak (runtime + GenTL producer) + pip install mcf-rotator[ids-peak]", _module_probe("ids_peak")),
    DriverInfo("slm", "simulated", "simulated SLM", "nothing", _built_in),
    DriverInfo("slm", "holoeye_sdk", "Holoeye SLM through the SLM Display SDK",
               "HOLOEYE SLM Display SDK 4.x (HEDS) or 2.x/3.x, its python folder on PYTHONPATH",
               _module_probe("holoeye")),
    DriverInfo("slm", "screen", "any HDMI/DVI phase SLM as a full-screen window", "Qt (installed with the app)",
               _qt_probe),
    DriverInfo("trap", "simulated", "simulated trapping laser", "nothing", _built_in),
    DriverInfo("trap", "manual", "trapping laser switched by hand (the app prompts)", "nothing", _built_in),
)


def driver_status(info: DriverInfo) -> DriverStatus:
    """Run one probe; a missing SDK is a status, not an error."""
    try:
        return DriverStatus(info, True, info.probe())
    except McfRotatorError as exc:
        return DriverStatus(info, False, str(exc))
    except (ImportError, OSError, RuntimeError) as exc:  # an SDK failing in a way its driver did not map
        return DriverStatus(info, False, f"{type(exc).__name__}: {exc}")


def all_statuses() -> list[DriverStatus]:
    """Probe every driver, in the order of :data:`DRIVERS`."""
    return [driver_status(d) for d in DRIVERS]


def driver_names(kind: str) -> list[str]:
    """The rig-file values for one kind of device ("camera", "slm", "trap")."""
    return [d.name for d in DRIVERS if d.kind == kind]
