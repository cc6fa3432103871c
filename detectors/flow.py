"""Optical-flow input of a two-stream network (Simonyan & Zisserman, NIPS 2014), for a turret that moves.

The temporal stream of a two-stream network sees no pixels, only motion: the horizontal and vertical
displacement fields of the last L frame pairs, stacked into 2L channels. Simonyan & Zisserman compensate
camera motion by subtracting each field's mean vector; a pan-tilt turret slews fast enough that a mean
is not enough (a rotation shifts the image corners differently from its centre), so here the turret's
motion is removed first with the homography the camera-motion stage estimates (previous frame -> this
frame, `detectors.camera_motion`): the previous frame is warped onto the current one and only then is
the flow computed, so the background of a panning camera moves by ~0 px and what still moves is the
target (and wind-blown vegetation). The mean of what remains is then subtracted as in the paper.

One field, `flow_field`:
  1. both grey frames are downscaled by `scale` (DIS is the cost; motion blobs of drones survive x0.5);
  2. the previous frame is warped with the homography (rescaled to the small grid) onto the current one;
     pixels with no source in the previous frame (the strip the camera just uncovered) are invalid;
  3. DIS optical flow (Kroeger et al., ECCV 2016; OpenCV's `DISOpticalFlow`, presets ultrafast, fast,
     medium) is computed from the current frame back to the warped previous one and negated: the field
     is the motion previous -> current sampled on the CURRENT frame's pixels, where the appearance
     stream sees the target, rather than where the target was;
  4. the mean over valid pixels is subtracted per component (optional, `remove_mean`);
  5. the field is upsampled to full resolution and divided by the scale (full-resolution pixels/frame),
     and the invalid pixels, found at full resolution, are set to 0 (no evidence of motion there).

`FlowStack` (stateful, one per video stream) keeps the last L fields, each clipped to +-clip px and
divided by clip (values in [-1, 1]), and returns them as one float32 array (2L, H, W) with channels
(x_0, y_0, x_1, y_1, ..., x_{L-1}, y_{L-1}), field 0 the oldest, field L-1 the newest (the pair
previous -> current frame). Until L fields exist the OLDEST slots are zeros (no motion seen), so the
newest pair is always in the last two channels. The first frame after a start or `reset()` gives all
zeros.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from detectors.camera_motion import resize_matrix

PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


@dataclass
class FlowConfig:
    length: int = 5              # L flow fields stacked -> 2L channels
    scale: float = 0.5           # flow computed on the grey image resized by this factor, in (0, 1]
    preset: str = "ultrafast"    # OpenCV DIS preset: ultrafast | fast | medium
    clip: float = 20.0           # px (full resolution); fields clipped to +-clip, then divided by clip
    remove_mean: bool = True     # subtract each field's mean vector (Simonyan & Zisserman's compensation)

    @property
    def channels(self) -> int:
        return 2 * self.length

    def validate(self, prefix: str = "") -> None:
        checks = [(self.length >= 1, "length", "must be >= 1"),
                  (0.0 < self.scale <= 1.0, "scale", "must be in (0, 1]"),
                  (self.preset in PRESETS, "preset", f"must be one of {', '.join(PRESETS)}"),
                  (self.clip > 0.0, "clip", "must be > 0 (px)")]
        for ok, key, message in checks:
            if not ok:
                raise ValueError(f"{prefix}{key}: {message}")


def make_dis(preset: str = "ultrafast") -> cv2.DISOpticalFlow:
    """OpenCV's DIS optical flow with one of `PRESETS`."""
    if preset not in PRESETS:
        raise ValueError(f"preset: must be one of {', '.join(PRESETS)}")
    return cv2.DISOpticalFlow_create(PRESETS[preset])


def flow_field(dis: cv2.DISOpticalFlow, prev: np.ndarray, cur: np.ndarray, homography: np.ndarray | None = None,
               scale: float = 0.5, remove_mean: bool = True) -> np.ndarray:
    """Motion previous -> current frame left after the camera's motion, (H, W, 2) float32 full-resolution
    px per frame (x, y), sampled on the current frame's pixels. `prev`, `cur`: uint8 grey (H, W);
    `homography`: 3x3 mapping previous-frame pixels to current-frame pixels, None for the identity."""
    if prev.shape != cur.shape or cur.ndim != 2:
        raise ValueError(f"frames must be two grey images of one size, got {prev.shape} and {cur.shape}")
    h, w = cur.shape
    small = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 order (width, height)
    sx, sy = small[0] / w, small[1] / h
    prev_s, cur_s = (np.ascontiguousarray(_resize(g, small)) for g in (prev, cur))  # DIS needs contiguous
    valid = valid_s = None
    if homography is not None:
        homography = np.asarray(homography, np.float64)
        a = resize_matrix(sx, sy)
        hs = a @ homography @ np.linalg.inv(a)
        prev_s = cv2.warpPerspective(prev_s, hs, small, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        valid_s, valid = _covered(hs, small), _covered(homography, (w, h))
    flow = -dis.calc(cur_s, prev_s, None)  # cur(x) ~ prev(x + d): the motion prev -> cur at x is -d
    if remove_mean:
        sample = (flow if valid_s is None else flow[valid_s]).reshape(-1, 2)
        if len(sample):  # a homography that leaves nothing of the previous frame: nothing to average
            flow -= sample.mean(axis=0)
    if small != (w, h):
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
    flow[..., 0] /= sx
    flow[..., 1] /= sy
    if valid is not None:
        flow[~valid] = 0.0  # at full resolution: the upsampling blurs a mask applied on the small grid
    return flow.astype(np.float32, copy=False)


def _covered(homography: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: the current-frame pixels that the previous frame, warped by `homography`, covers."""
    ones = np.ones(size[::-1], np.uint8)
    return cv2.warpPerspective(ones, homography, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0) > 0


def _resize(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return gray if size == gray.shape[::-1] else cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def stack_flows(fields: list[np.ndarray], length: int) -> np.ndarray:
    """Stack up to `length` fields (H, W, 2), oldest first, into (2 * length, H, W) float32 with channels
    (x_0, y_0, ..., x_{L-1}, y_{L-1}); with fewer fields the oldest slots are zeros; with more, only the
    newest `length` are kept."""
    if length < 1:
        raise ValueError("length: must be >= 1")
    if not fields:
        raise ValueError("fields: give at least one field (its size sets the output's)")
    fields = fields[-length:]
    h, w, two = fields[-1].shape
    if two != 2 or any(f.shape != (h, w, 2) for f in fields):
        raise ValueError(f"fields: expected (H, W, 2) arrays of one size, got {[f.shape for f in fields]}")
    out = np.zeros((2 * length, h, w), np.float32)
    start = 2 * (length - len(fields))
    for i, f in enumerate(fields):
        out[start + 2 * i: start + 2 * i + 2] = f.transpose(2, 0, 1)
    return out


class FlowStack:
    """`stack(gray (H, W) uint8, homography 3x3 previous -> this frame or None) -> (2L, H, W) float32`
    in [-1, 1] (see the module docstring for the channel order). One instance per video stream."""

    def __init__(self, cfg: FlowConfig | None = None) -> None:
        self.cfg = cfg or FlowConfig()
        self.cfg.validate()
        self._dis = make_dis(self.cfg.preset)
        self.reset()

    def reset(self) -> None:
        self._prev: np.ndarray | None = None
        self._fields: deque[np.ndarray] = deque(maxlen=self.cfg.length)

    def __call__(self, gray: np.ndarray, homography: np.ndarray | None = None) -> np.ndarray:
        if gray.ndim == 3:
            gray = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)
        if gray.dtype != np.uint8 or gray.ndim != 2:
            raise ValueError(f"gray: expected a uint8 (H, W) image, got {gray.dtype} {gray.shape}")
        if self._prev is not None and self._prev.shape != gray.shape:
            # A new size is a new stream (another source, a resolution switch): old fields no longer line
            # up with the image, and the homography was estimated against a frame of another size.
            self.reset()
        if self._prev is not None:
            c = self.cfg
            f = flow_field(self._dis, self._prev, gray, homography, c.scale, c.remove_mean)
            self._fields.append(np.clip(f, -c.clip, c.clip) / np.float32(c.clip))
        self._prev = gray.copy()
        if not self._fields:
            return np.zeros((self.cfg.channels, *gray.shape), np.float32)
        return stack_flows(list(self._fields), self.cfg.length)
