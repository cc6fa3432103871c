"""Frame-level presence labels from telemetry and geometry only (no boxes): is a cooperative drone inside
this camera's view at the frame's instant?

Per frame: 1 (PRESENT) when some target's projected drone (its centre, grown by half its apparent size
and `margin_px`) overlaps the image and lies in front of the camera; 0 (ABSENT) when every logged target
is known and none does; -1 (UNKNOWN) when the turret's pose is unknown (no pose log, a gap, outside the
log), the stream has no calibration, or some target is unknown and no known one is in view.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import require
from pipeline.errors import InputError
from pipeline.io.flight import Calibration, Flight
from pipeline.geometry.camera import geodetic_to_enu, project_enu, stream_extrinsics
from pipeline.geometry.search_region import turret_pose
from pipeline.io.sources import StreamReader
from pipeline.io.telemetry import Telemetry, load_flight_telemetry
from pipeline.types import TelemetrySample

PRESENT, ABSENT, UNKNOWN = 1, 0, -1


@dataclass
class LabelConfig:
    margin_px: float = 0.0       # grow (or, negative, shrink) the image by this before testing overlap
    drone_size_m: float = 0.6    # the cooperative drone's span, for its apparent half size
    min_depth_m: float = 1.0     # nearer (or behind) the camera: not in view

    def validate(self, prefix: str) -> None:
        require(self.drone_size_m >= 0, prefix + "drone_size_m", "must not be negative")
        require(self.min_depth_m > 0, prefix + "min_depth_m", "must be positive")


def frame_label(sample: TelemetrySample, telemetry: Telemetry, cal: Calibration | None,
                image_size: tuple[int, int], cfg: LabelConfig) -> int:
    """PRESENT, ABSENT or UNKNOWN for one stream's frame at `sample.t` (see the module docstring)."""
    if sample.camera is None or cal is None:
        return UNKNOWN
    pose, ref = turret_pose(sample.camera)
    rot, centre = stream_extrinsics(pose, cal)
    w, h = image_size
    for s in sample.targets:
        p = geodetic_to_enu(s.lat, s.lon, s.alt, ref)
        depth = float((p - centre) @ rot[2])
        if depth < cfg.min_depth_m:
            continue
        uv, ok = project_enu(p[None], pose, cal)
        (u, v), grow = uv[0], cfg.margin_px + np.array([cal.fx, cal.fy]) * cfg.drone_size_m / (2 * depth)
        if ok[0] and -grow[0] < u < w + grow[0] and -grow[1] < v < h + grow[1]:
            return PRESENT
    return ABSENT if len(sample.targets) == len(telemetry.targets) else UNKNOWN


def frame_times(flight: Flight, stream: str) -> np.ndarray:
    """Every frame's time on the common clock (from the timestamps file, or fps, t0 and the video)."""
    reader = StreamReader.from_spec(flight, stream)
    n = reader.frame_count
    if n is None:
        raise InputError(f"streams.{stream}: the video does not report its frame count; give a timestamps file",
                         flight.root / "flight.yaml")
    return np.array([reader.time_of(i) for i in range(1, n + 1)])


def presence_labels(flight: Flight, stream: str, cfg: LabelConfig | None = None,
                    telemetry: Telemetry | None = None, times: np.ndarray | None = None) -> np.ndarray:
    """Labels (int8, one per frame of `stream`, in frame order) from the flight's telemetry (or the one
    given); all UNKNOWN when the flight has no telemetry."""
    times = frame_times(flight, stream) if times is None else times
    telemetry = telemetry or load_flight_telemetry(flight)
    if telemetry is None:
        return np.full(len(times), UNKNOWN, np.int8)
    spec = flight.streams[stream]
    size = (spec.width, spec.height)
    if None in size:
        raise InputError(f"streams.{stream}: presence labels need its width and height", flight.root / "flight.yaml")
    cfg = cfg or LabelConfig()
    return np.array([frame_label(telemetry.sample(float(t)), telemetry, spec.calibration, size, cfg)
                     for t in times], np.int8)


def window_labels(flight: Flight, stream: str, times: np.ndarray, tol: float = 1e-6) -> np.ndarray | None:
    """flight.yaml presence windows as per-frame labels (PRESENT inside any window of the stream, else
    ABSENT); None when the flight lists no window for it."""
    wins = [w for w in flight.spec.presence if w.stream == stream]
    if not wins:
        return None
    t = np.asarray(times, float)[:, None]
    inside = (t >= np.array([w.start for w in wins]) - tol) & (t <= np.array([w.end for w in wins]) + tol)
    return inside.any(1).astype(np.int8)


def agreement(labels: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """Share of the frames with a known label (not UNKNOWN) where it equals the reference, and their count."""
    known = np.asarray(labels) != UNKNOWN
    n = int(known.sum())
    return (float((np.asarray(labels)[known] == np.asarray(reference)[known]).mean()) if n else float("nan")), n
