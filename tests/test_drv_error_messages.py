"""Error texts name the device once: the unplug message used to read 'simulated camera: simulated camera: ...'."""

from __future__ import annotations

import logging

import pytest

from mcf_rotator.config import RigConfig
from mcf_rotator.controller import RigController
from mcf_rotator.drivers.simulated import SimulatedCamera
from mcf_rotator.errors import DeviceDisconnectedError
from mcf_rotator.simulation.world import SimulatedWorld

from test_core_support import FakePipeline, FakeSequencer, fake_rig


def test_unplug_message_names_the_camera_once(tmp_path, caplog):
    world = SimulatedWorld(RigConfig())
    cam = SimulatedCamera(world)
    rig = fake_rig()
    ctl = RigController(RigConfig(), rig=rig, pipeline_factory=lambda c: FakePipeline(),
                        sequencer=FakeSequencer(), output_dir=tmp_path)
    seen: list[str] = []
    ctl._on_thread_error = seen.append  # what the controller would report (and put in the GUI)
    handler = ctl._make_device_error_handler(cam)
    cam.events.error.connect(handler)
    cam.connect()
    cam.start_acquisition()
    cam.read_frame()
    cam.simulate_disconnect()
    with caplog.at_level(logging.ERROR), pytest.raises(DeviceDisconnectedError):
        cam.read_frame()
    assert len(seen) == 1 and "unplugged" in seen[0]
    assert seen[0].count(cam.name) == 1, seen[0]
    assert all(r.getMessage().count(cam.name) == 1 for r in caplog.records if "unplugged" in r.getMessage())
    handler("USB cable unplugged")  # a message without the name still gets it
    assert seen[-1] == f"{cam.name}: USB cable unplugged"
