"""Where a cooperative drone can be in a frame: its GPS-RTK position projected through the turret's pose,
grown into a search box by what is uncertain.

The box around the projected pixel is, per image axis,
    swept span of the drone's motion over +- timing_error_s (the drone's velocity times the timing error,
      both ends projected, so the box stretches along the motion)
    + drone_size_m / 2 at the drone's depth
    + margin * hypot(RTK error at that depth, pose error)       (independent errors, in quadrature)
    + the turret's turn over timing_error_s                      (a pose read at the wrong instant)
with the RTK error horizontal for its fix quality (`rtk_error_m`) and `vertical_factor` times larger
vertically (projected on the image axes), and metres turned into pixels as f / depth. The box is at
least `min_box_px` on a side, clipped to the image; None when the drone is behind the camera (or nearer
than `min_depth_m`), so far off-axis that the lens model no longer holds, or its box misses the image.
On synthetic flights the defaults contain every ground-truth box (tests/test_search_region.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipeline.config import require
from pipeline.io.flight import Calibration, StreamSpec
from pipeline.geometry.camera import CameraPose, camera_rotation, geodetic_to_enu, project_enu, stream_extrinsics
from pipeline.io.telemetry import Telemetry
from pipeline.types import TelemetrySample

Box = tuple[float, float, float, float]


@dataclass
class SearchConfig:
    pose_error_deg: float = 0.2       # turret angle error (encoders, mount calibration)
    timing_error_s: float = 0.02      # video vs telemetry clock error
    drone_size_m: float = 0.6         # the cooperative drone's tip-to-tip span
    min_box_px: float = 32.0          # smallest side of a search box
    margin: float = 3.0               # multiplies the RTK and pose errors (typical -> near-bound)
    rtk_error_m: dict[int, float] = field(default_factory=lambda: {4: 0.02, 5: 0.5, 2: 1.0, 1: 3.0})
    unknown_fix_error_m: float = 5.0  # fix qualities missing from rtk_error_m
    vertical_factor: float = 2.0      # vertical GPS error / horizontal
    velocity_dt: float = 0.1          # seconds either side for the drone's velocity and the turret's rate
    min_depth_m: float = 1.0          # nearer (or behind) the camera: no box

    def validate(self, prefix: str) -> None:
        for key in ("pose_error_deg", "timing_error_s", "min_box_px", "unknown_fix_error_m"):
            require(getattr(self, key) >= 0, prefix + key, "must not be negative")
        for key in ("drone_size_m", "margin", "vertical_factor", "velocity_dt", "min_depth_m"):
            require(getattr(self, key) > 0, prefix + key, "must be positive")
        require(all(v >= 0 for v in self.rtk_error_m.values()), prefix + "rtk_error_m", "errors must not be negative")

    def rtk_error(self, fix: int) -> float:
        return self.rtk_error_m.get(int(fix), self.unknown_fix_error_m)


def search_box(target_enu, target_velocity_enu, rtk_error_m: float, pose: CameraPose, cal: Calibration,
               image_size: tuple[int, int], cfg: SearchConfig, turn_rate_dps: float = 0.0) -> Box | None:
    """The search box (x1, y1, x2, y2) of one drone in a stream's image (see the module docstring);
    `turn_rate_dps` is the turret's angular speed in degrees per second."""
    rot, centre = stream_extrinsics(pose, cal)
    p = np.asarray(target_enu, float)
    depth = float((p - centre) @ rot[2])
    if depth < cfg.min_depth_m:
        return None
    sweep = cfg.timing_error_s * np.asarray(target_velocity_enu, float)
    uv, ok = project_enu(np.stack([p, p - sweep, p + sweep]), pose, cal)
    if not ok[0]:
        return None
    lo, hi = uv[ok].min(0), uv[ok].max(0)
    focal = np.array([cal.fx, cal.fy])
    up = rot[:2, 2]  # how much of each image axis is vertical
    rtk_m = rtk_error_m * np.sqrt(1.0 + (cfg.vertical_factor ** 2 - 1.0) * up ** 2)
    pose_px = focal * math.tan(math.radians(cfg.pose_error_deg))
    turn_px = focal * math.tan(math.radians(min(cfg.timing_error_s * abs(turn_rate_dps), 45.0)))
    half = focal / depth * cfg.drone_size_m / 2 + cfg.margin * np.hypot(focal / depth * rtk_m, pose_px) + turn_px
    half = np.maximum(half, (cfg.min_box_px - (hi - lo)) / 2)
    (x1, y1), (x2, y2) = lo - half, hi + half
    w, h = image_size
    if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
        return None
    return max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))


def turret_pose(camera: dict[str, float]) -> tuple[CameraPose, tuple[float, float, float]]:
    """A camera-log sample -> (pose at the ENU origin, that origin's WGS84 lat, lon, alt)."""
    return (CameraPose((0.0, 0.0, 0.0), camera["pan"], camera["tilt"], camera["roll"]),
            (camera["lat"], camera["lon"], camera["alt"]))


def target_velocity(telemetry: Telemetry, target_id: int, t: float, ref, dt: float) -> np.ndarray:
    """ENU velocity (m/s) of a target at video time t by central differences over +- dt (one-sided where
    one end is unknown, zero where both are)."""
    ends = [(s, telemetry.target_at(target_id, s)) for s in (t - dt, t, t + dt)]
    ends = [(s, geodetic_to_enu(x.lat, x.lon, x.alt, ref)) for s, x in ends if x is not None]
    if len(ends) < 2:
        return np.zeros(3)
    (t0, p0), (t1, p1) = ends[0], ends[-1]
    return (p1 - p0) / (t1 - t0)


def turn_rate(telemetry: Telemetry, t: float, dt: float) -> float:
    """The turret's optical axis angular speed (degrees/s) at video time t; 0 where unknown."""
    a, b = telemetry.camera_at(t - dt), telemetry.camera_at(t + dt)
    if a is None or b is None:
        return 0.0
    za, zb = (camera_rotation(c["pan"], c["tilt"], c["roll"])[2] for c in (a, b))
    return math.degrees(math.acos(float(np.clip(za @ zb, -1.0, 1.0)))) / (2 * dt)


def search_boxes_for_frame(sample: TelemetrySample, telemetry: Telemetry, stream: StreamSpec, cfg: SearchConfig,
                           image_size: tuple[int, int] | None = None) -> list[tuple[int, Box | None]] | None:
    """Every cooperative target's search box in one stream's frame at `sample.t`: [(target_id, box)],
    box None where the target cannot be in this view; [] when the log has no target. None (search the
    whole frame) when the turret's pose, the stream's calibration or any logged target's position is
    unknown at that instant.
    `image_size` (width, height) defaults to the stream's."""
    cal = stream.calibration
    known = {s.target_id for s in sample.targets}
    if sample.camera is None or cal is None or known != set(telemetry.targets):
        return None
    size = image_size or (stream.width, stream.height)
    if None in size:
        raise ValueError("search_boxes_for_frame needs the image size (the stream gives no width/height)")
    pose, ref = turret_pose(sample.camera)
    rate = turn_rate(telemetry, sample.t, cfg.velocity_dt)
    out = []
    for s in sample.targets:
        enu = geodetic_to_enu(s.lat, s.lon, s.alt, ref)
        vel = target_velocity(telemetry, s.target_id, sample.t, ref, cfg.velocity_dt)
        out.append((s.target_id, search_box(enu, vel, cfg.rtk_error(s.fix), pose, cal, size, cfg, rate)))
    return out
