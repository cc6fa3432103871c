"""Registering one turret camera's image onto another's pixel grid through the calibrations in flight.yaml.

The RGB and thermal cameras sit on the same pan-tilt turret and turn together, so a scene point's direction
in one camera is a fixed rotation of its direction in the other: R_other R_ref^T, from the mount angles
(`Calibration.mount_pan/tilt/roll`). For each pixel of the reference grid, the ray is found with the
reference camera's intrinsics and lens distortion removed (`geometry.pixel_rays`), then projected into the
other camera with its intrinsics and distortion (`geometry.project_enu`); `cv2.remap` then samples the
other image there. The mount offset (up to about 0.2 m on the synthetic turret) makes a parallax of
offset / range * f pixels: under one thermal pixel (f = 560 px) beyond about 100 m, 2-3 px at 35 m. It is
neglected (the range of a non-cooperative target is unknown), as is the mount angles' slight dependence on
the turret's tilt (they are added to pan and tilt, not composed; the grid is computed at pan = tilt = 0;
0.3 px at 12 degrees of tilt on the synthetic turret). Where the other camera's pixel size is much smaller than the
reference's (RGB onto the thermal grid: about 1.4 RGB pixels per thermal pixel), the other image is first
area-downscaled so that remap does not alias.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.io.flight import Calibration
from pipeline.geometry.camera import CameraPose, pixel_rays, project_enu

FAR = 1.0e6  # metres along each ray: parallax from the mount offset vanishes


def _map_points(uv: np.ndarray, src: Calibration, dst: Calibration) -> np.ndarray:
    """Pixels (N, 2) of camera `src` -> pixels (N, 2) of camera `dst` (NaN where dst cannot see them)."""
    pose = CameraPose()
    rays = pixel_rays(np.asarray(uv, float).reshape(-1, 2), pose, src)
    out, _ = project_enu(rays * FAR, pose, dst)
    return out


class Registration:
    """The `other` camera's images on the `ref` camera's grid (`warp`), and points or boxes between them."""

    def __init__(self, ref: Calibration, ref_size: tuple[int, int], other: Calibration,
                 other_size: tuple[int, int]) -> None:
        self.ref, self.other = ref, other
        self.ref_size, self.other_size = tuple(ref_size), tuple(other_size)  # (width, height)
        w, h = self.ref_size
        xs, ys = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
        src = _map_points(np.column_stack([xs.ravel(), ys.ravel()]), ref, other).reshape(h, w, 2)
        ow, oh = self.other_size
        inside = np.isfinite(src).all(2) & (src[..., 0] >= -0.5) & (src[..., 0] <= ow - 0.5) \
            & (src[..., 1] >= -0.5) & (src[..., 1] <= oh - 0.5)
        self.valid = inside  # (h, w) bool: reference pixels the other camera sees
        # Other-camera pixels per reference pixel: the median step of the map along x.
        steps = np.linalg.norm(np.diff(src, axis=1), axis=2)
        step = float(np.median(steps[np.isfinite(steps)])) if np.isfinite(steps).any() else 1.0
        self.prescale = 1.0 / step if step > 1.25 else 1.0  # < 1: area-downscale first when remap would alias
        src = np.where(np.isfinite(src), src, -1e4) * self.prescale
        if self.prescale != 1.0:  # pixel centres: x_small = (x + 0.5) * s - 0.5
            src = src + 0.5 * self.prescale - 0.5
        self.map_x = src[..., 0].astype(np.float32)
        self.map_y = src[..., 1].astype(np.float32)

    def warp(self, image: np.ndarray) -> np.ndarray:
        """The other camera's image (its own size) resampled onto the reference grid; zeros outside."""
        oh, ow = image.shape[:2]
        if (ow, oh) != self.other_size:
            raise ValueError(f"image is {ow}x{oh}, the registration expects {self.other_size[0]}x{self.other_size[1]}")
        if self.prescale != 1.0:
            size = (max(1, round(ow * self.prescale)), max(1, round(oh * self.prescale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return cv2.remap(image, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def to_other(self, uv: np.ndarray) -> np.ndarray:
        """Reference pixels (N, 2) -> other-camera pixels (N, 2) (NaN where not seen)."""
        return _map_points(uv, self.ref, self.other)

    def to_ref(self, uv: np.ndarray) -> np.ndarray:
        """Other-camera pixels (N, 2) -> reference pixels (N, 2)."""
        return _map_points(uv, self.other, self.ref)

    def boxes_to_other(self, xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference-grid boxes (N, 4) -> the other camera's boxes (the corners' bounding box), clipped to
        its image, and a mask of the boxes it sees (all four corners mapped)."""
        return _boxes(xyxy, self.to_other, self.other_size)

    def boxes_to_ref(self, xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _boxes(xyxy, self.to_ref, self.ref_size)


def _boxes(xyxy: np.ndarray, fn, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(xyxy, float).reshape(-1, 4)
    if not len(b):
        return np.zeros((0, 4), np.float32), np.zeros(0, bool)
    corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [0, 3]], b[:, [2, 3]]], 1).reshape(-1, 2)
    # Box corners are pixel edges (pixel i spans [i, i + 1]); the maps take pixel centres.
    pts = (fn(corners - 0.5) + 0.5).reshape(-1, 4, 2)
    ok = np.isfinite(pts).all((1, 2))
    pts = np.where(np.isfinite(pts), pts, 0.0)
    out = np.concatenate([pts.min(1), pts.max(1)], 1)
    w, h = size
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    ok &= (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out.astype(np.float32), ok
