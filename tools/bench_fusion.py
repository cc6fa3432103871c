"""Benchmark of the RGB + thermal fusion detector (issue 5): every modality and fusion operator, a lost
sensor at test time, the flow stream, the ROCK auxiliary heads, temporal smoothing, and frames/s.

Each variant is `dronetrack train configs/train_fusion.yaml` with overrides (one process, so the paired
training frames are read once), then `dronetrack process` + `evaluate` with configs/fusion.yaml and the
variant's checkpoint on synthetic test flights whose seeds were never trained on. Scores are the thermal
stream's (the grid every model sees; a model without thermal input reports its boxes in the thermal
camera's pixels through the calibration) and the RGB stream's, averaged over the test flights.

    .venv/bin/python tools/bench_fusion.py                        # everything (about 1.5 h on 2 cores)
    .venv/bin/python tools/bench_fusion.py --variants thermal,rgb,mutan --parts models
    .venv/bin/python tools/bench_fusion.py --export mutan         # also ship that variant's checkpoint

Parts: models (train + score each variant), drop (the best fused variant, or all with --drop-all, with one
camera dropped), smoothing
(per-track score filter on/off for --best), fps (configs/fusion.yaml end to end on the first test flight).
Small-drone recall: ground-truth drones whose larger side is under 12 px, found at IoU >= 0.5 by a detection
at or above the config's min_score.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.evaluation.detmetrics import voc_iou  # noqa: E402
from pipeline.evaluation.evaluate import drone_rows, evaluate_flight, read_coco_results  # noqa: E402
from pipeline.io.motio import read_mot  # noqa: E402

VARIANTS = {
    "thermal": ["fusion.modalities=[thermal]", "fusion.operator=none"],
    "rgb": ["fusion.modalities=[rgb]", "fusion.operator=none"],
    "early": ["fusion.operator=early"],
    "concat": ["fusion.operator=concat"],
    "mutan": ["fusion.operator=mutan"],
    "gated": ["fusion.operator=gated"],
    "late": ["fusion.operator=late"],
    "thermal_flow": ["fusion.modalities=[thermal]", "fusion.operator=none", "fusion.flow=5"],
    "mutan_flow": ["fusion.operator=mutan", "fusion.flow=5"],
    "mutan_rock": ["fusion.operator=mutan", "fusion.rock=true"],
    "concat_drop50": ["fusion.operator=concat", "fusion.dropout_p=0.5"],
}
FUSED = ("early", "concat", "mutan", "gated", "late", "concat_drop50")
SMALL = 12.0  # px


def test_flights(work: Path, seeds: list[int]) -> list[Path]:
    from pipeline.synth import generate_flight

    out = []
    for seed in seeds:
        folder = work / "cache" / "test" / f"seed{seed}_20s_3d_2b"
        if not (folder / "flight.yaml").is_file():
            generate_flight(folder, seed=seed, seconds=20.0, drones=3, birds=2)
        out.append(folder)
    return out


def train_variant(name: str, work: Path, steps: int) -> dict:
    from pipeline.training.train import train

    out = work / "runs" / name
    best = out / "best.pt"
    t0 = time.perf_counter()
    if not best.is_file():
        train(ROOT / "configs" / "train_fusion.yaml", VARIANTS[name] + [f"out={out}", f"optim.steps={steps}", "export=null"],
              log_to_stdout=False)
    from detectors.checkpoint import load_checkpoint

    val = load_checkpoint(best)["val"]
    return {"checkpoint": str(best), "val_ap50": round(float(val.get("ap50", float("nan"))), 4),
            "train_seconds": round(time.perf_counter() - t0, 1)}


def small_recall(flight: Path, out: Path, stream: str, min_score: float) -> tuple[int, int]:
    """(found, total) ground-truth drones under SMALL px on `stream`."""
    gt = drone_rows(read_mot(flight / "gt" / f"{stream}.txt"))
    gt = gt[(gt[:, 6] != 0) & (np.maximum(gt[:, 4], gt[:, 5]) < SMALL)]
    det = read_coco_results(out / "detections" / f"{stream}.json")
    det = det[det[:, 6] >= min_score]
    found = 0
    for f in np.unique(gt[:, 0]):
        g, d = gt[gt[:, 0] == f], det[det[:, 0] == f]
        if len(d):
            iou = voc_iou(g[:, 2:6], d[:, 2:6], plus_one=False)
            found += int((iou.max(1) >= 0.5).sum())
    return found, len(gt)


def score(checkpoint: str, flights: list[Path], work: Path, tag: str, overrides: list[str] = ()) -> dict:
    """process + evaluate each test flight; per stream: mean AP50, MOTA, IDF1 over flights, small recall."""
    from pipeline.process import process
    from pipeline.settings import load_config

    over = [f"detector.checkpoint={checkpoint}", "detector.device=cpu", *overrides]
    cfg = load_config(ROOT / "configs" / "fusion.yaml", over)
    per_stream: dict[str, dict[str, list]] = {}
    fps = []
    for flight in flights:
        out = work / "scores" / tag / flight.name
        summary = process(flight, out, ROOT / "configs" / "fusion.yaml", over, progress=False)
        fps.append(summary["frames_per_second"])
        res = evaluate_flight(flight, out)["streams"]
        for s, m in res.items():
            acc = per_stream.setdefault(s, {"ap50": [], "mota": [], "idf1": [], "small": [0, 0]})
            acc["ap50"].append(m["ap50_all"])
            acc["mota"].append(m["mota"])
            acc["idf1"].append(m["idf1"])
            found, total = small_recall(flight, out, s, cfg.detector.min_score)
            acc["small"][0] += found
            acc["small"][1] += total
    result = {s: {"ap50": round(float(np.mean(a["ap50"])), 4), "mota": round(float(np.mean(a["mota"])), 4),
                  "idf1": round(float(np.mean(a["idf1"])), 4),
                  "small_recall": round(a["small"][0] / max(a["small"][1], 1), 4), "small_n": a["small"][1]}
              for s, a in per_stream.items()}
    result["fps"] = round(float(np.mean(fps)), 1)
    return result


def table(rows: dict[str, dict]) -> str:
    lines = ["| variant | thermal AP50 | thermal MOTA | thermal IDF1 | small recall | rgb AP50 | rgb MOTA | frames/s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        t, c = r.get("thermal", {}), r.get("rgb", {})
        lines.append(f"| {name} | {t.get('ap50', float('nan')):.3f} | {t.get('mota', float('nan')):.3f} | "
                     f"{t.get('idf1', float('nan')):.3f} | {t.get('small_recall', float('nan')):.3f} | "
                     f"{c.get('ap50', float('nan')):.3f} | {c.get('mota', float('nan')):.3f} | {r.get('fps', 0):.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/bench_fusion")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--parts", default="models,drop,smoothing,fps")
    ap.add_argument("--test-seeds", default="110,111")
    ap.add_argument("--best", default=None, help="variant for smoothing and fps (default: best fused AP50)")
    ap.add_argument("--drop-all", action="store_true", help="drop part: every fused variant, not only --best")
    ap.add_argument("--export", default=None, help="copy this variant's checkpoint (float16) to detectors/weights/")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    flights = test_flights(work, [int(s) for s in args.test_seeds.split(",")])
    parts = set(args.parts.split(","))
    report_path = work / "bench_fusion.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}

    def save() -> None:
        report_path.write_text(json.dumps(report, indent=2))

    names = [v for v in args.variants.split(",") if v]
    models = report.setdefault("models", {})
    if "models" in parts:
        for name in names:
            info = train_variant(name, work, args.steps)
            models[name] = {**info, **score(info["checkpoint"], flights, work, name)}
            print(name, json.dumps(models[name]), flush=True)
            save()
        print(table(models))
    fused = [n for n in FUSED if n in models]
    best = args.best or (max(fused, key=lambda n: models[n]["thermal"]["ap50"]) if fused else None)
    report["best"] = best
    if "drop" in parts:
        drops = report.setdefault("drop", {})
        for name in (fused if args.drop_all else [best]):
            for lost in ("thermal", "rgb"):
                r = score(models[name]["checkpoint"], flights, work, f"{name}_no_{lost}", [f"detector.drop=[{lost}]"])
                drops[f"{name} without {lost}"] = r
                print(name, "without", lost, json.dumps(r), flush=True)
                save()
        print(table(drops))
    if "smoothing" in parts and best:
        sm = report.setdefault("smoothing", {})
        for kind in ("none", "score"):
            sm[kind] = score(models[best]["checkpoint"], flights, work, f"{best}_smooth_{kind}",
                             [f"smoothing.kind={kind}"])
            print("smoothing", kind, json.dumps(sm[kind]), flush=True)
            save()
        print(table(sm))
    if "fps" in parts and best:
        from pipeline.process import process

        out = work / "scores" / "fps"
        s = process(flights[0], out, ROOT / "configs" / "fusion.yaml",
                    [f"detector.checkpoint={models[best]['checkpoint']}", "detector.device=cpu"], progress=False)
        report["fps"] = {"variant": best, "frames_per_second": s["frames_per_second"],
                         "stage_ms_per_frame": s["stage_ms_per_frame"], "torch_threads": torch.get_num_threads()}
        print("fps", json.dumps(report["fps"]), flush=True)
        save()
    if args.export:
        from detectors.checkpoint import load_checkpoint, save_checkpoint
        from pipeline.models import load_model

        src = models[args.export]["checkpoint"]
        model, ckpt = load_model(src, "fusion")
        dest = ROOT / "detectors" / "weights" / ("fusion.pt" if args.export in FUSED else f"fusion_{args.export}.pt")
        save_checkpoint(dest, kind="fusion", config=ckpt["config"], classes=ckpt["classes"], model=model,
                        step=ckpt["step"], val=ckpt["val"], half=True)
        print("exported", dest, f"{dest.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
