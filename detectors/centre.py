"""Centre-point detection ("Objects as points", Zhou et al. 2019): targets, loss and decoding shared by the
detectors that predict, per map cell, a per-class centre heat, the sub-cell offset of the centre and the log
box size.

A box's centre cell is floor(centre / stride); its offset is centre / stride - cell; its size is encoded as
log(w / stride), log(h / stride). The heat target of a class is a Gaussian around each of its boxes' centre
cells (peak exactly 1, sigma from the box size, at least half a cell), the maximum where Gaussians overlap.
Training uses the penalty-reduced focal loss (alpha 2, beta 4) on the heat, normalised by the number of
centres, and L1 on the regressions at the centre cells. Decoding keeps the 3x3 local maxima of the heat,
the best `max_detections`, and removes duplicates with per-class NMS (torchvision's batched_nms).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms


def centre_targets(boxes: list[Tensor], shape: tuple[int, int], stride: int = 4,
                   labels: list[Tensor] | None = None, num_classes: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Per image xyxy boxes (N_i, 4) in pixels (and 1-based labels (N_i,), default all 1) -> heat
    (B, num_classes, h, w), reg (B, 4, h, w) and a centre mask (B, 1, h, w) bool. Boxes under 1 px count as
    1 px; a box whose centre is off the map, or whose label is outside 1..num_classes, is skipped."""
    h, w = shape
    b = len(boxes)
    heat = torch.zeros(b, num_classes, h, w)
    reg = torch.zeros(b, 4, h, w)
    mask = torch.zeros(b, 1, h, w, dtype=torch.bool)
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    for i, bx in enumerate(boxes):
        lab = [1] * len(bx) if labels is None else labels[i].tolist()
        for (x0, y0, x1, y1), c in zip(bx.tolist(), lab):
            if not 1 <= c <= num_classes:
                continue
            bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
            cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
            j, k = int(math.floor(cx)), int(math.floor(cy))
            if not (0 <= j < w and 0 <= k < h):
                continue
            sx, sy = max(0.5, bw / stride / 3), max(0.5, bh / stride / 3)
            g = torch.exp(-((xs - j) ** 2) / (2 * sx * sx) - ((ys - k) ** 2) / (2 * sy * sy))
            heat[i, c - 1] = torch.maximum(heat[i, c - 1], g)
            reg[i, :, k, j] = torch.tensor([cx - j, cy - k, math.log(bw / stride), math.log(bh / stride)])
            mask[i, 0, k, j] = True
    return heat, reg, mask


def centre_loss(out: dict, heat_t: Tensor, reg_t: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """{"heat": focal loss, "box": L1 of the regressions at the centre cells}; out["heat"] holds
    probabilities (B, C, h, w), out["reg"] the regressions (B, 4, h, w)."""
    p = out["heat"].clamp(1e-4, 1 - 1e-4)
    pos = heat_t.eq(1.0) & mask
    n = pos.sum().clamp_min(1)
    pos_loss = -(torch.log(p) * (1 - p) ** 2)[pos].sum()
    neg_loss = -(torch.log(1 - p) * p ** 2 * (1 - heat_t) ** 4)[~pos].sum()
    m = mask.expand_as(reg_t)
    reg_loss = F.l1_loss(out["reg"][m], reg_t[m], reduction="sum") / n if bool(m.any()) else out["reg"].sum() * 0
    return {"heat": (pos_loss + neg_loss) / n, "box": reg_loss}


def decode_centres(out: dict, min_score: float = 0.05, max_detections: int = 20, nms_iou: float = 0.3,
                   stride: int = 4) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per image (xyxy (N, 4) pixels, scores (N,), 1-based labels (N,)): local maxima of each class's heat
    (3x3) at or above min_score, the best max_detections over all classes, boxes from the offsets and
    sizes, then per-class NMS."""
    heat, reg = out["heat"], out["reg"]
    peaks = heat * (heat == F.max_pool2d(heat, 3, 1, 1))
    b, c, h, w = heat.shape
    results = []
    for i in range(b):
        flat = peaks[i].flatten()
        k = min(max_detections, flat.numel())
        scores, idx = flat.topk(k)
        keep = scores >= min_score
        scores, idx = scores[keep], idx[keep]
        labels = idx // (h * w) + 1
        cell = idx % (h * w)
        ys, xs = (cell // w).float(), (cell % w).float()
        r = reg[i].flatten(1)[:, cell]
        cx, cy = (xs + r[0]) * stride, (ys + r[1]) * stride
        bw, bh = r[2].clamp(max=6).exp() * stride, r[3].clamp(max=6).exp() * stride
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        if len(boxes):
            kept = batched_nms(boxes, scores, labels, nms_iou)
            boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
        results.append((boxes, scores, labels))
    return results
