"""Two-stream FCN trunk: an appearance stream on the image and a temporal stream on stacked optical flow.

Simonyan & Zisserman (NIPS 2014) run two ConvNets, one on an RGB frame and one on L stacked flow fields
(2L channels, `detectors.flow.FlowStack`), and average their class scores (late fusion). Feichtenhofer,
Pinz & Zisserman (CVPR 2016) showed that fusing the two streams' feature maps inside the network, by a
learnt 1x1 convolution over the concatenated maps after the last convolutional block, does as well with
half the head parameters and lets the network relate where something is to how it moves. Here both
streams are the project's ResNet trunks (`detectors.backbone`), so the fused trunk plugs in wherever a
backbone does (WILDCAT takes any nn.Module with `out_channels`, `stride`, `offset`):

  images (B, 3, H, W) -> appearance trunk -> A (B, Ca, h, w)
  flow (B, 2L, H, W)  -> flow trunk       -> F (B, Cf, h, w)     h = ceil(H / stride), w = ceil(W / stride)

  fusion "conv": relu(conv1x1([A, F])) -> (B, Ca, h, w). Feichtenhofer et al.'s conv fusion, followed by a
                 ReLU so the fused map is, like every ResNet trunk's output, a post-ReLU map the heads were
                 designed for. Initialised as their "sum" initialisation, [I, I] (the flow part a
                 rectangular identity when Cf != Ca), zero bias: at the start the fused map is A + F
                 (both maps are >= 0, so the ReLU is inert) and both streams get gradients from step one.
  fusion "sum":  A + P(F): P is the identity when Cf == Ca, else relu(conv1x1) from Cf to Ca channels.
  fusion "late": `forward` returns A only (the appearance detector); `forward_both` returns (A, P(F)), both
                 with Ca channels, so one head can be applied to each map and its outputs averaged
                 (`late_average`), or separate heads can be trained per stream (Simonyan & Zisserman).

`flow=None` (the first frame of a video, or no flow computed) is an all-zero flow stack: "no motion seen",
the same input `FlowStack` gives before it has L frame pairs, so a detector trained on zero-padded stacks
sees at inference what it saw in training. The flow trunk still runs on it (once trained, its output on
zeros is not zero: BatchNorm shifts and running means), so `forward(x)` equals `forward(x, zeros)` exactly.

Both trunks must have one output stride (and so one `offset`); the output keeps the appearance trunk's
`out_channels`, `stride` and `offset`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from detectors.backbone import BackboneConfig, build_backbone

FUSIONS = ("conv", "late", "sum")


@dataclass
class TwoStreamConfig:
    appearance: BackboneConfig = field(default_factory=BackboneConfig)
    flow: BackboneConfig = field(default_factory=lambda: BackboneConfig(in_channels=10))  # 2 * flow_length
    flow_length: int = 5  # L flow fields stacked (detectors.flow.FlowConfig.length)
    fusion: Literal["conv", "late", "sum"] = "conv"

    def validate(self, prefix: str = "") -> None:
        self.appearance.validate(prefix + "appearance.")
        self.flow.validate(prefix + "flow.")
        checks = [(self.flow_length >= 1, "flow_length", "must be >= 1"),
                  (self.flow.in_channels == 2 * self.flow_length, "flow.in_channels",
                   f"must be 2 * flow_length = {2 * self.flow_length} (x and y of each field), "
                   f"got {self.flow.in_channels}"),
                  (self.flow.output_stride == self.appearance.output_stride, "flow.output_stride",
                   f"must equal appearance.output_stride ({self.appearance.output_stride}) so the maps align, "
                   f"got {self.flow.output_stride}"),
                  (self.fusion in FUSIONS, "fusion", f"must be one of {', '.join(FUSIONS)}")]
        for ok, key, message in checks:
            if not ok:
                raise ValueError(f"{prefix}{key}: {message}")


class TwoStreamTrunk(nn.Module):
    """`forward(images (B, Ca_in, H, W), flow (B, 2L, H, W) or None) -> (B, out_channels, h, w)`; with
    fusion "late" the appearance map only, see `forward_both`. Attributes `out_channels`, `stride`,
    `offset` as `ResNetTrunk`'s. Inputs are used as given (normalise images as for any backbone; flow
    stacks from `FlowStack` are already in [-1, 1])."""

    def __init__(self, cfg: TwoStreamConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.appearance = build_backbone(cfg.appearance)
        self.flow = build_backbone(cfg.flow)
        if (self.appearance.stride, self.appearance.offset) != (self.flow.stride, self.flow.offset):
            raise ValueError("flow: the two trunks' maps do not align (stride or offset differ)")
        ca, cf = self.appearance.out_channels, self.flow.out_channels
        self.out_channels, self.stride, self.offset = ca, self.appearance.stride, self.appearance.offset
        self.flow_channels = 2 * cfg.flow_length
        self.project: nn.Module = nn.Identity()  # flow map -> Ca channels ("sum", "late")
        if cfg.fusion != "conv" and cf != ca:
            self.project = nn.Sequential(nn.Conv2d(cf, ca, 1), nn.ReLU(inplace=True))
        self.fuse: nn.Module | None = None
        if cfg.fusion == "conv":
            conv = nn.Conv2d(ca + cf, ca, 1)
            with torch.no_grad():  # Feichtenhofer et al.'s "sum" initialisation: A + F
                conv.weight.copy_(torch.cat([torch.eye(ca), torch.eye(ca, cf)], 1)[:, :, None, None])
                conv.bias.zero_()
            self.fuse = nn.Sequential(conv, nn.ReLU(inplace=True))

    def forward(self, images: torch.Tensor, flow: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.fusion == "late":
            return self.appearance(images)
        app, motion = self._streams(images, flow)
        if self.fuse is not None:
            return self.fuse(torch.cat([app, motion], 1))
        return app + self.project(motion)

    def forward_both(self, images: torch.Tensor, flow: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(appearance map, flow map), before fusion, both (B, h, w) grids; the flow map has `out_channels`
        channels except under "conv" fusion (which has no projection: there it is the raw Cf-channel map)."""
        app, motion = self._streams(images, flow)
        return app, (motion if self.fuse is not None else self.project(motion))

    def _streams(self, images: torch.Tensor, flow: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = images.shape
        if flow is None:  # no motion seen: the zero stack FlowStack gives before its first pair
            flow = images.new_zeros(b, self.flow_channels, h, w)
        elif flow.shape != (b, self.flow_channels, h, w):
            raise ValueError(f"flow: expected shape {(b, self.flow_channels, h, w)}, got {tuple(flow.shape)}")
        return self.appearance(images), self.flow(flow)


def build_two_stream(cfg: TwoStreamConfig) -> TwoStreamTrunk:
    """The trunk, with each stream's `weights` file loaded when given (a flow trunk's file must have been
    saved with 2L input channels)."""
    return TwoStreamTrunk(cfg)


def late_average(head: Callable[[torch.Tensor], Any], app: torch.Tensor, flow: torch.Tensor,
                 flow_head: Callable[[torch.Tensor], Any] | None = None) -> Any:
    """Late fusion (Simonyan & Zisserman): the mean of `head(app)` and `(flow_head or head)(flow)`, e.g. on
    `trunk.forward_both(images, flow)`. Head outputs may be tensors or mappings of tensors (averaged key by
    key; other values are taken from the appearance head's output). Average logits, not probabilities,
    for heads trained with a logistic or soft-margin loss."""
    a, f = head(app), (flow_head or head)(flow)
    if isinstance(a, torch.Tensor):
        return (a + f) / 2
    if isinstance(a, Mapping):
        return {k: (v + f[k]) / 2 if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    raise TypeError(f"head: returns {type(a).__name__}; expected a tensor or a mapping of tensors")
