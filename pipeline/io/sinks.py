"""Sinks write finished bundles as the stream goes (flushed per frame): MOTChallenge tracks, COCO
results json, annotated video, JSON lines for live use. The runner's writer thread calls them."""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from pipeline.io.motio import MotWriter
from pipeline.types import Detections, FrameBundle


class MotTracksSink:
    """`OUT/tracks/<stream>.txt` in MOTChallenge format, frame numbers of each stream's own video. A
    confirmed track's rows of the frames it was tentative come when it is confirmed: rows are in
    the order they became known, not sorted by frame."""

    def __init__(self, out_dir: str | Path, streams: list[str]):
        self.writers = {s: MotWriter(Path(out_dir) / f"{s}.txt") for s in streams}

    def write(self, bundle: FrameBundle) -> None:
        for s, tracks in bundle.tracks.items():
            if s in self.writers:
                for frame, late in bundle.late_tracks.get(s, []):
                    self.writers[s].write(frame, late)
                self.writers[s].write(bundle.frame_ids[s], tracks)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


class CocoDetectionsSink:
    """`OUT/detections/<stream>.json`: COCO results (image_id = the stream's 1-based frame number,
    category_id = label + 1, bbox = [x, y, w, h]). One result per line, flushed each frame; the
    closing bracket is written on close."""

    def __init__(self, out_dir: str | Path, streams: list[str]):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self.files: dict[str, IO[str]] = {}
        self.first: dict[str, bool] = {}
        for s in streams:
            f = open(Path(out_dir) / f"{s}.json", "w", encoding="utf-8")
            f.write("[\n")
            f.flush()
            self.files[s], self.first[s] = f, True

    def write(self, bundle: FrameBundle) -> None:
        for s, dets in bundle.detections.items():
            f = self.files.get(s)
            if f is None or not len(dets):
                continue
            frame = bundle.frame_ids[s]
            lines = []
            for (x, y, w, h), score, label in zip(dets.xywh.tolist(), dets.scores.tolist(), dets.labels.tolist()):
                lines.append(json.dumps({"image_id": frame, "category_id": int(label) + 1,
                                         "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                                         "score": round(score, 5)}))
            sep = "" if self.first[s] else ",\n"
            f.write(sep + ",\n".join(lines))
            f.flush()
            self.first[s] = False

    def close(self) -> None:
        for f in self.files.values():
            if not f.closed:
                f.write("\n]\n")
                f.close()


def _color(track_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(track_id * 7919 + 13)
    c = rng.integers(64, 256, 3)
    return int(c[0]), int(c[1]), int(c[2])


def open_video_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """H.264 ('avc1', plays in browsers) when this OpenCV can encode it, else MPEG-4 Part 2 ('mp4v')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # a missing encoder is not an error here
    try:
        for fourcc in ("avc1", "mp4v"):
            w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
            if w.isOpened():
                return w
            w.release()
    finally:
        cv2.utils.logging.setLogLevel(level)
    raise OSError(f"cannot open a video writer for {path}")


class AnnotatedVideoSink:
    """`OUT/annotated/<stream>.mp4`: detections (thin grey), tracks (coloured, with id and a short
    trail of recent centres). A frame whose size differs from the stream's first is drawn, then
    resized to the first one's size."""

    def __init__(self, out_dir: str | Path, fps: dict[str, float], trail: int = 20):
        self.out_dir = Path(out_dir)
        self.fps = fps
        self.trail = trail
        self.writers: dict[str, cv2.VideoWriter] = {}
        self.sizes: dict[str, tuple[int, int]] = {}  # (width, height) of each stream's video
        self.trails: dict[str, dict[int, deque]] = defaultdict(dict)

    def write(self, bundle: FrameBundle) -> None:
        for s in bundle.present():
            if s not in self.fps:
                continue
            img = bundle.images[s]
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img.copy()
            h, w = img.shape[:2]
            if s not in self.writers:
                self.writers[s] = open_video_writer(self.out_dir / f"{s}.mp4", self.fps[s], (w, h))
                self.sizes[s] = (w, h)
            self.draw(img, s, bundle.detections.get(s), bundle.tracks.get(s))
            if (w, h) != self.sizes[s]:  # frames of other sizes (a folder of images): to the first one's
                img = cv2.resize(img, self.sizes[s], interpolation=cv2.INTER_AREA)
            self.writers[s].write(img)

    def draw(self, img: np.ndarray, stream: str, dets: Detections | None, tracks: Detections | None) -> None:
        scale = max(1, img.shape[0] // 256)
        if dets is not None:
            for x0, y0, x1, y1 in dets.xyxy.astype(int):
                cv2.rectangle(img, (x0, y0), (x1, y1), (160, 160, 160), 1)
        trails = self.trails[stream]
        if tracks is None or tracks.track_ids is None:
            return
        for (x0, y0, x1, y1), tid in zip(tracks.xyxy, tracks.track_ids.tolist()):
            c = _color(tid)
            p0, p1 = (int(x0) - 2, int(y0) - 2), (int(x1) + 2, int(y1) + 2)
            cv2.rectangle(img, p0, p1, c, scale)
            cv2.putText(img, str(tid), (p0[0], max(p0[1] - 3, 8)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.35 * scale, c, 1, cv2.LINE_AA)
            trail = trails.setdefault(tid, deque(maxlen=self.trail))
            trail.append((int((x0 + x1) / 2), int((y0 + y1) / 2)))
            if len(trail) > 1:
                cv2.polylines(img, [np.array(trail, np.int32)], False, c, 1, cv2.LINE_AA)

    def close(self) -> None:
        for w in self.writers.values():
            w.release()
        self.writers.clear()


class JsonLinesSink:
    """Live output: one JSON object per bundle on `stream` (stdout by default) with every stream's
    tracks and the latency from capture (or from reading, for files) to output."""

    def __init__(self, out: IO[str] | None = None):
        self.out = out or sys.stdout

    def write(self, bundle: FrameBundle) -> None:
        now = time.monotonic()
        captured = bundle.extras.get("captured_at", {})
        rec = {"index": bundle.index, "t": round(bundle.timestamp, 4), "streams": {}}
        for s in bundle.present():
            tracks = bundle.tracks.get(s, Detections.empty(True))
            ids = tracks.track_ids if tracks.track_ids is not None else np.full(len(tracks), -1)
            entry = {
                "frame": bundle.frame_ids.get(s),
                "tracks": [{"id": int(i), "bbox": [round(v, 1) for v in b], "score": round(float(sc), 3)}
                           for i, b, sc in zip(ids.tolist(), tracks.xywh.tolist(), tracks.scores.tolist())],
            }
            if s in captured:
                entry["latency_ms"] = round(1000 * (now - captured[s]), 1)
            rec["streams"][s] = entry
        self.out.write(json.dumps(rec) + "\n")
        self.out.flush()

    def close(self) -> None:
        self.out.flush()
