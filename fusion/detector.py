"""A dense RGB + thermal drone detector: per-modality encoders, a fusion operator that survives a missing
sensor, an optional optical-flow stream (two-stream), an optional ROCK auxiliary block, a centre-point head.

Why a centre-point head. Synthetic and real drones are 2-10 px. A stride-8 map (WILDCAT, DP-FCN's trunk)
puts a whole drone in one cell, so its boxes rarely reach IoU 0.5; this detector keeps stride 4 and
predicts, per cell, a drone-centre heat (sigmoid), the sub-cell offset of the centre and the log box size
(Zhou et al. 2019, "Objects as points"), so a 4 px box is placed to a fraction of a pixel. Trained with the
penalty-reduced focal loss on Gaussian heat targets and L1 on offset and size at the centre cells.

Inputs, all on the reference camera's pixel grid (the other camera's image is registered onto it through
the calibrations, `pipeline/geometry/registration.py`): images[m] (B, C_m, H, W) float in [0, 1] or None (rgb: 3
channels, thermal: 1), `present` (B, M) bool, and `flow` (B, 2L, H, W) or None when `flow` > 0. At least
one image tensor must be given (flow alone is not a detector input).

Where the modalities meet (`operator`, see fusion/operators.py): `early` stacks the registered images with
availability-mask channels before one encoder; `concat`, `mutan` and `gated` join the per-modality stride-4
features; `late` runs one encoder + head per modality and averages the heat probabilities and the box
regressions over the present modalities; `none` is a single-modality model (one entry in `modalities`).
Every operator takes the per-sample availability mask, so a frame whose partner is None or a sensor that
is offline still gets detections; modality dropout (`dropout_p`) teaches that in training. Absent samples'
images are replaced by zeros before any layer sees them, so NaN there cannot reach batch-norm statistics.

Two-stream (`flow` = L > 0, Simonyan & Zisserman 2014; Feichtenhofer et al. 2016): a second encoder whose
first convolution sees the 2L flow channels; its stride-4 maps join the fused appearance maps by
convolutional fusion (concatenation, 1x1 conv, BN, ReLU) before the head. Missing flow means zero flow.

ROCK (`rock` true, Mordan et al. 2018): `fusion.multitask.RockBlock` between the fused features and the
head, trained on per-image auxiliary targets (range, pan/tilt, thermal signature); inference ignores its
predictions and needs no telemetry. With late fusion each modality has its block, and the predictions are
averaged over the present modalities.

Output of forward: {"heat": (B, 1, H/4, W/4) probabilities, "reg": (B, 4, H/4, W/4) = (offset x, offset y,
log(w / stride), log(h / stride)), "aux": {task: (B, d)} (ROCK only)}; `decode` turns it into boxes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from detectors.centre import centre_loss, centre_targets, decode_centres  # noqa: F401 (re-exported)
from fusion.multitask import DEFAULT_TASKS, RockBlock, RockConfig
from fusion.operators import EarlyFusion, FusionConfig, build_fusion, late_fusion, modality_dropout

MODALITY_CHANNELS = {"rgb": 3, "thermal": 1}
STRIDE = 4


@dataclass
class FusionDetectorConfig:
    modalities: list[str] = field(default_factory=lambda: ["rgb", "thermal"])
    operator: str = "mutan"          # early | concat | mutan | gated | late | none (one modality)
    width: int = 8                   # encoder channels at stride 2; features are 2 * width at stride 4
    rank: int = 5                    # MUTAN's R
    mutan_dim: int = 32              # MUTAN's d
    dropout_p: float = 0.3           # modality dropout in training (fused models)
    flow: int = 0                    # L flow fields of the reference stream (2L channels); 0: appearance only
    rock: bool = False               # ROCK auxiliary block (training-time targets only)
    aux_tasks: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TASKS))
    aux_weight: float = 0.1          # weight of the auxiliary loss
    classes: list[str] = field(default_factory=lambda: ["drone"])
    max_detections: int = 20         # per image
    nms_iou: float = 0.3

    def validate(self, prefix: str = "") -> None:
        def check(cond: bool, key: str, message: str) -> None:
            if not cond:
                raise ValueError(f"{prefix}{key}: {message}")

        check(len(self.modalities) >= 1 and all(m in MODALITY_CHANNELS for m in self.modalities)
              and len(set(self.modalities)) == len(self.modalities), "modalities",
              f"give distinct modalities among {', '.join(MODALITY_CHANNELS)}")
        single = len(self.modalities) == 1
        check(self.operator in ("early", "concat", "mutan", "gated", "late", "none"), "operator",
              "must be one of early, concat, mutan, gated, late, none")
        check((self.operator == "none") == single, "operator",
              "one modality needs 'none'; two need early, concat, mutan, gated or late")
        check(self.width >= 4, "width", "must be >= 4")
        check(0.0 <= self.dropout_p < 1.0, "dropout_p", "must be in [0, 1)")
        check(self.flow >= 0, "flow", "must be >= 0 (0: no flow stream)")
        check(self.aux_weight >= 0, "aux_weight", "must be >= 0")
        check(self.classes == ["drone"], "classes", "the fusion detector finds drones only: [drone]")
        check(self.max_detections >= 1, "max_detections", "must be >= 1")
        check(0.0 < self.nms_iou <= 1.0, "nms_iou", "must be in (0, 1]")
        RockConfig(2 * self.width, tasks=dict(self.aux_tasks)).validate(prefix + "aux_tasks.")

    @property
    def channels(self) -> list[int]:
        return [MODALITY_CHANNELS[m] for m in self.modalities]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """(B, C_in, H, W) -> (B, 2w, H/4, W/4): ResNet basic blocks at strides 2, 4 and 8; the stride-8 maps
    (context) are upsampled and added to the stride-4 ones (one top-down step of a feature pyramid)."""

    def __init__(self, cin: int, w: int):
        super().__init__()
        self.s2 = nn.Sequential(_conv(cin, w, 2), BasicBlock(w, w))
        self.s4 = nn.Sequential(_conv(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))
        self.s8 = nn.Sequential(_conv(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))
        self.lateral = nn.Conv2d(4 * w, 2 * w, 1)
        self.out_channels = 2 * w

    def forward(self, x: Tensor) -> Tensor:
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        return f4 + F.interpolate(self.lateral(f8), size=f4.shape[-2:], mode="nearest")


class CentreHead(nn.Module):
    """(B, C, h, w) -> heat logits (B, 1, h, w) and regressions (B, 4, h, w)."""

    def __init__(self, c: int):
        super().__init__()
        self.heat = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, 1, 1))
        self.reg = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, 4, 1))
        nn.init.constant_(self.heat[-1].bias, -math.log((1 - 0.01) / 0.01))  # prior 0.01 (RetinaNet)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.heat(x), self.reg(x)


class FusionDetector(nn.Module):
    """See the module docstring. `forward(images, present, flow=None)`."""

    def __init__(self, cfg: FusionDetectorConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.stride = STRIDE
        w, chans = cfg.width, cfg.channels
        feat = 2 * w
        self.early = self.fuse = None
        if cfg.operator == "early":
            self.early = EarlyFusion(chans, cfg.dropout_p)
            self.encoders = nn.ModuleList([Encoder(self.early.out_channels, w)])
        else:
            self.encoders = nn.ModuleList([Encoder(c, w) for c in chans])
        if cfg.operator in ("concat", "mutan", "gated"):
            self.fuse = build_fusion(FusionConfig(cfg.operator, [feat] * len(chans), feat, cfg.rank,
                                                  cfg.mutan_dim, cfg.dropout_p))
        n_heads = len(chans) if cfg.operator == "late" else 1
        self.flow_encoder = Encoder(2 * cfg.flow, w) if cfg.flow > 0 else None
        self.flow_join = nn.Sequential(nn.Conv2d(2 * feat, feat, 1, bias=False), nn.BatchNorm2d(feat),
                                       nn.ReLU(inplace=True)) if cfg.flow > 0 else None
        self.rock = RockBlock(RockConfig(feat, hidden=feat, tasks=dict(cfg.aux_tasks))) if cfg.rock else None
        self.heads = nn.ModuleList([CentreHead(feat) for _ in range(n_heads)])

    def _refine(self, f: Tensor, flow_feat: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Convolutional fusion with the flow stream, then the ROCK block (features, auxiliary predictions)."""
        if flow_feat is not None:
            f = self.flow_join(torch.cat([f, flow_feat], 1))
        if self.rock is None:
            return f, {}
        return self.rock(f)

    def _inputs(self, images: list[Tensor | None], present: Tensor, flow: Tensor | None
                ) -> tuple[list[Tensor | None], Tensor | None, tuple[int, int]]:
        """Images cleaned (absent samples zeroed) and padded to a multiple of 8, the flow stream's maps,
        and the input size (H, W)."""
        cfg = self.cfg
        if len(images) != len(cfg.modalities):
            raise ValueError(f"images: expected {len(cfg.modalities)} entries ({', '.join(cfg.modalities)})")
        ref = next((t for t in images if t is not None), None)
        if ref is None:
            raise ValueError("images: every modality is None")
        b, _, h, w = ref.shape
        pad_h, pad_w = (-h) % 8, (-w) % 8  # the encoder halves three times
        zero = torch.zeros((), dtype=ref.dtype, device=ref.device)
        images = [None if t is None else F.pad(torch.where(present[:, m, None, None, None].to(t.device), t, zero),
                                               (0, pad_w, 0, pad_h)) for m, t in enumerate(images)]
        flow_feat = None
        if cfg.flow > 0:
            flow = ref.new_zeros(b, 2 * cfg.flow, h, w) if flow is None else flow
            flow_feat = self.flow_encoder(F.pad(flow, (0, pad_w, 0, pad_h)))
        return images, flow_feat, (h, w)

    def features(self, images: list[Tensor | None], present: Tensor, flow: Tensor | None = None
                 ) -> tuple[Tensor, dict[str, Tensor], tuple[int, int]]:
        """The fused, refined stride-4 maps (B, 2w, ceil8(H)/4, ceil8(W)/4) that the head reads, the auxiliary
        predictions, and the input size: every operator but late (whose modalities have their own heads)."""
        if self.cfg.operator == "late":
            raise ValueError("late fusion has one head per modality: no single fused map")
        images, flow_feat, size = self._inputs(images, present, flow)
        if self.cfg.operator == "early":
            f = self.encoders[0](self.early(images, present))
        elif self.cfg.operator == "none":
            f = self.encoders[0](images[0])
        else:
            f = self.fuse([None if x is None else enc(x) for x, enc in zip(images, self.encoders)], present)
        f, aux = self._refine(f, flow_feat)
        return f, aux, size

    def head_output(self, f: Tensor, size: tuple[int, int], head: nn.Module | None = None) -> dict:
        """Heat probabilities and regressions of fused maps, cropped to the input size."""
        hl, reg = (head or self.heads[0])(f)
        oh, ow = math.ceil(size[0] / self.stride), math.ceil(size[1] / self.stride)
        return {"heat": torch.sigmoid(hl.float())[..., :oh, :ow], "reg": reg.float()[..., :oh, :ow]}

    def forward(self, images: list[Tensor | None], present: Tensor, flow: Tensor | None = None) -> dict:
        cfg = self.cfg
        if cfg.operator != "late":
            f, aux, size = self.features(images, present, flow)
            out = self.head_output(f, size)
        else:
            images, flow_feat, size = self._inputs(images, present, flow)
            if self.training and cfg.dropout_p > 0:
                present = modality_dropout(present, cfg.dropout_p)
            heats, regs, auxes = [], [], []
            for x, enc, head in zip(images, self.encoders, self.heads):
                if x is None:
                    heats.append(None)
                    regs.append(None)
                    auxes.append(None)
                    continue
                f, preds = self._refine(enc(x), flow_feat)
                hl, rg = head(f)
                heats.append(torch.sigmoid(hl.float()))
                regs.append(rg.float())
                auxes.append(preds)
            oh, ow = math.ceil(size[0] / self.stride), math.ceil(size[1] / self.stride)
            out = {"heat": late_fusion(heats, present)[..., :oh, :ow], "reg": late_fusion(regs, present)[..., :oh, :ow]}
            aux = {}
            if self.rock is not None:  # each modality's auxiliary predictions, averaged over the present ones
                aux = {k: late_fusion([None if a is None else a[k].float() for a in auxes], present)
                       for k in self.rock.cfg.tasks}
        if self.rock is not None:
            out["aux"] = aux
        return out


def decode(out: dict, min_score: float = 0.05, max_detections: int = 20, nms_iou: float = 0.3,
           stride: int = STRIDE) -> list[tuple[Tensor, Tensor]]:
    """Per image (xyxy (N, 4) pixels, scores (N,)) of the one-class heat (detectors.centre.decode_centres)."""
    return [(boxes, scores) for boxes, scores, _ in decode_centres(out, min_score, max_detections, nms_iou, stride)]
