"""Evaluation: VOC AP against a published reference case, COCO AP, pointing accuracy, MOT metrics,
annotated frame subsets of a flight, the COCO results reader, the table and the plots."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.evaluation.detmetrics import coco_ap, pointing_accuracy, voc_map
from pipeline.errors import InputError
from pipeline.evaluation.evaluate import (evaluate_files, evaluate_flight, format_table, read_coco_results,
                               write_plots)

from conftest import SHARED as DATA
VOC = DATA / "metrics" / "voc_case"
CAMPUS_GT = DATA / "mot15" / "TUD-Campus" / "gt" / "gt.txt"
needs = pytest.mark.skipif(not VOC.is_dir() or not CAMPUS_GT.is_file(), reason="shared data not present")


def _voc_case() -> tuple[list, list]:
    gts, dets = [], []
    for p in sorted((VOC / "gts").glob("*.txt")):
        gts += [(p.stem, s[0], [float(v) for v in s[1:5]]) for s in map(str.split, p.read_text().splitlines()) if s]
    for p in sorted((VOC / "dets").glob("*.txt")):
        dets += [(p.stem, s[0], float(s[1]), [float(v) for v in s[2:6]])
                 for s in map(str.split, p.read_text().splitlines()) if s]
    return gts, dets


EXPECTED = json.loads((VOC / "expected.json").read_text()) if VOC.is_dir() else {"ap_11_point": {}, "ap_all_point": {}}


@needs
@pytest.mark.parametrize("method,key", [("11pt", "ap_11_point"), ("all", "ap_all_point")])
@pytest.mark.parametrize("iou", sorted(EXPECTED["ap_11_point"]))
def test_voc_ap_matches_reference(iou: str, method: str, key: str) -> None:
    gts, dets = _voc_case()
    gi, gl, gb = zip(*gts)
    di, dl, ds, db = zip(*dets)
    res = voc_map(gi, gl, np.array(gb), di, dl, np.array(ds), np.array(db), float(iou), method)
    assert res["per_class"]["object"] == pytest.approx(EXPECTED[key][iou], abs=1e-6)
    assert res["mean"] == pytest.approx(EXPECTED[key][iou], abs=1e-6)


def test_voc_ignored_ground_truth_is_neither_tp_nor_fp() -> None:
    gt = np.array([[0, 0, 10, 10], [50, 50, 10, 10]], float)
    det = np.array([[50, 50, 10, 10], [200, 200, 10, 10], [0, 0, 10, 10]], float)
    args = ([1, 1], ["a", "a"], gt, [1, 1, 1], ["a"] * 3, np.array([0.9, 0.85, 0.8]), det)
    # ignored: the first detection drops out -> FP, TP -> AP 0.5 (as an FP it would be 1/3)
    assert voc_map(*args, gt_ignore=np.array([False, True]))["mean"] == pytest.approx(0.5)
    assert voc_map(*args)["mean"] == pytest.approx(0.5 + 0.5 * 2 / 3)  # TP, FP, TP of 2 positives


def _rows(frames: list[int], boxes: list[list[float]], scores: list[float] | None = None) -> np.ndarray:
    r = np.full((len(frames), 10), -1.0)
    r[:, 0], r[:, 1], r[:, 2:6] = frames, np.arange(1, len(frames) + 1), boxes
    r[:, 6] = 1.0 if scores is None else scores
    return r


def test_coco_ap_perfect_shifted_and_empty() -> None:
    gt = _rows([1, 1, 2, 3], [[10, 10, 40, 30], [100, 80, 20, 20], [12, 11, 40, 30], [200, 150, 60, 50]])
    assert coco_ap(gt, gt, [1, 2, 3]) == pytest.approx((1.0, 1.0))
    shifted = gt.copy()
    shifted[:, 2] += 0.2 * shifted[:, 4]
    ap, ap50 = coco_ap(gt, shifted, [1, 2, 3])
    assert ap < 0.7 and ap50 == pytest.approx(1.0)  # IoU 0.67: fine at .5, misses from .7 up
    assert coco_ap(gt, gt[:0], [1, 2, 3]) == (0.0, 0.0)
    assert coco_ap(gt, gt, [4]) == (0.0, 0.0)  # nothing to find on that frame


def test_pointing_accuracy_hand_case() -> None:
    gt = _rows([1, 2, 3, 4], [[10, 10, 20, 20]] * 4)
    gt[3, 6] = 0  # frame 4's box is ignored: that frame has no target
    points = {1: (15.0, 15.0), 2: (35.0, 15.0), 3: None, 4: (15.0, 15.0), 5: (0.0, 0.0)}
    # frame 1 hit, 2 outside by 5 px, 3 no point, 4 and 5 points without a target
    assert pointing_accuracy(points, gt) == pytest.approx(1 / 5)
    assert pointing_accuracy(points, gt, tolerance=5.0) == pytest.approx(2 / 5)
    assert pointing_accuracy(points, gt, tolerance=5.0, frames=[1, 2, 3]) == pytest.approx(2 / 3)
    assert pointing_accuracy({}, gt[:0]) == 0.0


@needs
def test_mot15_ground_truth_against_itself(tmp_path: Path) -> None:
    rows = np.loadtxt(CAMPUS_GT, delimiter=",")
    dets = [{"image_id": int(r[0]), "category_id": 1, "bbox": r[2:6].tolist(), "score": 1.0} for r in rows]
    (tmp_path / "d.json").write_text(json.dumps(dets))
    res = evaluate_files(CAMPUS_GT, CAMPUS_GT, tmp_path / "d.json")
    assert res["mota"] == 1.0 and res["idf1"] == 1.0 and res["num_switches"] == 0
    assert res["num_objects"] == len(rows) and res["num_misses"] == 0
    for k in ("ap50_11pt", "ap50_all", "coco_ap", "coco_ap50"):
        assert res[k] == pytest.approx(1.0)
    line = format_table(res).splitlines()[1].split()
    assert line[:4] == ["all", "100.0", "100.0", "100.0"] and line[-2:] == ["100.0", "100.0"]


@pytest.mark.parametrize("content,what", [
    ("{", "invalid JSON"), ('{"a": 1}', "JSON list"), ('[{"image_id": 1}]', "needs keys"),
    ('[{"image_id": 1.5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]', "integers"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 1}]', "bbox"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": "x"}]', "score"),
])
def test_malformed_coco_results_name_the_file(tmp_path: Path, content: str, what: str) -> None:
    p = tmp_path / "dets.json"
    p.write_text(content)
    with pytest.raises(InputError, match=what) as e:
        read_coco_results(p)
    assert str(p) in str(e.value)


def test_empty_coco_results(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text("[]")
    (tmp_path / "gt.txt").write_text("1,1,10,10,20,20,1,-1,-1,-1\n")
    assert read_coco_results(tmp_path / "d.json").shape == (0, 10)
    res = evaluate_files(tmp_path / "gt.txt", detections_path=tmp_path / "d.json")
    assert res["ap50_all"] == res["ap50_11pt"] == res["coco_ap"] == 0.0
    assert format_table(res).splitlines()[1].split() == ["all"] + ["-"] * 8 + ["0.0", "0.0"]


# a hand-made flight: stream "rgb" (timestamps, 10 frames, annotated 1-5), stream "thermal" (video only,
# 6 frames, no ranges), stream "wide" without ground truth
BOX = [20.0, 20.0, 16.0, 12.0]


def _coco(rows: list[tuple[int, float]]) -> str:
    return json.dumps([{"image_id": f, "category_id": 1, "bbox": BOX, "score": s} for f, s in rows])


def _mot(rows: list[tuple[int, int]]) -> str:
    return "".join(f"{f},{i},{BOX[0]},{BOX[1]},{BOX[2]},{BOX[3]},1,-1,-1,-1\n" for f, i in rows)


def _flight(tmp_path: Path, annotated: bool = True) -> tuple[Path, Path]:
    root, out = tmp_path / "flight", tmp_path / "out"
    for d in (root / "gt", root / "timestamps", out / "tracks", out / "detections"):
        d.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(root / "thermal.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for i in range(6):
        vw.write(np.full((48, 64, 3), 20 * i, np.uint8))
    vw.release()
    (root / "rgb.avi").write_bytes(b"")  # never opened: the timestamps file gives the frame count
    (root / "timestamps" / "rgb.csv").write_text("frame,t\n" + "".join(f"{i},{i / 30:.4f}\n" for i in range(1, 11)))
    (root / "flight.yaml").write_text(
        "streams:\n"
        "  rgb: {modality: rgb, video: rgb.avi, timestamps: timestamps/rgb.csv, gt: gt/rgb.txt"
        + (", annotated: [[1, 5]]}\n" if annotated else "}\n")
        + "  thermal: {modality: thermal, video: thermal.avi, fps: 25, gt: gt/thermal.txt}\n"
        "  wide: {modality: rgb, video: rgb.avi, fps: 30}\n")
    (root / "gt" / "rgb.txt").write_text(_mot([(1, 1), (2, 1), (3, 1)]))
    (root / "gt" / "thermal.txt").write_text(_mot([(1, 1), (2, 1)]))
    # rgb: exact on 1-3, a false positive on frame 4 (annotated, no target) and on 8 (outside the ranges)
    (out / "tracks" / "rgb.txt").write_text(_mot([(1, 1), (2, 1), (3, 1), (4, 2), (8, 3)]))
    (out / "detections" / "rgb.json").write_text(_coco([(1, 0.9), (2, 0.9), (3, 0.9), (4, 0.95), (8, 0.99)]))
    # thermal: exact on 1-2, a false positive on frame 6 (last video frame, no gt row anywhere near)
    (out / "tracks" / "thermal.txt").write_text(_mot([(1, 1), (2, 1), (6, 2)]))
    (out / "detections" / "thermal.json").write_text(_coco([(1, 0.9), (2, 0.9), (6, 0.95)]))
    return root, out


def test_flight_annotated_ranges(tmp_path: Path) -> None:
    root, out = _flight(tmp_path)
    res = evaluate_flight(root, out)
    assert set(res["streams"]) == {"rgb", "thermal"}
    rgb, th = res["streams"]["rgb"], res["streams"]["thermal"]
    assert rgb["num_false_positives"] == 1 and rgb["num_frames"] == 5
    assert rgb["mota"] == pytest.approx(1 - 1 / 3)
    assert rgb["ap50_all"] == pytest.approx(0.75) and rgb["ap50_11pt"] == pytest.approx(0.75)
    assert th["num_false_positives"] == 1 and th["num_frames"] == 6 and th["mota"] == pytest.approx(0.5)
    assert th["ap50_all"] == pytest.approx(2 / 3)
    table = format_table(res).splitlines()
    assert [r.split()[0] for r in table] == ["stream", "rgb", "thermal"]
    assert table[1].split()[1] == "66.7"
    assert [p.name for p in write_plots(res, tmp_path / "plots")] == ["pr_rgb.png", "pr_thermal.png"]
    assert (tmp_path / "plots" / "pr_rgb.png").stat().st_size > 1000


def test_flight_without_ranges_scores_every_frame(tmp_path: Path) -> None:
    root, out = _flight(tmp_path, annotated=False)
    rgb = evaluate_flight(root, out)["streams"]["rgb"]
    assert rgb["num_false_positives"] == 2 and rgb["num_frames"] == 10
    assert rgb["ap50_all"] == pytest.approx(0.6)


def test_flight_missing_output_names_it(tmp_path: Path) -> None:
    root, out = _flight(tmp_path)
    (out / "detections" / "thermal.json").unlink()
    with pytest.raises(InputError, match="thermal.json"):
        evaluate_flight(root, out)


def test_only_drones_are_scored(tmp_path: Path) -> None:
    """A bird in the ground truth is no target; a detection labelled bird is left out; a drone
    detection on the bird is a false positive."""
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,20,20,1,1,1\n1,2,100,100,20,20,1,2,1\n")
    dets = tmp_path / "d.json"
    rows = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 2, "bbox": [100, 100, 20, 20], "score": 0.95}]
    dets.write_text(json.dumps(rows))
    assert evaluate_files(gt, detections_path=dets)["ap50_all"] == pytest.approx(1.0)
    rows[1]["category_id"] = 1
    dets.write_text(json.dumps(rows))
    assert evaluate_files(gt, detections_path=dets)["ap50_all"] == pytest.approx(0.5)
