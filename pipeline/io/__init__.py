"""Reading and writing: the flight folder, recorded and live sources, telemetry, sinks, MOT files,
dataset importers."""
