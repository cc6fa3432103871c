"""Compare run configs (detectors) on a set of flight folders, aggregated per modality.

For each config and flight, `dronetrack process` writes tracks and detections; then, over all flights of
one modality together: drone AP50 (VOC all-point and 11-point), COCO AP and AP50 (pycocotools), and MOT
metrics with counts summed over flights (MOTA = 1 - (FN + FP + IDs) / GT, IDF1 = 2 IDTP / (GT + pred)),
plus end-to-end frames/s.

    .venv/bin/python tools/eval_detectors.py --flights runs/cache/svanstrom/IR_DRONE_001 ... \
        --configs motion=configs/default.yaml dpfcn=configs/dpfcn.yaml [--val-of runs/train/dpfcn] \
        [--per-class N] [--max-frames N] [--out runs/eval] [--json J]

`--val-of RUN` takes the validation clips a `dronetrack train` run logged (first line of RUN/log.txt).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from pipeline.evaluation.detmetrics import average_precision, coco_ap, pr_curve
from pipeline.evaluation.evaluate import annotated_frames, drone_rows, read_coco_results, track_metrics
from pipeline.io.flight import load_flight
from pipeline.io.motio import read_mot
from pipeline.process import process

FRAME_STRIDE = 1_000_000  # frames of flight i become i * FRAME_STRIDE + frame, so flights never share one


def run_config(name: str, config: str, flights: list[Path], out: Path, max_frames: int | None = None
               ) -> dict[str, dict[str, float]]:
    per_mod: dict[str, dict[str, list]] = {}
    for i, folder in enumerate(flights):
        flight = load_flight(folder)
        run_out = out / name / folder.name
        summary = process(folder, run_out, config=config, progress=False, max_frames=max_frames)
        for stream, spec in flight.streams.items():
            gt_path = flight.gt_path(stream)
            if gt_path is None:
                continue
            done = summary["frames_per_stream"].get(stream, 0)  # frames processed (max_frames may cut)
            frames = {f for f in annotated_frames(flight, stream) if f <= done}
            gt = drone_rows(read_mot(gt_path))
            gt = gt[np.isin(gt[:, 0].astype(int), list(frames))]
            det = read_coco_results(run_out / "detections" / f"{stream}.json")
            det = det[(det[:, 7] == 1) & np.isin(det[:, 0].astype(int), list(frames))]
            tracks = read_mot(run_out / "tracks" / f"{stream}.txt")
            m = track_metrics(gt, tracks, frames)
            acc = per_mod.setdefault(spec.modality, {"gt": [], "det": [], "frames": [], "mot": [], "fps": []})
            for rows, key in ((gt, "gt"), (det, "det")):
                rows = rows.copy()
                rows[:, 0] += i * FRAME_STRIDE
                acc[key].append(rows)
            acc["frames"] += [i * FRAME_STRIDE + f for f in frames]
            acc["mot"].append(m)
        acc["fps"].append((summary["frames"], summary["frames"] / max(summary["frames_per_second"], 1e-9)))
    return {mod: aggregate(acc) for mod, acc in per_mod.items()}


def aggregate(acc: dict[str, list]) -> dict[str, float]:
    gt, det = np.concatenate(acc["gt"]), np.concatenate(acc["det"])
    rec, prec, n_pos = pr_curve(gt[:, 0].astype(int), gt[:, 2:6], det[:, 0].astype(int), det[:, 2:6], det[:, 6],
                                0.5, gt[:, 6] == 0)
    ap, ap50 = coco_ap(gt, det, acc["frames"])
    ms = acc["mot"]
    n_gt = sum(m["num_objects"] for m in ms)
    n_pred = sum(m["num_predictions"] for m in ms)
    errors = sum(m["num_misses"] + m["num_false_positives"] + m["num_switches"] for m in ms)
    idtp = sum(m["idf1"] * (m["num_objects"] + m["num_predictions"]) / 2 for m in ms)
    frames, seconds = map(sum, zip(*acc["fps"]))
    return {"ap50_all": average_precision(rec, prec, "all") if n_pos else 0.0,
            "ap50_11pt": average_precision(rec, prec, "11pt") if n_pos else 0.0,
            "coco_ap": ap, "coco_ap50": ap50, "mota": 1 - errors / max(n_gt, 1),
            "idf1": 2 * idtp / max(n_gt + n_pred, 1), "gt_boxes": n_gt, "flights": len(ms),
            "frames_per_second": frames / max(seconds, 1e-9)}


def val_clips(run: Path, cache_roots: list[Path], per_class: int | None = None) -> list[Path]:
    first = (run / "log.txt").read_text().splitlines()[0]
    names = re.split(r",\s*", first.split(": ", 1)[1])
    found, count = [], {}
    for n in names:
        group = tuple(n.split("_")[:2])  # (IR|V, LABEL) of a Svanstrom clip
        count[group] = count.get(group, 0) + 1
        if per_class is not None and n[:2] in ("IR", "V_") and count[group] > per_class:
            continue
        hits = [r / sub / n for r in cache_roots for sub in ("svanstrom", "synth") if (r / sub / n).is_dir()]
        if not hits:
            sys.exit(f"validation clip {n} not found under {', '.join(map(str, cache_roots))}")
        found.append(hits[0])
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flights", nargs="*", type=Path, default=[])
    p.add_argument("--val-of", type=Path, default=None, help="a training run folder: use its validation clips")
    p.add_argument("--cache", type=Path, default=Path("runs/cache"))
    p.add_argument("--configs", nargs="+", required=True, metavar="NAME=CONFIG")
    p.add_argument("--out", type=Path, default=Path("runs/eval"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--max-frames", type=int, default=None, help="process at most this many instants per flight")
    p.add_argument("--per-class", type=int, default=None,
                   help="with --val-of: at most this many clips per (sensor, label); synthetic flights all kept")
    a = p.parse_args()
    flights = list(a.flights) + (val_clips(a.val_of, [a.cache], a.per_class) if a.val_of else [])
    if not flights:
        sys.exit("no flights: give --flights or --val-of")
    results = {}
    print(f"{len(flights)} flights")
    print(f"{'config':10s} {'modality':8s} {'AP50':>6s} {'AP50-11':>7s} {'COCO AP':>7s} {'MOTA':>6s} {'IDF1':>6s} "
          f"{'GT':>6s} {'fps':>6s}")
    for spec in a.configs:
        name, config = spec.split("=", 1)
        results[name] = run_config(name, config, flights, a.out, a.max_frames)
        for mod, r in sorted(results[name].items()):
            print(f"{name:10s} {mod:8s} {r['ap50_all']:6.3f} {r['ap50_11pt']:7.3f} {r['coco_ap']:7.3f} "
                  f"{r['mota']:6.3f} {r['idf1']:6.3f} {r['gt_boxes']:6d} {r['frames_per_second']:6.1f}", flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"flights": [str(f) for f in flights], "results": results}, indent=2))


if __name__ == "__main__":
    main()
