"""Training samples with frame-level labels only (WILDCAT): whether a kept frame shows a drone, never
where (no box from any annotation).

Label of each kept frame (the frames of `pipeline.training.datasets.FrameStore`):
- flights with telemetry: `labels: gps` is the drone's presence from its GPS-RTK log, the turret's pose
  and the stream's calibration (`pipeline.training.weak_labels.presence_labels`; unknown frames are dropped);
  `labels: gt` is presence from the ground truth (the frame has a drone box), to measure what the GPS
  labels cost;
- Svanstrom clips: the clip's label (drone clips 1; bird, airplane and helicopter clips 0), on the
  clip's labelled frames (the frames showing its target), their boxes unused.
Where the telemetry gives them, a frame also carries the cooperative drones' search boxes
(`pipeline.geometry.search_region`: GPS and pose geometry, grown by their errors), which place the crops.

Samples (`WeakCropDataset`): S x S crops at native resolution (scale jitter around 1), label 0 or 1:
- a present frame with search boxes: with probability `p_object`, a crop holding one of them whole
  (positive); otherwise a crop that overlaps none of them (negative: the GPS says no cooperative drone
  is there), or the positive crop when 10 draws find no such place;
- a present frame without search boxes: the whole frame, downscaled to fit S when larger (positive);
- an absent frame: a crop anywhere (negative);
- a Svanstrom clip's frame, of either label: the whole frame, downscaled to fit S when larger (so that
  positives and negatives go through the same resampling, which the network could otherwise learn to tell
  apart instead of drones from birds).
Then a horizontal flip (p 0.5) and the photometric jitter of `pipeline.training.datasets`. Sample i of epoch e depends
only on (seed, e, i).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np
import torch

from pipeline.config import require
from pipeline.training.datasets import FrameRecord, FrameStore, _offset, _to_tensor, photometric
from pipeline.io.flight import load_flight
from pipeline.geometry.search_region import SearchConfig, search_boxes_for_frame
from pipeline.io.svanstrom import clip_info
from pipeline.io.telemetry import load_flight_telemetry
from pipeline.training.weak_labels import UNKNOWN, LabelConfig, frame_times, presence_labels

DRONE = 1  # FrameRecord label of drones


@dataclass
class WeakConfig:
    labels: Literal["gps", "gt"] = "gps"  # frame labels of flights with telemetry (Svanstrom: the clip's)
    point_tolerance: float = 8.0  # px: a peak this close to a ground-truth box still points at it
    best: Literal["pointing", "point_ap", "ap50"] = "pointing"  # validation metric reported as `score`
    scale: tuple[float, float] = (0.8, 1.25)  # scale jitter of the training crops
    presence: LabelConfig = field(default_factory=LabelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def validate(self, prefix: str) -> None:
        require(self.point_tolerance >= 0, prefix + "point_tolerance", "must not be negative")
        require(0 < self.scale[0] <= self.scale[1], prefix + "scale", "must be (low, high) with 0 < low <= high")


@dataclass
class WeakFrame:
    record: FrameRecord
    label: int  # 1 present, 0 absent
    regions: np.ndarray | None  # float32 (K, 4) xyxy search boxes of the drones in view; None: unknown
    whole: bool = False  # a clip-labelled frame: always sampled whole


class WeakFrames:
    """The kept frames of `flights` that have a known label (see the module docstring)."""

    def __init__(self, flights: Sequence[str | Path], cfg: WeakConfig, every: int = 5, jpeg: int | None = 95):
        self.frames: list[WeakFrame] = []
        for folder in flights:
            self.frames += _flight_frames(Path(folder), cfg, every, jpeg)

    def __len__(self) -> int:
        return len(self.frames)

    def counts(self) -> tuple[int, int]:
        """(positive, negative) frames."""
        pos = sum(f.label for f in self.frames)
        return pos, len(self.frames) - pos


def _flight_frames(folder: Path, cfg: WeakConfig, every: int, jpeg: int | None) -> list[WeakFrame]:
    flight = load_flight(folder)
    records = FrameStore([folder], every=every, jpeg=jpeg).records
    info = clip_info(flight)
    if info is not None:
        return [WeakFrame(r, int(info["label"] == "drone"), None, whole=True) for r in records]
    telemetry = load_flight_telemetry(flight)
    by_stream: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    out = []
    for r in records:
        if r.stream not in by_stream:
            times = frame_times(flight, r.stream)
            by_stream[r.stream] = times, presence_labels(flight, r.stream, cfg.presence, telemetry, times)
        times, gps = by_stream[r.stream]
        label = int(gps[r.frame - 1]) if cfg.labels == "gps" else int((r.labels == DRONE).any())
        if label == UNKNOWN:
            continue
        regions = None
        if telemetry is not None:
            spec = flight.streams[r.stream]
            found = search_boxes_for_frame(telemetry.sample(float(times[r.frame - 1])), telemetry, spec, cfg.search)
            boxes = [b for _, b in found or [] if b is not None]
            regions = np.asarray(boxes, np.float32) if boxes else None
        out.append(WeakFrame(r, label, regions))
    return out


class WeakCropDataset(torch.utils.data.Dataset):
    """(image float32 (3, S, S) in [0, 1], label float32 (1,)) samples of `WeakFrames` (module docstring)."""

    def __init__(self, frames: WeakFrames, crop: int = 256, p_object: float = 0.5, seed: int = 0,
                 scale: tuple[float, float] = (0.8, 1.25)):
        self.frames, self.crop, self.p_object, self.seed, self.scale = frames, crop, p_object, seed, scale
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.frames.frames[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image = f.record.image()
        label = f.label
        if f.whole or (label and f.regions is None):
            crop = self._crop(image, np.array([0, 0, image.shape[1], image.shape[0]], np.float32), None, rng, fit=1.0)
        elif not label:
            crop = self._crop(image, None, None, rng)
        else:
            crop = None
            if rng.random() >= self.p_object:
                crop = self._crop(image, None, f.regions, rng)
                label = int(crop is None)
            if crop is None:
                crop = self._crop(image, f.regions[rng.integers(len(f.regions))], None, rng)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return _to_tensor(photometric(crop, rng)), torch.tensor([float(label)])

    def _crop(self, image: np.ndarray, keep: np.ndarray | None, avoid: np.ndarray | None,
              rng: np.random.Generator, fit: float = 0.9) -> np.ndarray | None:
        """An S x S crop after scale jitter, holding box `keep` whole (scaled down to `fit` S if need be),
        or overlapping no box of `avoid` (None after 10 failed draws), or anywhere. Outside the image:
        the image's mean."""
        S, h, w = self.crop, image.shape[0], image.shape[1]
        s = math.exp(rng.uniform(*np.log(self.scale)))
        if keep is not None:
            s = min(s, fit * S / max(keep[2] - keep[0], keep[3] - keep[1], 1e-6))
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        for _ in range(10):
            x0 = _offset(nw, S, None if keep is None else keep[0::2] * s, rng)
            y0 = _offset(nh, S, None if keep is None else keep[1::2] * s, rng)
            if avoid is None or not _overlaps(avoid * s, (x0, y0, x0 + S, y0 + S)):
                break
        else:
            return None
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        fill = tuple(float(v) for v in np.atleast_1d(image.mean(axis=(0, 1))))
        return cv2.warpAffine(image, np.array([[1, 0, -x0], [0, 1, -y0]], np.float64), (S, S),
                              flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def _overlaps(boxes: np.ndarray, window: tuple[float, float, float, float]) -> bool:
    x0, y0, x1, y1 = window
    return bool(((boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)).any())
