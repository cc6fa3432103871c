"""The classical baseline: motion and contrast, no training.

Motion: a per-pixel Gaussian background (running mean and variance, the single-mode case of the GMM
foreground detection Svanstrom et al. used) is warped into the current frame with the camera's
frame-to-frame homography, so the turret's pan and tilt do not show up as motion. A pixel's evidence z
is its distance to the range of the background over a small neighbourhood (which absorbs sub-pixel
registration error at sharp edges), after removing the global brightness change (gain control), over
the larger of the background's standard deviation and the local clutter (a high percentile of the
difference over its block: shimmering texture differs a little almost everywhere, a target in few
pixels). Background just uncovered by the camera's motion gives no evidence for `warmup_frames`.
Where the background, not the frame, stands out from its neighbourhood, the difference is a ghost (a
target that has left) and is healed instead of reported.

Contrast (thermal): warm blobs, the image minus a Gaussian-blurred copy, over the local clutter level,
so that a hovering drone the motion model has absorbed is still found.

Each channel is thresholded with hysteresis (seed above `threshold_<modality>`, extent above
`low_threshold`) into connected components with size limits; a box spans the component's pixels
above `box_fraction_<modality>` of its peak; the boxes of both channels go through NMS; a box's score
is its peak z mapped to z / (z + score_z50), in (0, 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Boxes = tuple[np.ndarray, np.ndarray]


@dataclass
class MotionConfig:
    learning_rate: float = 0.05        # background update rate per frame
    foreground_rate: float = 0.005     # mean update rate where foreground was found (a hovering target fades slowly)
    init_sigma: float = 6.0            # grey levels: std of a background pixel seen once
    warmup_frames: int = 3             # a background pixel gives evidence once seen more often than this
    min_sigma: float = 2.0             # grey levels: floor of the background std
    align_radius: int = 1              # px: background range taken over a (2r+1)^2 neighbourhood
    threshold_rgb: float = 6.0         # z a motion component's peak must exceed, RGB stream
    threshold_thermal: float = 5.0     # the same, thermal stream
    low_threshold: float = 2.5         # z of a motion component's extent (hysteresis)
    motion_clutter: float = 3.0        # z is also against this times the block's 75th-percentile difference (0: off)
    ghost_window: int = 15             # px: neighbourhood that tells a ghost (the background stands out) from a target
    warm_blobs: bool = True            # contrast channel (warm on cooler surroundings) on the thermal stream
    dark_blobs: bool = False           # contrast channel (dark on brighter surroundings) on the RGB stream
    blob_sigma: float = 6.0            # px: Gaussian sigma of the local background of the contrast channel
    blob_threshold: float = 6.0        # z (local clutter units) a contrast component's peak must exceed
    blob_low_threshold: float = 3.0
    clutter_block: int = 32            # px: blocks over which both channels measure clutter
    blob_border: int = 4               # px along the image edges where the contrast channel is off
    box_fraction_rgb: float = 0.2      # a box spans its component's pixels above this fraction of the peak z
    box_fraction_thermal: float = 0.4  # the same, thermal stream (its optics blur more)
    merge_radius: int = 1              # px: components closer than this merge (dilation radius)
    min_area: int = 2                  # px of a component inside its box
    max_area: float = 0.02             # fraction of the image a box may cover
    max_aspect: float = 4.0            # long side / short side of a box
    max_foreground: float = 0.25       # fraction of the image in motion: the model is reset (lighting jump)
    nms_iou: float = 0.3
    max_detections: int = 30
    score_z50: float = 10.0            # the z that scores 0.5

    def validate(self, prefix: str = "") -> None:
        def check(cond: bool, key: str, message: str) -> None:
            if not cond:
                raise ValueError(f"{prefix}{key}: {message}")

        check(0 < self.learning_rate <= 1, "learning_rate", "must be in (0, 1]")
        check(0 <= self.foreground_rate <= self.learning_rate, "foreground_rate", "must be in [0, learning_rate]")
        check(self.init_sigma > 0, "init_sigma", "must be positive")
        check(self.min_sigma > 0, "min_sigma", "must be positive")
        check(self.warmup_frames >= 0, "warmup_frames", "must not be negative")
        check(0 <= self.align_radius <= 5, "align_radius", "must be in 0..5")
        for m in ("rgb", "thermal"):
            check(getattr(self, f"threshold_{m}") >= self.low_threshold, f"threshold_{m}", "must be >= low_threshold")
            check(0 <= getattr(self, f"box_fraction_{m}") < 1, f"box_fraction_{m}", "must be in [0, 1)")
        check(self.low_threshold > 0, "low_threshold", "must be positive")
        check(self.motion_clutter >= 0, "motion_clutter", "must not be negative")
        check(self.ghost_window >= 3, "ghost_window", "must be at least 3")
        check(self.blob_sigma >= 1, "blob_sigma", "must be at least 1")
        check(self.blob_threshold > 0, "blob_threshold", "must be positive")
        check(0 < self.blob_low_threshold <= self.blob_threshold, "blob_low_threshold",
              "must be in (0, blob_threshold]")
        check(self.clutter_block >= 4, "clutter_block", "must be at least 4")
        check(self.blob_border >= 0, "blob_border", "must not be negative")
        check(0 <= self.merge_radius <= 10, "merge_radius", "must be in 0..10")
        check(self.min_area >= 1, "min_area", "must be at least 1")
        check(0 < self.max_area <= 1, "max_area", "must be in (0, 1]")
        check(self.max_aspect >= 1, "max_aspect", "must be at least 1")
        check(0 < self.max_foreground <= 1, "max_foreground", "must be in (0, 1]")
        check(0 <= self.nms_iou <= 1, "nms_iou", "must be in [0, 1]")
        check(self.max_detections >= 1, "max_detections", "must be at least 1")
        check(self.score_z50 > 0, "score_z50", "must be positive")


def _empty() -> Boxes:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)


class MotionDetector:
    """`detect(image, homography)` -> (xyxy float32 (N, 4), scores float32 (N,) in (0, 1)).

    `image`: HxW or HxWx3 (BGR) uint8; `homography`: previous frame -> this frame, or None (no
    compensation). The first frame (and the first after `reset()` or a size change) only seeds the
    background, so motion boxes start on the second frame; thermal warm blobs are found at once."""

    def __init__(self, cfg: MotionConfig | None = None, modality: Literal["rgb", "thermal"] = "rgb") -> None:
        if modality not in ("rgb", "thermal"):
            raise ValueError(f"modality: {modality!r} is not 'rgb' or 'thermal'")
        self.cfg = cfg or MotionConfig()
        self.cfg.validate()
        self.modality = modality
        self.polarity = 1.0 if modality == "thermal" else -1.0  # white-hot thermal; dark targets on sky in RGB
        self.contrast = self.cfg.warm_blobs if modality == "thermal" else self.cfg.dark_blobs
        self.threshold = getattr(self.cfg, f"threshold_{modality}")
        self.box_fraction = getattr(self.cfg, f"box_fraction_{modality}")
        r, m = self.cfg.align_radius, self.cfg.merge_radius
        self._align = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1, 2 * r + 1)) if r else None
        self._merge = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * m + 1, 2 * m + 1)) if m else None
        self.reset()

    def reset(self) -> None:
        self._bg: np.ndarray | None = None  # HxWx3 float32: mean, variance, frames seen (age)

    def detect(self, image: np.ndarray, homography: np.ndarray | None) -> Boxes:
        gray = _gray(image)
        if gray.size == 0:
            return _empty()
        boxes = self._motion(gray, homography)
        if self.contrast:
            boxes = self._fuse(boxes, self._blobs(gray))
        return self._nms(boxes)

    # motion channel -----------------------------------------------------------------------------
    def _motion(self, gray: np.ndarray, homography: np.ndarray | None) -> Boxes:
        c = self.cfg
        if self._bg is None or self._bg.shape[:2] != gray.shape:
            self._seed(gray)
            return _empty()
        bg = self._warp(homography)
        mean, var, age = bg[..., 0], bg[..., 1], bg[..., 2]
        fresh = np.isnan(mean)  # uncovered by the camera's motion: seeded from this frame
        if fresh.any():
            bg[fresh] = (0.0, c.init_sigma ** 2, 0.0)
            mean[fresh] = gray[fresh]
        age += 1.0
        offset = float(np.median(gray[::4, ::4] - mean[::4, ::4]))  # global gain / offset change
        g = gray - offset
        lo, hi = (mean, mean) if self._align is None else (cv2.erode(mean, self._align), cv2.dilate(mean, self._align))
        diff = np.maximum(np.maximum(g - hi, lo - g), 0.0)
        sigma = pixel_sigma = np.sqrt(np.maximum(var, c.min_sigma ** 2))
        if c.motion_clutter > 0:  # shimmering texture: many pixels of its block differ a little; a large
            # target's pixels differ a lot and are left out, so that it does not hide itself
            modest = np.where(diff > self.threshold * sigma, np.float32(0.0), diff)
            sigma = np.maximum(sigma, c.motion_clutter * self._clutter(modest, 0.75))
        z = diff / sigma
        z[age <= c.warmup_frames] = 0.0  # a background seen this few times is not trusted yet
        self._heal_ghosts(z, g, mean, sigma)
        low = (z > c.low_threshold).astype(np.uint8)
        if low.mean() > c.max_foreground:  # lighting jump or a failed homography: start again
            self._seed(gray)
            return _empty()
        self._update(bg, g, np.minimum(diff, self.threshold * pixel_sigma),
                     low if self._merge is None else cv2.dilate(low, self._merge))
        return self._components(z, c.low_threshold, self.threshold)

    def _seed(self, gray: np.ndarray) -> None:
        self._bg = np.dstack([gray, np.full_like(gray, self.cfg.init_sigma ** 2), np.zeros_like(gray)])

    def _warp(self, homography: np.ndarray | None) -> np.ndarray:
        """The background in this frame's pixels (cubic: repeated linear warps would blur it); NaN where
        the camera's motion uncovered what the background has not seen."""
        if homography is None or np.allclose(homography, np.eye(3), atol=1e-6):
            return self._bg
        h, w = self._bg.shape[:2]
        return cv2.warpPerspective(self._bg, np.asarray(homography, np.float64), (w, h), flags=cv2.INTER_CUBIC,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=(np.nan, np.nan, np.nan))

    def _heal_ghosts(self, z: np.ndarray, g: np.ndarray, mean: np.ndarray, sigma: np.ndarray) -> None:
        """Where the background, not the frame, stands out from its neighbourhood, the difference is a
        ghost (a target that was in the first frame, or hovered and left): no evidence there, and the
        background takes the frame's value at once."""
        k = (self.cfg.ghost_window, self.cfg.ghost_window)
        ghost = np.abs(mean - cv2.blur(mean, k)) > np.abs(g - cv2.blur(g, k)) + self.cfg.low_threshold * sigma
        z[ghost] = 0.0
        mean[ghost] = g[ghost]

    def _update(self, bg: np.ndarray, g: np.ndarray, diff: np.ndarray, fg: np.ndarray) -> None:
        """Running mean and variance, both slowly where foreground: a hovering target fades late, and
        clutter that keeps differing (flicker, parallax) is learnt as variance in the end. `diff` comes
        clipped at `threshold` sigmas, so a passing target leaves no trail of raised variance."""
        c = self.cfg
        rate = np.where(fg == 0, np.float32(c.learning_rate), np.float32(c.foreground_rate))
        np.maximum(rate, 1.0 / (bg[..., 2] + 1.0), out=rate)  # a young background averages its first frames
        bg[..., 0] += rate * (g - bg[..., 0])
        var = bg[..., 1]
        var += rate * (diff * diff - var)
        np.maximum(var, 0.0, out=var)  # cubic warping can overshoot below zero
        self._bg = bg

    # contrast channel ---------------------------------------------------------------------------
    def _blobs(self, gray: np.ndarray) -> Boxes:
        c = self.cfg
        contrast = self.polarity * (gray - cv2.GaussianBlur(gray, (0, 0), c.blob_sigma))
        z = contrast / (1.4826 * self._clutter(contrast, 0.5))
        m = c.blob_border
        if m:  # sensors' edge rows and columns are often hot or cold; targets entering are found by motion
            z[:m], z[-m:], z[:, :m], z[:, -m:] = 0, 0, 0, 0
        return self._components(z, c.blob_low_threshold, c.blob_threshold)

    def _clutter(self, values: np.ndarray, quantile: float) -> np.ndarray:
        """Per-pixel clutter level of a contrast or difference image: the `quantile` of |value| over each
        `clutter_block` square, spread to its neighbours, never below the image's quietest blocks. Warm
        ground, trees, roofs and shimmering grass are cluttered, the sky is not; a target covering less
        than 1 - quantile of a block does not raise its own block's level. Every other row and column
        of a block is sampled (four times faster, as good an estimate)."""
        b = self.cfg.clutter_block
        h, w = values.shape
        hb, wb = max(1, h // b), max(1, w // b)
        bh, bw = h // hb, w // wb
        st = 2 if bh % 2 == 0 and bw % 2 == 0 and min(bh, bw) >= 8 else 1
        a = np.abs(values[: hb * bh: st, : wb * bw: st])
        blocks = a.reshape(hb, bh // st, wb, bw // st).transpose(0, 2, 1, 3).reshape(hb, wb, -1)
        k = int(quantile * (blocks.shape[-1] - 1))
        grid = np.partition(blocks, k, axis=-1)[..., k]
        floor = max(float(np.percentile(grid, 10)), self.cfg.min_sigma / 3)
        grid = cv2.dilate(np.maximum(grid, floor).astype(np.float32), np.ones((3, 3), np.uint8))
        return cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)

    # shared -------------------------------------------------------------------------------------
    def _components(self, z: np.ndarray, low_threshold: float, threshold: float) -> Boxes:
        """Hysteresis components of z > low_threshold (merged within merge_radius) whose peak exceeds
        `threshold`, with size limits; a box spans its component's pixels above both low_threshold and
        box_fraction of the peak (the faint halo of optics and motion blur is left out)."""
        c = self.cfg
        seeds = z > threshold
        if not seeds.any():
            return _empty()
        mask = (z > low_threshold).astype(np.uint8)
        if self._merge is not None:
            mask = cv2.dilate(mask, self._merge)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        peaks = np.zeros(n, np.float32)
        np.maximum.at(peaks, labels[seeds], z[seeds])
        max_area = c.max_area * z.size
        boxes, zs = [], []
        for k in np.flatnonzero(peaks > threshold):
            x, y, w, h, _ = stats[k]
            extent = max(low_threshold, self.box_fraction * peaks[k])
            part = (labels[y:y + h, x:x + w] == k) & (z[y:y + h, x:x + w] > extent)
            ys, xs = np.nonzero(part)
            if len(xs) < c.min_area:
                continue
            bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            if bw * bh > max_area or max(bw, bh) > c.max_aspect * min(bw, bh):
                continue
            boxes.append((x + xs.min(), y + ys.min(), x + xs.min() + bw, y + ys.min() + bh))
            zs.append(peaks[k])
        if not boxes:
            return _empty()
        zp = np.asarray(zs, np.float32)
        return np.asarray(boxes, np.float32), zp / (zp + np.float32(c.score_z50))

    def _fuse(self, motion: Boxes, blobs: Boxes) -> Boxes:
        """Both channels' boxes; a motion box that overlaps a blob grows to their union (a slow target's
        trailing part looks like background to the motion model, not to the contrast channel) and keeps
        the higher score, and the blobs it overlaps are dropped."""
        (mb, ms), (bb, bs) = motion, blobs
        if len(mb) == 0 or len(bb) == 0:
            return np.concatenate([mb, bb]), np.concatenate([ms, bs])
        lo, hi = np.maximum(mb[:, None, :2], bb[None, :, :2]), np.minimum(mb[:, None, 2:], bb[None, :, 2:])
        overlap = np.all(hi > lo, axis=2)  # (motion, blob)
        mb, ms = mb.copy(), ms.copy()
        for i, j in zip(*np.nonzero(overlap)):
            mb[i, :2], mb[i, 2:] = np.minimum(mb[i, :2], bb[j, :2]), np.maximum(mb[i, 2:], bb[j, 2:])
            ms[i] = max(ms[i], bs[j])
        free = ~overlap.any(axis=0)
        return np.concatenate([mb, bb[free]]), np.concatenate([ms, bs[free]])

    def _nms(self, boxes: Boxes) -> Boxes:
        xyxy, scores = boxes
        if len(xyxy) == 0:
            return _empty()
        wh = xyxy[:, 2:] - xyxy[:, :2]
        idx = cv2.dnn.NMSBoxes(np.concatenate([xyxy[:, :2], wh], 1).tolist(), scores.tolist(), 0.0,
                               self.cfg.nms_iou, top_k=self.cfg.max_detections)
        idx = np.asarray(idx, np.int64).reshape(-1)
        return xyxy[idx], scores[idx]


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.shape[2] == 3 else image[..., 0]
    return image.astype(np.float32)
