"""The jobs behind the CLI: process a recorded flight, run live, track a detection file. Each joins a
source, the configured stages and the sinks through the `Runner`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import to_dict
from pipeline.errors import InputError
from pipeline.io.atomic import write_json, write_yaml
from pipeline.io.flight import load_flight
from pipeline.io.frames import has_images
from pipeline.io.motio import MotWriter, read_detections
from pipeline.runner import Runner, RunStats
from pipeline.settings import RunConfig, build_stages, load_config
from pipeline.io.sinks import AnnotatedVideoSink, CocoDetectionsSink, JsonLinesSink, MotTracksSink
from pipeline.io.sources import FlightSource, VideoFileSource
from pipeline.stages import stage_reports
from pipeline.types import Detections
from trackers.tracker import Tracker

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".webm"}


def open_recorded(path: str | Path, cfg: RunConfig, modality: str = "rgb", fps: float | None = None):
    """A flight folder -> FlightSource; a single video file, or a folder of images without flight.yaml
    (`fps`, default 30) -> VideoFileSource."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such flight folder or video file", path)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoFileSource(path, modality, fps=fps)
    if path.is_dir() and not (path / "flight.yaml").exists():
        if not has_images(path):
            raise InputError("neither a flight folder (no flight.yaml) nor a folder of images", path)
        return VideoFileSource(path, modality, fps=fps)
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
    write_json(out / "summary.json", summary)
    return summary


def process(flight: str | Path, out: str | Path, config: str | Path | None = None,
            overrides: list[str] | None = None, annotate: bool = False, modality: str = "rgb",
            max_frames: int | None = None, progress: bool = True, fps: float | None = None) -> dict:
    """Process a recorded flight into OUT/tracks, OUT/detections, OUT/summary.json (and
    OUT/annotated). Returns the summary. A source error is raised after the finished frames and the
    summary are written. `modality` and `fps` apply to a single video file or folder of images."""
    cfg = load_config(config, overrides)
    source = open_recorded(flight, cfg, modality, fps)
    stages = build_stages(cfg, source)  # a bad checkpoint fails here, before any output is opened
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", to_dict(cfg))
    streams = list(source.streams)
    sinks = [MotTracksSink(out / "tracks", streams), CocoDetectionsSink(out / "detections", streams)]
    fps = _stream_fps(source)
    if annotate:
        sinks.append(AnnotatedVideoSink(out / "annotated", fps))
    runner = Runner(source, stages, sinks, cfg.queue_size, progress=progress,
                    total=source.expected_frames, max_frames=max_frames)
    extra = {"source": str(flight), "streams": source.streams, "dropped_frames": 0,
             "annotated": [str(out / "annotated" / f"{s}.mp4") for s in streams] if annotate else []}
    telemetry = getattr(source, "telemetry", None)
    if telemetry is not None:
        extra["telemetry_gaps"] = telemetry.report()  # gaps longer than telemetry.max_gap, per log
    try:
        stats = runner.run()
    finally:
        extra.update(stage_reports(stages))
        _write_summary(out, runner.stats, extra)
    return {**stats.as_dict(), **extra}


def live(source: str, thermal: str | None = None, modality: str = "rgb", config: str | Path | None = None,
         overrides: list[str] | None = None, max_frames: int | None = None, seconds: float | None = None,
         out: str | Path | None = None, fps: float | None = None) -> dict:
    """Run on live sources, always on the newest frame; tracks as JSON lines on stdout. `fps`: the rate
    a folder of images is played at (default 30)."""
    from pipeline.io.live import LiveSource

    cfg = load_config(config, overrides)
    specs = {modality: source}
    if thermal is not None:
        if modality == "thermal":
            raise InputError("--thermal given but SOURCE is already the thermal stream")
        specs["thermal"] = thermal
    src = LiveSource(specs.get("rgb"), specs.get("thermal"), fps=fps)
    sinks: list = [JsonLinesSink()]
    outp = Path(out) if out is not None else None
    if outp is not None:
        outp.mkdir(parents=True, exist_ok=True)
        sinks.append(MotTracksSink(outp / "tracks", list(specs)))
    stages = build_stages(cfg)
    runner = Runner(src, stages, sinks, queue_size=1, max_frames=max_frames, prefetch=False)
    timer = None
    if seconds is not None:
        import threading

        timer = threading.Timer(seconds, lambda: (runner.stop(), src.stop()))
        timer.daemon = True
        timer.start()
    stopped_by: list[str] = []
    restore = _graceful_stop(lambda: (runner.stop(), src.stop()), stopped_by)
    try:
        try:
            stats = runner.run()
        finally:
            if timer is not None:
                timer.cancel()
            src.stop()
        if stopped_by:
            stats.interrupted = True
        extra = {**_live_stats(src), **stage_reports(stages), "stopped_by": stopped_by[0] if stopped_by else None}
        summary = {**stats.as_dict(), **extra}
        if outp is not None:
            _write_summary(outp, stats, extra)
    finally:
        restore()
    return summary


def _graceful_stop(stop, stopped_by: list[str]):
    """While a live run goes, SIGTERM and SIGINT (Ctrl-C) stop it cleanly: `stop` runs (in a thread,
    not inside the handler), the bundle in the stages is finished and written, the summary follows, and
    the signal's name is appended to `stopped_by`. A second Ctrl-C raises KeyboardInterrupt (for a stage
    that hangs). Returns a function that restores the previous handlers. Only from the main thread
    (signal handlers live there); elsewhere it does nothing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, _frame):
        if stopped_by:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        stopped_by.append(signal.Signals(signum).name)
        threading.Thread(target=stop, name="dronetrack-stop", daemon=True).start()

    for s in previous:
        signal.signal(s, handler)

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

    return restore


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
