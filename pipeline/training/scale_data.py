"""Training crops for the pyramid detector: scale jitter over the whole drone size range, and the appearance
of real sensors.

`ScaleJitterDataset` draws S x S crops from a FrameStore like `DetectionDataset`, but chooses the scale so
that the object the crop is placed on spans a size (sqrt of its area, px) drawn log-uniformly from
`size_range` (3-200 px by default) with probability `p_range`, and the native size jittered by `scale`
otherwise. So the Svanstrom drones (IR about 10-25 px, visible 20-45 px) and the synthetic ones (3-10 px) teach
every size a camera may show. `exclude` (lo, hi) keeps the chosen object's size out of [lo, hi) (the
held-out scale band of tools/cross_domain.py). Upscaling resamples only the crop's window (warpAffine),
downscaling shrinks the frame with area averaging first, so both cost about one crop.

`appearance(image uint8, modality, rng) -> image uint8` varies the sensor (detectors/augment.py); the
default keeps photometric jitter only (pipeline.training.datasets.photometric).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch

from detectors.augment import AppearanceConfig, augment
from pipeline.config import require
from pipeline.training.datasets import DetectionDataset, FrameStore, _offset, _target, _to_tensor, hflip, photometric

Appearance = Callable[[np.ndarray, str, np.random.Generator], np.ndarray]


def box_size(boxes: np.ndarray) -> np.ndarray:
    """A box's size (px): the square root of its area, as COCO's size ranges and tools/real_eval.py's bands."""
    return np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0))


class ScaleJitterDataset(DetectionDataset):
    """Samples (image float32 (3, S, S) in [0, 1], {"boxes", "labels"}); see the module docstring."""

    def __init__(self, store: FrameStore, crop: int = 256, p_object: float = 0.8, seed: int = 0,
                 size_range: tuple[float, float] = (3.0, 200.0), p_range: float = 0.5,
                 scale: tuple[float, float] = (0.7, 1.4), exclude: tuple[float, float] | None = None,
                 appearance: Appearance | None = None, min_side: float = 1.0):
        super().__init__(store, crop, p_object, seed, "train", scale)
        self.size_range, self.p_range, self.exclude = size_range, p_range, exclude
        self.appearance, self.min_side = appearance, min_side

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, boxes, labels, modality = self.store.frame(i)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image, boxes, labels = self._crop(image, boxes, labels, rng)
        if rng.random() < 0.5:
            image, boxes = hflip(image, boxes)
        if self.appearance is not None:
            image = self.appearance(np.ascontiguousarray(image), modality, rng)
            x = image.astype(np.float32) / 255
        else:
            x = photometric(image, rng)
        return _to_tensor(x), _target(boxes, labels)

    def target_size(self, native: float, rng: np.random.Generator) -> float:
        """The size the chosen object gets: log-uniform in size_range (p_range), else native x scale jitter;
        never inside `exclude`."""
        lo, hi = np.log(self.size_range)
        for _ in range(100):
            if rng.random() < self.p_range:
                t = math.exp(rng.uniform(lo, hi))
            else:
                t = native * math.exp(rng.uniform(*np.log(self.scale)))
            if self.exclude is None or not (self.exclude[0] <= t < self.exclude[1]):
                return t
        # native jitter keeps falling in the band: draw from the range outside it
        a, b = self.exclude
        below, above = (self.size_range[0], a), (b, self.size_range[1])
        part = below if (below[1] > below[0] and (above[1] <= above[0] or rng.random() < 0.5)) else above
        return math.exp(rng.uniform(math.log(part[0]), math.log(max(part[1] - 1e-3, part[0] + 1e-3))))

    def _crop(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        S, h, w = self.crop, image.shape[0], image.shape[1]
        j = int(rng.integers(len(boxes))) if len(boxes) and rng.random() < self.p_object else None
        if j is not None:
            native = max(float(box_size(boxes[j:j + 1])[0]), 1.0)
            s = min(self.target_size(native, rng), 0.9 * S) / native
        else:
            s = math.exp(rng.uniform(*np.log(self.scale)))
        nw, nh = w * s, h * s
        sb = boxes * np.float32(s)
        x0 = _offset(math.ceil(nw), S, sb[j, 0::2] if j is not None else None, rng)
        y0 = _offset(math.ceil(nh), S, sb[j, 1::2] if j is not None else None, rng)
        fill = tuple(float(v) for v in np.atleast_1d(image.mean(axis=(0, 1))))
        if s < 1:  # area-average the whole frame down first (no aliasing), then cut the window out
            small = cv2.resize(image, (max(1, round(nw)), max(1, round(nh))), interpolation=cv2.INTER_AREA)
            sx, sy = small.shape[1] / w, small.shape[0] / h
            m = np.float32([[1, 0, -x0], [0, 1, -y0]])
            canvas = cv2.warpAffine(small, m, (S, S), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                    borderValue=fill)
            sb = boxes * np.float32([sx, sy, sx, sy])
        else:
            c = 0.5 * (s - 1)  # OpenCV maps pixel centres; box edges scale about the image's corner
            m = np.float32([[s, 0, c - x0], [0, s, c - y0]])
            canvas = cv2.warpAffine(image, m, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                    borderValue=fill)
        moved = sb - np.array([x0, y0, x0, y0], np.float32)
        cut = moved.clip(0, S)
        cw, ch = cut[:, 2] - cut[:, 0], cut[:, 3] - cut[:, 1]
        area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
        keep = (cw >= self.min_side) & (ch >= self.min_side) & (cw * ch >= 0.5 * area)
        return canvas, cut[keep], labels[keep]


@dataclass
class ScaleConfig:
    """The pyramid detector's training crops (train config key `scale`)."""

    size_range: list[float] = field(default_factory=lambda: [3.0, 200.0])  # px, sqrt of the chosen object's area
    p_range: float = 0.5                  # share of object crops drawn over size_range (else native x jitter)
    jitter: list[float] = field(default_factory=lambda: [0.7, 1.4])  # scale factors around the native size
    exclude: list[float] | None = None    # [lo, hi) px: no chosen object of this size (held-out band)
    appearance: AppearanceConfig | None = field(default_factory=AppearanceConfig)  # null: photometric only

    def validate(self, prefix: str) -> None:
        require(len(self.size_range) == 2 and 1.0 <= self.size_range[0] < self.size_range[1], prefix + "size_range",
                "give [lo, hi] px with 1 <= lo < hi")
        require(0.0 <= self.p_range <= 1.0, prefix + "p_range", "must be in [0, 1]")
        require(len(self.jitter) == 2 and 0.0 < self.jitter[0] <= self.jitter[1], prefix + "jitter",
                "give [lo, hi] with 0 < lo <= hi")
        require(self.exclude is None or (len(self.exclude) == 2 and 0 <= self.exclude[0] < self.exclude[1]),
                prefix + "exclude", "give [lo, hi] px with lo < hi, or null")
        if self.exclude is not None:
            lo, hi = self.size_range
            require(self.exclude[0] > lo or self.exclude[1] < hi, prefix + "exclude", "covers the whole size_range")


def scale_dataset(store: FrameStore, cfg: ScaleConfig, crop: int, p_object: float, seed: int) -> ScaleJitterDataset:
    look = cfg.appearance
    appearance = None if look is None else (lambda image, modality, rng: augment(image, modality, rng, look))
    return ScaleJitterDataset(store, crop, p_object, seed, tuple(cfg.size_range), cfg.p_range, tuple(cfg.jitter),
                              None if cfg.exclude is None else tuple(cfg.exclude), appearance)
