"""Tiled inference for large frames (the SAHI idea: Akyon et al., "Slicing Aided Hyper Inference", 2022).

A 3 px drone in a 1920x1080 frame vanishes if the frame is shrunk to what a small network affords, and a
whole 1080p frame at full resolution in one pass costs memory and gives no batching. So a frame whose
longer side exceeds `above` is cut into `tile` x `tile` windows at full resolution that overlap by
`overlap` (a share of the tile), run as one batch; with `full_frame`, the whole frame shrunk to `above` on
its longer side is run too, for the large drones that no tile holds whole. Detections are shifted back to
frame pixels; a tile's detection that touches one of the tile's inner borders (an edge that is not the
frame's edge) is a cut object: it is dropped, since the neighbouring tile sees it whole when it is smaller
than the overlap, and the shrunk whole frame sees it when it is larger (without `full_frame`, only the
small ones are dropped); the rest are merged by per-class NMS (torchvision's batched_nms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms


@dataclass
class TilingConfig:
    enabled: bool = True
    above: int = 1024           # px: frames whose longer side is larger are tiled
    tile: int = 640             # px: tile side
    overlap: float = 0.2        # share of the tile shared with the next one
    full_frame: bool = True     # also run the frame shrunk to `above` (large objects)
    nms_iou: float = 0.4
    max_detections: int = 100
    batch: int = 8              # tiles per forward pass

    def validate(self, prefix: str = "") -> None:
        def check(cond: bool, key: str, message: str) -> None:
            if not cond:
                raise ValueError(f"{prefix}{key}: {message}")

        check(self.tile >= 32, "tile", "must be at least 32 px")
        check(self.above >= self.tile, "above", "must be at least tile")
        check(0.0 <= self.overlap < 0.9, "overlap", "must be in [0, 0.9)")
        check(0.0 < self.nms_iou <= 1.0, "nms_iou", "must be in (0, 1]")
        check(self.max_detections >= 1, "max_detections", "must be >= 1")
        check(self.batch >= 1, "batch", "must be >= 1")


def tile_origins(size: int, tile: int, overlap: float) -> list[int]:
    """Start positions along one axis: tiles of `tile` px covering [0, size), consecutive tiles sharing at
    least overlap * tile px, the last one flush with the end. One tile (at 0) when size <= tile."""
    if size <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    n = math.ceil((size - tile) / step) + 1
    return [min(i * step, size - tile) for i in range(n)]


def needs_tiling(h: int, w: int, cfg: TilingConfig) -> bool:
    return cfg.enabled and max(h, w) > cfg.above


Result = dict[str, Tensor]


def tiled_detect(model: Callable[[Tensor], list[Result]], image: Tensor, cfg: TilingConfig) -> Result:
    """One frame (3, H, W) in [0, 1] -> {"boxes", "scores", "labels"} in frame pixels: tiles (and the shrunk
    frame) through `model` (a batch (B, 3, h, w) -> one result per image), merged as the module says."""
    _, h, w = image.shape
    xs, ys = tile_origins(w, cfg.tile, cfg.overlap), tile_origins(h, cfg.tile, cfg.overlap)
    origins = [(x, y) for y in ys for x in xs]
    th, tw = min(cfg.tile, h), min(cfg.tile, w)
    margin = cfg.overlap * cfg.tile
    boxes, scores, labels = [], [], []
    for i in range(0, len(origins), cfg.batch):
        chunk = origins[i:i + cfg.batch]
        batch = torch.stack([image[:, y:y + th, x:x + tw] for x, y in chunk])
        for (x, y), res in zip(chunk, model(batch)):
            b = res["boxes"].float() + torch.tensor([x, y, x, y], dtype=torch.float32, device=res["boxes"].device)
            inner = torch.zeros(len(b), dtype=torch.bool, device=b.device)
            small = ((b[:, 2] - b[:, 0]) < margin) & ((b[:, 3] - b[:, 1]) < margin)
            for edge, limit, coord in ((x, 0, b[:, 0]), (y, 0, b[:, 1])):
                if edge > limit:
                    inner |= coord <= edge + 1
            for edge, limit, coord in ((x + tw, w, b[:, 2]), (y + th, h, b[:, 3])):
                if edge < limit:
                    inner |= coord >= edge - 1
            keep = ~(inner & (small | cfg.full_frame))
            boxes.append(b[keep])
            scores.append(res["scores"][keep].float())
            labels.append(res["labels"][keep])
    if cfg.full_frame:
        s = cfg.above / max(h, w)
        small_img = F.interpolate(image[None], size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")
        res = model(small_img)[0]
        boxes.append(res["boxes"].float() / s)
        scores.append(res["scores"].float())
        labels.append(res["labels"])
    b, sc, lb = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = batched_nms(b, sc, lb, cfg.nms_iou)[:cfg.max_detections]
    return {"boxes": b[keep], "scores": sc[keep], "labels": lb[keep]}
