"""Scoring a run: MOT metrics (pipeline.evaluation.mot_metrics, IoU 0.5), detection AP (VOC 11-point and
all-point at a chosen IoU, COCO through pycocotools) on the annotated frames, a MOT-challenge style
table and precision-recall plots. The CLI's `dronetrack evaluate` calls `evaluate_files` or
`evaluate_flight`, then `format_table` and `write_plots`.

Only drones are scored: ground-truth rows of other classes are dropped, detections of other
categories are left out. Result keys per stream: motmetrics' names as fractions (mota, motp, idf1, num_switches,
num_false_positives, num_misses, precision, recall, and the other counts of
pipeline.evaluation.mot_metrics.METRIC_NAMES), and with detections: ap50_11pt, ap50_all (VOC AP at `iou`),
coco_ap (AP@[.5:.95]), coco_ap50, and pr (the precision envelope at 101 recall points, for plots).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from pipeline.evaluation.detmetrics import average_precision, coco_ap, interpolated_pr, pr_curve
from pipeline.evaluation.detmetrics import pointing_accuracy  # noqa: F401  (re-exported for the CLI)
from pipeline.errors import InputError
from pipeline.io.flight import Flight, load_flight
from pipeline.io.frames import open_capture
from pipeline.io.jsonfile import read_json
from pipeline.io.motio import read_mot
from pipeline.evaluation.mot_metrics import mot_metrics

log = logging.getLogger("dronetrack.evaluate")
COCO_KEYS = ("image_id", "category_id", "bbox", "score")
DRONE_CLASS = 1  # MOTChallenge class column and COCO category_id of drones (Detections label 0)


def drone_rows(gt_rows: np.ndarray) -> np.ndarray:
    """Ground-truth rows of drones: class column 1, or no class given (0 or -1). Rows of other classes
    (birds, airplanes, helicopters of the Svanstrom clips) are not targets: a drone reported on them
    is a false positive."""
    return gt_rows[(gt_rows[:, 7] == DRONE_CLASS) | (gt_rows[:, 7] <= 0)] if len(gt_rows) else gt_rows


def read_coco_results(path: str | Path) -> np.ndarray:
    """A COCO results json (list of {image_id, category_id, bbox [x, y, w, h], score}) as rows
    (N, 10): frame(image_id), -1, x, y, w, h, score, category_id, -1, -1. An empty list is legal."""
    path = Path(path)
    data = read_json(path, lambda text: _interrupted_results(text, path))
    if not isinstance(data, list):
        raise InputError("a COCO results file is a JSON list of detections", path)
    rows = [_coco_row(d, f"detection [{i}]", path) for i, d in enumerate(data)]
    return np.asarray(rows, np.float64).reshape(-1, 10)


def _interrupted_results(text: str, path: Path) -> list | None:
    """The results in a file `dronetrack process` was writing when it was killed (pipeline.io.sinks.
    CocoDetectionsSink: '[', one result per line, flushed each frame; the closing ']' comes last): the
    finished lines, with a warning, dropping a cut last line. None when `text` is not such a file (the
    caller reports its JSON error)."""
    lines = text.split("\n")
    if lines[0].strip() != "[" or text.rstrip().endswith("]"):
        return None
    out = []
    for i, line in enumerate(lines[1:], 2):
        s = line.strip().removesuffix(",")
        if not s:
            continue
        try:
            out.append(json.loads(s))
        except (json.JSONDecodeError, RecursionError):
            if i < len(lines):  # a finished line that does not parse: not a cut write
                return None
            log.warning("%s:%d: last line cut (run interrupted?): dropped", path, i)
    log.warning("%s: no closing ']' (run interrupted?): the %d finished results are read", path, len(out))
    return out


def _coco_row(d: Any, where: str, path: Path) -> list[float]:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and -1e15 < v < 1e15

    if not isinstance(d, dict) or any(k not in d for k in COCO_KEYS):
        raise InputError(f"{where}: needs keys {', '.join(COCO_KEYS)}", path)
    if not all(isinstance(d[k], int) and not isinstance(d[k], bool) and 0 <= d[k] < 2**31
               for k in ("image_id", "category_id")):
        raise InputError(f"{where}: image_id and category_id must be integers in 0..2^31-1", path)
    box = d["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(map(number, box)) and box[2] >= 0 and box[3] >= 0):
        raise InputError(f"{where}: bbox must be [x, y, w, h] with finite numbers and w, h >= 0", path)
    if not number(d["score"]):
        raise InputError(f"{where}: score must be a finite number", path)
    return [d["image_id"], -1, *box, d["score"], d["category_id"], -1, -1]


def count_frames(flight: Flight, stream: str) -> int:
    """Frames of a stream: data rows of its timestamps file, else the video's frame count."""
    spec = flight.streams[stream]
    if spec.timestamps is not None:
        path = flight.root / spec.timestamps
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if _is_data_row(line))
    cap = open_capture(flight.video_path(stream))  # a video file, or a folder of images
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    if n <= 0:
        raise InputError("cannot count the video's frames; give a timestamps file", flight.video_path(stream))
    return n


def _is_data_row(line: str) -> bool:
    first = line.replace(";", ",").split(",")[0].strip()
    try:
        float(first)
        return True
    except ValueError:
        return False


def annotated_frames(flight: Flight, stream: str) -> set[int]:
    """Frames scored for a stream: 1..N, restricted to the stream's annotated ranges if it lists any."""
    spec = flight.streams[stream]
    return {f for f in range(1, count_frames(flight, stream) + 1) if spec.is_annotated(f)}


def _in_frames(rows: np.ndarray, frames: set[int]) -> np.ndarray:
    return rows[np.isin(rows[:, 0].astype(int), list(frames))] if len(rows) else rows


def detection_metrics(gt_rows: np.ndarray, det_rows: np.ndarray, iou: float = 0.5,
                      frames: Iterable[int] | None = None) -> dict[str, Any]:
    """VOC AP at `iou` (11-point, all-point; class-agnostic, flag-0 ground truth ignored as VOC's
    'difficult'), COCO AP and AP50, and the PR envelope, on `frames` (default: every frame of either)."""
    if frames is None:
        frames = set(gt_rows[:, 0].astype(int).tolist()) | set(det_rows[:, 0].astype(int).tolist())
    frames = {int(f) for f in frames}
    gt, det = _in_frames(gt_rows, frames), _in_frames(det_rows, frames)
    rec, prec, n_pos = pr_curve(gt[:, 0].astype(int), gt[:, 2:6], det[:, 0].astype(int), det[:, 2:6],
                                det[:, 6], iou, gt[:, 6] == 0)
    ap, ap50 = coco_ap(gt, det, sorted(frames))
    r, p = interpolated_pr(rec, prec)
    return {
        "ap50_11pt": average_precision(rec, prec, "11pt") if n_pos else 0.0,
        "ap50_all": average_precision(rec, prec, "all") if n_pos else 0.0,
        "coco_ap": ap,
        "coco_ap50": ap50,
        "pr": {"recall": np.round(r, 6).tolist(), "precision": np.round(p, 6).tolist()},
    }


def track_metrics(gt_rows: np.ndarray, track_rows: np.ndarray, frames: Iterable[int] | None = None
                  ) -> dict[str, Any]:
    """motmetrics at IoU 0.5 (flag-0 ground truth ignored); counts as ints, rates as fractions."""
    m = mot_metrics(gt_rows, track_rows, 0.5, None if frames is None else set(frames))
    return {k: int(v) if k.startswith(("num_", "mostly_")) else v for k, v in m.items()}


def evaluate_files(gt_path: str | Path, tracks_path: str | Path | None = None,
                   detections_path: str | Path | None = None, iou: float = 0.5,
                   frames: Iterable[int] | None = None) -> dict[str, Any]:
    """Score a MOTChallenge tracks file and/or a COCO results json against MOTChallenge ground truth.
    `frames` restricts scoring to those frame numbers (default: frames present in either file)."""
    gt = drone_rows(read_mot(gt_path))
    frames = None if frames is None else set(frames)
    out: dict[str, Any] = {}
    if tracks_path is not None:
        out.update(track_metrics(gt, read_mot(tracks_path), frames))
    if detections_path is not None:
        dets = read_coco_results(detections_path)
        out.update(detection_metrics(gt, dets[dets[:, 7] == DRONE_CLASS], iou, frames))
    return out


def evaluate_flight(flight_dir: str | Path, out_dir: str | Path, iou: float = 0.5) -> dict[str, Any]:
    """Score every stream of a flight that has ground truth from OUT/tracks/<stream>.txt and
    OUT/detections/<stream>.json, on its annotated frames: {"streams": {stream: {...}}}."""
    flight, out_dir = load_flight(flight_dir), Path(out_dir)
    streams = {}
    for name in flight.streams:
        gt_path = flight.gt_path(name)
        if gt_path is None:
            continue
        tracks, dets = out_dir / "tracks" / f"{name}.txt", out_dir / "detections" / f"{name}.json"
        for p in (tracks, dets):
            if not p.is_file():
                raise InputError(f"no output for stream {name!r} (run `dronetrack process` first)", p)
        streams[name] = evaluate_files(gt_path, tracks, dets, iou, annotated_frames(flight, name))
    if not streams:
        raise InputError("no stream of this flight has ground truth", flight.root / "flight.yaml")
    return {"streams": streams}


def _by_stream(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return result["streams"] if "streams" in result else {"all": result}


def _pct(key: str):
    return lambda m: f"{100 * m[key]:.1f}" if key in m else "-"


def _count(key: str):
    return lambda m: f"{int(m[key])}" if key in m else "-"


def _motp(m: dict[str, Any]) -> str:  # MOT challenge MOTP: 100 * mean IoU of matches ('-' without any)
    matched = "motp" in m and m.get("num_objects", 0) - m.get("num_misses", 0) > 0
    return f"{100 * (1 - m['motp']):.1f}" if matched else "-"


TABLE = [("MOTA", _pct("mota")), ("IDF1", _pct("idf1")), ("MOTP", _motp), ("IDs", _count("num_switches")),
         ("FP", _count("num_false_positives")), ("FN", _count("num_misses")), ("Prec", _pct("precision")),
         ("Rec", _pct("recall")), ("AP50", _pct("ap50_all")), ("COCO AP", _pct("coco_ap"))]


def format_table(result: dict[str, Any]) -> str:
    """One row per stream, MOT challenge style: percentages with one decimal, MOTP as 100 * mean IoU
    of matches, AP50 the all-point VOC AP at the chosen IoU; '-' where a value is absent."""
    rows = [["stream"] + [h for h, _ in TABLE]]
    rows += [[name] + [cell(m) for _, cell in TABLE] for name, m in _by_stream(result).items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def write_plots(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """A precision-recall plot `pr_<stream>.png` per stream that has detection metrics; returns the paths."""
    from matplotlib.figure import Figure  # a pycocotools dependency; no pyplot, no global state

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, m in _by_stream(result).items():
        if "pr" not in m:
            continue
        fig = Figure(figsize=(4.5, 4))
        ax = fig.add_subplot()
        ax.plot(m["pr"]["recall"], m["pr"]["precision"], drawstyle="steps-post")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"{name}: AP {100 * m['ap50_all']:.1f}, COCO AP {100 * m['coco_ap']:.1f}")
        ax.grid(alpha=0.3)
        path = out_dir / f"pr_{name}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        paths.append(path)
    return paths
