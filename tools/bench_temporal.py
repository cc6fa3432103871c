"""Temporal smoothing, measured (issue 5): a ConvGRU over a trained fusion detector's fused maps against a
recurrent filter of per-track scores, and neither.

- none: the detector frame by frame, then the tracker (configs/fusion.yaml's settings, homographies from
  the turret's pose log);
- score: the same plus the per-track score filter of `ScoreSmoothingStage` (exponential average of each
  track's scores, alpha from configs/fusion.yaml; tracks under the threshold, --score-min, not reported);
- convgru: `fusion.temporal.RecurrentMaps` between the frozen detector's fused maps and a copy of its head,
  the state warped frame to frame with the turret's motion; trained here on sequences of T consecutive
  (every 2nd) thermal-grid frames of the training flights, centre loss at every step, for --steps steps.

All three run on every thermal frame of the test flights (with each frame's RGB partner registered onto the
thermal grid), in order, and are scored against the thermal ground truth: AP50 of the detections (VOC
all-point) and MOTA / IDF1 of the tracks (motmetrics). No backfill of tentative rows here (all three alike).

    .venv/bin/python tools/bench_temporal.py --checkpoint runs/bench_fusion/runs/concat/best.pt
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fusion.detector import centre_loss, centre_targets, decode  # noqa: E402
from fusion.temporal import RecurrentMaps, ScoreFilter, warp_maps  # noqa: E402
from pipeline.evaluation.detmetrics import average_precision, pr_curve  # noqa: E402
from pipeline.evaluation.evaluate import drone_rows, track_metrics  # noqa: E402
from pipeline.io.flight import load_flight  # noqa: E402
from pipeline.training.fusion_data import FusionCropDataset, PairedSample, collate_fusion, full_frames, paired_samples  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.io.motio import read_mot  # noqa: E402
from pipeline.settings import load_config  # noqa: E402
from trackers.tracker import Tracker  # noqa: E402


def sequences(samples: list[PairedSample], t: int, every: int) -> list[list[int]]:
    """Index runs of t consecutive samples of one flight (frames `every` apart)."""
    out = []
    for i in range(t - 1, len(samples)):
        run = samples[i - t + 1:i + 1]
        if all(a.flight == b.flight and b.frame - a.frame == every for a, b in zip(run, run[1:])):
            out.append(list(range(i - t + 1, i + 1)))
    return out


def crop_homography(h: np.ndarray | None, x0: int, y0: int) -> np.ndarray:
    if h is None:
        return np.eye(3)
    t = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], float)
    return np.linalg.inv(t) @ h @ t


def train_recurrent(base, samples, args, log) -> tuple[RecurrentMaps, torch.nn.Module]:
    mods = base.cfg.modalities
    rec = RecurrentMaps(2 * base.cfg.width, args.hidden)
    head = copy.deepcopy(base.heads[0])
    params = list(rec.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr)
    runs = sequences(samples, args.length, args.every)
    ds = FusionCropDataset(samples, mods, args.crop, 0.7, seed=1)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for step in range(args.steps):
        batch = [runs[i] for i in rng.integers(len(runs), size=args.batch)]
        # One crop window per sequence (drawn on its last frame), the same window on every frame.
        items, homs = [[] for _ in range(args.length)], [[] for _ in range(args.length)]
        for run in batch:
            ds.set_epoch(step)
            last = ds[run[-1]]
            x0, y0 = last["origin"]
            for k, i in enumerate(run):
                items[k].append(ds.item_at(i, x0, y0))
                h = samples[i].homography_from(samples[run[k - 1]]) if k else None
                homs[k].append(crop_homography(h, x0, y0))
        state, losses = None, []
        for k in range(args.length):
            b = collate_fusion(items[k])
            with torch.no_grad():
                f, _, size = base.features(b["images"], b["present"], b["flow"])
            if state is not None:
                state = warp_maps(state, torch.as_tensor(np.stack(homs[k]), dtype=torch.float32), base.stride)
            f, state = rec(f, state)
            out = base.head_output(f, size, head)
            ht, rt, mk = centre_targets(b["boxes"], tuple(out["heat"].shape[-2:]), base.stride)
            losses.append(sum(centre_loss(out, ht, rt, mk).values()))
        loss = sum(losses) / len(losses)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        if (step + 1) % 50 == 0:
            log(f"convgru step {step + 1}/{args.steps} loss {loss.item():.4f} "
                f"{(step + 1) / (time.perf_counter() - t0):.2f} steps/s")
    return rec, head


def run_flight(base, flight_dir: Path, mode: str, rec=None, head=None, cfg=None, score_min: float = 0.3) -> dict:
    """Detections and tracks of every thermal frame of a flight, in order."""
    mods = base.cfg.modalities
    samples = paired_samples(flight_dir, mods, "thermal", base.cfg.flow, 1)
    items = full_frames(samples, mods)
    tracker = Tracker(cfg.tracker)
    filt = ScoreFilter(cfg.smoothing.alpha, 30) if mode == "score" else None
    state, prev = None, None
    det_rows, trk_rows = [], []
    for s, it in zip(samples, items):
        b = collate_fusion([it])
        hom = s.homography_from(prev) if prev is not None and s.frame - prev.frame == 1 else None
        with torch.no_grad():
            if mode == "convgru":
                f, _, size = base.features(b["images"], b["present"], b["flow"])
                if state is not None:
                    state = warp_maps(state, torch.as_tensor(hom if hom is not None else np.eye(3),
                                                             dtype=torch.float32)[None], base.stride)
                    if hom is None:
                        state = None
                f, state = rec(f, state)
                out = base.head_output(f, size, head)
            else:
                out = base(b["images"], b["present"], b["flow"])
        boxes, scores = decode(out, cfg.detector.min_score, base.cfg.max_detections, base.cfg.nms_iou, base.stride)[0]
        xyxy, sc = boxes.numpy(), scores.numpy()
        h, w = next(im for im in s.images.values() if im is not None).shape[:2]
        for bx, v in zip(xyxy, sc):
            det_rows.append([s.frame, -1, bx[0], bx[1], bx[2] - bx[0], bx[3] - bx[1], v, 1, -1, -1])
        tout = tracker.update(xyxy, sc, hom, (w, h))
        ids, tb, ts = tout.track_ids, tout.xyxy, tout.scores
        if filt is not None:
            sm = filt.update(ids, ts)
            keep = sm >= score_min
            ids, tb = ids[keep], tb[keep]
        for i, bx in zip(ids, tb):
            trk_rows.append([s.frame, i, bx[0], bx[1], bx[2] - bx[0], bx[3] - bx[1], 1, -1, -1, -1])
        prev = s
    flight = load_flight(flight_dir)
    gt = drone_rows(read_mot(flight.gt_path("thermal")))
    gt = gt[gt[:, 6] != 0]
    det = np.asarray(det_rows, float).reshape(-1, 10)
    trk = np.asarray(trk_rows, float).reshape(-1, 10)
    rec_, prec, _ = pr_curve(gt[:, 0], gt[:, 2:6], det[:, 0], det[:, 2:6], det[:, 6], 0.5, plus_one=False)
    m = track_metrics(gt, trk, frames=[s.frame for s in samples])
    return {"ap50": average_precision(rec_, prec), "mota": float(m["mota"]), "idf1": float(m["idf1"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a trained fusion detector (not late fusion)")
    ap.add_argument("--train-seeds", default="100,101,102,103,104,106,108,109")
    ap.add_argument("--train-cache", default="runs/cache/synth")
    ap.add_argument("--test", default="runs/bench_fusion/cache/test/seed110_20s_3d_2b,runs/bench_fusion/cache/test/seed111_20s_3d_2b")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=3)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--score-min", default="0.3,0.5", help="score filter thresholds to measure")
    ap.add_argument("--json", default="runs/bench_temporal.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    base, _ = load_model(args.checkpoint, "fusion")
    for p in base.parameters():
        p.requires_grad_(False)
    cfg = load_config(ROOT / "configs" / "fusion.yaml")
    train_dirs = [Path(args.train_cache) / f"seed{s}_20s_3d_2b" for s in args.train_seeds.split(",")]
    samples = [s for d in train_dirs for s in paired_samples(d, base.cfg.modalities, "thermal", base.cfg.flow,
                                                               args.every)]
    print(f"{len(samples)} training frames", flush=True)
    rec, head = train_recurrent(base, samples, args, lambda m: print(m, flush=True))
    rec.eval()
    head.eval()
    result = {"checkpoint": args.checkpoint, "steps": args.steps, "length": args.length}
    modes = [("none", "none", 0.0)] + [(f"score>={v}", "score", float(v)) for v in args.score_min.split(",")] \
        + [("convgru", "convgru", 0.0)]
    for name, mode, smin in modes:
        per = [run_flight(base, Path(d), mode, rec, head, cfg, smin) for d in args.test.split(",")]
        result[name] = {k: round(float(np.mean([p[k] for p in per])), 4) for k in per[0]}
        print(name, json.dumps(result[name]), flush=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
