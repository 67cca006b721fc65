"""Device protocols and their implementations (simulated, IDS uEye/peak, Holoeye, screen SLM, replay).

Vendor SDKs are imported lazily inside the driver that needs them, so importing this package
never requires hardware software.
"""

from mcf_rotator.drivers.protocols import (  # noqa: F401
    Camera,
    Device,
    DeviceEvents,
    Frame,
    Pump,
    SLM,
    Trap,
)
from mcf_rotator.drivers.base import BaseDevice  # noqa: F401
