"""dronetrack fusion."""
