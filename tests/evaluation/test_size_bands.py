"""AP50 by object size band (pycocotools with custom area ranges): a band scores only its own objects, and
an unmatched detection of another size does not count against it."""
from __future__ import annotations

import math

import numpy as np

from pipeline.evaluation.detmetrics import coco_ap50_by_size


def rows(items):
    """(frame, x, y, w, h, score_or_flag) -> MOT rows."""
    return np.array([[f, -1, x, y, w, h, s, 1, -1, -1] for f, x, y, w, h, s in items], np.float64).reshape(-1, 10)


def test_bands_score_their_own_objects():
    gt = rows([(1, 10, 10, 5, 5, 1), (2, 50, 50, 12, 12, 1), (3, 100, 100, 40, 40, 1)])
    det = rows([(1, 10, 10, 5, 5, 0.9), (3, 100, 100, 40, 40, 0.8), (2, 200, 10, 100, 100, 0.95)])
    res = coco_ap50_by_size(gt, det, [1, 2, 3])
    assert res["0-8"]["n"] == 1 and abs(res["0-8"]["ap50"] - 1.0) < 1e-9
    assert res["8-16"] == {"ap50": 0.0, "n": 1}
    assert res["32-64"]["n"] == 1 and abs(res["32-64"]["ap50"] - 1.0) < 1e-9
    assert res["16-32"]["n"] == 0 and math.isnan(res["16-32"]["ap50"])
    assert res[">64"]["n"] == 0


def test_a_false_detection_of_the_same_size_lowers_its_band():
    gt = rows([(1, 10, 10, 5, 5, 1), (2, 30, 30, 5, 5, 1)])
    det = rows([(1, 10, 10, 5, 5, 0.5), (2, 30, 30, 5, 5, 0.4), (1, 60, 60, 6, 6, 0.9)])
    res = coco_ap50_by_size(gt, det, [1, 2])
    assert 0.4 < res["0-8"]["ap50"] < 0.8
