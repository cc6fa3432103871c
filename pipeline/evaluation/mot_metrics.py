"""MOT metrics through motmetrics, the one place that adapts motmetrics 1.4.0 to numpy 2."""
from __future__ import annotations

import numpy as np

if not hasattr(np, "asfarray"):  # motmetrics 1.4.0 calls np.asfarray, removed in numpy 2
    np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)  # type: ignore[attr-defined]

import motmetrics as mm  # noqa: E402

METRIC_NAMES = ["mota", "motp", "idf1", "num_switches", "num_false_positives", "num_misses",
                "precision", "recall", "num_frames", "num_objects", "num_predictions",
                "mostly_tracked", "mostly_lost", "num_fragmentations"]


def accumulate(gt: np.ndarray, hyp: np.ndarray, iou: float = 0.5, frames: set[int] | None = None
               ) -> "mm.MOTAccumulator":
    """Rows in MOTChallenge layout (see pipeline.io.motio.read_mot). Ground-truth rows whose flag column
    (index 6) is 0 are dropped. `frames` restricts scoring to those frame numbers (annotated subsets);
    by default every frame that appears in either file is scored."""
    gt = gt[gt[:, 6] != 0] if len(gt) else gt
    if frames is None:
        frames = set(gt[:, 0].astype(int).tolist()) | set(hyp[:, 0].astype(int).tolist())
    acc = mm.MOTAccumulator(auto_id=False)
    gt_by = _by_frame(gt)
    hyp_by = _by_frame(hyp)
    empty = np.zeros((0, 10))
    for f in sorted(frames):
        g = gt_by.get(f, empty)
        h = hyp_by.get(f, empty)
        dist = mm.distances.iou_matrix(g[:, 2:6], h[:, 2:6], max_iou=1.0 - iou)
        acc.update(g[:, 1].astype(int).tolist(), h[:, 1].astype(int).tolist(), dist, frameid=f)
    return acc


def _by_frame(rows: np.ndarray) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    if len(rows) == 0:
        return out
    frames = rows[:, 0].astype(int)
    order = np.argsort(frames, kind="stable")
    rows, frames = rows[order], frames[order]
    bounds = np.flatnonzero(np.diff(frames)) + 1
    for chunk in np.split(np.arange(len(rows)), bounds):
        out[int(frames[chunk[0]])] = rows[chunk]
    return out


def mot_metrics(gt: np.ndarray, hyp: np.ndarray, iou: float = 0.5, frames: set[int] | None = None
                ) -> dict[str, float]:
    """motmetrics' summary as plain floats (fractions, not percent). MOTP here is motmetrics' mean
    IoU distance of matches (lower is better), as motmetrics defines it."""
    acc = accumulate(gt, hyp, iou, frames)
    mh = mm.metrics.create()
    summary = mh.compute(acc, metrics=METRIC_NAMES, name="seq")
    out = {}
    for k in METRIC_NAMES:
        v = float(summary[k].iloc[0])
        out[k] = v if np.isfinite(v) else 0.0
    return out
