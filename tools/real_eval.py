"""Score a detector on real footage it never trained on: the held-out Svanstrom test clips.

    .venv/bin/python tools/real_eval.py --checkpoint detectors/weights/pyramid.pt [--every 1] [--tracks]

The test clips are the ones `configs/train_real.yaml` holds out (data.svanstrom.test_fraction / test_seed:
whole clips, stratified by sensor and label; pipeline.training.train.svanstrom_split). For each sensor:
- drone AP50 (VOC all-point, IoU 0.5, the project's `dronetrack evaluate` code) and COCO AP / AP50
  (pycocotools) on the drone clips, and AP50 again with the confuser clips' frames added (their drone
  detections are false positives);
- AP50 by drone size band (sqrt of box area: < 8, 8-16, 16-32, 32-64, > 64 px; COCO-style, 101 points);
- false alarms on the bird / airplane / helicopter clips: drone detections at or above --threshold per
  minute of video (a detection per frame at 30 fps is 1800 a minute), and the share of frames with one;
  with --tracks, also the confirmed drone tracks per minute that `dronetrack process` (--config, default
  configs/default.yaml) reports on those clips, which is what an operator is alarmed by.
Writes OUT/real_eval.json and two contact sheets (OUT/misses_<sensor>.png, OUT/false_alarms_<sensor>.png):
crops around missed drones (green: ground truth, red: best detection under the threshold) and around
false alarms (red), at the operating threshold.

The detector is the one the pipeline builds from a run config (`--config`, its detector section) or a
checkpoint (`--checkpoint`, kind from the file): the same adapter, tiling included, as `dronetrack process`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.evaluation.detmetrics import coco_ap50_by_size  # noqa: E402
from pipeline.evaluation.evaluate import detection_metrics  # noqa: E402
from pipeline.io.flight import load_flight  # noqa: E402
from pipeline.io.svanstrom import clip_info, import_svanstrom  # noqa: E402
from pipeline.training.datasets import FrameStore  # noqa: E402
from pipeline.training.train import SvanstromData, select_clips, svanstrom_split  # noqa: E402

FPS = 30.0
SENSOR_NAME = {"ir": "thermal", "v": "visible"}


def test_clips(root: str, cache: str, sensors: list[str], fraction: float = 0.2, seed: int = 0,
               labels: list[str] | None = None) -> list[Path]:
    """The held-out Svanstrom clips (flight folders converted into cache/svanstrom)."""
    cfg = SvanstromData(root=root, sensors=sensors, test_fraction=fraction, test_seed=seed, labels=labels)
    return select_clips(svanstrom_split(import_svanstrom(Path(root), Path(cache) / "svanstrom"), cfg)[1], cfg)


def build_detector(checkpoint: str | None, config: str | None, overrides: list[str], device: str = "auto"):
    from pipeline.settings import build_detector_factory, load_config

    ov = list(overrides) + [f"detector.device={device}", "detector.min_score=0.0"]
    if checkpoint is not None:
        from detectors.checkpoint import load_checkpoint

        kind = load_checkpoint(checkpoint)["kind"]
        ov += [f"detector.kind={kind}", f"detector.checkpoint={checkpoint}"]
    cfg = load_config(config, ov)
    return build_detector_factory(cfg.detector)("eval", "thermal")


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def crop_tile(image: np.ndarray, box: np.ndarray, colour: tuple, other: np.ndarray | None = None,
              side: int = 96) -> np.ndarray:
    """A side x side BGR tile centred on `box` (with at least 3x its size of context), boxes drawn."""
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    img = np.ascontiguousarray(img[..., ::-1])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(24.0, 1.5 * max(box[2] - box[0], box[3] - box[1]))
    x0, y0 = int(cx - half), int(cy - half)
    m = np.float32([[side / (2 * half), 0, -x0 * side / (2 * half)], [0, side / (2 * half), -y0 * side / (2 * half)]])
    tile = cv2.warpAffine(img, m, (side, side), borderValue=(0, 0, 0))
    k = side / (2 * half)
    for b, c in [(box, colour)] + ([(other, (0, 0, 255))] if other is not None else []):
        p0 = (int((b[0] - x0) * k), int((b[1] - y0) * k))
        p1 = (int((b[2] - x0) * k), int((b[3] - y0) * k))
        cv2.rectangle(tile, p0, p1, c, 1)
    return tile


def sheet(tiles: list[np.ndarray], path: Path, cols: int = 10) -> None:
    if not tiles:
        return
    rows = math.ceil(len(tiles) / cols)
    side = tiles[0].shape[0]
    out = np.zeros((rows * side, cols * side, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * side:(r + 1) * side, c * side:(c + 1) * side] = t
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), out)


def evaluate_clips(detector, clips: list[Path], every: int = 1, threshold: float = 0.5, batch: int = 8,
                   sheets: Path | None = None, max_tiles: int = 60, log=print) -> dict:
    """Run `detector` on every `every`-th annotated frame of the clips; the metrics of the module docstring
    (without tracks), per sensor."""
    per = {}
    rng = np.random.default_rng(0)
    for ci, clip in enumerate(clips):
        info = clip_info(load_flight(clip))
        sensor, label = info["sensor"], info["label"]
        acc = per.setdefault(sensor, {"gt": [], "det": [], "frames_drone": [], "frames_neg": {}, "neg_det": {},
                                      "misses": [], "fas": []})
        store = FrameStore([clip], every=every, jpeg=None)
        for start in range(0, len(store), batch):
            idx = list(range(start, min(start + batch, len(store))))
            frames = [store.frame(i) for i in idx]
            bgr = [im[..., ::-1] if im.ndim == 3 else im for im, *_ in frames]
            results = detector.detect_many(bgr)
            for i, (image, boxes, labels, _), res in zip(idx, frames, results):
                xyxy, scores, lab = res if isinstance(res, tuple) else (res.xyxy, res.scores, res.labels)
                keep = lab == 0
                xyxy, scores = xyxy[keep], scores[keep]
                fid = ci * 100000 + store.records[i].frame
                gt = boxes[labels == 1]
                for b in gt:
                    acc["gt"].append([fid, -1, b[0], b[1], b[2] - b[0], b[3] - b[1], 1, 1, -1, -1])
                for b, s in zip(xyxy, scores):
                    acc["det"].append([fid, -1, b[0], b[1], b[2] - b[0], b[3] - b[1], s, -1, -1, -1])
                if label == "drone":
                    acc["frames_drone"].append(fid)
                else:
                    acc["frames_neg"].setdefault(label, []).append(fid)
                    acc["neg_det"].setdefault(label, []).append(int((scores >= threshold).sum()))
                if sheets is None:
                    continue
                strong = xyxy[scores >= threshold]
                m = iou(gt, strong) if len(gt) and len(strong) else np.zeros((len(gt), len(strong)))
                for g in range(len(gt)):
                    if not (m[g] >= 0.5).any() and rng.random() < 0.2:
                        best = None
                        if len(xyxy):
                            j = int(np.argmax(iou(gt[g:g + 1], xyxy)[0]))
                            best = xyxy[j]
                        acc["misses"].append(crop_tile(image, gt[g], (0, 255, 0), best))
                for d in range(len(strong)):
                    if not (m[:, d] >= 0.5).any() and rng.random() < 0.2:
                        acc["fas"].append(crop_tile(image, strong[d], (0, 0, 255)))
        log(f"  {clip.name}: {len(store)} frames")
    out = {}
    for sensor, acc in per.items():
        name = SENSOR_NAME.get(sensor, sensor)
        gt = np.asarray(acc["gt"], np.float64).reshape(-1, 10)
        det = np.asarray(acc["det"], np.float64).reshape(-1, 10)
        r: dict = {"drone_clips": len({f // 100000 for f in acc["frames_drone"]}), "drone_frames": len(acc["frames_drone"])}
        if acc["frames_drone"]:
            m = detection_metrics(gt, det, frames=acc["frames_drone"])
            r.update(ap50=m["ap50_all"], coco_ap=m["coco_ap"], coco_ap50=m["coco_ap50"])
            all_frames = acc["frames_drone"] + [f for v in acc["frames_neg"].values() for f in v]
            r["ap50_with_confusers"] = detection_metrics(gt, det, frames=all_frames)["ap50_all"]
            r["bands"] = coco_ap50_by_size(gt, det, acc["frames_drone"])
        fa = {}
        for label, counts in acc["frames_neg"].items():
            n = len(counts)
            dets = np.asarray(acc["neg_det"][label])
            fa[label] = {"frames": n, "clips": len({f // 100000 for f in counts}),
                         "false_detections_per_minute": float(dets.sum() / n * FPS * 60),
                         "frames_with_false_alarm": float((dets > 0).mean())}
        r["false_alarms"] = fa
        out[name] = r
        if sheets is not None:
            rng.shuffle(acc["misses"])
            rng.shuffle(acc["fas"])
            sheet(acc["misses"][:max_tiles], sheets / f"misses_{name}.png")
            sheet(acc["fas"][:max_tiles], sheets / f"false_alarms_{name}.png")
    return out


def track_alarms(clips: list[Path], out: Path, config: str | None, overrides: list[str], log=print) -> dict:
    """Confirmed drone tracks per minute that `dronetrack process` reports on the confuser clips."""
    from pipeline.io.motio import read_mot
    from pipeline.process import process

    per: dict = {}
    for clip in clips:
        info = clip_info(load_flight(clip))
        if info["label"] == "drone":
            continue
        res = process(clip, out / "tracks" / clip.name, config=config, overrides=overrides, progress=False)
        stream = next(iter(res["frames_per_stream"]))
        rows = read_mot(out / "tracks" / clip.name / "tracks" / f"{stream}.txt")
        key = (SENSOR_NAME.get(info["sensor"], info["sensor"]), info["label"])
        acc = per.setdefault(key, [0, 0])
        acc[0] += len(np.unique(rows[:, 1])) if len(rows) else 0
        acc[1] += res["frames_per_stream"][stream]
        log(f"  {clip.name}: {len(np.unique(rows[:, 1])) if len(rows) else 0} tracks")
    result: dict = {}
    for (sensor, label), (tracks, frames) in per.items():
        result.setdefault(sensor, {})[label] = {"tracks": tracks, "minutes": frames / FPS / 60,
                                                "tracks_per_minute": tracks / max(frames / FPS / 60, 1e-9)}
    return result


def format_report(res: dict) -> str:
    lines = []
    for sensor, r in res.items():
        if "ap50" in r:
            lines.append(f"{sensor}: drone AP50 {r['ap50']:.3f}  COCO AP {r['coco_ap']:.3f}  COCO AP50 "
                         f"{r['coco_ap50']:.3f}  AP50 with confusers {r['ap50_with_confusers']:.3f}  "
                         f"({r['drone_clips']} clips, {r['drone_frames']} frames)")
            lines.append("  AP50 by size: " + ", ".join(
                f"{k} px {v['ap50']:.3f} (n={v['n']})" for k, v in r["bands"].items() if v["n"]))
        for label, fa in r.get("false_alarms", {}).items():
            lines.append(f"  {label}: {fa['false_detections_per_minute']:.1f} false drone detections/min, "
                         f"{100 * fa['frames_with_false_alarm']:.1f} % of frames ({fa['clips']} clips)")
        for label, t in r.get("track_alarms", {}).items():
            lines.append(f"  {label}: {t['tracks_per_minute']:.2f} confirmed drone tracks/min ({t['tracks']} in "
                         f"{t['minutes']:.1f} min)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="a checkpoint (pyramid, dpfcn)")
    ap.add_argument("--config", default=None, help="run config whose detector is scored (default: configs/default.yaml)")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "svanstrom"))
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--sensors", nargs="+", default=["ir", "v"])
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--test-seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=1, help="score every n-th frame")
    ap.add_argument("--threshold", type=float, default=0.5, help="operating score for false alarms and sheets")
    ap.add_argument("--tracks", action="store_true", help="also count confirmed tracks on the confuser clips")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="runs/real_eval")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    out = Path(a.out)
    clips = test_clips(a.root, a.cache, a.sensors, a.test_fraction, a.test_seed)
    print(f"{len(clips)} held-out clips")
    det = build_detector(a.checkpoint, a.config, a.overrides, a.device)
    res = evaluate_clips(det, clips, a.every, a.threshold, sheets=out)
    if a.tracks:
        ov = list(a.overrides) + ([f"detector.checkpoint={a.checkpoint}"] if a.checkpoint else [])
        for sensor, t in track_alarms(clips, out, a.config, ov).items():
            res.setdefault(sensor, {})["track_alarms"] = t
    res["settings"] = {"checkpoint": a.checkpoint, "config": a.config, "every": a.every, "threshold": a.threshold,
                       "clips": [c.name for c in clips]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_eval.json").write_text(json.dumps(res, indent=2))
    print(format_report({k: v for k, v in res.items() if k != "settings"}))
    print(f"written: {out / 'real_eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
