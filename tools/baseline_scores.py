"""Baseline scores: the motion detector + tracker on synthetic flights of several seeds.

For each seed, a default synthetic flight (generated once into OUT/flights/seed-N) is processed and
scored per stream (MOTA and IDF1 at IoU 0.5, motmetrics). `--mode cli` runs `dronetrack process` and
`dronetrack evaluate` in a subprocess (the shipped path); `--mode direct` calls the camera-motion
estimator, the detector and the tracker itself (no runner, no sinks); `auto` (default) uses the CLI
when a config file is there. The detector's own speed is always measured directly and single-threaded
(cv2.setNumThreads(1)) on frames decoded beforehand: frames/s (from the median time per frame) of
`MotionDetector.detect` per stream, and of the camera-motion estimate.

    .venv/bin/python tools/baseline_scores.py [--seeds 0 1 2] [--seconds 20] [--out DIR] [--config C]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from detectors.camera_motion import CameraMotionEstimator
from detectors.motion import MotionDetector
from pipeline.io.flight import Flight, load_flight
from pipeline.evaluation.mot_metrics import mot_metrics
from pipeline.io.motio import read_mot
from pipeline.settings import DEFAULT_CONFIG, RunConfig, load_config
from pipeline.synth import generate_flight
from trackers.tracker import Tracker


def read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def run_direct(flight: Flight, stream: str, frames: list[np.ndarray], cfg: RunConfig) -> dict[str, float]:
    """Camera motion -> detector -> tracker over one stream; MOT metrics against its ground truth."""
    modality = flight.streams[stream].modality
    est, det, trk = CameraMotionEstimator(cfg.camera_motion), MotionDetector(cfg.detector.motion, modality), \
        Tracker(cfg.tracker)
    rows = []
    for f, frame in enumerate(frames, 1):
        hom = est(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        xyxy, scores = det.detect(frame if modality == "rgb" else frame[..., 0], hom)
        keep = scores >= cfg.detector.min_score
        rows.append(trk.update(xyxy[keep], scores[keep], hom, frame.shape[1::-1]).mot_rows(f))
    hyp = np.concatenate(rows) if rows else np.zeros((0, 10))
    m = mot_metrics(read_mot(flight.gt_path(stream)), hyp, frames=set(range(1, len(frames) + 1)))
    return {"mota": m["mota"], "idf1": m["idf1"]}


def run_cli(flight_dir: Path, out: Path, config: Path | None) -> dict[str, dict[str, float]]:
    exe = shutil.which("dronetrack") or str(Path(sys.executable).with_name("dronetrack"))
    cfg = ["--config", str(config)] if config else []
    subprocess.run([exe, "process", str(flight_dir), "--out", str(out), "--no-progress", *cfg], check=True,
                   stdout=subprocess.DEVNULL)
    scores = out / "scores.json"
    subprocess.run([exe, "evaluate", str(flight_dir), str(out), "--json", str(scores)], check=True,
                   stdout=subprocess.DEVNULL)
    streams = json.loads(scores.read_text())["streams"]
    return {s: {"mota": r["mota"], "idf1": r["idf1"]} for s, r in streams.items()}


def detector_speed(frames: list[np.ndarray], modality: str, cfg: RunConfig) -> tuple[float, float]:
    """Frames/s of the camera-motion estimate and of the detector alone, one thread, from the median
    time per frame (robust to other processes taking the core now and then)."""
    grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    images = frames if modality == "rgb" else grays
    est, det = CameraMotionEstimator(cfg.camera_motion), MotionDetector(cfg.detector.motion, modality)
    cam_s, det_s = [], []
    for gray, image in zip(grays, images):
        t0 = time.perf_counter()
        hom = est(gray)
        t1 = time.perf_counter()
        det.detect(image, hom)
        cam_s.append(t1 - t0)
        det_s.append(time.perf_counter() - t1)
    return 1.0 / float(np.median(cam_s)), 1.0 / float(np.median(det_s))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--out", type=Path, default=None, help="folder for flights and outputs (default: a temp folder)")
    p.add_argument("--config", type=Path, default=None, help="run config (default: configs/default.yaml)")
    p.add_argument("--mode", choices=["auto", "cli", "direct"], default="auto")
    a = p.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="baseline-"))
    config = a.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    cfg = load_config(config) if config else RunConfig()
    mode = a.mode if a.mode != "auto" else ("cli" if config else "direct")
    cv2.setNumThreads(1)
    print(f"mode {mode}, config {config or 'built-in defaults'}, data in {out}")
    print(f"{'seed':>4} {'stream':8} {'MOTA':>7} {'IDF1':>7} {'det fps':>8} {'cam fps':>8} {'frames':>6}")
    table: dict[str, list] = {}
    for seed in a.seeds:
        flight_dir = out / "flights" / f"seed-{seed}"
        if not (flight_dir / "flight.yaml").is_file():
            generate_flight(flight_dir, seed=seed, seconds=a.seconds)
        flight = load_flight(flight_dir)
        scores = run_cli(flight_dir, out / "runs" / f"seed-{seed}", config) if mode == "cli" else {}
        for stream, spec in flight.streams.items():
            frames = read_frames(flight.video_path(stream))
            if mode == "direct":
                scores[stream] = run_direct(flight, stream, frames, cfg)
            cam_fps, det_fps = detector_speed(frames, spec.modality, cfg)
            r = scores[stream]
            table.setdefault(stream, []).append((r["mota"], r["idf1"], det_fps, cam_fps))
            print(f"{seed:>4} {stream:8} {r['mota']:7.3f} {r['idf1']:7.3f} {det_fps:8.1f} {cam_fps:8.1f} "
                  f"{len(frames):6d}", flush=True)
    for stream, rows in table.items():
        m = np.mean(rows, axis=0)
        print(f"mean {stream:8} {m[0]:7.3f} {m[1]:7.3f} {m[2]:8.1f} {m[3]:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
