"""The one currency of the pipeline: `Detections` (one frame's boxes) and `FrameBundle` (what the
runner moves from the source through the stages to the sinks)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

MODALITIES = ("rgb", "thermal")


def _as(a: Any, dtype, shape_tail: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=dtype)
    if arr.size == 0:
        arr = arr.reshape((0, *shape_tail))
    if arr.shape[1:] != shape_tail:
        raise ValueError(f"Detections.{name} must have shape (N, {', '.join(map(str, shape_tail))}), got {arr.shape}")
    return arr


@dataclass
class Detections:
    """One frame's boxes as arrays. Every detector returns it, every tracker takes and returns it,
    every sink writes it. Empty is legal and common.

    xyxy: float32 (N, 4) pixel corners; scores: float32 (N,); labels: int64 (N,);
    track_ids: int64 (N,) or None; extras: per-box arrays with first dimension N.
    """

    xyxy: np.ndarray
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    track_ids: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = _as(self.xyxy, np.float32, (4,), "xyxy")
        n = len(self.xyxy)
        self.scores = np.ones(n, np.float32) if self.scores is None else _as(self.scores, np.float32, (), "scores")
        self.labels = np.zeros(n, np.int64) if self.labels is None else _as(self.labels, np.int64, (), "labels")
        if self.track_ids is not None:
            self.track_ids = _as(self.track_ids, np.int64, (), "track_ids")
        for name, arr in [("scores", self.scores), ("labels", self.labels), ("track_ids", self.track_ids)]:
            if arr is not None and len(arr) != n:
                raise ValueError(f"Detections.{name} has {len(arr)} entries for {n} boxes")
        self.extras = {k: np.asarray(v) for k, v in self.extras.items()}
        for k, v in self.extras.items():
            if len(v) != n:
                raise ValueError(f"Detections.extras[{k!r}] has {len(v)} entries for {n} boxes")

    # construction -------------------------------------------------------------------------------
    @classmethod
    def empty(cls, with_track_ids: bool = False) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), track_ids=np.zeros(0, np.int64) if with_track_ids else None)

    @classmethod
    def from_xywh(cls, xywh: Any, **kw: Any) -> "Detections":
        b = np.asarray(xywh, np.float32).reshape(-1, 4)
        return cls(np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1), **kw)

    @classmethod
    def merge(cls, parts: Iterable["Detections"]) -> "Detections":
        parts = [p for p in parts if p is not None]
        if not parts:
            return cls.empty()
        ids = None
        if all(p.track_ids is not None for p in parts):
            ids = np.concatenate([p.track_ids for p in parts])
        keys = set.intersection(*(set(p.extras) for p in parts)) if parts else set()
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
            ids,
            {k: np.concatenate([p.extras[k] for p in parts]) for k in keys},
        )

    # views --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> "Detections":
        """Boolean mask, integer array or slice selection."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.xyxy[index],
            self.scores[index],
            self.labels[index],
            None if self.track_ids is None else self.track_ids[index],
            {k: v[index] for k, v in self.extras.items()},
        )

    @property
    def xywh(self) -> np.ndarray:
        return np.concatenate([self.xyxy[:, :2], self.xyxy[:, 2:] - self.xyxy[:, :2]], axis=1)

    @property
    def centers(self) -> np.ndarray:
        return (self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2

    @property
    def wh(self) -> np.ndarray:
        return self.xyxy[:, 2:] - self.xyxy[:, :2]

    @property
    def areas(self) -> np.ndarray:
        wh = np.clip(self.wh, 0, None)
        return wh[:, 0] * wh[:, 1]

    def with_track_ids(self, ids: Any) -> "Detections":
        return Detections(self.xyxy, self.scores, self.labels, np.asarray(ids, np.int64), dict(self.extras))

    def scaled(self, sx: float, sy: float | None = None) -> "Detections":
        sy = sx if sy is None else sy
        return Detections(self.xyxy * np.array([sx, sy, sx, sy], np.float32), self.scores, self.labels,
                          self.track_ids, dict(self.extras))

    def clipped(self, width: int, height: int) -> "Detections":
        xyxy = self.xyxy.copy()
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
        return Detections(xyxy, self.scores, self.labels, self.track_ids, dict(self.extras))

    def __repr__(self) -> str:
        ids = "" if self.track_ids is None else f", ids={self.track_ids.tolist()}"
        return f"Detections(n={len(self)}{ids})"


@dataclass
class TargetState:
    """A telemetry target (cooperative drone) interpolated at one instant."""

    target_id: int
    lat: float
    lon: float
    alt: float
    fix: int


@dataclass
class TelemetrySample:
    """Telemetry interpolated at one frame's timestamp. Fields are None where the data is absent or
    the instant falls in a gap longer than the tolerance."""

    t: float
    camera: dict[str, float] | None = None  # lat, lon, alt, pan, tilt, roll
    targets: list[TargetState] = field(default_factory=list)


@dataclass
class FrameBundle:
    """What the runner moves: one instant on the common clock.

    `images` maps each stream name to its image (None where that stream has no frame close enough
    to this instant); `frame_ids` holds each present stream's own 1-based frame number, which is what
    MOTChallenge files and ground truth use. `modalities` maps stream name to 'rgb' or 'thermal'.
    Stages add `detections`, `tracks` (per stream), `homographies` (previous frame -> this frame,
    per stream) and anything else in `extras`.
    """

    index: int
    timestamp: float
    images: dict[str, np.ndarray | None]
    frame_ids: dict[str, int] = field(default_factory=dict)
    modalities: dict[str, str] = field(default_factory=dict)
    telemetry: TelemetrySample | None = None
    detections: dict[str, Detections] = field(default_factory=dict)
    tracks: dict[str, Detections] = field(default_factory=dict)
    # Track rows of earlier frames of a stream, revealed at this frame (a track confirmed now reports the
    # boxes it had while tentative): stream -> [(that frame's id, Detections with track_ids)].
    late_tracks: dict[str, list[tuple[int, Detections]]] = field(default_factory=dict)
    homographies: dict[str, np.ndarray | None] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def present(self) -> list[str]:
        """Names of the streams that have an image in this bundle."""
        return [s for s, im in self.images.items() if im is not None]

    def by_modality(self, modality: str) -> np.ndarray | None:
        for s, m in self.modalities.items():
            if m == modality:
                return self.images.get(s)
        return None

    @property
    def rgb(self) -> np.ndarray | None:
        return self.by_modality("rgb")

    @property
    def thermal(self) -> np.ndarray | None:
        return self.by_modality("thermal")


def stream_modalities(streams: Mapping[str, Any]) -> dict[str, str]:
    return {name: getattr(s, "modality", s) for name, s in streams.items()}
