"""Svanstrom drone dataset (ICPR 2020) -> flight folders, one per clip.

Input: `SRC/index.csv` (video, sensor ir|v, label, frames, labelled_frames, width, height, fps; one row a
clip, `video` relative to SRC) and next to each video `<clip>.csv` (frame 1-based, x, y, w, h, label).
Output: `OUT/<clip>/` with `flight.yaml` (one stream, `thermal` for ir, `rgb` for v), the video linked
(or copied) as `<stream>.mp4`, and `gt/<stream>.txt` in MOTChallenge layout
(frame, 1, x, y, w, h, 1, class, 1) with class 1 drone, 2 bird, 3 airplane, 4 helicopter.

Unlabelled frames are not negatives: the real clips show the target (or other drones, birds of a flock)
in many frames without a row (clips with no rows at all, the first frame of most IR bird clips, gaps in
bird clips, the last frames of IR_DRONE_067). So each stream lists as `annotated` the runs of labelled
frames only: evaluation scores those frames, training takes its frames (and negatives) from them, and
a clip without labels has `annotated: []`. Visible labels may be one frame off (see the dataset README);
that is left as is. Rows that cannot be kept (frame outside the video, empty box, a second row for a
frame) are dropped, logged, and listed in `meta.svanstrom.dropped`.
"""
from __future__ import annotations

import csv
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2

from pipeline.errors import InputError
from pipeline.io.atomic import write_yaml
from pipeline.io.flight import Flight

SVANSTROM_CLASSES = ("drone", "bird", "airplane", "helicopter")
SENSORS = {"ir": ("thermal", "thermal"), "v": ("rgb", "rgb")}  # sensor -> (stream name, modality)
INDEX_COLUMNS = ("video", "sensor", "label", "frames", "labelled_frames", "width", "height", "fps")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    name: str
    video: Path
    sensor: str
    label: str
    frames: int
    width: int
    height: int
    fps: float


def import_svanstrom(src: Path, out: Path, clips: list[str] | None = None, copy: bool = False) -> list[Path]:
    """Convert the clips of `src` (all, or those named in `clips`) into flight folders under `out`;
    returns the folders in index order. Existing folders of the same name are rewritten."""
    index = read_index(Path(src))
    if clips is not None:
        unknown = sorted(set(clips) - {c.name for c in index})
        if unknown:
            raise InputError(f"no clip named {', '.join(unknown)} in the index", Path(src) / "index.csv")
        index = [c for c in index if c.name in set(clips)]
    return [write_flight(c, Path(out) / c.name, copy) for c in index]


def read_index(src: Path) -> list[Clip]:
    """Parse and check `src/index.csv`: every named video exists and opens with the listed size and length."""
    path = src / "index.csv"
    if not path.is_file():
        raise InputError("no index.csv (expected a folder laid out like the Svanstrom dataset)", path)
    clips, seen = [], set()
    for lineno, row in _csv_rows(path, INDEX_COLUMNS):
        try:
            sensor, label = row["sensor"], row["label"]
            frames, width, height = int(row["frames"]), int(row["width"]), int(row["height"])
            fps = float(row["fps"])
        except ValueError as e:
            raise InputError(f"bad value ({e})", path, lineno) from None
        if sensor not in SENSORS or label not in SVANSTROM_CLASSES or min(frames, width, height) <= 0 or not fps > 0:
            raise InputError(f"bad row {row}: sensor ir|v, label one of {SVANSTROM_CLASSES}, positive numbers",
                             path, lineno)
        video = src / row["video"]
        name = video.stem
        if name in seen:
            raise InputError(f"clip {name} listed twice", path, lineno)
        seen.add(name)
        actual = _video_shape(video, path, lineno)
        if actual != (frames, width, height):
            raise InputError(f"{row['video']}: index says {frames} frames of {width}x{height}, the video has "
                             f"{actual[0]} of {actual[1]}x{actual[2]}", path, lineno)
        clips.append(Clip(name, video, sensor, label, frames, width, height, fps))
    return clips


def write_flight(clip: Clip, folder: Path, copy: bool = False) -> Path:
    stream, modality = SENSORS[clip.sensor]
    rows, dropped = read_labels(clip)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gt").mkdir(exist_ok=True)
    video = folder / f"{stream}.mp4"
    if video.is_symlink() or video.exists():
        video.unlink()
    if copy:
        shutil.copyfile(clip.video, video)
    else:
        video.symlink_to(clip.video.resolve())
    (folder / "gt" / f"{stream}.txt").write_text(
        "".join(f"{f},1,{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,{c},1\n" for f, x, y, w, h, c in rows), encoding="utf-8")
    spec = {"name": clip.name,
            "streams": {stream: {"modality": modality, "video": video.name, "fps": clip.fps, "width": clip.width,
                                 "height": clip.height, "gt": f"gt/{stream}.txt",
                                 "annotated": _runs([r[0] for r in rows])}},
            "meta": {"svanstrom": {"clip": clip.name, "sensor": clip.sensor, "label": clip.label,
                                   "frames": clip.frames, "labelled_frames": len(rows), "dropped": dropped}}}
    write_yaml(folder / "flight.yaml", spec)  # last and atomic: a folder with a flight.yaml is complete
    return folder


def read_labels(clip: Clip) -> tuple[list[tuple[int, float, float, float, float, int]], list[str]]:
    """The clip's label rows as (frame, x, y, w, h, class 1..4) sorted by frame, and the dropped rows
    as 'file:line: reason' strings (each also logged)."""
    path = clip.video.with_suffix(".csv")
    if not path.is_file():
        raise InputError(f"no label file for {clip.video.name}", path)
    rows, dropped, frames_seen = [], [], set()
    for lineno, r in _csv_rows(path, ("frame", "x", "y", "w", "h", "label")):
        try:
            f, (x, y, w, h) = int(r["frame"]), (float(r[k]) for k in "xywh")
        except ValueError as e:
            raise InputError(f"bad value ({e})", path, lineno) from None
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise InputError("NaN or infinite value", path, lineno)
        if r["label"] not in SVANSTROM_CLASSES:
            raise InputError(f"unknown label {r['label']!r} (known: {', '.join(SVANSTROM_CLASSES)})", path, lineno)
        reason = (f"frame {f} outside the video's frames 1..{clip.frames}" if not 1 <= f <= clip.frames
                  else f"empty box {w}x{h}" if not (w > 0 and h > 0)
                  else f"second row for frame {f}" if f in frames_seen else None)
        if reason:
            dropped.append(f"{path.name}:{lineno}: {reason}")
            log.warning("%s:%d: row dropped: %s", path, lineno, reason)
            continue
        frames_seen.add(f)
        rows.append((f, x, y, w, h, SVANSTROM_CLASSES.index(r["label"]) + 1))
    return sorted(rows), dropped


def clip_info(flight: Flight) -> dict | None:
    """What `import_svanstrom` recorded about a converted flight's clip (clip, sensor, label, frames,
    labelled_frames, dropped), or None for other flights."""
    info = flight.spec.meta.get("svanstrom")
    return info if isinstance(info, dict) else None


def _csv_rows(path: Path, columns: tuple[str, ...]):
    """(line number, row dict) of a csv with a header naming at least `columns`; blank lines skipped."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in columns if c not in header]
            if missing:
                raise InputError(f"header lacks column(s) {', '.join(missing)}", path, 1)
            for row in reader:
                if not any(v.strip() for v in row):
                    continue
                if len(row) != len(header):
                    raise InputError(f"expected {len(header)} values, got {len(row)}", path, reader.line_num)
                yield reader.line_num, {h: v.strip() for h, v in zip(header, row)}
    except UnicodeDecodeError:
        raise InputError("not a text file", path) from None
    except csv.Error as e:
        raise InputError(f"malformed csv ({e})", path) from None


def _video_shape(video: Path, index: Path, lineno: int) -> tuple[int, int, int]:
    if not video.is_file():
        raise InputError(f"video {video} does not exist", index, lineno)
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            raise InputError(f"cannot open video {video}", index, lineno)
        return tuple(int(cap.get(p)) for p in (cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_WIDTH,
                                               cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()


def _runs(frames: list[int]) -> list[list[int]]:
    """Sorted frame numbers -> inclusive [first, last] runs of consecutive frames."""
    runs: list[list[int]] = []
    for f in frames:
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return runs
