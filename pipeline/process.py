"""The jobs behind the CLI: process a recorded flight, run live, track a detection file. Each joins a
source, the configured stages and the sinks through the `Runner`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from pipeline.config import to_dict
from pipeline.errors import InputError
from pipeline.io.flight import load_flight
from pipeline.io.motio import MotWriter, read_detections
from pipeline.runner import Runner, RunStats
from pipeline.settings import RunConfig, build_stages, load_config
from pipeline.io.sinks import AnnotatedVideoSink, CocoDetectionsSink, JsonLinesSink, MotTracksSink
from pipeline.io.sources import FlightSource, VideoFileSource
from pipeline.stages import stage_reports
from pipeline.types import Detections
from trackers.tracker import Tracker

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".webm"}


def open_recorded(path: str | Path, cfg: RunConfig, modality: str = "rgb"):
    """A flight folder -> FlightSource; a single video file -> VideoFileSource."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such flight folder or video file", path)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoFileSource(path, modality)
    return FlightSource(load_flight(path), cfg.streams, cfg.pair_tolerance)


def _stream_fps(source) -> dict[str, float]:
    readers = getattr(source, "readers", None) or [source.reader]
    out = {}
    for r in readers:
        if r.times is not None and len(r.times) > 1:
            out[r.name] = float(1.0 / np.median(np.diff(r.times)))
        else:
            out[r.name] = float(r.fps or 30.0)
    return out


def _write_summary(out: Path, stats: RunStats, extra: dict) -> dict:
    summary = {**stats.as_dict(), **extra}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "summary.json")
    return summary


def process(flight: str | Path, out: str | Path, config: str | Path | None = None,
            overrides: list[str] | None = None, annotate: bool = False, modality: str = "rgb",
            max_frames: int | None = None, progress: bool = True) -> dict:
    """Process a recorded flight into OUT/tracks, OUT/detections, OUT/summary.json (and
    OUT/annotated). Returns the summary. A source error is raised after the finished frames and the
    summary are written."""
    cfg = load_config(config, overrides)
    source = open_recorded(flight, cfg, modality)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    streams = list(source.streams)
    sinks = [MotTracksSink(out / "tracks", streams), CocoDetectionsSink(out / "detections", streams)]
    fps = _stream_fps(source)
    if annotate:
        sinks.append(AnnotatedVideoSink(out / "annotated", fps))
    stages = build_stages(cfg, source)
    runner = Runner(source, stages, sinks, cfg.queue_size, progress=progress,
                    total=source.expected_frames, max_frames=max_frames)
    extra = {"source": str(flight), "streams": source.streams, "dropped_frames": 0,
             "annotated": [str(out / "annotated" / f"{s}.mp4") for s in streams] if annotate else []}
    try:
        stats = runner.run()
    finally:
        extra.update(stage_reports(stages))
        _write_summary(out, runner.stats, extra)
    return {**stats.as_dict(), **extra}


def live(source: str, thermal: str | None = None, modality: str = "rgb", config: str | Path | None = None,
         overrides: list[str] | None = None, max_frames: int | None = None, seconds: float | None = None,
         out: str | Path | None = None) -> dict:
    """Run on live sources, always on the newest frame; tracks as JSON lines on stdout."""
    from pipeline.io.live import LiveSource

    cfg = load_config(config, overrides)
    specs = {modality: source}
    if thermal is not None:
        if modality == "thermal":
            raise InputError("--thermal given but SOURCE is already the thermal stream")
        specs["thermal"] = thermal
    src = LiveSource(specs.get("rgb"), specs.get("thermal"))
    sinks: list = [JsonLinesSink()]
    outp = Path(out) if out is not None else None
    if outp is not None:
        outp.mkdir(parents=True, exist_ok=True)
        sinks.append(MotTracksSink(outp / "tracks", list(specs)))
    stages = build_stages(cfg)
    runner = Runner(src, stages, sinks, queue_size=1, max_frames=max_frames)
    timer = None
    if seconds is not None:
        import threading

        timer = threading.Timer(seconds, lambda: (runner.stop(), src.stop()))
        timer.daemon = True
        timer.start()
    try:
        stats = runner.run()
    finally:
        if timer is not None:
            timer.cancel()
        src.stop()
    extra = {**_live_stats(src), **stage_reports(stages)}
    summary = {**stats.as_dict(), **extra}
    if outp is not None:
        _write_summary(outp, stats, extra)
    return summary


def _live_stats(src) -> dict:
    s = src.stats()
    return {"live": s, "dropped_frames": int(sum(v.get("dropped", 0) for v in s.values()))}


def track_file(detections: str | Path, out: str | Path, config: str | Path | None = None,
               overrides: list[str] | None = None) -> int:
    """Run the configured tracker over a MOTChallenge detection file; every frame from 1 to the last
    one is fed (frames without detections too). Returns the number of rows written."""
    cfg = load_config(config, overrides)
    by_frame = read_detections(detections)
    tracker = Tracker(cfg.tracker)
    last = max(by_frame) if by_frame else 0
    rows = 0
    empty = Detections.empty()
    with MotWriter(out) as w:
        for frame in range(1, last + 1):
            d = by_frame.get(frame, empty)
            res = tracker.update(d.xyxy, d.scores)
            for ago, xyxy, scores, ids in res.backfill_groups():
                w.write(frame - ago, Detections(xyxy, scores, track_ids=ids))
            w.write(frame, Detections(res.xyxy, res.scores, track_ids=res.track_ids))
            rows += len(res.track_ids) + len(res.backfill_ids)
    return rows
