"""The flight folder: `flight.yaml` validated into dataclasses, paths resolved against the folder.

```yaml
name: synth-0
streams:
  rgb:
    modality: rgb                 # rgb | thermal
    video: rgb.mp4                # or frames: frames/rgb/ (a folder of images, natural order), not both
    fps: 30.0                     # constant rate (a frame folder defaults to 30), or:
    timestamps: timestamps/rgb.csv  # per-frame times (frame, t), frame 1-based, seconds on the common clock
    t0: 0.0                       # time of frame 1 when only fps is given
    width: 640
    height: 512
    calibration:                  # pinhole + distortion, and the mount relative to the turret
      fx: 800.0
      fy: 800.0
      cx: 320.0
      cy: 256.0
      dist: [0, 0, 0, 0, 0]       # OpenCV k1 k2 p1 p2 k3
      mount_pan: 0.0              # degrees, added to the turret's pan
      mount_tilt: 0.0
      mount_roll: 0.0
      mount_offset: [0, 0, 0]     # metres (east, north, up) from the turret's reference point
    gt: gt/rgb.txt                # MOTChallenge ground truth, optional
    annotated: [[1, 300]]         # optional annotated frame ranges (inclusive); default: all frames
telemetry:
  gps_rtk: telemetry/gps_rtk.csv  # t, target_id, lat, lon, alt, fix
  camera: telemetry/camera.csv    # t, lat, lon, alt, pan, tilt, roll
  clock_offset: 0.0               # seconds added to telemetry times to reach video time
  gps_format: auto                # csv | nmea (GGA sentences, one target per file) | auto
  nmea_target_id: 1               # target id of an NMEA log
  max_gap: 1.0                    # seconds; longer gaps interpolate to "unknown"
  max_speed: 150.0                # m/s; a position jumping faster between two samples is an error
presence:                         # per target, per stream: when it is in the camera's view
  - {stream: rgb, target_id: 1, start: 0.0, end: 12.5}
meta: {}                          # free-form (the generator's seed, object kinds, ...)
```

Angles: pan is the azimuth clockwise from north, tilt the elevation above the horizon, roll about
the optical axis, all in degrees. Camera frame: x right, y down, z forward (OpenCV).

Paths are relative to the folder and must stay inside it (no absolute path, no `..` out of it): a
flight folder received from someone else reads nothing else on the machine. Data kept elsewhere is
linked into the folder; a symbolic link inside it is followed (`dronetrack import-svanstrom` links its
videos so).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.config import from_dict, load_yaml, require
from pipeline.errors import InputError


@dataclass
class Calibration:
    fx: float
    fy: float
    cx: float
    cy: float
    dist: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0, 0.0])
    mount_pan: float = 0.0
    mount_tilt: float = 0.0
    mount_roll: float = 0.0
    mount_offset: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])

    def validate(self, prefix: str) -> None:
        require(self.fx > 0 and self.fy > 0, prefix + "fx", "focal lengths must be positive")
        require(len(self.dist) in (4, 5, 8), prefix + "dist", "needs 4, 5 or 8 coefficients")
        require(len(self.mount_offset) == 3, prefix + "mount_offset", "needs 3 values (east, north, up)")


@dataclass
class StreamSpec:
    modality: Literal["rgb", "thermal"]
    video: str | None = None
    fps: float | None = None
    timestamps: str | None = None
    t0: float = 0.0
    width: int | None = None
    height: int | None = None
    calibration: Calibration | None = None
    gt: str | None = None
    annotated: list[tuple[int, int]] | None = None
    frames: str | None = None  # a folder of images (pipeline/io/frames.py), instead of `video`

    def validate(self, prefix: str) -> None:
        require((self.video is None) != (self.frames is None), prefix + "video",
                "give exactly one of video (a video file) or frames (a folder of images)")
        require(self.fps is not None or self.timestamps is not None or self.frames is not None, prefix + "fps",
                "give fps or a timestamps file")
        require(self.fps is None or self.fps > 0, prefix + "fps", "must be positive")
        for i, (a, b) in enumerate(self.annotated or []):
            require(1 <= a <= b, f"{prefix}annotated[{i}]", "ranges are [first, last] with 1 <= first <= last")

    def is_annotated(self, frame: int) -> bool:
        if self.annotated is None:
            return True
        return any(a <= frame <= b for a, b in self.annotated)


@dataclass
class TelemetrySpec:
    gps_rtk: str | None = None
    camera: str | None = None
    clock_offset: float = 0.0
    max_gap: float = 1.0
    gps_format: Literal["auto", "csv", "nmea"] = "auto"  # auto: a .nmea file or a first line starting with '$'
    nmea_target_id: int = 1  # target id of an NMEA log (one target per file)
    max_speed: float = 150.0  # m/s: a faster jump between two samples of a log is an error (a glitch)

    def validate(self, prefix: str) -> None:
        require(self.max_gap > 0, prefix + "max_gap", "must be positive")
        require(self.max_speed > 0, prefix + "max_speed", "must be positive")
        require(self.nmea_target_id >= 0, prefix + "nmea_target_id", "must not be negative")


@dataclass
class PresenceWindow:
    stream: str
    target_id: int
    start: float
    end: float

    def validate(self, prefix: str) -> None:
        require(self.end >= self.start, prefix + "end", "must not be before start")


@dataclass
class FlightSpec:
    streams: dict[str, StreamSpec]
    name: str = ""
    telemetry: TelemetrySpec = field(default_factory=TelemetrySpec)
    presence: list[PresenceWindow] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        require(len(self.streams) > 0, prefix + "streams", "a flight needs at least one stream")
        for i, w in enumerate(self.presence):
            require(w.stream in self.streams, f"{prefix}presence[{i}].stream", f"no stream named {w.stream!r}")


@dataclass
class Flight:
    """A loaded flight folder: the validated spec plus its root, with paths resolved."""

    root: Path
    spec: FlightSpec

    @property
    def streams(self) -> dict[str, StreamSpec]:
        return self.spec.streams

    def path(self, rel: str | None) -> Path | None:
        return None if rel is None else (self.root / rel)

    def video_path(self, stream: str) -> Path:
        """The stream's video file, or its folder of images (`frames:`)."""
        s = self.spec.streams[stream]
        return self.root / (s.frames if s.frames is not None else s.video)

    def gt_path(self, stream: str) -> Path | None:
        return self.path(self.spec.streams[stream].gt)

    @property
    def name(self) -> str:
        return self.spec.name or self.root.name


def _check_inside(rel: str | None, key: str, manifest: Path) -> None:
    """A path of flight.yaml must stay inside the flight folder: relative, and no `..` leading out of
    it. Data kept elsewhere is linked into the folder (a symbolic link inside it is followed), as
    `dronetrack import-svanstrom` does, so a flight folder from someone else reads nothing outside."""
    if rel is None:
        return
    if Path(rel).is_absolute() or os.path.normpath(rel).split(os.sep)[0] == "..":
        raise InputError(f"{key}: {rel} is outside the flight folder (paths are relative to it; "
                         "link data kept elsewhere into the folder)", manifest)


def load_flight(folder: str | Path) -> Flight:
    """Read and validate `folder/flight.yaml`; every named file must exist, inside the folder."""
    root = Path(folder)
    if not root.exists():
        raise InputError("no such flight folder", root)
    if root.is_file() and root.name.endswith((".yaml", ".yml")):
        root = root.parent
    manifest = root / "flight.yaml"
    if not manifest.is_file():
        raise InputError("not a flight folder (no flight.yaml)", root)
    from pipeline.errors import ConfigError

    data = load_yaml(manifest)
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping (streams, telemetry, ...) at the top level, got "
                         f"{type(data).__name__}", manifest)
    try:
        spec = from_dict(FlightSpec, data, "")
    except ConfigError as e:
        raise InputError(str(e), manifest) from None
    flight = Flight(root, spec)
    for name, s in spec.streams.items():
        for key in ("video", "timestamps", "gt", "frames"):
            _check_inside(getattr(s, key), f"streams.{name}.{key}", manifest)
    for key in ("gps_rtk", "camera"):
        _check_inside(getattr(spec.telemetry, key), f"telemetry.{key}", manifest)
    for name, s in spec.streams.items():
        for key in ("video", "timestamps", "gt"):
            rel = getattr(s, key)
            if rel is not None and not (root / rel).is_file():
                raise InputError(f"streams.{name}.{key}: file {rel} does not exist", manifest)
        if s.frames is not None and not (root / s.frames).is_dir():
            raise InputError(f"streams.{name}.frames: folder {s.frames} does not exist", manifest)
    for key in ("gps_rtk", "camera"):
        rel = getattr(spec.telemetry, key)
        if rel is not None and not (root / rel).is_file():
            raise InputError(f"telemetry.{key}: file {rel} does not exist", manifest)
    return flight
