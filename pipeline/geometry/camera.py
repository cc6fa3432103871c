"""Camera geometry: WGS84 <-> local ENU, turret pose -> camera rotation, pinhole projection.

Conventions (as in pipeline/io/flight.py):
- Geodetic coordinates are WGS84 latitude and longitude in degrees and ellipsoidal height in metres.
- ENU is a local east-north-up frame in metres whose origin is a reference point (lat, lon, alt).
- pan is the azimuth of the optical axis clockwise from north, tilt its elevation above the horizon,
  roll a rotation about the optical axis (positive turns the camera's x axis towards its y axis, so the
  scene appears turned anticlockwise in the image), all in degrees.
- Camera frame (OpenCV): x right, y down, z forward. At pan = tilt = roll = 0 the camera looks north
  with x pointing east and y pointing down.
- A stream's `Calibration` adds mount_pan/tilt/roll to the turret's angles and places the camera at
  mount_offset (east, north, up metres) from the turret's reference point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from pyproj import Transformer

from pipeline.io.flight import Calibration

Geodetic = tuple[float, float, float]


@lru_cache(maxsize=1)
def _lla_to_ecef() -> Transformer:
    return Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)


def _ecef_to_enu_matrix(lat: float, lon: float) -> np.ndarray:
    """Rows: east, north, up unit vectors expressed in ECEF."""
    la, lo = np.radians(lat), np.radians(lon)
    sa, ca, so, co = np.sin(la), np.cos(la), np.sin(lo), np.cos(lo)
    return np.array([[-so, co, 0.0], [-sa * co, -sa * so, ca], [ca * co, ca * so, sa]])


def _ref_ecef(ref: Geodetic) -> np.ndarray:
    return np.array(_lla_to_ecef().transform(ref[1], ref[0], ref[2]))


def geodetic_to_enu(lat, lon, alt, ref: Geodetic) -> np.ndarray:
    """WGS84 (degrees, ellipsoidal metres; scalars or arrays) -> ENU metres at `ref` (lat, lon, alt),
    shape (..., 3)."""
    x, y, z = _lla_to_ecef().transform(np.asarray(lon, float), np.asarray(lat, float), np.asarray(alt, float))
    d = np.stack([x, y, z], axis=-1) - _ref_ecef(ref)
    return d @ _ecef_to_enu_matrix(ref[0], ref[1]).T


def enu_to_geodetic(enu, ref: Geodetic) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ENU metres (..., 3) at `ref` -> (lat, lon, alt) WGS84 arrays."""
    ecef = np.asarray(enu, float) @ _ecef_to_enu_matrix(ref[0], ref[1]) + _ref_ecef(ref)
    lon, lat, alt = _lla_to_ecef().transform(ecef[..., 0], ecef[..., 1], ecef[..., 2], direction="INVERSE")
    return np.asarray(lat), np.asarray(lon), np.asarray(alt)


def camera_rotation(pan: float, tilt: float, roll: float = 0.0) -> np.ndarray:
    """3x3 rotation taking ENU vectors to camera-frame vectors (rows are the camera's x, y, z axes in ENU)."""
    p, t, r = math.radians(pan), math.radians(tilt), math.radians(roll)
    sp, cp, st, ct, sr, cr = math.sin(p), math.cos(p), math.sin(t), math.cos(t), math.sin(r), math.cos(r)
    right = (cp, -sp, 0.0)
    down = (st * sp, st * cp, -ct)
    return np.array([[cr * a + sr * b for a, b in zip(right, down)],
                     [-sr * a + cr * b for a, b in zip(right, down)],
                     [sp * ct, cp * ct, st]])


def direction_to_pan_tilt(vec_enu) -> tuple[np.ndarray, np.ndarray]:
    """Pan and tilt (degrees) that point the optical axis along ENU vectors (..., 3)."""
    v = np.asarray(vec_enu, float)
    pan = np.degrees(np.arctan2(v[..., 0], v[..., 1])) % 360.0
    tilt = np.degrees(np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1])))
    return pan, tilt


@dataclass(frozen=True)
class CameraPose:
    """The turret's pose: position in the local ENU frame (metres) and angles in degrees."""

    enu: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pan: float = 0.0
    tilt: float = 0.0
    roll: float = 0.0


def camera_matrix(cal: Calibration) -> np.ndarray:
    return np.array([[cal.fx, 0.0, cal.cx], [0.0, cal.fy, cal.cy], [0.0, 0.0, 1.0]])


def stream_extrinsics(pose: CameraPose, cal: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """(R, centre): ENU -> camera rotation and the camera centre in ENU for one stream on the turret."""
    rot = camera_rotation(pose.pan + cal.mount_pan, pose.tilt + cal.mount_tilt, pose.roll + cal.mount_roll)
    centre = np.asarray(pose.enu, float) + np.asarray(cal.mount_offset, float)
    return rot, centre


@lru_cache(maxsize=64)
def max_valid_radius(dist: tuple[float, ...]) -> float:
    """Largest normalised radius (tan of the off-axis angle) up to which the radial distortion model
    still grows with the radius; beyond it the model folds back and projections are meaningless."""
    k = list(dist) + [0.0] * (8 - len(dist))
    r = np.linspace(1e-3, 20.0, 20000)
    r2 = r * r
    radial = (1 + k[0] * r2 + k[1] * r2**2 + k[4] * r2**3) / (1 + k[5] * r2 + k[6] * r2**2 + k[7] * r2**3)
    bad = np.flatnonzero(np.diff(r * radial) <= 0)
    return float(r[bad[0]]) if len(bad) else float("inf")


def project_enu(points_enu, pose: CameraPose, cal: Calibration, min_depth: float = 1e-3
                ) -> tuple[np.ndarray, np.ndarray]:
    """Project ENU points (N, 3) into a stream's image: pixels (N, 2) float64 and a mask (N,) of points in
    front of the camera (depth > min_depth) and inside the field where the distortion model holds
    (`max_valid_radius`). Pixels of the other points are NaN."""
    pts = np.asarray(points_enu, float).reshape(-1, 3)
    rot, centre = stream_extrinsics(pose, cal)
    cam = (pts - centre) @ rot.T
    ok = cam[:, 2] > min_depth
    ok[ok] = np.hypot(cam[ok, 0], cam[ok, 1]) / cam[ok, 2] < max_valid_radius(tuple(cal.dist))
    uv = np.full((len(pts), 2), np.nan)
    if ok.any():
        proj, _ = cv2.projectPoints(cam[ok].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), camera_matrix(cal),
                                    np.asarray(cal.dist, float))
        uv[ok] = proj.reshape(-1, 2)
    return uv, ok


def pixel_rays(uv, pose: CameraPose, cal: Calibration) -> np.ndarray:
    """Unit ENU directions (N, 3) of the rays through pixels (N, 2), distortion removed."""
    pix = np.asarray(uv, float).reshape(-1, 1, 2)
    norm = cv2.undistortPoints(pix, camera_matrix(cal), np.asarray(cal.dist, float)).reshape(-1, 2)
    rays_cam = np.column_stack([norm, np.ones(len(norm))])
    rot, _ = stream_extrinsics(pose, cal)
    rays = rays_cam @ rot
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)
