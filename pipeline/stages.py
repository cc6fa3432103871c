"""Stages: small objects with `__call__(bundle) -> bundle` and `reset()`. They wrap the array-level
models of `detectors/` and `trackers/` into the pipeline's currency, keep one model state per stream,
and own no I/O or threads."""
from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable

import cv2
import numpy as np

from detectors.camera_motion import CameraMotionEstimator
from pipeline.geometry.camera import camera_matrix, stream_extrinsics
from pipeline.geometry.search_region import Box, SearchConfig, search_boxes_for_frame, turret_pose
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


class FlightBound:
    """A stage that reads a recorded flight's telemetry, stream specs and frame clocks once `bind(source)`
    has handed them over (live and single-video sources have none)."""

    telemetry: Any = None
    specs: dict[str, Any] = {}
    clocks: dict[str, Callable[[int], float]] = {}

    def bind(self, source: Any) -> None:
        """Take the telemetry, stream specs and frame clocks of a `FlightSource` (others have none)."""
        flight = getattr(source, "flight", None)
        self.telemetry = getattr(source, "telemetry", None)
        self.specs = dict(flight.streams) if flight is not None else {}
        self.clocks = {r.name: r.time_of for r in getattr(source, "readers", [])}

    def frame_time(self, stream: str, frame: int | None) -> float | None:
        """Video time of a stream's frame when telemetry, the stream's spec and its clock are bound."""
        if self.telemetry is None or stream not in self.specs or frame is None or stream not in self.clocks:
            return None
        return self.clocks[stream](frame)


class CameraMotionStage(FlightBound):
    """Frame-to-frame homography (previous -> current) per stream, in `bundle.homographies`.

    `source: image` estimates it from the images (detectors/camera_motion.py). `source: pose` takes it
    from the turret's pose log once `bind(source)` has handed over a recorded flight's telemetry,
    calibrations and frame clocks: the turret rotates about the cameras' centre, so a scene point's pixel
    moves by the homography K R_cur R_prev^T K^-1 (R: the stream's ENU -> camera rotation at each frame's
    time, mount angles included; lens distortion and the mount's offset, a few cm against targets tens of
    metres away, are neglected). It costs no image processing, which the narrowed search needs (it looks at
    a small part of each frame). Where the pose is unknown at either frame (no log, a gap, no
    calibration, a live source) the image estimate is used for that frame; `report()` counts both."""

    name = "camera_motion"

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.models = PerStream(lambda s, m: CameraMotionEstimator(cfg))
        self.prev: dict[str, tuple[str, Any]] = {}  # stream -> ("pose", rotation) or ("image", None)
        self.counts: dict[str, dict[str, int]] = {}

    def __call__(self, bundle: FrameBundle) -> FrameBundle:
        for s in bundle.present():
            c = self.counts.setdefault(s, {"pose": 0, "image": 0})
            rot = self.rotation(s, bundle.frame_ids.get(s)) if self.cfg.source == "pose" else None
            kind, before = self.prev.get(s, ("none", None))
            est = self.models.get(s, bundle.modalities.get(s, "rgb"))
            if rot is not None:
                self.prev[s] = ("pose", rot)
                cal = self.specs[s].calibration
                k = camera_matrix(cal)
                bundle.homographies[s] = None if kind != "pose" else k @ rot @ before.T @ np.linalg.inv(k)
                c["pose"] += kind == "pose"
                continue
            if kind == "pose":  # the estimator's previous image is stale: restart it on this frame
                est.reset()
            self.prev[s] = ("image", None)
            bundle.homographies[s] = est(to_gray(bundle.images[s]))
            c["image"] += bundle.homographies[s] is not None
        return bundle

    def rotation(self, stream: str, frame: int | None) -> np.ndarray | None:
        """The stream's ENU -> camera rotation at a frame, from the pose log (None where unknown)."""
        t = self.frame_time(stream, frame)
        cal = None if t is None else self.specs[stream].calibration
        cam = None if cal is None else self.telemetry.camera_at(t)
        return None if cam is None else stream_extrinsics(turret_pose(cam)[0], cal)[0]

    def report(self) -> dict[str, Any]:
        """For the run summary: per stream, homographies from the pose log and from the images."""
        if self.cfg.source != "pose":
            return {}
        return {"camera_motion": {s: dict(c) for s, c in self.counts.items()}}

    def reset(self) -> None:
        self.models.reset()
        self.prev.clear()


class DetectorStage(FlightBound):
    """Runs a detector per stream. `factory(stream, modality)` gives each stream's detector, whose
    `detect(image, homography)` returns arrays (xyxy, scores[, labels]) or a `Detections`. Streams
    given the same detector object that has `detect_many(images)` are batched in one call.

    Narrowed search (`search` given, for detectors with `detect_crops`, i.e. WILDCAT): once `bind(source)`
    has handed over a recorded flight's telemetry, calibrations and frame clocks, each frame is searched
    only in a crop (`search_crop` px or more, at native resolution) around every cooperative drone's
    search box (pipeline/geometry/search_region.py); no crop when no drone can be in view. Where the search box is
    unknown (no telemetry or calibration, a gap, a live source) the whole frame is searched, and
    `report()` counts those frames per stream (`full_frame_fallbacks`). Narrowed search finds the
    cooperative drones only."""

    name = "detector"

    def __init__(self, factory: Callable[[str, str], object], min_score: float = 0.0,
                 search: SearchConfig | None = None, search_crop: int = 96) -> None:
        self.models = PerStream(factory)
        self.min_score = min_score
        self.search, self.search_crop = search, search_crop
        self.counts: dict[str, dict[str, float]] = {}

    def bind(self, source: Any) -> None:
        """Also make each of the source's streams' detector now, so a checkpoint that does not load
        fails before the run opens any output."""
        super().bind(source)
        for stream, modality in getattr(source, "streams", {}).items():
            self.models.get(stream, modality)

    def __call__(self, bundle: FrameBundle) -> FrameBundle:
        by_model: dict[int, tuple[object, list[str]]] = {}
        for s in bundle.present():
            det = self.models.get(s, bundle.modalities.get(s, "rgb"))
            by_model.setdefault(id(det), (det, []))[1].append(s)
        for det, streams in by_model.values():
            if self.search is not None and hasattr(det, "detect_crops"):
                outs = self._narrowed(det, bundle, streams)
            elif hasattr(det, "detect_many"):  # one model shared by the streams: one batched call
                outs = det.detect_many([bundle.images[s] for s in streams])
            else:
                outs = [det.detect(bundle.images[s], bundle.homographies.get(s)) for s in streams]
            for s, out in zip(streams, outs):
                dets = out if isinstance(out, Detections) else Detections(*out)
                if self.min_score > 0:
                    dets = dets[dets.scores >= self.min_score]
                bundle.detections[s] = dets
        return bundle

    def _narrowed(self, det: Any, bundle: FrameBundle, streams: list[str]) -> list[Detections]:
        """All streams' crops in one `detect_crops` call; each stream's detections merged."""
        jobs, owners = [], []
        for s in streams:
            image = bundle.images[s]
            h, w = image.shape[:2]
            boxes = self._search_boxes(bundle, s, (w, h))
            c = self.counts.setdefault(s, dict.fromkeys(
                ("frames", "narrowed", "no_target", "full_frame_fallbacks", "crops", "searched"), 0))
            c["frames"] += 1
            if boxes is None:
                c["full_frame_fallbacks"] += 1
                windows = [((0, 0, w, h), None)]
            else:
                windows = [(crop_window(b, (w, h), self.search_crop), b) for b in boxes]
                c["narrowed" if windows else "no_target"] += 1
                c["crops"] += len(windows)
            c["searched"] += sum((x1 - x0) * (y1 - y0) for (x0, y0, x1, y1), _ in windows) / (w * h)
            jobs += [(image, win, focus) for win, focus in windows]
            owners += [s] * len(windows)
        found = det.detect_crops(jobs) if jobs else []
        return [Detections.merge([d for d, o in zip(found, owners) if o == s]) for s in streams]

    def _search_boxes(self, bundle: FrameBundle, stream: str, size: tuple[int, int]) -> list[Box] | None:
        """The search boxes of the cooperative drones that can be in view; None: unknown (whole frame)."""
        t = self.frame_time(stream, bundle.frame_ids.get(stream))
        if t is None:
            return None
        sample = self.telemetry.sample(t)  # at this stream's own frame time
        found = search_boxes_for_frame(sample, self.telemetry, self.specs[stream], self.search, size)
        return None if found is None else [b for _, b in found if b is not None]

    def report(self) -> dict[str, Any]:
        """For the run summary: per stream, frames searched narrowed / with no drone in view (no model run)
        / on the whole frame, crops run, and the mean fraction of the frame's pixels searched."""
        if self.search is None:
            return {}
        return {"search": {s: {**{k: int(v) for k, v in c.items() if k != "searched"},
                               "searched_fraction": round(c["searched"] / max(c["frames"], 1), 4)}
                           for s, c in self.counts.items()}}

    def reset(self) -> None:
        self.models.reset()


def crop_window(box: Box, image_wh: tuple[int, int], min_side: int, step: int = 32) -> tuple[int, int, int, int]:
    """An integer window (x0, y0, x1, y1) centred on `box`: each side the box's or `min_side`, whichever is
    larger, rounded up to a multiple of `step` (so that crops batch together), shifted inside the image and
    cut to it where the image is smaller."""
    out = []
    for lo, hi, n in ((box[0], box[2], image_wh[0]), (box[1], box[3], image_wh[1])):
        side = min(n, step * math.ceil(max(min_side, hi - lo) / step))
        start = min(max(round((lo + hi - side) / 2), 0), n - side)
        out.append((start, start + side))
    (x0, x1), (y0, y1) = out
    return x0, y0, x1, y1


def stage_reports(stages: list) -> dict[str, Any]:
    """The stages' `report()` dicts merged, for the run summary."""
    out: dict[str, Any] = {}
    for st in stages:
        out.update(getattr(st, "report", dict)())
    return out


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
            late = [(recent[-1 - ago], Detections(xyxy, scores, track_ids=ids))
                    for ago, xyxy, scores, ids in out.backfill_groups() if ago < len(recent)]
            if late:
                bundle.late_tracks[s] = late
        return bundle

    def reset(self) -> None:
        self.models.reset()
        self.recent.clear()


class ScoreSmoothingStage:
    """Temporal smoothing of per-track scores (fusion.temporal.ScoreFilter, one per stream): each reported
    track's score becomes the exponential average of its detections' scores, and tracks whose average is
    below `min_score` are not reported (their tentative-time rows revealed at this frame are dropped too).
    A track confirmed on a run of weak, flickering peaks is thereby held back, one that keeps strong
    detections passes at once. Runs after the tracker."""

    name = "smoothing"

    def __init__(self, alpha: float = 0.5, min_score: float = 0.3, max_missed: int = 30) -> None:
        from fusion.temporal import ScoreFilter

        self.min_score = min_score
        self.models = PerStream(lambda s, m: ScoreFilter(alpha, max_missed))
        self.held = 0

    def __call__(self, bundle: FrameBundle) -> FrameBundle:
        for s, tracks in list(bundle.tracks.items()):
            f = self.models.get(s, "")
            if tracks.track_ids is None or not len(tracks):
                f.update(np.zeros(0, np.int64), np.zeros(0, np.float32))
                continue
            smoothed = f.update(tracks.track_ids, tracks.scores)
            keep = smoothed >= self.min_score
            self.held += int((~keep).sum())
            bundle.tracks[s] = Detections(tracks.xyxy[keep], smoothed[keep].astype(np.float32),
                                          track_ids=tracks.track_ids[keep])
            if s in bundle.late_tracks:
                late = [(fr, d[np.array([f.value(t) >= self.min_score for t in d.track_ids], bool)])
                        for fr, d in bundle.late_tracks[s]]
                bundle.late_tracks[s] = [(fr, d) for fr, d in late if len(d)]
        return bundle

    def report(self) -> dict[str, Any]:
        return {"smoothing": {"track_rows_held_back": self.held}}

    def reset(self) -> None:
        self.models.reset()
