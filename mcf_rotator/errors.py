"""Exception hierarchy shared by every layer.

Every error a user can cause or meet (bad file, missing SDK, unplugged camera) derives from
:class:`McfRotatorError`; the CLI and GUI print its message and never a traceback wall.
"""

from __future__ import annotations


class McfRotatorError(Exception):
    """Base class: an error whose message is meant for the operator."""


class ConfigError(McfRotatorError):
    """A rig/user configuration file is missing, unreadable or invalid."""


class InputFileError(McfRotatorError):
    """An input file (stack, movie, recording, core map) cannot be used; the message names it."""


class DeviceError(McfRotatorError):
    """A device failed; the message names the device and what happened."""


class SDKNotFoundError(DeviceError):
    """A vendor SDK (pyueye, ids_peak, holoeye) is not installed or cannot load its library."""


class DeviceNotFoundError(DeviceError):
    """No device matching the configuration is attached."""


class DeviceBusyError(DeviceError):
    """The device is in use by another program."""


class DeviceDisconnectedError(DeviceError):
    """The device went away during use (unplugged, window closed)."""


class FrameTimeoutError(DeviceError):
    """No frame arrived within the timeout."""


class RecordingError(McfRotatorError):
    """Writing the recording failed (disk full, permissions); frames written so far are kept."""


class CalibrationError(McfRotatorError):
    """A calibration measurement is unusable (no carrier, saturated, wrong core map)."""


class ReconstructionError(McfRotatorError):
    """The input cannot give a trustworthy volume (too few frames, coverage < 180 deg, no cell)."""
