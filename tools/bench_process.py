"""Benchmark `dronetrack process` on a default synthetic flight: end-to-end frames/s, the per-stage
split, and the decode-only floor of the same videos.

    .venv/bin/python tools/bench_process.py [--seconds 20] [--seed 0] [--work runs/bench]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2

from pipeline.io.flight import load_flight
from pipeline.process import process
from pipeline.synth import generate_flight


def decode_only(flight_dir: Path) -> tuple[int, float]:
    flight = load_flight(flight_dir)
    n, t0 = 0, time.perf_counter()
    for name in flight.streams:
        cap = cv2.VideoCapture(str(flight.video_path(name)))
        while cap.read()[0]:
            n += 1
        cap.release()
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/bench")
    ap.add_argument("--config", default=None)
    a = ap.parse_args()
    work = Path(a.work)
    flight = work / f"flight_s{a.seed}_{a.seconds:g}s"
    if not (flight / "flight.yaml").exists():
        generate_flight(flight, seed=a.seed, seconds=a.seconds)
    n_dec, t_dec = decode_only(flight)
    s = process(flight, work / "out", config=a.config, progress=False)
    n, wall = s["frames"], s["wall_seconds"]
    ms = s["stage_ms_per_frame"]
    frame_ms = 1000 * wall / n
    print(f"flight: {flight} ({n} frames: {s['frames_per_stream']})")
    print(f"decode only:      {n_dec / t_dec:8.1f} frames/s ({1000 * t_dec / n_dec:.2f} ms/frame)")
    print(f"end to end:       {s['frames_per_second']:8.1f} frames/s ({frame_ms:.2f} ms/frame wall)")
    print(f"reader thread:    {1000 * s['read_seconds'] / n:8.2f} ms/frame (decode + merge + telemetry, overlapped)")
    print(f"writer thread:    {1000 * s['write_seconds'] / n:8.2f} ms/frame (sinks, overlapped)")
    for k, v in ms.items():
        print(f"stage {k:<12s} {v:8.2f} ms/frame ({100 * v / frame_ms:5.1f}% of wall frame time)")
    rest = frame_ms - ms.get("detector", 0.0)
    print(f"all but the detector: {rest:.2f} ms/frame = {100 * rest / frame_ms:.1f}% of the frame time")
    (work / "bench_process.json").write_text(json.dumps({"decode_fps": n_dec / t_dec, **s}, indent=2))


if __name__ == "__main__":
    main()
