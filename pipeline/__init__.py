"""dronetrack pipeline: data types, sources, telemetry, stages, runner, sinks, CLI."""
from pipeline.types import Detections, FrameBundle, TelemetrySample, TargetState

__all__ = ["Detections", "FrameBundle", "TelemetrySample", "TargetState"]
