"""A trained torch detector as the pipeline's `detect()`: uint8 images in, numpy boxes out.

Images are what OpenCV decodes (BGR, H x W x 3, or grey H x W); models see RGB in [0, 1] (grey replicated
to 3 channels), as the training datasets give it. Images of the same size are batched in one forward pass; CUDA runs under AMP.
Labels come back 0-based (0 = drone), the models' 1-based labels minus one (0 is their background).
"""
from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np
import torch

from detectors.tiling import TilingConfig, needs_tiling, tiled_detect


def pick_device(name: str = "auto") -> torch.device:
    """'auto': CUDA when present, else CPU; 'cpu'; 'cuda' (ValueError when absent)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA device is available")
    return torch.device(name)


def image_channels(image: np.ndarray, c: int) -> np.ndarray:
    """uint8 BGR or grey (H, W[, 3]) -> (H, W, c): RGB order for 3 channels, grey for 1."""
    if c == 1:
        return (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image)[..., None]
    return image[..., ::-1] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)


def to_tensor(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """Same-size uint8 BGR or grey images -> float RGB (B, 3, H, W) in [0, 1] on device."""
    arr = np.stack([image_channels(im, 3) for im in images])
    return torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().div_(255.0)


class TorchDetector:
    """`detect(image, homography=None) -> (xyxy, scores, labels)` and `detect_many(images)` for a
    torchvision-style detector whose eval forward returns [{boxes, scores, labels (1-based)}]. With
    `tiling`, frames larger than `tiling.above` are cut into overlapping tiles (detectors/tiling.py)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, min_score: float = 0.0,
                 tiling: TilingConfig | None = None):
        self.model = model.to(device).eval()
        self.device = device
        self.min_score = min_score
        self.tiling = tiling

    def detect(self, image: np.ndarray, homography: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.detect_many([image])[0]

    def detect_many(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            groups[im.shape[:2]].append(i)
        out: list = [None] * len(images)
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            for (h, w), idx in groups.items():
                x = to_tensor([images[i] for i in idx], self.device)
                if self.tiling is not None and needs_tiling(h, w, self.tiling):
                    results = [tiled_detect(self.model, t, self.tiling) for t in x]
                else:
                    results = self.model(x)
                for i, res in zip(idx, results):
                    keep = res["scores"] >= self.min_score
                    out[i] = (res["boxes"][keep].float().cpu().numpy(), res["scores"][keep].float().cpu().numpy(),
                              (res["labels"][keep] - 1).cpu().numpy())
        return out
