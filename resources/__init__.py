"""Shipped data: default rig configuration, trained model weights, sample data."""
