"""Holography for the MCF cell rotator: fibre optics model, CoreNet, GS baselines, sequencer.

This folder is installed as ``mcf_rotator.holography``. It is a leaf library (numpy, scipy,
torch): nothing here imports Qt, devices or the rig controller.
"""
