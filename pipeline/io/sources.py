"""Recorded sources: a video file or a folder of images, several streams merged on one clock, a flight folder.

A source is an iterable of `FrameBundle`s plus `streams` (name -> modality) and `expected_frames`
(for the progress bar; None when unknown). Live cameras and URLs are in `pipeline.io.live`.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pipeline.errors import InputError
from pipeline.io.flight import Flight, StreamSpec
from pipeline.io.frames import list_images, read_image
from pipeline.io.telemetry import load_flight_telemetry, read_timestamps
from pipeline.types import FrameBundle


IMAGE_MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"GIF8": "GIF", b"II*\x00": "TIFF",
               b"MM\x00*": "TIFF"}


def image_kind(path: Path) -> str | None:
    """'PNG', 'JPEG', ... when the file starts like a still image (FFmpeg would read it as a one-frame
    video), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in IMAGE_MAGIC.items() if head.startswith(magic)), None)


def open_video(path: str | Path) -> cv2.VideoCapture:
    """An FFmpeg capture of a video file; InputError naming the file when it is missing, empty, a still
    image or not a video OpenCV's FFmpeg can open."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such video file", path)
    if path.stat().st_size == 0:
        raise InputError("empty file (0 bytes), not a video", path)
    kind = image_kind(path) if path.suffix.lower() not in (".mjpg", ".mjpeg") else None  # raw MJPEG: JPEGs
    if kind is not None:
        raise InputError(f"a {kind} image, not a video (a folder of images is a stream: `frames:` in flight.yaml)",
                         path)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise InputError("cannot open video (corrupt, truncated or unknown format)", path)
    return cap


@dataclass
class StreamReader:
    """Decodes one stream's frames with their times. With a timestamps file the video must hold
    exactly that many frames; otherwise frame i is at t0 + (i-1)/fps. A video that stops before its
    stated frame count is reported as truncated, never silently cut short."""

    name: str
    modality: str
    path: Path
    times: np.ndarray | None = None
    fps: float | None = None
    t0: float = 0.0

    @classmethod
    def from_spec(cls, flight: Flight, name: str) -> "StreamReader":
        """The reader of a flight's stream: a `FrameFolderReader` for `frames:`, else a video reader."""
        s: StreamSpec = flight.streams[name]
        times = read_timestamps(flight.root / s.timestamps) if s.timestamps else None
        kind = FrameFolderReader if s.frames is not None else StreamReader
        reader = kind(name, s.modality, flight.video_path(name), times, s.fps, s.t0)
        size = getattr(reader, "_size", None)
        if size and s.width is not None and s.height is not None and size != (s.width, s.height):
            raise InputError(f"stream {name!r}: frames are {size[0]}x{size[1]}, flight.yaml says {s.width}x{s.height} "
                             f"(streams.{name}.width, height)", reader.path)
        return reader

    def __post_init__(self) -> None:
        cap = open_video(self.path)
        self._size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if self.fps is None and self.times is None:
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps and fps > 0 else 30.0
        cap.release()

    @property
    def frame_count(self) -> int | None:
        if self.times is not None:
            return len(self.times)
        return self._reported if self._reported > 0 else None

    def time_of(self, frame: int) -> float:
        if self.times is not None:
            return float(self.times[frame - 1])
        assert self.fps is not None
        return self.t0 + (frame - 1) / self.fps

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        cap = open_video(self.path)
        expected = self.frame_count
        frame = 0
        try:
            while True:
                ok, image = cap.read()
                if not ok:
                    break
                frame += 1
                if self.times is not None and frame > len(self.times):
                    raise InputError(f"video has more frames than its timestamps file lists ({len(self.times)})",
                                     self.path)
                yield frame, self.time_of(frame), image
        finally:
            cap.release()
        if frame == 0:
            raise InputError("video holds no decodable frame (corrupt or truncated)", self.path)
        if expected is not None and frame < expected:
            raise InputError(f"video is truncated or corrupt: decoded {frame} of {expected} frames", self.path)


@dataclass
class FrameFolderReader(StreamReader):
    """A folder of images read as one stream (pipeline/io/frames.py: natural order, one BGR frame per
    image), with StreamReader's interface. Without fps or a timestamps file it runs at 30 fps; a
    timestamps file must list exactly one time per image. An unreadable image stops the stream with an
    InputError naming the file, after the frames before it."""

    def __post_init__(self) -> None:
        self._files = list_images(self.path)
        if self.times is not None and len(self.times) != len(self._files):
            raise InputError(f"frame folder holds {len(self._files)} images but its timestamps file lists "
                             f"{len(self.times)} times", self.path)
        if self.fps is None and self.times is None:
            self.fps = 30.0

    @property
    def frame_count(self) -> int | None:
        return len(self._files)

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        for frame, path in enumerate(self._files, 1):
            yield frame, self.time_of(frame), read_image(path)


def merge_streams(readers: list[StreamReader], tolerance: float | None = None) -> Iterator[FrameBundle]:
    """Merge streams on one clock. Frames are taken in time order; each bundle is led by the earliest
    pending frame, and every other stream joins with its next frame if that lies within `tolerance`
    seconds, else gives None for that bundle. Every frame of every stream appears exactly once.
    The default tolerance is half the shortest frame period. A reader's InputError (a corrupt image or
    truncated video) is raised once the bundle holding the frames read before it has been yielded."""
    if tolerance is None:
        periods = []
        for r in readers:
            if r.times is not None and len(r.times) > 1:
                periods.append(float(np.median(np.diff(r.times))))
            elif r.fps:
                periods.append(1.0 / r.fps)
        tolerance = 0.5 * min(periods) if periods else 0.0
    iters = [iter(r) for r in readers]
    heads: list[tuple[float, int, int, np.ndarray]] = []  # (t, reader index, frame, image)

    failed: list[BaseException] = []  # a reader's error, raised once the bundle in hand is yielded

    def advance(i: int) -> None:
        try:
            nxt = next(iters[i], None)
        except InputError as e:  # a corrupt frame: keep the frame read before it
            failed.append(e)
            nxt = None
        if nxt is not None:
            frame, t, image = nxt
            heapq.heappush(heads, (t, i, frame, image))

    for i in range(len(readers)):
        advance(i)
    if failed:
        raise failed[0]
    modalities = {r.name: r.modality for r in readers}
    index = 0
    while heads:
        t_lead, i_lead, frame, image = heapq.heappop(heads)
        images: dict[str, np.ndarray | None] = {r.name: None for r in readers}
        frame_ids: dict[str, int] = {}
        images[readers[i_lead].name], frame_ids[readers[i_lead].name] = image, frame
        advance(i_lead)
        for j in range(len(readers)):
            if j == i_lead:
                continue
            k = next((k for k, h in enumerate(heads) if h[1] == j), None)
            if k is not None and heads[k][0] - t_lead <= tolerance:
                _, _, fj, imj = heads.pop(k)
                heapq.heapify(heads)
                images[readers[j].name], frame_ids[readers[j].name] = imj, fj
                advance(j)
        yield FrameBundle(index, t_lead, images, frame_ids, dict(modalities))
        index += 1
        if failed:
            raise failed[0]


class FlightSource:
    """A flight folder's streams merged on one clock, with telemetry interpolated at each bundle."""

    def __init__(self, flight: Flight, streams: list[str] | None = None, tolerance: float | None = None,
                 telemetry: bool = True):
        names = list(flight.streams) if not streams else streams
        for n in names:
            if n not in flight.streams:
                raise InputError(f"flight has no stream named {n!r} (it has {', '.join(flight.streams)})",
                                 flight.root / "flight.yaml")
        self.flight = flight
        self.readers = [StreamReader.from_spec(flight, n) for n in names]
        self.tolerance = tolerance
        self.streams = {r.name: r.modality for r in self.readers}
        self.telemetry = load_flight_telemetry(flight) if telemetry else None

    @property
    def expected_frames(self) -> int | None:
        counts = [r.frame_count for r in self.readers]
        return sum(counts) if all(c is not None for c in counts) else None  # type: ignore[misc]

    def __iter__(self) -> Iterator[FrameBundle]:
        for bundle in merge_streams(self.readers, self.tolerance):
            if self.telemetry is not None:
                bundle.telemetry = self.telemetry.sample(bundle.timestamp)
            yield bundle


class VideoFileSource:
    """One recorded video file, or one folder of images, as a single stream (`name`, `modality`)."""

    def __init__(self, path: str | Path, modality: str = "rgb", name: str | None = None, fps: float | None = None):
        kind = FrameFolderReader if Path(path).is_dir() else StreamReader
        self.reader = kind(name or modality, modality, Path(path), None, fps)
        self.streams = {self.reader.name: modality}

    @property
    def expected_frames(self) -> int | None:
        return self.reader.frame_count

    def __iter__(self) -> Iterator[FrameBundle]:
        return merge_streams([self.reader])
