"""dronetrack detectors."""
