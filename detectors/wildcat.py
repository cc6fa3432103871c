"""WILDCAT weakly supervised localizer (Durand et al., CVPR 2017): trained from image-level labels only.

backbone (any FCN: an nn.Module with `out_channels` and `stride`, optionally `offset`) -> 1x1 conv
transfer layer to C*M maps -> class-wise pooling (mean of each class's M maps) -> class maps (B, C, h, w)
-> spatial pooling (k-max + alpha * k-min) -> scores (B, C), trained with the multi-label soft-margin
loss. The class map's peak gives a point, the region around it a box (`localize`).

Coordinates: continuous input pixels, pixel i spans [i, i + 1) (the ground truth's convention). The
centre of map cell (row i, col j) is (stride * j + offset + 0.5, stride * i + offset + 0.5), where
`offset` is the input pixel index at the centre of cell (0, 0)'s receptive field: 0 for stacks of
'same'-padded odd kernels (ResNet, VGG: padding = (kernel - 1) / 2), (stride - 1) / 2 for
non-overlapping pooling (cell j covers pixels [stride * j, stride * (j + 1))). A backbone states it in
its `offset` attribute; without one, 0.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

K = int | float  # region count (int >= 0) or fraction of the map's positions (float in [0, 1])

# Spatial pooling presets (kmax, kmin, alpha). max, GAP, max+min and WELDON are the seed's table (WILDCAT
# slide, "Pooling k+ k- alpha"); GAP's k+ = n is the fraction 1.0. The seed gives no k for WELDON and
# WILDCAT: both use k = 0.2 (20 % of the positions), the reference code's VOC 2007 setting
# (durandtibo/wildcat.pytorch README: --k 0.2 --alpha 0.7, kmin defaulting to kmax), so that the two
# differ only in the weight of the negative evidence. For objects of a few cells (small drones on a
# large map) an integer count (kmax: 3) keeps the score independent of the image or crop size.
POOLING_PRESETS: dict[str, tuple[K, K, float]] = {
    "max": (1, 0, 0.0),
    "gap": (1.0, 0, 0.0),
    "maxmin": (1, 1, 1.0),
    "weldon": (0.2, 0.2, 1.0),
    "wildcat": (0.2, 0.2, 0.7),
}
BOX_MODES = ("interp", "cells")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def region_count(k: K, n: int) -> int:
    """Positions selected out of n: an int is a count (capped at n), a float in [0, 1] a fraction of n
    (rounded, at least 1 unless 0). So 1 is the single best position and 1.0 all of them."""
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise TypeError(f"k must be an int or a float, got {k!r}")
    if isinstance(k, numbers.Integral):
        if k < 0:
            raise ValueError(f"k must not be negative, got {k}")
        return min(int(k), n)
    if not 0.0 <= k <= 1.0:
        raise ValueError(f"a fractional k must be in [0, 1], got {k}")
    return 0 if k == 0 else max(1, round(k * n))


def wildcat_pool(maps: torch.Tensor, kmax: K = 1, kmin: K = 0, alpha: float = 1.0) -> torch.Tensor:
    """(B, C, H, W) -> (B, C): mean of the kmax highest plus alpha times mean of the kmin lowest positions
    of each map (kmin = 0 or alpha = 0: no negative evidence). Gradients reach only the selected positions.

    No division by 2. The reference code (wildcat.pytorch) halves the score whenever the k-min term is on;
    we follow the paper's Eq. (4), y = s_top + alpha * s_low, instead: the presets are then exactly their
    textbook definitions (max is the global max, maxmin is max + min, for every preset on one scale), and
    the factor 1/2 is a constant rescaling of the logits that the transfer layer's weights absorb in
    training; it changes neither the ranking of images nor the maps used for localization.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be (B, C, H, W), got shape {tuple(maps.shape)}")
    flat = maps.flatten(2)
    n = flat.shape[2]
    k_hi, k_lo = region_count(kmax, n), region_count(kmin, n)
    if k_hi < 1:
        raise ValueError("kmax must select at least one position")
    out = flat.topk(k_hi, dim=2).values.mean(2)
    if k_lo > 0 and alpha != 0:
        out = out + alpha * flat.topk(k_lo, dim=2, largest=False).values.mean(2)
    return out


class ClassWisePool(nn.Module):
    """(B, C*M, H, W) -> (B, C, H, W): the mean of each class's M maps (channels c*M .. c*M + M - 1).
    The paper's Eq. (5) sums them; the reference code and we average (a constant factor M)."""

    def __init__(self, maps_per_class: int):
        super().__init__()
        if maps_per_class < 1:
            raise ValueError(f"maps_per_class must be >= 1, got {maps_per_class}")
        self.maps_per_class = maps_per_class

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, cm, h, w = x.shape
        if cm % self.maps_per_class:
            raise ValueError(f"{cm} channels are not a multiple of {self.maps_per_class} maps per class")
        return x.view(b, cm // self.maps_per_class, self.maps_per_class, h, w).mean(2)


@dataclass
class WildcatConfig:
    classes: list[str] = field(default_factory=lambda: ["drone"])
    maps_per_class: int = 4                # M: modalities per class (the transfer layer has C*M maps)
    pooling: str = "wildcat"               # a POOLING_PRESETS name; kmax / kmin / alpha below override it
    kmax: int | float | None = None        # int: count of positions; float in (0, 1]: fraction (1.0 = all)
    kmin: int | float | None = None        # the same for the lowest positions; 0 turns negative evidence off
    alpha: float | None = None             # weight of the negative evidence, in [0, 1]
    multiscale: tuple[float, ...] = (1.0,)  # test-time image scales, averaged; the first must be 1.0
    box_threshold: float = 0.5             # box: map above median + t * (peak - median), joined to the peak
    box: str = "interp"                    # interp: the map bilinearly interpolated to pixels; cells: whole cells
    min_score: float = 0.5                 # a class is reported (one box) when sigmoid(score) reaches this

    def pool_params(self) -> tuple[K, K, float]:
        """(kmax, kmin, alpha): the preset's values with this config's overrides."""
        kmax, kmin, alpha = POOLING_PRESETS[self.pooling]
        return (kmax if self.kmax is None else self.kmax, kmin if self.kmin is None else self.kmin,
                alpha if self.alpha is None else self.alpha)

    def validate(self, prefix: str = "") -> None:
        def check(cond: bool, key: str, message: str) -> None:
            if not cond:
                raise ValueError(f"{prefix}{key}: {message}")

        check(len(self.classes) >= 1 and len(set(self.classes)) == len(self.classes), "classes",
              "must be a non-empty list of distinct names")
        check(self.maps_per_class >= 1, "maps_per_class", "must be >= 1")
        check(self.pooling in POOLING_PRESETS, "pooling", f"must be one of {', '.join(POOLING_PRESETS)}")
        kmax, kmin, alpha = self.pool_params()
        for key, k, lowest in (("kmax", kmax, 1), ("kmin", kmin, 0)):
            if isinstance(k, int):
                check(k >= lowest, key, f"a count must be >= {lowest}")
            else:
                check(lowest == 0 and k == 0 or 0 < k <= 1, key, "a fraction must be in (0, 1] (1.0 = all)")
        check(0 <= alpha <= 1, "alpha", "must be in [0, 1]")
        check(len(self.multiscale) >= 1 and self.multiscale[0] == 1.0, "multiscale", "must start with 1.0")
        check(all(0.1 <= s <= 4 for s in self.multiscale), "multiscale", "scales must be in [0.1, 4]")
        check(0 <= self.box_threshold < 1, "box_threshold", "must be in [0, 1)")
        check(self.box in BOX_MODES, "box", f"must be one of {', '.join(BOX_MODES)}")
        check(0 <= self.min_score <= 1, "min_score", "must be in [0, 1]")


class Wildcat(nn.Module):
    """`forward(images (B, 3, H, W) in [0, 1]) -> {"scores": (B, C) logits, "maps": (B, C, h, w)}`.
    Images are normalized inside (ImageNet mean and std, so a user's ImageNet backbone weights fit). In
    eval mode with several `cfg.multiscale` scales, scores are averaged over scales and maps resampled
    onto the scale-1 grid (exactly, by cell centres) and averaged."""

    def __init__(self, backbone: nn.Module, cfg: WildcatConfig | None = None):
        super().__init__()
        self.cfg = cfg or WildcatConfig()
        self.cfg.validate()
        self.backbone = backbone
        self.stride = int(backbone.stride)
        self.offset = float(getattr(backbone, "offset", 0.0))
        self.transfer = nn.Conv2d(backbone.out_channels, len(self.cfg.classes) * self.cfg.maps_per_class, 1)
        nn.init.zeros_(self.transfer.bias)
        self.class_pool = ClassWisePool(self.cfg.maps_per_class)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def class_maps(self, images: torch.Tensor, flow: torch.Tensor | None = None) -> torch.Tensor:
        """`flow` (a two-stream trunk's stacked optical flow, detectors/two_stream.py) goes to the backbone
        as its second argument; without it the backbone is called on the images alone."""
        x = (images - self.mean) / self.std
        return self.class_pool(self.transfer(self.backbone(x) if flow is None else self.backbone(x, flow)))

    def forward(self, images: torch.Tensor, flow: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        kmax, kmin, alpha = self.cfg.pool_params()
        maps = self.class_maps(images, flow)
        scores = wildcat_pool(maps, kmax, kmin, alpha)
        scales = () if self.training or flow is not None else self.cfg.multiscale[1:]  # no flow pyramid yet
        if scales:
            h, w = images.shape[2:]
            all_maps, all_scores = [maps], [scores]
            for s in scales:
                size = (max(1, round(h * s)), max(1, round(w * s)))
                m = self.class_maps(F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                                                  antialias=s < 1))
                all_scores.append(wildcat_pool(m, kmax, kmin, alpha))
                all_maps.append(self._to_grid(m, maps.shape[2:], (size[0] / h, size[1] / w)))
            maps, scores = torch.stack(all_maps).mean(0), torch.stack(all_scores).mean(0)
        return {"scores": scores, "maps": maps}

    def _to_grid(self, maps: torch.Tensor, grid_hw: tuple[int, int], ratio_hw: tuple[float, float]) -> torch.Tensor:
        """Resample maps computed on the image resized by ratio_hw onto the scale-1 cell grid: target cell
        centre c (input pixels) is c * ratio in the resized image, i.e. cell (c * ratio - offset - 0.5) / stride."""
        def axis(n_out: int, n_src: int, ratio: float) -> torch.Tensor:
            centre = self.stride * torch.arange(n_out, device=maps.device, dtype=maps.dtype) + self.offset + 0.5
            src = (centre * ratio - self.offset - 0.5) / self.stride
            return src * 2 / (n_src - 1) - 1 if n_src > 1 else torch.zeros_like(src)

        gy, gx = axis(grid_hw[0], maps.shape[2], ratio_hw[0]), axis(grid_hw[1], maps.shape[3], ratio_hw[1])
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).expand(len(maps), -1, -1, -1)
        return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True)

    @staticmethod
    def loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Multi-label soft-margin loss; labels (B, C) in {0, 1}."""
        if labels.shape != scores.shape:
            raise ValueError(f"labels {tuple(labels.shape)} do not match scores {tuple(scores.shape)}")
        return F.multilabel_soft_margin_loss(scores, labels.to(scores.dtype))

    def localize(self, out: dict[str, torch.Tensor], image_hw: tuple[int, int]
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """`localize_batch` on this model's forward output with its stride, offset and config thresholds."""
        return localize_batch(out["scores"], out["maps"], self.stride, image_hw, self.cfg.box_threshold,
                              self.offset, self.cfg.min_score, self.cfg.box)


class Localization(NamedTuple):
    point: tuple[float, float]              # (x, y) input pixels
    box: tuple[float, float, float, float]  # xyxy input pixels, clipped to the image
    peak: float                             # the class map's value at the peak


def localize(class_map: torch.Tensor, stride: float, image_hw: tuple[int, int], threshold: float = 0.5,
             offset: float = 0.0, box: str = "interp") -> Localization:
    """One class map (h, w) -> its peak and the box around it, in input pixels (image_hw = (H, W)).

    Point: the centre of the peak cell, refined to sub-cell precision by a parabola through the peak and
    its two neighbours along each axis (shift at most half a cell). Level: median + threshold * (peak -
    median). The median (the background level), not the min, is the low end: the maps are logits of either
    sign, and negative evidence training drives a few cells strongly negative, which would inflate a
    min-based box. Box:
    - "cells": the cells connected (8-way) to the peak that reach the level, each spanning one stride
      around its centre (sizes in whole strides: a 10 px drone on a stride-8 map gets 8, 16 or 24 px);
    - "interp": the map bilinearly interpolated between cell centres onto the pixels around that cell
      region, and the pixels connected to the peak that reach the level (an isolated peak cell gives a
      box one stride wide at threshold 0.5, stronger neighbours widen it by fractions of a cell).
    """
    m = class_map.detach().float().cpu().numpy()
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"class_map must be a non-empty (h, w) map, got shape {m.shape}")
    if box not in BOX_MODES:
        raise ValueError(f"box must be one of {', '.join(BOX_MODES)}, got {box!r}")
    i, j = np.unravel_index(int(np.argmax(m)), m.shape)
    peak, bg = float(m[i, j]), float(np.median(m))
    level = bg + threshold * (peak - bg)
    regions, _ = ndimage.label(m >= level, structure=np.ones((3, 3)))
    rows, cols = np.nonzero(regions == regions[i, j])
    x = stride * (j + _vertex(m[i, :], j)) + offset + 0.5
    y = stride * (i + _vertex(m[:, j], i)) + offset + 0.5
    h, w = image_hw
    if box == "interp":
        x0, y0, x1, y1 = _interp_box(m, rows, cols, level, stride, offset, image_hw)
    else:
        x0, y0 = stride * cols.min() + offset + 0.5 - stride / 2, stride * rows.min() + offset + 0.5 - stride / 2
        x1, y1 = stride * cols.max() + offset + 0.5 + stride / 2, stride * rows.max() + offset + 0.5 + stride / 2
    return Localization((float(np.clip(x, 0, w)), float(np.clip(y, 0, h))),
                        (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)), peak)


def _interp_box(m: np.ndarray, rows: np.ndarray, cols: np.ndarray, level: float, stride: float, offset: float,
                image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """Pixel box of the region of the bilinearly interpolated map that reaches `level` and holds the peak,
    searched within the cell region (rows, cols) grown by one cell. Pixel x's centre x + 0.5 sits at cell
    coordinate (x - offset) / stride; outside the outer cell centres the map is held constant."""
    h, w = image_hw

    def span(lo: int, hi: int, n: int, size: int) -> np.ndarray:
        a = 0 if lo == 0 else max(int(np.floor(stride * (lo - 1) + offset)), 0)
        b = size if hi == n - 1 else min(int(np.ceil(stride * (hi + 1) + offset)) + 1, size)
        return np.arange(a, max(b, a + 1))

    ys, xs = span(rows.min(), rows.max(), m.shape[0], h), span(cols.min(), cols.max(), m.shape[1], w)
    v, u = np.meshgrid((ys - offset) / stride, (xs - offset) / stride, indexing="ij")
    fine = ndimage.map_coordinates(m, [v, u], order=1, mode="nearest")
    labels, _ = ndimage.label(fine >= min(level, float(fine.max())), structure=np.ones((3, 3)))
    r, c = np.nonzero(labels == labels.flat[int(np.argmax(fine))])
    return float(xs[c.min()]), float(ys[r.min()]), float(xs[c.max()] + 1), float(ys[r.max()] + 1)


def _vertex(profile: np.ndarray, c: int) -> float:
    """Sub-cell shift of the peak at index c of a 1-D profile: the vertex of the parabola through it and
    its two neighbours, within half a cell (0 at the map's edge)."""
    if c == 0 or c == len(profile) - 1:
        return 0.0
    lo, mid, hi = profile[c - 1:c + 2]
    curv = lo - 2 * mid + hi
    return float(np.clip(0.5 * (lo - hi) / curv, -0.5, 0.5)) if curv < 0 else 0.0


def localize_batch(scores: torch.Tensor, maps: torch.Tensor, stride: float, image_hw: tuple[int, int],
                   threshold: float = 0.5, offset: float = 0.0, min_score: float = 0.0, box: str = "interp"
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (xyxy float32 (N, 4), scores float32 (N,), labels int64 (N,) class indices, points
    float32 (N, 2)), one box per class whose probability sigmoid(pooled score) reaches min_score. The
    box's score is that probability, the quantity the loss trains (a cell's peak logit is not calibrated
    at frame level). Ready for `Detections(xyxy, scores, labels, extras={"point": points})`."""
    probs = torch.sigmoid(scores.detach().float()).cpu().numpy()
    out = []
    for p, mp in zip(probs, maps):
        labels = np.flatnonzero(p >= min_score)
        locs = [localize(mp[c], stride, image_hw, threshold, offset, box) for c in labels]
        out.append((np.array([l.box for l in locs], np.float32).reshape(-1, 4), p[labels].astype(np.float32),
                    labels.astype(np.int64), np.array([l.point for l in locs], np.float32).reshape(-1, 2)))
    return out
