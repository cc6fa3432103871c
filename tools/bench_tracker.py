"""Tracker-only benchmark: frames/s on the MOT15 detections and MOT scores on MOT15 and Anti-UAV tracks.

    .venv/bin/python tools/bench_tracker.py [--data ../shared/data] [--repeat 3]

Prints, for the default and SORT-equivalent configs: tracker-only frames/s (detections already in memory,
best of --repeat runs) and MOTA / IDF1 per MOT15 sequence, and the Anti-UAV aggregate over all sequences
(counts summed over sequences: MOTA = 1 - (FN + FP + IDs) / GT, IDF1 = 2 IDTP / (GT + predictions)).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pipeline.evaluation.mot_metrics import mot_metrics
from pipeline.io.motio import read_mot
from trackers.tracker import Tracker, TrackerConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def frames_of(det: np.ndarray, last_frame: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """MOTChallenge detection rows -> per-frame (xyxy, scores) for frames 1..last_frame."""
    out = []
    frames = det[:, 0].astype(int)
    for f in range(1, last_frame + 1):
        rows = det[frames == f]
        out.append((np.c_[rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], rows[:, 6]))
    return out


def track(cfg: TrackerConfig, frames: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Run a fresh tracker over the frames; MOTChallenge rows of the reported tracks."""
    tracker = Tracker(cfg)
    rows = []
    for f, (xyxy, scores) in enumerate(frames, 1):
        rows.append(tracker.update(xyxy, scores).mot_rows(f))
    return np.concatenate(rows) if rows else np.zeros((0, 10))


def load(seq_dir: Path) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    gt = read_mot(seq_dir / "gt" / "gt.txt")
    det = read_mot(seq_dir / "det" / "det.txt")
    last = int(max(gt[:, 0].max(initial=0), det[:, 0].max(initial=0)))
    return gt, frames_of(det, last)


def aggregate(per_seq: list[dict[str, float]]) -> dict[str, float]:
    """Sum counts over sequences (IDTP recovered from each sequence's IDF1)."""
    n_gt = sum(m["num_objects"] for m in per_seq)
    n_pred = sum(m["num_predictions"] for m in per_seq)
    fp = sum(m["num_false_positives"] for m in per_seq)
    fn = sum(m["num_misses"] for m in per_seq)
    ids = sum(m["num_switches"] for m in per_seq)
    idtp = sum(m["idf1"] * (m["num_objects"] + m["num_predictions"]) / 2 for m in per_seq)
    return {"mota": 1 - (fn + fp + ids) / n_gt, "idf1": 2 * idtp / (n_gt + n_pred), "num_switches": ids,
            "num_false_positives": fp, "num_misses": fn, "recall": (n_gt - fn) / n_gt,
            "precision": (n_gt - fn) / max(n_pred, 1)}


def antiuav(cfg: TrackerConfig, root: Path) -> tuple[dict[str, float], dict[str, dict], float]:
    """Aggregate and per-sequence metrics over every sequence under root, and the tracking seconds."""
    per, seconds = {}, 0.0
    for seq in sorted(p for p in root.iterdir() if (p / "gt").is_dir()):
        gt, frames = load(seq)
        t0 = time.perf_counter()
        hyp = track(cfg, frames)
        seconds += time.perf_counter() - t0
        per[seq.name] = mot_metrics(gt, hyp)
    return aggregate(list(per.values())), per, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    configs = {"default": TrackerConfig(), "sort": TrackerConfig.sort()}
    print(f"{'sequence':<18}{'config':<9}{'frames':>7}{'dets':>7}{'frames/s':>10}{'MOTA':>7}{'IDF1':>7}{'IDs':>6}")
    for seq in ("TUD-Campus", "TUD-Stadtmitte"):
        gt, frames = load(args.data / "mot15" / seq)
        n_det = sum(len(s) for _, s in frames)
        for name, cfg in configs.items():
            best = np.inf
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                hyp = track(cfg, frames)
                best = min(best, time.perf_counter() - t0)
            m = mot_metrics(gt, hyp)
            print(f"{seq:<18}{name:<9}{len(frames):>7}{n_det:>7}{len(frames) / best:>10.0f}"
                  f"{100 * m['mota']:>7.1f}{100 * m['idf1']:>7.1f}{m['num_switches']:>6.0f}")
    print("\nAnti-UAV tracks, counts summed over sequences (frames/s: tracker only)")
    print(f"{'config':<9}{'MOTA':>7}{'IDF1':>7}{'IDs':>6}{'FP':>7}{'FN':>7}{'Rcll':>7}{'Prcn':>7}{'frames/s':>10}")
    for name, cfg in configs.items():
        agg, per, dt = antiuav(cfg, args.data / "antiuav_tracks")
        n_frames = sum(m["num_frames"] for m in per.values())
        print(f"{name:<9}{100 * agg['mota']:>7.1f}{100 * agg['idf1']:>7.1f}{agg['num_switches']:>6.0f}"
              f"{agg['num_false_positives']:>7.0f}{agg['num_misses']:>7.0f}{100 * agg['recall']:>7.1f}"
              f"{100 * agg['precision']:>7.1f}{n_frames / dt:>10.0f}")


if __name__ == "__main__":
    main()
