"""Training samples from flight folders (synthetic or converted Svanstrom clips).

`FrameStore` decodes each stream's video once, sequentially, and keeps every `every`-th annotated frame
(and optionally every frame showing a rare class) in RAM as uint8 (thermal as one grey channel) with its
boxes (xyxy float32 px) and labels (int64: MOT class column c -> label c, 1 = drone; a missing class
counts as drone; rows with flag 0 are ignored). Only annotated frames are used (see `annotated` in
pipeline/io/flight.py); an annotated frame without ground truth is a negative.
`DetectionDataset` turns the store into augmented fixed-size crops for training, or whole frames for
evaluation; `split_by_clip` holds out whole clips, stratified by modality and clip label.
"""
from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.io.flight import Flight, load_flight
from pipeline.io.frames import open_capture
from pipeline.io.motio import read_mot
from pipeline.io.svanstrom import clip_info

log = logging.getLogger(__name__)


@dataclass
class FrameRecord:
    flight: str
    stream: str
    frame: int  # 1-based
    modality: str  # rgb | thermal
    data: np.ndarray  # uint8: H x W (thermal), H x W x 3 RGB, or 1-D JPEG bytes when the store encodes
    boxes: np.ndarray  # float32 (N, 4) xyxy pixels
    labels: np.ndarray  # int64 (N,), 1..C

    def image(self) -> np.ndarray:
        if self.data.ndim > 1:
            return self.data
        flag = cv2.IMREAD_GRAYSCALE if self.modality == "thermal" else cv2.IMREAD_COLOR_RGB
        return cv2.imdecode(self.data, flag)


class FrameStore:
    """The kept frames of `flights` (folders), for the named streams (default: all of each flight).
    `keep_labels`: labels whose frames are all kept. `jpeg`: store frames JPEG-encoded at this quality
    (about 10x less memory, decoded on access) instead of raw."""

    def __init__(self, flights: Sequence[str | Path], streams: Sequence[str] | None = None, every: int = 5,
                 keep_labels: Sequence[int] = (), jpeg: int | None = None):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.records: list[FrameRecord] = []
        for folder in flights:
            flight = load_flight(folder)
            for name in flight.streams if streams is None else [s for s in streams if s in flight.streams]:
                self.records += _read_stream(flight, name, every, set(keep_labels), jpeg)

    def __len__(self) -> int:
        return len(self.records)

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """(image uint8 H x W or H x W x 3 RGB, boxes, labels, modality) of kept frame i."""
        r = self.records[i]
        return r.image(), r.boxes, r.labels, r.modality

    @property
    def nbytes(self) -> int:
        return sum(r.data.nbytes + r.boxes.nbytes + r.labels.nbytes for r in self.records)


def _ground_truth(flight: Flight, stream: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{frame: (xyxy float32, labels int64)} of a stream's ground truth (flag-0 rows ignored)."""
    path = flight.gt_path(stream)
    if path is None:
        return {}
    rows = read_mot(path)
    rows = rows[rows[:, 6] != 0]
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for f in np.unique(rows[:, 0]).astype(int):
        r = rows[rows[:, 0] == f]
        xyxy = np.c_[r[:, 2:4], r[:, 2:4] + r[:, 4:6]].astype(np.float32)
        out[int(f)] = xyxy, np.where(r[:, 7] > 0, r[:, 7], 1).astype(np.int64)
    return out


def _read_stream(flight: Flight, stream: str, every: int, keep_labels: set[int], jpeg: int | None
                 ) -> list[FrameRecord]:
    spec = flight.streams[stream]
    gt = _ground_truth(flight, stream)
    rare = {f for f, (_, lab) in gt.items() if keep_labels & set(lab.tolist())}

    def wanted(f: int) -> bool:
        return spec.is_annotated(f) and ((f - 1) % every == 0 or f in rare)

    last = max(b for _, b in spec.annotated) if spec.annotated else math.inf
    path = flight.video_path(stream)
    cap = open_capture(path)  # a video file, or a folder of images
    if not cap.isOpened():
        raise InputError("cannot open video", path)
    out, f = [], 0
    try:
        while f < last:
            f += 1
            if not wanted(f):
                if not cap.grab():
                    break
                continue
            ok, bgr = cap.read()
            if not ok:
                break
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY if spec.modality == "thermal" else cv2.COLOR_BGR2RGB)
            boxes, labels = gt.get(f, (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
            boxes = boxes.copy()
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, img.shape[1])
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, img.shape[0])
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            data = img if jpeg is None else cv2.imencode(".jpg", img if img.ndim == 2 else img[..., ::-1],
                                                         [cv2.IMWRITE_JPEG_QUALITY, jpeg])[1]
            out.append(FrameRecord(flight.name, stream, f, spec.modality, data, boxes[keep], labels[keep]))
    finally:
        cap.release()
    if last != math.inf and f < last:
        log.warning("%s: video ended at frame %d, before the annotated frames end (%d)", path, f, last)
    return out


def split_by_clip(flights: Sequence[str | Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Hold out whole flights: within each stratum (modalities, clip label; synthetic flights are one
    stratum) round(val_fraction * n) of its n flights, at least 1 and at most n - 1. Converted clips
    without labels stay in training (they give no frames). Deterministic for a seed; sorted lists."""
    strata: dict[str, list[Path]] = {}
    for folder in sorted(Path(p) for p in flights):
        flight = load_flight(folder)
        info = clip_info(flight)
        key = "+".join(sorted({s.modality for s in flight.streams.values()})) + "/" + (
            info["label"] if info else "synthetic")
        strata.setdefault("unlabelled" if info and info["labelled_frames"] == 0 else key, []).append(folder)
    train, val = [], []
    for key, members in strata.items():
        n = len(members)
        n_val = 0 if key == "unlabelled" or n < 2 else min(n - 1, max(1, round(val_fraction * n)))
        order = np.random.default_rng([seed, zlib.crc32(key.encode())]).permutation(len(members))
        val += [members[i] for i in order[:n_val]]
        train += [members[i] for i in order[n_val:]]
    return sorted(train), sorted(val)


class DetectionDataset(torch.utils.data.Dataset):
    """Samples (image float32 (3, H, W) in [0, 1], {"boxes": float32 (N, 4) xyxy px, "labels": int64 (N,)}).

    mode "train": an S x S crop (S = `crop`; padded with the image mean where the image is smaller),
    with probability `p_object` placed at random around a random labelled box (kept whole when it fits),
    else anywhere; scale jitter in `scale` before cropping (a chosen box is kept within 0.9 S), boxes
    under 2 px or cut to under half their area dropped; horizontal flip; brightness, contrast, gamma,
    Gaussian noise and light blur. Sample i of epoch e depends only on (seed, e, i).
    mode "eval": whole frames, unaugmented.
    """

    def __init__(self, store: FrameStore, crop: int = 256, p_object: float = 0.7, seed: int = 0,
                 mode: Literal["train", "eval"] = "train", scale: tuple[float, float] = (0.7, 1.4)):
        self.store, self.crop, self.p_object, self.seed = store, crop, p_object, seed
        self.mode, self.scale = mode, scale
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, boxes, labels, _ = self.store.frame(i)
        if self.mode == "eval":
            return _to_tensor(image.astype(np.float32) / 255), _target(boxes, labels)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image, boxes, labels = self._crop(image, boxes, labels, rng)
        if rng.random() < 0.5:
            image, boxes = hflip(image, boxes)
        return _to_tensor(photometric(image, rng)), _target(boxes, labels)

    def _crop(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        S, h, w = self.crop, image.shape[0], image.shape[1]
        s = math.exp(rng.uniform(*np.log(self.scale)))
        j = int(rng.integers(len(boxes))) if len(boxes) and rng.random() < self.p_object else None
        if j is not None:
            s = min(s, 0.9 * S / max(boxes[j, 2] - boxes[j, 0], boxes[j, 3] - boxes[j, 1]))
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        boxes = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
        x0 = _offset(nw, S, boxes[j, 0::2] if j is not None else None, rng)
        y0 = _offset(nh, S, boxes[j, 1::2] if j is not None else None, rng)
        canvas = np.full((S, S) + image.shape[2:], image.mean(axis=(0, 1)), np.uint8)
        sx, sy = slice(max(0, -x0), min(S, nw - x0)), slice(max(0, -y0), min(S, nh - y0))
        ys, xs = max(0, y0), max(0, x0)
        canvas[sy, sx] = image[ys:ys + sy.stop - sy.start, xs:xs + sx.stop - sx.start]
        moved = boxes - np.array([x0, y0, x0, y0], np.float32)
        cut = moved.clip(0, S)
        cw, ch = cut[:, 2] - cut[:, 0], cut[:, 3] - cut[:, 1]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep = (cw >= 2) & (ch >= 2) & (cw * ch >= 0.5 * area)
        return canvas, cut[keep], labels[keep]


def _offset(size: int, S: int, span: np.ndarray | None, rng: np.random.Generator) -> int:
    """Crop start along one axis: the crop [o, o + S) stays within the image (or, for a smaller image,
    covers it), and contains `span` = (lo, hi) when given and it fits."""
    lo, hi = (0, size - S) if size >= S else (size - S, 0)
    if span is not None:
        a, b = max(lo, math.ceil(span[1] - S)), min(hi, math.floor(span[0]))
        lo, hi = (a, b) if a <= b else (lo, hi)
    return int(rng.integers(lo, hi + 1))


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an image left-right and its xyxy boxes with it."""
    w = image.shape[1]
    return image[:, ::-1], np.c_[w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]].astype(np.float32)


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 -> float32 in [0, 1] with random contrast, brightness, gamma, noise (p 0.5), blur (p 0.25)."""
    x = image.astype(np.float32) / 255
    m = x.mean()
    x = ((x - m) * rng.uniform(0.75, 1.25) + m + rng.uniform(-0.08, 0.08)).clip(0, 1)
    x = x ** math.exp(rng.uniform(-0.3, 0.3))
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0.005, 0.03), x.shape).astype(np.float32)
    if rng.random() < 0.25:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 0.8))
    return x.clip(0, 1)


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return t.expand(3, *t.shape).clone() if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def _target(boxes: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
    return {"boxes": torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, np.int64))}


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A DataLoader batch -> (images, targets) as lists (eval images may differ in size)."""
    return [b[0] for b in batch], [b[1] for b in batch]
