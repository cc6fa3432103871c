"""Learned models by name: building them from a (validated) config and loading checkpoints.

A checkpoint (detectors/checkpoint.py) holds `kind` and the model config as a plain dict; the config is
validated again into its dataclass on load, so a checkpoint made by another version fails with a message
that names the key, not deep inside the model.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detectors.backbone import BackboneConfig, build_backbone
from detectors.checkpoint import load_checkpoint, load_state
from detectors.inference import to_tensor
from detectors.wildcat import Wildcat, WildcatConfig, localize_batch
from pipeline.config import from_dict
from pipeline.errors import ConfigError, InputError
from pipeline.geometry.search_region import Box
from pipeline.types import Detections

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class WildcatModelConfig(WildcatConfig):
    """WILDCAT's config plus the FCN trunk it sits on (a checkpoint stores both as one plain dict)."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(width=0.25, output_stride=8))

    def validate(self, prefix: str = "") -> None:
        self.backbone.validate(prefix + "backbone.")
        super().validate(prefix)


def build_wildcat(cfg: WildcatModelConfig) -> Wildcat:
    return Wildcat(build_backbone(cfg.backbone), cfg)


def model_kinds() -> dict[str, tuple[type, Any]]:
    """kind -> (config dataclass, builder(config) -> nn.Module). Imported lazily (torch models)."""
    from detectors.dpfcn import DPFCN, DPFCNConfig
    from detectors.pyramid import PyramidConfig, PyramidDetector
    from fusion.detector import FusionDetector, FusionDetectorConfig

    return {"pyramid": (PyramidConfig, PyramidDetector), "dpfcn": (DPFCNConfig, DPFCN),
            "wildcat": (WildcatModelConfig, build_wildcat), "fusion": (FusionDetectorConfig, FusionDetector)}


def build_model(kind: str, config: Any) -> torch.nn.Module:
    """`config`: the kind's config dataclass, or a dict validated into it."""
    kinds = model_kinds()
    if kind not in kinds:
        raise ConfigError(f"model kind {kind!r} is not one of {', '.join(kinds)}")
    cfg_cls, builder = kinds[kind]
    if isinstance(config, dict):
        config = from_dict(cfg_cls, config, kind)
    return builder(config)


def resolve_path(path: str | Path) -> Path:
    """A relative path is taken from the working directory, else from the project root (the shipped
    checkpoints under detectors/weights/ work from anywhere)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def load_model(path: str | Path, kind: str | None = None) -> tuple[torch.nn.Module, dict]:
    """(model with the checkpoint's weights, in eval mode, on CPU; the checkpoint dict). Any problem is
    an InputError naming the file."""
    path = resolve_path(path)
    try:
        ckpt = load_checkpoint(path)
        if kind is not None and ckpt["kind"] != kind:
            raise ValueError(f"a {ckpt['kind']!r} checkpoint, expected {kind!r}")
        model = build_model(ckpt["kind"], ckpt["config"])
        load_state(model, ckpt["state_dict"])
    except (ValueError, ConfigError) as e:
        raise InputError(str(e), path) from None
    return model.eval(), ckpt


Window = tuple[int, int, int, int]  # x0, y0, x1, y1: integer pixel bounds of a crop, x1/y1 exclusive


class WildcatDetector:
    """A WILDCAT model as the pipeline's detector. `detect(image)` / `detect_many(images)` run on whole
    frames, `detect_crops([(image, window, focus)])` on crops at native resolution, mapped back to the
    frame. Each image or crop gives one box per class whose probability (sigmoid of the pooled score)
    reaches `min_score`, with the class map's peak in `extras["point"]` (frame pixels). With a `focus`
    box (a search region inside the window), only map cells whose centre lies within half a cell of it
    can hold the peak (the crop around it only gives the network context)."""

    def __init__(self, model: Wildcat, device: torch.device, min_score: float = 0.0):
        self.model = model.to(device).eval()
        self.device = device
        self.min_score = min_score

    def detect(self, image: np.ndarray, homography: np.ndarray | None = None) -> Detections:
        return self.detect_many([image])[0]

    def detect_many(self, images: list[np.ndarray]) -> list[Detections]:
        return self.detect_crops([(im, (0, 0, im.shape[1], im.shape[0]), None) for im in images])

    def detect_crops(self, crops: list[tuple[np.ndarray, Window, Box | None]]) -> list[Detections]:
        """Crops of the same size (and channels) run as one batch."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (im, (x0, y0, x1, y1), _) in enumerate(crops):
            groups[y1 - y0, x1 - x0, im.ndim].append(i)
        out: list[Detections] = [Detections.empty()] * len(crops)
        m = self.model
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            for (h, w, _), idx in groups.items():
                batch = to_tensor([crops[i][0][crops[i][1][1]:crops[i][1][3], crops[i][1][0]:crops[i][1][2]]
                                   for i in idx], self.device)
                res = m(batch)
                maps = res["maps"].float()
                for k, i in enumerate(idx):
                    if crops[i][2] is not None:
                        maps[k] = self._mask(maps[k], crops[i][2], crops[i][1])
                found = localize_batch(res["scores"], maps, m.stride, (h, w), m.cfg.box_threshold, m.offset,
                                       self.min_score, m.cfg.box)
                for i, (xyxy, scores, labels, points) in zip(idx, found):
                    x0, y0 = crops[i][1][:2]
                    out[i] = Detections(xyxy + np.array([x0, y0, x0, y0], np.float32), scores, labels,
                                        extras={"point": points + np.array([x0, y0], np.float32)})
        return out

    def _mask(self, maps: torch.Tensor, focus: Box, window: Window) -> torch.Tensor:
        """(C, h, w) maps with the cells outside `focus` (frame pixels, grown by half a cell) set to
        each map's minimum."""
        s, off = self.model.stride, self.model.offset

        def inside(n: int, origin: int, lo: float, hi: float) -> torch.Tensor:
            centre = s * torch.arange(n, device=maps.device) + off + 0.5 + origin
            return (centre >= lo - s / 2) & (centre <= hi + s / 2)

        keep = inside(maps.shape[1], window[1], focus[1], focus[3])[:, None] \
            & inside(maps.shape[2], window[0], focus[0], focus[2])[None, :]
        low = maps.flatten(1).min(1).values[:, None, None]
        return torch.where(keep, maps, low)
