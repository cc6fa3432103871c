"""dronetrack trackers."""
