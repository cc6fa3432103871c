"""Stages: small objects with `__call__(bundle) -> bundle` and `reset()`. They wrap the array-level
models of `detectors/` and `trackers/` into the pipeline's currency, keep one model state per stream,
and own no I/O or threads."""
from __future__ import annotations

from collections import deque

from typing import Callable

import cv2
import numpy as np

from detectors.camera_motion import CameraMotionEstimator
from pipeline.types import Detections, FrameBundle
from trackers.tracker import Tracker


DRONE = 0  # Detections label of drones


def to_gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


class PerStream:
    """A dict of per-stream model instances made on first use by `factory(stream, modality)`."""

    def __init__(self, factory: Callable[[str, str], object]):
        self.factory = factory
        self.models: dict[str, object] = {}

    def get(self, stream: str, modality: str):
        if stream not in self.models:
            self.models[stream] = self.factory(stream, modality)
        return self.models[stream]

    def reset(self) -> None:
        for m in self.models.values():
            reset = getattr(m, "reset", None)
            if reset is not None:
                reset()


class CameraMotionStage:
    """Frame-to-frame homography (previous -> current) per stream, in `bundle.homographies`."""

    name = "camera_motion"

    def __init__(self, cfg) -> None:
        self.models = PerStream(lambda s, m: CameraMotionEstimator(cfg))

    def __call__(self, bundle: FrameBundle) -> FrameBundle:
        for s in bundle.present():
            est = self.models.get(s, bundle.modalities.get(s, "rgb"))
            bundle.homographies[s] = est(to_gray(bundle.images[s]))
        return bundle

    def reset(self) -> None:
        self.models.reset()


class DetectorStage:
    """Runs a detector per stream. `factory(stream, modality)` gives each stream's detector, whose
    `detect(image, homography)` returns arrays (xyxy, scores[, labels]) or a `Detections`. Streams
    given the same detector object that has `detect_many(images)` are batched in one call."""

    name = "detector"

    def __init__(self, factory: Callable[[str, str], object], min_score: float = 0.0) -> None:
        self.models = PerStream(factory)
        self.min_score = min_score

    def __call__(self, bundle: FrameBundle) -> FrameBundle:
        by_model: dict[int, tuple[object, list[str]]] = {}
        for s in bundle.present():
            det = self.models.get(s, bundle.modalities.get(s, "rgb"))
            by_model.setdefault(id(det), (det, []))[1].append(s)
        for det, streams in by_model.values():
            if hasattr(det, "detect_many"):  # one model shared by the streams: one batched call
                outs = det.detect_many([bundle.images[s] for s in streams])
            else:
                outs = [det.detect(bundle.images[s], bundle.homographies.get(s)) for s in streams]
            for s, out in zip(streams, outs):
                dets = out if isinstance(out, Detections) else Detections(*out)
                if self.min_score > 0:
                    dets = dets[dets.scores >= self.min_score]
                bundle.detections[s] = dets
        return bundle

    def reset(self) -> None:
        self.models.reset()


class TrackerStage:
    """One tracker per stream over its drone detections (other classes, e.g. birds, are reported as
    detections but not tracked); confirmed tracks in `bundle.tracks` with `track_ids` set."""

    name = "tracker"

    def __init__(self, cfg) -> None:
        self.models = PerStream(lambda s, m: Tracker(cfg))
        self.recent: dict[str, deque[int]] = {}  # frame ids of each stream's last updates, newest last

    def __call__(self, bundle: FrameBundle) -> FrameBundle:
        for s in bundle.present():
            dets = bundle.detections.get(s, Detections.empty())
            dets = dets[dets.labels == DRONE]
            h, w = bundle.images[s].shape[:2]
            out = self.models.get(s, "").update(dets.xyxy, dets.scores, bundle.homographies.get(s), (w, h))
            bundle.tracks[s] = Detections(out.xyxy, out.scores, track_ids=out.track_ids)
            recent = self.recent.setdefault(s, deque(maxlen=256))
            recent.append(bundle.frame_ids.get(s, bundle.index + 1))
            late = []
            for ago in np.unique(out.backfill_frames_ago):
                if ago < len(recent):
                    sel = out.backfill_frames_ago == ago
                    late.append((recent[-1 - ago], Detections(out.backfill_xyxy[sel], out.backfill_scores[sel],
                                                               track_ids=out.backfill_ids[sel])))
            if late:
                bundle.late_tracks[s] = late
        return bundle

    def reset(self) -> None:
        self.models.reset()
        self.recent.clear()
