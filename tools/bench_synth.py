"""Synthetic flight generation: seconds of CPU and wall time per flight-second, default against randomized
profile, and what the randomized flights hold (sensor sizes, ground-truth boxes per class, box sizes).

    .venv/bin/python tools/bench_synth.py [--seeds 100 101 102] [--seconds 10] [--out runs/bench_synth]
        [--profiles default randomized]
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from pipeline.io.flight import load_flight
from pipeline.io.motio import read_mot
from pipeline.synth import generate_flight

ROOT = Path(__file__).resolve().parent.parent
CLASS_NAMES = {1: "drone", 2: "bird", 3: "airplane", 4: "helicopter"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--profiles", nargs="+", default=["default", "randomized"], choices=["default", "randomized"])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_synth"))
    ap.add_argument("--keep", action="store_true", help="keep the flights (else each is deleted once measured)")
    a = ap.parse_args()
    out = Path(a.out)
    report = {}
    for profile in a.profiles:
        cpu = wall = 0.0
        boxes = {c: [] for c in CLASS_NAMES}
        sizes = []
        for seed in a.seeds:
            folder = out / f"{profile}_{seed}"
            if folder.exists():
                shutil.rmtree(folder)
            c0, w0 = time.process_time(), time.perf_counter()
            generate_flight(folder, seed=seed, seconds=a.seconds, randomize=profile == "randomized")
            cpu += time.process_time() - c0
            wall += time.perf_counter() - w0
            flight = load_flight(folder)
            sizes.append({n: f"{s.width}x{s.height}" for n, s in flight.streams.items()})
            for name, s in flight.streams.items():
                gt = read_mot(folder / s.gt)
                for c in CLASS_NAMES:
                    g = gt[gt[:, 7] == c]
                    boxes[c] += np.maximum(g[:, 4], g[:, 5]).tolist()
            if not a.keep:
                shutil.rmtree(folder)
        total = a.seconds * len(a.seeds)
        row = {"cpu_s_per_flight_s": round(cpu / total, 3), "wall_s_per_flight_s": round(wall / total, 3),
               "sensors": sizes,
               "boxes": {CLASS_NAMES[c]: {"n": len(v), **({"px_p5_p50_p95": [float(np.percentile(v, q)) for q in (5, 50, 95)],
                                                           "px_min_max": [float(min(v)), float(max(v))]} if v else {})}
                         for c, v in boxes.items()}}
        report[profile] = row
        print(profile, json.dumps(row))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_synth.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
