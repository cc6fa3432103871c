"""Fully convolutional ResNet trunks (stem + layer1..4, no pooling head) built from torchvision's blocks.

The stride of the last stage (or of the last two) is replaced by dilation, as in DeepLab / R-FCN, so the
output keeps stride 16 (or 8). A width multiplier scales every stage's channels (1.0: torchvision's
counts), so a torchvision ResNet state_dict loads into a width-1.0 trunk (its fc.* keys are ignored).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from detectors.checkpoint import load_state

STAGES = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}


@dataclass
class BackboneConfig:
    depth: Literal[18, 34, 50] = 18
    width: float = 0.5  # channel multiplier of every stage (1.0: torchvision's resnet)
    output_stride: Literal[8, 16] = 16  # 16: layer4 dilated; 8: layer3 and layer4 dilated
    in_channels: int = 3
    weights: str | None = None  # a user's weight file (state_dict), loaded when the trunk is built

    def validate(self, prefix: str = "") -> None:
        if not 0.0 < self.width <= 4.0:
            raise ValueError(f"{prefix}width: must be in (0, 4]")
        if self.in_channels < 1:
            raise ValueError(f"{prefix}in_channels: must be >= 1")
        if self.weights is not None and not self.weights.strip():
            raise ValueError(f"{prefix}weights: empty path (leave it out for random initialisation)")


class ResNetTrunk(nn.Module):
    """torchvision ResNet minus avgpool/fc, same attribute names (conv1, bn1, layer1..4)."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        block, counts = STAGES[cfg.depth]
        planes = [max(1, round(c * cfg.width)) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(cfg.in_channels, planes[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        dilated = 1 if cfg.output_stride == 16 else 2  # how many of the last stages trade stride for dilation
        inplanes, dilation = planes[0], 1
        for i, (p, n) in enumerate(zip(planes, counts)):
            stride = 1 if i == 0 else 2
            first_dilation = dilation
            if i >= 4 - dilated:
                dilation *= stride
                stride = 1
            layer, inplanes = _stage(block, inplanes, p, n, stride, first_dilation, dilation)
            setattr(self, f"layer{i + 1}", layer)
        self.out_channels = inplanes
        self.stride = cfg.output_stride
        self.offset = 0.0  # input pixel at the centre of cell (0, 0): 'same'-padded odd kernels throughout
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _stage(block: type, inplanes: int, planes: int, blocks: int, stride: int, first_dilation: int,
           dilation: int) -> tuple[nn.Sequential, int]:
    """Like torchvision's ResNet._make_layer; dilation is set on the blocks' 3x3 convolutions afterwards,
    since BasicBlock refuses a dilation argument."""
    out = planes * block.expansion
    down = None
    if stride != 1 or inplanes != out:
        down = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
    layers = [block(inplanes, planes, stride, down)] + [block(out, planes) for _ in range(blocks - 1)]
    for i, b in enumerate(layers):
        d = first_dilation if i == 0 else dilation
        for m in b.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                m.dilation, m.padding = (d, d), (d, d)
    return nn.Sequential(*layers), out


def _init(module: nn.Module) -> None:
    """torchvision's ResNet initialisation, with zero_init_residual (helps training from scratch)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():  # after the loop above, which visits a block before its norms
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


def build_backbone(cfg: BackboneConfig) -> ResNetTrunk:
    """The trunk, with `cfg.weights` loaded when given. Output (B, out_channels, ceil(H/s), ceil(W/s))."""
    trunk = ResNetTrunk(cfg)
    if cfg.weights is not None:
        load_weights(trunk, cfg.weights)
    return trunk


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a state_dict file (raw, or under "state_dict" / "model") into `module`; a torchvision ResNet's
    fc.* keys are ignored. ValueError with a one-line message naming the file on any problem."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such weight file") from None
    except Exception as e:  # pickle, zip and torch errors for foreign or truncated files
        raise ValueError(f"{path}: not a readable weight file ({type(e).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state_dict (expected a mapping of names to tensors)")
    state = {k: v for k, v in obj.items() if not k.startswith("fc.")}
    for k, v in module.state_dict().items():  # files saved by old torch versions lack these counters
        if k.endswith("num_batches_tracked"):
            state.setdefault(k, v)
    try:
        load_state(module, state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
