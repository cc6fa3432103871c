"""Detection metrics on plain arrays: VOC average precision (11-point and all-point), COCO AP through
pycocotools, and pointing accuracy for point predictions (weakly supervised localisation).

Boxes are `[x, y, w, h]` pixels (top-left origin). Ground-truth rows are MOTChallenge rows
(see pipeline.io.motio.read_mot): frame, id, x, y, w, h, flag, ...; rows whose flag is 0 are "ignored"
(VOC's "difficult": a detection matched to one is neither a true nor a false positive; COCO: crowd).
Detection rows use the same layout with the score in column 6.
"""
from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from typing import Hashable, Literal, Mapping, Sequence

import numpy as np

Method = Literal["11pt", "all"]


def voc_iou(a: np.ndarray, b: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xywh boxes. `plus_one` counts pixels inclusively as the VOC
    devkit does (a box spans w + 1 pixels); the reference values in expected.json use it."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    p = 1.0 if plus_one else 0.0
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo + p, 0, None), axis=2)
    area_a, area_b = np.prod(a[:, 2:] + p, axis=1), np.prod(b[:, 2:] + p, axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def pr_curve(gt_img: Sequence[Hashable], gt_xywh: np.ndarray, det_img: Sequence[Hashable],
             det_xywh: np.ndarray, det_scores: np.ndarray, iou: float = 0.5,
             gt_ignore: np.ndarray | None = None, plus_one: bool = True
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy VOC matching: detections by descending score (stable for ties), each takes the
    ground-truth box of its image with the highest IoU; IoU >= `iou` and not yet taken -> true positive,
    otherwise false positive; matched to an ignored box -> dropped. Returns (recall, precision, n_pos)
    along the ranked detections that were scored."""
    gt_xywh = np.asarray(gt_xywh, np.float64).reshape(-1, 4)
    det_xywh = np.asarray(det_xywh, np.float64).reshape(-1, 4)
    ignore = np.zeros(len(gt_xywh), bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    gt_of: dict[Hashable, list[int]] = defaultdict(list)
    for i, k in enumerate(gt_img):
        gt_of[k].append(i)
    taken = np.zeros(len(gt_xywh), bool)
    outcome: list[bool] = []  # True: TP, False: FP, ignored detections are left out
    for d in np.argsort(-np.asarray(det_scores, np.float64), kind="stable"):
        cand = gt_of.get(det_img[d], [])
        if not cand:
            outcome.append(False)
            continue
        ious = voc_iou(det_xywh[d], gt_xywh[cand], plus_one)[0]
        j = int(np.argmax(ious))
        g = cand[j]
        if ious[j] < iou:
            outcome.append(False)
        elif not ignore[g]:
            outcome.append(not taken[g])
            taken[g] = True
    n_pos = int((~ignore).sum())
    tp = np.cumsum(outcome, dtype=np.float64)
    fp = np.cumsum(np.logical_not(outcome), dtype=np.float64)
    recall = tp / max(n_pos, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return recall, precision, n_pos


def average_precision(recall: np.ndarray, precision: np.ndarray, method: Method = "all") -> float:
    """VOC AP of a ranked PR curve: '11pt' (VOC2007, max precision at recall >= 0, 0.1, ..., 1) or
    'all' (VOC2010+, area under the monotone precision envelope)."""
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if method == "11pt":
        return float(sum(precision[recall >= t].max() if (recall >= t).any() else 0.0
                         for t in np.linspace(0.0, 1.0, 11)) / 11.0)
    if method != "all":
        raise ValueError(f"unknown AP method {method!r} (use '11pt' or 'all')")
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def interpolated_pr(recall: np.ndarray, precision: np.ndarray, n: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Precision envelope sampled at `n` recall points in [0, 1] (COCO style), for plots and JSON."""
    r = np.linspace(0.0, 1.0, n)
    if len(recall) == 0:
        return r, np.zeros(n)
    env = np.maximum.accumulate(np.asarray(precision, np.float64)[::-1])[::-1]
    idx = np.searchsorted(np.asarray(recall, np.float64), r, side="left")
    return r, np.where(idx < len(env), env[np.minimum(idx, len(env) - 1)], 0.0)


def voc_map(gt_img: Sequence[Hashable], gt_labels: Sequence[Hashable], gt_xywh: np.ndarray,
            det_img: Sequence[Hashable], det_labels: Sequence[Hashable], det_scores: np.ndarray,
            det_xywh: np.ndarray, iou: float = 0.5, method: Method = "all",
            gt_ignore: np.ndarray | None = None, plus_one: bool = True) -> dict:
    """VOC AP per class (classes of the ground truth) and their mean: {"per_class": {label: ap}, "mean": m}.
    A class without positives scores 0."""
    gt_labels, det_labels = np.asarray(gt_labels, object), np.asarray(det_labels, object)
    gt_img, det_img = np.asarray(gt_img, object), np.asarray(det_img, object)
    ignore = np.zeros(len(gt_labels), bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    gt_xywh, det_xywh = np.asarray(gt_xywh).reshape(-1, 4), np.asarray(det_xywh).reshape(-1, 4)
    det_scores = np.asarray(det_scores, np.float64)
    per_class = {}
    for c in dict.fromkeys(gt_labels.tolist()):
        g, d = gt_labels == c, det_labels == c
        rec, prec, n_pos = pr_curve(gt_img[g], gt_xywh[g], det_img[d], det_xywh[d], det_scores[d],
                                    iou, ignore[g], plus_one)
        per_class[c] = average_precision(rec, prec, method) if n_pos else 0.0
    return {"per_class": per_class, "mean": float(np.mean(list(per_class.values()))) if per_class else 0.0}


def coco_ap(gt_rows: np.ndarray, det_rows: np.ndarray, frames: Sequence[int]) -> tuple[float, float]:
    """(AP@[.5:.95], AP@.5) from pycocotools, class-agnostic, on the images `frames` (frame numbers).
    Ground-truth rows with flag 0 become crowd regions (ignored). Detections on other frames are dropped.
    No ground truth or no detection gives 0."""
    ev = _coco_eval(gt_rows, det_rows, frames)
    if ev is None:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        ev.summarize()
    return max(float(ev.stats[0]), 0.0), max(float(ev.stats[1]), 0.0)


SIZE_BANDS = ((0.0, 8.0), (8.0, 16.0), (16.0, 32.0), (32.0, 64.0), (64.0, 1e5))


def coco_ap50_by_size(gt_rows: np.ndarray, det_rows: np.ndarray, frames: Sequence[int],
                      bands: Sequence[tuple[float, float]] = SIZE_BANDS) -> dict[str, dict[str, float]]:
    """COCO AP at IoU 0.5 (101-point) per object size band, size = sqrt(box area) in px, as COCO's small /
    medium / large but with the given bands: ground truth outside a band is ignored there, and so are the
    unmatched detections outside it. {"lo-hi": {"ap50": ap or nan (no ground truth), "n": objects}}."""
    ranges = [[lo * lo, hi * hi] for lo, hi in bands]
    ev = _coco_eval(gt_rows, det_rows, frames, ranges)
    out = {}
    gt = gt_rows[(gt_rows[:, 6] != 0) & np.isin(gt_rows[:, 0].astype(int), [int(f) for f in frames])] \
        if len(gt_rows) else gt_rows
    size = np.sqrt(gt[:, 4] * gt[:, 5]) if len(gt) else np.zeros(0)
    for a, (lo, hi) in enumerate(bands):
        n = int(((size >= lo) & (size < hi)).sum())
        name = f"{lo:g}-{hi:g}" if hi < 1e5 else f">{lo:g}"
        if n == 0:
            out[name] = {"ap50": float("nan"), "n": 0}
            continue
        if ev is None:
            out[name] = {"ap50": 0.0, "n": n}
            continue
        prec = ev.eval["precision"][0, :, 0, a, -1]  # IoU 0.5, all recall points, the one class, band, maxDets
        out[name] = {"ap50": float(np.mean(prec[prec > -1])) if (prec > -1).any() else 0.0, "n": n}
    return out


def _coco_eval(gt_rows: np.ndarray, det_rows: np.ndarray, frames: Sequence[int],
               area_ranges: list[list[float]] | None = None):
    """pycocotools' COCOeval, evaluated and accumulated (None without ground truth or detections)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    frame_set = {int(f) for f in frames}
    gt_rows = gt_rows[np.isin(gt_rows[:, 0].astype(int), list(frame_set))] if len(gt_rows) else gt_rows
    det_rows = det_rows[np.isin(det_rows[:, 0].astype(int), list(frame_set))] if len(det_rows) else det_rows
    if len(det_rows) == 0 or not (gt_rows[:, 6] != 0).any():
        return None
    anns = [{"id": i + 1, "image_id": int(r[0]), "category_id": 1, "bbox": [float(v) for v in r[2:6]],
             "area": float(r[4] * r[5]), "iscrowd": int(r[6] == 0)} for i, r in enumerate(gt_rows)]
    results = [{"image_id": int(r[0]), "category_id": 1, "bbox": [float(v) for v in r[2:6]],
                "score": float(r[6])} for r in det_rows]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": f} for f in sorted(frame_set)], "annotations": anns,
                      "categories": [{"id": 1, "name": "target"}]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        if area_ranges is not None:
            ev.params.areaRng = area_ranges
            ev.params.areaRngLbl = [str(i) for i in range(len(area_ranges))]
        ev.evaluate()
        ev.accumulate()
    return ev


def pointing_accuracy(points_by_frame: Mapping[int, tuple[float, float] | None], gt_rows: np.ndarray,
                      tolerance: float = 0.0, frames: Sequence[int] | None = None) -> float:
    """Fraction of scored frames whose point is right. A point (x, y) is a hit when it lies inside a
    ground-truth box (flag != 0) grown by `tolerance` pixels on every side (default 0; Oquab et al.,
    CVPR 2015, used 18 px). Scored frames: those with ground truth or with a point (restricted to
    `frames` when given); a frame with ground truth but no point (missing or None) is a miss, a point on
    a frame without ground truth is wrong. No scored frame gives 0."""
    gt_rows = gt_rows[gt_rows[:, 6] != 0] if len(gt_rows) else np.zeros((0, 10))
    boxes: dict[int, list[np.ndarray]] = defaultdict(list)
    for r in gt_rows:
        boxes[int(r[0])].append(r[2:6])
    points = {int(f): p for f, p in points_by_frame.items() if p is not None}
    scored = set(boxes) | set(points)
    if frames is not None:
        scored &= {int(f) for f in frames}
    hits = 0
    for f in scored:
        if f in points and f in boxes:
            x, y = points[f]
            b = np.asarray(boxes[f], np.float64)
            inside = (b[:, 0] - tolerance <= x) & (x <= b[:, 0] + b[:, 2] + tolerance) \
                & (b[:, 1] - tolerance <= y) & (y <= b[:, 1] + b[:, 3] + tolerance)
            hits += bool(inside.any())
    return hits / len(scored) if scored else 0.0
