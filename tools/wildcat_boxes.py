"""How good can WILDCAT's boxes be? On held-out synthetic flights (made as tools/bench_wildcat.py makes them):

  modes   pointing, point AP and box AP50 of a checkpoint with boxes cut from map cells or from the map
          interpolated to pixels, at several `box_threshold` values;
  ceiling the peak's distance to the nearest drone's centre, and the share of drones that a box of the TRUE
          size centred on the peak would match at IoU 0.5 / 0.25 (what any box drawn around the peak can reach).

    .venv/bin/python tools/wildcat_boxes.py [--checkpoint detectors/weights/wildcat_gps.pt] [--seeds 110 111]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from detectors.wildcat import localize_batch
from pipeline.training.datasets import FrameStore
from pipeline.models import load_model
from pipeline.synth import generate_flight
from pipeline.training.train import frame_tensor, wildcat_scores


def flights(work: Path, seeds: list[int]) -> list[Path]:
    out = []
    for seed in seeds:
        folder = work / f"seed{seed}_20s_3d_2b"
        if not (folder / "flight.yaml").is_file():
            generate_flight(folder, seed=seed, seconds=20.0, drones=3, birds=2)
        out.append(folder)
    return out


def ceiling(model, store: FrameStore) -> dict[str, float]:
    errors, ious = [], []
    for i in range(len(store)):
        image, boxes, labels, _ = store.frame(i)
        gt = boxes[labels == 1]
        if not len(gt):
            continue
        with torch.no_grad():
            out = model(frame_tensor(image, torch.device("cpu")))
        (_, _, _, points), = localize_batch(out["scores"], out["maps"], model.stride, image.shape[:2],
                                            offset=model.offset)
        px, py = points[0]
        d = np.hypot((gt[:, 0] + gt[:, 2]) / 2 - px, (gt[:, 1] + gt[:, 3]) / 2 - py)
        x0, y0, x1, y1 = gt[int(d.argmin())]
        w, h = x1 - x0, y1 - y0
        inter = max(0.0, min(px + w / 2, x1) - max(px - w / 2, x0)) * max(0.0, min(py + h / 2, y1) - max(py - h / 2, y0))
        errors.append(float(d.min()))
        ious.append(inter / (2 * w * h - inter))
    e, iou = np.array(errors), np.array(ious)
    return {"drone_frames": len(e), "peak_error_px_q25_q50_q75": np.percentile(e, [25, 50, 75]).round(2).tolist(),
            "true_size_box_iou50": round(float((iou >= 0.5).mean()), 3),
            "true_size_box_iou25": round(float((iou >= 0.25).mean()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="detectors/weights/wildcat_gps.pt")
    ap.add_argument("--seeds", type=int, nargs="+", default=[110, 111])
    ap.add_argument("--work", default="runs/bench_wildcat/cache/test")
    ap.add_argument("--every", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(2)
    store = FrameStore(flights(Path(a.work), a.seeds), every=a.every)
    model, _ = load_model(a.checkpoint, "wildcat")
    result: dict = {"modes": {}}
    for box, t in (("cells", 0.5), ("interp", 0.5), ("interp", 0.7)):
        model.cfg.box, model.cfg.box_threshold = box, t
        with torch.no_grad():
            s = wildcat_scores(model, store, torch.device("cpu"))
        result["modes"][f"{box}@{t}"] = {k: round(s[k], 4) for k in ("pointing", "point_ap", "ap50")}
        print(f"{box}@{t}: {result['modes'][f'{box}@{t}']}", flush=True)
    result["ceiling"] = ceiling(model, FrameStore(flights(Path(a.work), a.seeds), every=2 * a.every))
    print(json.dumps(result["ceiling"]))


if __name__ == "__main__":
    main()
