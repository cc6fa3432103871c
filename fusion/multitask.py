"""ROCK: a residual auxiliary block for multi-task detection (Mordan et al., NeurIPS 2018).

Auxiliary tasks help the primary one (detection) as privileged information (Vapnik and Vashist 2009):
their targets are needed in training only. ROCK inserts, between the trunk and the detection head, a
block that for each auxiliary task t
  1. encodes the main features F (B, C, h, w) into task features H_t = ReLU(conv1x1_t(F)) (B, hidden, h, w),
  2. predicts the task's target from them: here per-image targets, so y_t = Linear_t(GAP(H_t)) (B, d_t),
  3. projects H_t back to C channels with a 1x1 conv and ADDS it to F (residual merge):
     F' = F + sum_t conv1x1'_t(H_t)   (B, C, h, w),
so the detection head sees features refined by what the auxiliary encoders learned, and at inference the
block runs unchanged with the predictions simply unused (no telemetry needed). No activation after the sum.

Our auxiliary targets (per image, from telemetry or the synthetic metadata; see `encode_targets`):
- "log_range" (d = 1): natural log of the range to the target in metres (range spans 50 m..2 km; the log
  makes errors relative);
- "pan", "tilt" (d = 2 each): (sin, cos) of the turret's angle. Not degrees/90: pan wraps at +-180 deg, and a
  regression on the raw angle would call 179 and -179 deg far apart; (sin, cos) is continuous, and the
  angle comes back with atan2 (`decode_angle`);
- "signature" (d = 1): the target's thermal signature, a scalar as given (e.g. the target-minus-background
  radiometric contrast); the caller scales it to order 1.
Any target may be missing for a sample: NaN in its row. `rock_loss` is, per task, the smooth L1 (Huber)
loss averaged over the available (finite) target entries, then the weighted sum over tasks; a task
without any available entry adds 0, and with nothing available at all the loss is 0 (still a graph node).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_TASKS = {"log_range": 1, "pan": 2, "tilt": 2, "signature": 1}


@dataclass
class RockConfig:
    channels: int  # C of the feature map the block refines
    hidden: int = 64  # channels of each task's encoded features
    tasks: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TASKS))  # name -> target size d_t
    loss_weights: dict[str, float] = field(default_factory=dict)  # name -> weight (missing: 1.0)
    huber_beta: float = 1.0  # smooth L1 transition point

    def validate(self, prefix: str = "") -> None:
        def check(cond: bool, key: str, message: str) -> None:
            if not cond:
                raise ValueError(f"{prefix}{key}: {message}")

        check(self.channels >= 1, "channels", "must be >= 1")
        check(self.hidden >= 1, "hidden", "must be >= 1")
        check(len(self.tasks) >= 1, "tasks", "give at least one auxiliary task")
        for name, dim in self.tasks.items():
            check(name.isidentifier(), f"tasks.{name}", "task names must be identifiers")
            check(dim >= 1, f"tasks.{name}", "target size must be >= 1")
        for name, w in self.loss_weights.items():
            check(name in self.tasks, f"loss_weights.{name}", f"not a task (tasks: {', '.join(self.tasks)})")
            check(math.isfinite(w) and w >= 0, f"loss_weights.{name}", "must be a finite number >= 0")
        check(self.huber_beta > 0, "huber_beta", "must be > 0")


class RockBlock(nn.Module):
    """forward(feat (B, C, h, w)) -> (refined (B, C, h, w), {task: (B, d_t)})."""

    def __init__(self, cfg: RockConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        c, k = cfg.channels, cfg.hidden
        self.encoders = nn.ModuleDict({t: nn.Sequential(nn.Conv2d(c, k, 1), nn.ReLU()) for t in cfg.tasks})
        self.heads = nn.ModuleDict({t: nn.Linear(k, d) for t, d in cfg.tasks.items()})
        self.merges = nn.ModuleDict({t: nn.Conv2d(k, c, 1) for t in cfg.tasks})
        self.out_channels = c

    def forward(self, feat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if feat.ndim != 4 or feat.shape[1] != self.cfg.channels:
            raise ValueError(f"feat must be (B, {self.cfg.channels}, h, w), got {tuple(feat.shape)}")
        refined, preds = feat, {}
        for t in self.cfg.tasks:
            h = self.encoders[t](feat)
            preds[t] = self.heads[t](h.mean((2, 3)))
            refined = refined + self.merges[t](h)
        return refined, preds

    def loss(self, preds: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        return rock_loss(preds, targets, self.cfg.loss_weights, self.cfg.huber_beta)


def rock_loss(preds: Mapping[str, Tensor], targets: Mapping[str, Tensor],
              weights: Mapping[str, float] | None = None, beta: float = 1.0) -> Tensor:
    """sum_t w_t * mean over finite target entries of smooth_l1(pred_t, target_t); NaN targets are
    missing and excluded (no NaN reaches the value or the gradients). Tasks absent from `targets`, or with
    no finite entry, add 0. Returns a scalar tensor."""
    weights = weights or {}
    total = None
    for name, target in targets.items():
        if name not in preds:
            raise ValueError(f"target {name!r} has no prediction (predicted: {', '.join(preds)})")
        pred = preds[name]
        target = torch.as_tensor(target, dtype=pred.dtype, device=pred.device)
        if target.shape != pred.shape:
            raise ValueError(f"target {name!r}: shape {tuple(target.shape)} != prediction {tuple(pred.shape)}")
        ok = torch.isfinite(target)
        safe = torch.where(ok, target, pred.detach())  # missing entries: zero residual, zero gradient
        per = torch.where(ok, F.smooth_l1_loss(pred, safe, reduction="none", beta=beta), 0.0)
        term = weights.get(name, 1.0) * per.sum() / ok.sum().clamp_min(1)
        total = term if total is None else total + term
    if total is None:
        zero = [torch.where(torch.zeros_like(p, dtype=torch.bool), p, 0.0).sum() for p in preds.values()]
        total = sum(zero[1:], zero[0]) if zero else torch.zeros(())
    return total


def _column(values, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=torch.float32)
    if t.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array (one value per image), got shape {tuple(t.shape)}")
    return t


def encode_targets(range_m=None, pan_deg=None, tilt_deg=None, signature=None) -> dict[str, Tensor]:
    """Per-image telemetry (1-D arrays, NaN where unknown; None: task not supervised) -> rock targets:
    log_range (B, 1) (range <= 0 counts as missing), pan and tilt (B, 2) = (sin, cos), signature (B, 1)."""
    out: dict[str, Tensor] = {}
    if range_m is not None:
        r = _column(range_m, "range_m")
        out["log_range"] = torch.where(r > 0, torch.log(r.clamp_min(1e-12)), torch.nan)[:, None]
    for name, deg in (("pan", pan_deg), ("tilt", tilt_deg)):
        if deg is not None:
            a = torch.deg2rad(_column(deg, f"{name}_deg"))
            out[name] = torch.stack([torch.sin(a), torch.cos(a)], 1)
    if signature is not None:
        out["signature"] = _column(signature, "signature")[:, None]
    return out


def decode_angle(pred: Tensor) -> Tensor:
    """(B, 2) (sin, cos) predictions -> (B,) angles in degrees in [-180, 180] (atan2)."""
    return torch.rad2deg(torch.atan2(pred[:, 0], pred[:, 1]))


def decode_range(pred: Tensor) -> Tensor:
    """(B, 1) log-range predictions -> (B,) metres."""
    return torch.exp(pred[:, 0])
