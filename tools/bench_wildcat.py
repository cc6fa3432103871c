"""The WILDCAT measurements of issue 4, on synthetic flights:

  presets  pointing accuracy, point AP and box AP50 of the five pooling presets (max, gap, maxmin,
           weldon, wildcat as in the seed's table) and of the shipped variant (wildcat with integer
           k = 3), each trained the same number of steps on GPS-made labels (configs/train_wildcat.yaml);
  labels   the shipped variant trained on GPS-made labels against ground-truth presence: the gap;
  search   narrowed (configs/wildcat_gps.yaml) against whole-frame (configs/wildcat_full.yaml)
           `dronetrack process` on a default 20 s synthetic flight: end-to-end frames/s and recall.

Scores are on test flights that neither training nor validation saw. Pointing: the class map's peak
inside a ground-truth drone box grown by `--tolerance` px (8 px: one cell of the stride-8 map; Oquab et
al. used 18 px). Recall of a `process` run: a drone box counts as found when a detection's box centre
(the COCO output carries no peak) lies inside it grown by the same tolerance; at IoU 0.5 as well.

    .venv/bin/python tools/bench_wildcat.py [--parts presets,labels,search] [--steps 1500] [--threads 2]
    .venv/bin/python tools/bench_wildcat.py --quick      (tiny models and flights: checks that it runs)

On 2 CPU cores a training step (batch 16 of 160 px crops) takes about 0.2-0.3 s: the full run (7
trainings of 1500 steps, scoring on 2 test flights, two 20 s `process` runs) takes about 45-60 min.

Trainings go to WORK/runs/<name> and are reused when finished (delete them to retrain); results to
WORK/bench_wildcat.json. The shipped checkpoint is never overwritten (export is off here).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from detectors.checkpoint import load_checkpoint
from pipeline.training.datasets import FrameStore
from pipeline.evaluation.detmetrics import pr_curve
from pipeline.evaluation.evaluate import drone_rows
from pipeline.io.flight import load_flight
from pipeline.models import load_model
from pipeline.io.motio import read_mot
from pipeline.process import process
from pipeline.synth import generate_flight
from pipeline.training.train import train, wildcat_scores

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ("max", "gap", "maxmin", "weldon", "wildcat")
FREE_K = ["wildcat.kmax=null", "wildcat.kmin=null", "wildcat.alpha=null"]  # the preset's own k and alpha
QUICK = ["wildcat.backbone.width=0.125", "data.crop=64", "data.every=10", "data.val_every=30",
         "optim.batch_size=4", "optim.warmup_steps=1", "data.val_fraction=0.5",
         "data.synthetic={seeds: [7, 8], seconds: 3.0, drones: 2, birds: 1}"]


def runs(parts: list[str], base_needed: bool) -> dict[str, list[str]]:
    """Training name -> overrides of configs/train_wildcat.yaml."""
    out = {}
    if "presets" in parts:
        out.update({p: [f"wildcat.pooling={p}", *FREE_K] for p in PRESETS})
    if base_needed:
        out["wildcat_k3_gps"] = []
    if "labels" in parts:
        out["wildcat_k3_gt"] = ["weak.labels=gt"]
    return out


def trained(work: Path, name: str, overrides: list[str], steps: int, threads: int) -> Path:
    out = work / "runs" / name
    last = out / "last.pt"
    if not (last.is_file() and load_checkpoint(last)["step"] >= steps):
        t0 = time.perf_counter()
        train(ROOT / "configs" / "train_wildcat.yaml",
              [f"out={out}", "export=null", f"optim.steps={steps}", f"optim.eval_every={max(1, steps // 4)}",
               f"threads={threads}", f"data.cache={work / 'cache'}", *overrides],
              resume=last.is_file(), log_to_stdout=False)
        print(f"  trained {name}: {steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    return out / "best.pt"


def test_flights(work: Path, seeds: list[int], seconds: float, drones: int, birds: int) -> list[Path]:
    out = []
    for seed in seeds:
        folder = work / "cache" / "test" / f"seed{seed}_{seconds:g}s_{drones}d_{birds}b"
        if not (folder / "flight.yaml").is_file():
            generate_flight(folder, seed=seed, seconds=seconds, drones=drones, birds=birds)
        out.append(folder)
    return out


def score(checkpoint: Path, store: FrameStore, tolerance: float) -> dict[str, float]:
    model, _ = load_model(checkpoint, "wildcat")
    with torch.no_grad():
        s = wildcat_scores(model, store, torch.device("cpu"), tolerance)
    return {k: round(v, 4) for k, v in s.items() if k != "score"}


def recall(flight_dir: Path, out: Path, tolerance: float) -> dict[str, float]:
    """Per stream: drone boxes found by a detection's box centre (within tolerance), and at IoU 0.5."""
    flight, res = load_flight(flight_dir), {}
    for stream in flight.streams:
        gt = drone_rows(read_mot(flight.gt_path(stream)))
        dets = json.loads((out / "detections" / f"{stream}.json").read_text())
        centres: dict[int, list] = {}
        for d in dets:
            x, y, w, h = d["bbox"]
            centres.setdefault(d["image_id"], []).append((x + w / 2, y + h / 2))
        found = 0
        for f, x, y, w, h in gt[:, [0, 2, 3, 4, 5]]:
            c = np.asarray(centres.get(int(f), []), np.float64).reshape(-1, 2)
            found += bool(((c[:, 0] >= x - tolerance) & (c[:, 0] <= x + w + tolerance)
                           & (c[:, 1] >= y - tolerance) & (c[:, 1] <= y + h + tolerance)).any())
        rec, _, n = pr_curve(gt[:, 0].astype(int).tolist(), gt[:, 2:6], [d["image_id"] for d in dets],
                             np.array([d["bbox"] for d in dets]).reshape(-1, 4), np.array([d["score"] for d in dets]))
        res[stream] = {"point_recall": round(found / max(len(gt), 1), 4),
                       "recall_iou50": round(float(rec[-1]) if len(rec) else 0.0, 4)}
    return res


def search_bench(work: Path, checkpoint: Path, flight: Path, tolerance: float, quick: bool) -> dict:
    res = {}
    for mode in ("gps", "full"):
        out = work / "process" / mode
        over = [f"detector.checkpoint={checkpoint}", "detector.device=cpu"]
        s = process(flight, out, config=ROOT / "configs" / f"wildcat_{mode}.yaml", overrides=over, progress=False)
        res[mode] = {"frames": s["frames"], "frames_per_second": s["frames_per_second"],
                     "detector_ms_per_frame": s["stage_ms_per_frame"]["detector"],
                     "recall": recall(flight, out, tolerance), "search": s.get("search")}
        print(f"  {mode}: {s['frames_per_second']:.1f} frames/s, detector {res[mode]['detector_ms_per_frame']:.1f} "
              f"ms/frame, recall {res[mode]['recall']}", flush=True)
    res["speedup"] = round(res["gps"]["frames_per_second"] / res["full"]["frames_per_second"], 2)
    return res


def table(scores: dict[str, dict[str, float]]) -> str:
    keys = ("pointing", "pointing_rgb", "pointing_thermal", "point_ap", "ap50", "accuracy")
    lines = [f"{'run':<16s}" + "".join(f"{k:>18s}" for k in keys)]
    for name, s in scores.items():
        lines.append(f"{name:<16s}" + "".join(f"{s.get(k, float('nan')):18.3f}" for k in keys))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="presets,labels,search")
    ap.add_argument("--steps", type=int, default=1500, help="training steps of every run (the same budget)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=8.0)
    ap.add_argument("--work", default="runs/bench_wildcat")
    ap.add_argument("--checkpoint", default=None, help="search part: this checkpoint instead of wildcat_k3_gps")
    ap.add_argument("--quick", action="store_true", help="tiny models, 3 s flights, a few steps")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    parts = a.parts.split(",")
    work = Path(a.work) / ("quick" if a.quick else "")
    extra = QUICK if a.quick else []
    steps = 3 if a.quick else a.steps
    size = (3.0, 2, 1) if a.quick else (20.0, 3, 2)  # seconds, drones, birds: the generator's defaults but in quick
    t0 = time.perf_counter()
    test = test_flights(work, [9] if a.quick else [110, 111], *size)
    store = FrameStore(test, every=10)
    result: dict = {"steps": steps, "tolerance": a.tolerance, "test_flights": [p.name for p in test], "scores": {}}
    base_needed = "presets" in parts or "labels" in parts or ("search" in parts and not a.checkpoint)
    for name, over in runs(parts, base_needed).items():
        best = trained(work, name, over + extra, steps, a.threads)
        result["scores"][name] = score(best, store, a.tolerance)
    if result["scores"]:
        print(table(result["scores"]))
    if "search" in parts:
        flight = test_flights(work, [0], *size)[0]
        ckpt = Path(a.checkpoint) if a.checkpoint else work / "runs" / "wildcat_k3_gps" / "best.pt"
        result["search"] = search_bench(work, ckpt, flight, a.tolerance, a.quick)
        print(f"  narrowed / whole frame: {result['search']['speedup']:.2f}x")
    (work / "bench_wildcat.json").write_text(json.dumps(result, indent=2))
    print(f"{time.perf_counter() - t0:.0f} s; results in {work / 'bench_wildcat.json'}")


if __name__ == "__main__":
    main()
