"""DP-FCN (Mordan et al., BMVC'17 / IJCV'18): an R-FCN-style detector whose position-sensitive parts move,
at a quadratic cost, to fit the object, and whose part displacements refine the box.

images (B, 3, H, W) in [0, 1] -> ResNet trunk (stride 16 or 8) -> optional 1x1 reduction -> torchvision
RPN (anchors from 6 px) and two 1x1 convolutions: k*k*(C+1) class maps and k*k*4 class-agnostic box maps.
Per RoI:
- class maps: deformable part-based RoI pooling (detectors/part_pooling.py); class logit = mean over parts.
- box maps: pooled, for each foreground class c, at the displacements class c's parts kept, so class c's
  box deltas read the localisation features where its parts went (rigid pooling when deformable=False).
- deformation-aware localisation refinement (refine=True): class c's 2*k*k part displacements pass through
  two fully connected layers (shared by the classes) whose 4*k*k outputs weight the per-part box
  regressions: delta_c[t] = sum_p w_c[t, p] * box_c[t, p]. The last layer starts at zero weight and bias
  1/k^2, i.e. at R-FCN's mean over parts. refine=False: the plain mean over parts, as in R-FCN.
Box deltas are class-specific (Fast R-CNN encoding, weights 10, 10, 5, 5); training samples RoIs, adds the
ground-truth boxes to the proposals, and post-processing (softmax, per-class NMS, clipping, top-n) reuse
torchvision's RoIHeads methods, whose own pooling and head modules are unused (None).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from detectors.backbone import BackboneConfig, build_backbone
from detectors.part_pooling import deformable_ps_roi_pool, ps_roi_pool_at

MEAN, STD = 0.45, 0.225  # fixed input normalisation, the same for every channel (BGR or RGB alike)


@dataclass
class DPFCNConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    classes: list[str] = field(default_factory=lambda: ["drone", "bird", "airplane", "helicopter"])
    k: int = 3                      # k x k parts per RoI
    deformable: bool = True         # False: rigid position-sensitive pooling (R-FCN)
    refine: bool = True             # deformation-aware localisation refinement
    max_shift: int = 2              # displacements {-max_shift..max_shift} * shift_step part sizes
    shift_step: float = 0.25
    deform_cost: float = 0.1        # lambda of lambda * (dx^2 + dy^2), displacements in part sizes
    head_channels: int | None = 128  # 1x1 reduction before the RPN and the maps (None: the trunk's output)
    refine_hidden: int = 256
    anchor_sizes: tuple[float, ...] = (6.0, 12.0, 24.0, 48.0, 96.0, 192.0)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 1000
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 500
    rpn_post_nms_top_n_test: int = 100
    rpn_nms_iou: float = 0.7
    min_size: float = 2.0           # proposals narrower or lower (px) are dropped: all their parts pool one spot
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    roi_batch_size: int = 128
    roi_positive_fraction: float = 0.25
    roi_fg_iou: float = 0.5
    roi_bg_iou: float = 0.5
    score_thresh: float = 0.05
    nms_iou: float = 0.3
    detections_per_image: int = 20

    def validate(self, prefix: str = "") -> None:
        self.backbone.validate(prefix + "backbone.")
        top_n = ("rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test",
                 "rpn_post_nms_top_n_test", "roi_batch_size", "detections_per_image", "k", "refine_hidden")
        checks = [(len(self.classes) >= 1 and len(set(self.classes)) == len(self.classes)
                   and all(c.strip() for c in self.classes), "classes", "give one or more distinct class names"),
                  (self.max_shift >= 0, "max_shift", "must be >= 0"),
                  (self.shift_step > 0, "shift_step", "must be > 0"),
                  (self.min_size >= 0, "min_size", "must be >= 0"),
                  (self.deform_cost >= 0, "deform_cost", "must be >= 0"),
                  (self.head_channels is None or self.head_channels >= 1, "head_channels", "must be >= 1"),
                  (bool(self.anchor_sizes) and min(self.anchor_sizes) > 0, "anchor_sizes", "give sizes > 0"),
                  (bool(self.aspect_ratios) and min(self.aspect_ratios) > 0, "aspect_ratios", "give ratios > 0"),
                  (0 < self.rpn_nms_iou <= 1, "rpn_nms_iou", "must be in (0, 1]"),
                  (0 < self.nms_iou <= 1, "nms_iou", "must be in (0, 1]"),
                  (0 <= self.rpn_bg_iou <= self.rpn_fg_iou <= 1, "rpn_bg_iou", "need 0 <= it <= rpn_fg_iou <= 1"),
                  (0 <= self.roi_bg_iou <= self.roi_fg_iou <= 1, "roi_bg_iou", "need 0 <= it <= roi_fg_iou <= 1"),
                  (0 < self.roi_positive_fraction <= 1, "roi_positive_fraction", "must be in (0, 1]"),
                  (0 <= self.score_thresh < 1, "score_thresh", "must be in [0, 1)")]
        checks += [(getattr(self, key) >= 1, key, "must be >= 1") for key in top_n]
        for ok, key, message in checks:
            if not ok:
                raise ValueError(f"{prefix}{key}: {message}")


class DPFCN(nn.Module):
    """Train mode: forward(images, targets) -> {loss_objectness, loss_rpn_box_reg, loss_classifier,
    loss_box_reg}; targets: [{boxes (N, 4) float xyxy px, labels (N,) int64 in 1..C}], N may be 0.
    Eval mode: forward(images) -> [{boxes (n, 4), scores (n,), labels (n,) in 1..C}] per image."""

    def __init__(self, cfg: DPFCNConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        kk, classes = cfg.k * cfg.k, len(cfg.classes)
        self.backbone = build_backbone(cfg.backbone)
        ch = self.backbone.out_channels
        self.reduce = nn.Identity()
        if cfg.head_channels is not None:
            self.reduce = nn.Sequential(nn.Conv2d(ch, cfg.head_channels, 1), nn.ReLU(inplace=True))
            ch = cfg.head_channels
        anchors = AnchorGenerator((tuple(cfg.anchor_sizes),), (tuple(cfg.aspect_ratios),))
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(ch, anchors.num_anchors_per_location()[0]), cfg.rpn_fg_iou, cfg.rpn_bg_iou, 256, 0.5,
            dict(training=cfg.rpn_pre_nms_top_n_train, testing=cfg.rpn_pre_nms_top_n_test),
            dict(training=cfg.rpn_post_nms_top_n_train, testing=cfg.rpn_post_nms_top_n_test), cfg.rpn_nms_iou)
        self.rpn.min_size = cfg.min_size
        self.cls_maps = nn.Conv2d(ch, kk * (classes + 1), 1)
        self.box_maps = nn.Conv2d(ch, kk * 4, 1)
        for conv in (self.cls_maps, self.box_maps):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.refine = None
        if cfg.refine:
            self.refine = nn.Sequential(nn.Linear(2 * kk, cfg.refine_hidden), nn.ReLU(inplace=True),
                                        nn.Linear(cfg.refine_hidden, 4 * kk))
            nn.init.zeros_(self.refine[2].weight)
            nn.init.constant_(self.refine[2].bias, 1.0 / kk)
        self.roi_heads = RoIHeads(None, None, None, cfg.roi_fg_iou, cfg.roi_bg_iou, cfg.roi_batch_size,
                                  cfg.roi_positive_fraction, (10.0, 10.0, 5.0, 5.0), cfg.score_thresh,
                                  cfg.nms_iou, cfg.detections_per_image)

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None):
        if self.training:
            self._check_targets(targets, len(images))
        sizes = [tuple(images.shape[-2:])] * len(images)
        feat = self.features(images)
        with torch.autocast(feat.device.type, enabled=False):  # float16 would quantise pixel coordinates
            proposals, losses = self.rpn(ImageList(images, sizes), {"0": feat.float()}, targets)
        if self.training:
            proposals, _, labels, reg_targets = self.roi_heads.select_training_samples(proposals, targets)
        rois = torch.cat([torch.cat([p.new_full((len(p), 1), i), p], 1) for i, p in enumerate(proposals)])
        logits, deltas, _ = self.predict_rois(feat, rois)
        box_regression = torch.cat([deltas.new_zeros(len(deltas), 1, 4), deltas], 1).flatten(1)  # + background
        if self.training:
            loss_cls, loss_box = fastrcnn_loss(logits, box_regression, labels, reg_targets)
            return {**losses, "loss_classifier": loss_cls, "loss_box_reg": loss_box}
        boxes, scores, labels = self.roi_heads.postprocess_detections(logits.float(), box_regression.float(),
                                                                      proposals, sizes)
        return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels)]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> the (reduced) feature map the RPN and the part maps read."""
        return self.reduce(self.backbone((images - MEAN) / STD))

    def predict_rois(self, feat: torch.Tensor, rois: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """feat: from features(), rois (R, 5) [batch, x1, y1, x2, y2] px -> class logits (R, C+1),
        class-specific box deltas (R, C, 4), part displacements (R, C+1, k, k, 2) in part sizes."""
        cfg, k, stride = self.cfg, self.cfg.k, self.backbone.stride
        max_shift, scale = (cfg.max_shift if cfg.deformable else 0), 1.0 / stride
        # ps_roi_align puts cell j's centre at pixel (j + 0.5) * stride; the trunk's is at stride * j + offset
        rois = rois + rois.new_tensor([0.0] + [stride / 2 - 0.5 - self.backbone.offset] * 4)
        pooled, shifts = deformable_ps_roi_pool(self.cls_maps(feat), rois, k, scale, max_shift, cfg.shift_step,
                                                cfg.deform_cost)
        fg = shifts[:, 1:]                                                                     # (R, C, k, k, 2)
        parts = ps_roi_pool_at(self.box_maps(feat), rois, k, scale, fg, max_shift, cfg.shift_step).flatten(3)
        if self.refine is None:
            deltas = parts.mean(3)
        else:  # displacements scaled to [-1, 1]
            weights = self.refine(fg.flatten(2) / max(max_shift * cfg.shift_step, 1e-6)).view(parts.shape)
            deltas = (weights * parts).sum(3)
        return pooled.mean((2, 3)), deltas, shifts

    def _check_targets(self, targets: list[dict[str, torch.Tensor]] | None, batch: int) -> None:
        if targets is None or len(targets) != batch:
            raise ValueError("training needs one target dict (boxes, labels) per image")
        for t in targets:
            boxes, labels = t["boxes"], t["labels"]
            if boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
                raise ValueError(f"target boxes must be (N, 4) with N labels, got {tuple(boxes.shape)} "
                                 f"and {tuple(labels.shape)}")
            if len(labels) and (labels.min() < 1 or labels.max() > len(self.cfg.classes)):
                raise ValueError(f"target labels must be in 1..{len(self.cfg.classes)}")
