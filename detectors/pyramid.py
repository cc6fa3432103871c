"""A feature-pyramid centre-point detector for drones from 3 px to 200 px, in thermal and visible images.

Why this shape. Real drones in counter-drone footage span two orders of magnitude: 3-10 px far away (the
synthetic flights), 8-60 px in the Svanstrom clips, over 100 px close by. A stride-4 map is needed to place a
3 px box to a fraction of a pixel, and context from a stride-32 map is needed to tell a 150 px drone from a
cloud. So a small ResNet trunk (basic blocks) goes down to stride 32, a feature pyramid (Lin et al. 2017)
carries the coarse maps back up to stride 4 through lateral 1x1 convolutions, and one centre-point head
(detectors/centre.py: per-class heat, sub-cell offset, log size) reads the stride-4 map. One head at one
level needs no assignment of object sizes to levels, and its decoding (3x3 peaks + NMS) serves every size.
Classes: drone plus the confusers (bird, airplane, helicopter): a bird found as a bird is not a false drone.

Inputs are normalised per image (mean and standard deviation over the image, the standard deviation
floored): a sensor's gain and offset, or its automatic gain control, changes neither the detections nor the
features, which is most of what differs between thermal cameras.

The module follows torchvision's detector interface: `forward(images)` with a (B, 3, H, W) tensor (or a list
of same-size (3, H, W) tensors) in [0, 1] returns, in eval mode, [{"boxes" (N, 4) xyxy px, "scores" (N,),
"labels" (N,) 1-based}], and in training mode with `targets` ([{"boxes", "labels"}]) the loss dict. Any
input size works (padded to a multiple of 32 inside). Large frames are cut into overlapping tiles by
detectors/tiling.py, not here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from detectors.backbone import load_weights
from detectors.centre import centre_loss, centre_targets, decode_centres

STRIDE = 4


@dataclass
class PyramidConfig:
    classes: list[str] = field(default_factory=lambda: ["drone", "bird", "airplane", "helicopter"])
    widths: list[int] = field(default_factory=lambda: [16, 24, 48, 96, 128])  # stride 2, 4, 8, 16, 32
    blocks: list[int] = field(default_factory=lambda: [0, 1, 2, 2, 1])  # basic blocks after each down step
    fpn: int = 32                   # pyramid channels (stride 4 .. 32)
    head: int = 32                  # head channels
    max_detections: int = 50        # per image
    nms_iou: float = 0.4
    min_score: float = 0.05         # decoding threshold (the run config's detector.min_score filters more)
    std_floor: float = 0.02         # per-image normalisation: the standard deviation is at least this
    weights: str | None = None      # a user's weight file (a state_dict of this model), loaded when it is built

    def validate(self, prefix: str = "") -> None:
        def check(cond: bool, key: str, message: str) -> None:
            if not cond:
                raise ValueError(f"{prefix}{key}: {message}")

        check(len(self.classes) >= 1 and self.classes[0] == "drone", "classes", "the first class must be drone")
        check(len(self.widths) == 5 and all(w >= 1 for w in self.widths), "widths",
              "give 5 positive channel counts (strides 2, 4, 8, 16, 32)")
        check(len(self.blocks) == 5 and all(b >= 0 for b in self.blocks), "blocks", "give 5 counts >= 0")
        check(self.fpn >= 1, "fpn", "must be >= 1")
        check(self.head >= 1, "head", "must be >= 1")
        check(self.max_detections >= 1, "max_detections", "must be >= 1")
        check(0.0 < self.nms_iou <= 1.0, "nms_iou", "must be in (0, 1]")
        check(0.0 <= self.min_score < 1.0, "min_score", "must be in [0, 1)")
        check(self.std_floor > 0, "std_floor", "must be > 0")
        check(self.weights is None or bool(self.weights.strip()), "weights", "empty path (leave it out)")


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PyramidDetector(nn.Module):
    """See the module docstring."""

    def __init__(self, cfg: PyramidConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.stride = STRIDE
        stages, cin = [], 3
        for w, n in zip(cfg.widths, cfg.blocks):
            stages.append(nn.Sequential(_down(cin, w), *[BasicBlock(w, w) for _ in range(n)]))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.lateral = nn.ModuleList([nn.Conv2d(w, cfg.fpn, 1) for w in cfg.widths[1:]])
        self.smooth = nn.Sequential(nn.Conv2d(cfg.fpn, cfg.head, 3, padding=1, bias=False), nn.BatchNorm2d(cfg.head),
                                    nn.ReLU(inplace=True))
        self.heat = nn.Conv2d(cfg.head, len(cfg.classes), 1)
        self.reg = nn.Conv2d(cfg.head, 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)  # zero-init residuals: each block starts as identity
        nn.init.normal_(self.heat.weight, std=0.01)
        nn.init.constant_(self.heat.bias, -math.log((1 - 0.01) / 0.01))  # prior 0.01 (RetinaNet)
        nn.init.normal_(self.reg.weight, std=0.01)
        if cfg.weights is not None:
            load_weights(self, cfg.weights)

    def normalise(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(self.cfg.std_floor)
        return (x - mean) / std

    def maps(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) in [0, 1] -> {"heat": probabilities (B, C, ceil(H/4), ceil(W/4)), "reg": (B, 4, ...)}."""
        h, w = x.shape[-2:]
        x = self.normalise(x.float())
        x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32)).contiguous(memory_format=torch.channels_last)  # ~1.6x faster on CPU
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        top = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[1:-1])):
            top = lat(f) + F.interpolate(top, size=f.shape[-2:], mode="nearest")
        f = self.smooth(top)
        oh, ow = math.ceil(h / STRIDE), math.ceil(w / STRIDE)
        return {"heat": torch.sigmoid(self.heat(f).float())[..., :oh, :ow], "reg": self.reg(f).float()[..., :oh, :ow]}

    def forward(self, images: Tensor | list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        x = torch.stack(list(images)) if isinstance(images, (list, tuple)) else images
        out = self.maps(x)
        if self.training:
            if targets is None:
                raise ValueError("targets: needed in training mode")
            heat, reg, mask = centre_targets([t["boxes"].float().cpu() for t in targets], tuple(out["heat"].shape[-2:]),
                                             STRIDE, [t["labels"].cpu() for t in targets], len(self.cfg.classes))
            return centre_loss(out, heat.to(x.device), reg.to(x.device), mask.to(x.device))
        h, w = x.shape[-2:]
        results = []
        for boxes, scores, labels in decode_centres(out, self.cfg.min_score, self.cfg.max_detections,
                                                    self.cfg.nms_iou, STRIDE):
            boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                                 boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], 1)
            results.append({"boxes": boxes, "scores": scores, "labels": labels})
        return results
