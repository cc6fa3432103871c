"""COCO ground truth: `dronetrack evaluate --gt-coco` against pycocotools' published numbers on a public
case, the round trip `process` -> `export-coco` -> `evaluate --gt-coco` against flight mode, the export
of annotated ranges, classes and ignored rows, and one-line errors for bad files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_video
from pipeline.cli import main
from pipeline.evaluation.coco import evaluate_coco, flight_to_coco
from pipeline.evaluation.evaluate import evaluate_flight

CASE = Path(__file__).resolve().parent.parent / "data" / "coco_case"

# pycocotools' summary of the case, as published with it (torchmetrics tests/detection/test_map.py,
# Apache-2.0; see tests/data/coco_case/README.md)
PUBLISHED = {"AP": 0.706, "AP50": 0.901, "AP75": 0.846, "APs": 0.689, "APm": 0.800, "APl": 0.701,
             "AR1": 0.592, "AR10": 0.716, "AR100": 0.716, "ARs": 0.767, "ARm": 0.800, "ARl": 0.700}
PUBLISHED_PER_CATEGORY = {"class0": 0.725, "class1": 0.800, "class2": 0.454, "class3": -1.0, "class4": 0.650,
                          "class5": 0.900}


def test_public_case_matches_pycocotools_published_numbers(tmp_path, capsys):
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--gt-coco", str(CASE / "gt.json"), "--detections", str(CASE / "results.json"),
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for key, value in PUBLISHED.items():
        assert round(res["all"][key], 3) == pytest.approx(value, abs=1e-9), key
    assert {k: round(v, 3) for k, v in res["all"]["per_category"].items()} == PUBLISHED_PER_CATEGORY
    assert "drone" not in res and res["images"] == 4 and res["annotations"] == 11 and res["detections"] == 11
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["category", "AP", "AP50", "AP75"]
    assert table[1].split()[:4] == ["all", "70.6", "90.1", "84.6"] and len(table) == 2


def test_round_trip_synthetic_flight(tmp_path, small_flight):
    """Export a synthetic flight's ground truth, score its `process` detections against it: the same
    numbers as flight mode (COCO AP and AP50 from pycocotools, no +1; VOC AP with the project's +1)."""
    from pipeline.process import process

    out = tmp_path / "out"
    process(small_flight, out, overrides=["detector.device=cpu"], max_frames=40, progress=False)
    flight = evaluate_flight(small_flight, out)["streams"]
    for stream in ("rgb", "thermal"):
        gt = tmp_path / f"gt_{stream}.json"
        assert main(["export-coco", str(small_flight), str(gt), "--stream", stream]) == 0
        coco = json.loads(gt.read_text())
        assert [c["name"] for c in coco["categories"]] == ["drone", "bird", "airplane", "helicopter"]
        assert len(coco["images"]) == sum(1 for _ in open(small_flight / "timestamps" / f"{stream}.csv")) - 1
        res = evaluate_coco(gt, out / "detections" / f"{stream}.json")
        f, d = flight[stream], res["drone"]
        assert f["coco_ap50"] > 0.1  # detections on the first frames only: far from perfect, not empty
        assert d["AP"] == pytest.approx(f["coco_ap"], abs=1e-12)
        assert d["AP50"] == pytest.approx(f["coco_ap50"], abs=1e-12)
        assert d["voc_ap"] == pytest.approx(f["ap50_all"], abs=1e-12)
        assert d["voc_ap_11pt"] == pytest.approx(f["ap50_11pt"], abs=1e-12)


def _annotated_flight(tmp_path: Path) -> tuple[Path, Path]:
    """One thermal stream of 6 frames (64 x 48), annotated 1-4; ground truth: a drone on 1, a bird on 2,
    an ignored drone (flag 0) on 3, a drone without class on 4, a drone on 5 (outside the ranges)."""
    root, out = tmp_path / "flight", tmp_path / "out"
    (root / "gt").mkdir(parents=True)
    make_video(root / "thermal.mp4", 6, size=(64, 48))
    (root / "flight.yaml").write_text("streams:\n  thermal: {modality: thermal, video: thermal.mp4, fps: 25, "
                                      "gt: gt/thermal.txt, annotated: [[1, 4]]}\n")
    (root / "gt" / "thermal.txt").write_text("1,1,10,10,8,6,1,1,1\n2,2,30,20,8,6,1,2,1\n3,1,12,10,8,6,0,1,1\n"
                                             "4,1,14,10,8,6,1,-1,-1\n5,1,16,10,8,6,1,1,1\n")
    (out / "detections").mkdir(parents=True)
    (out / "tracks").mkdir()
    (out / "tracks" / "thermal.txt").write_text("")
    dets = [(1, [10, 10, 8, 6], 0.9), (2, [30, 20, 8, 6], 0.95), (3, [12, 10, 8, 6], 0.99),
            (4, [15, 10, 8, 6], 0.8), (6, [0, 0, 8, 6], 0.99)]
    (out / "detections" / "thermal.json").write_text("[\n" + ",\n".join(
        json.dumps({"image_id": f, "category_id": 1, "bbox": b, "score": s}) for f, b, s in dets) + "\n]\n")
    return root, out


def test_export_annotated_ranges_classes_and_ignored_rows(tmp_path, capsys):
    root, out = _annotated_flight(tmp_path)
    coco = flight_to_coco(root)  # the only stream with ground truth
    assert [im["id"] for im in coco["images"]] == [1, 2, 3, 4]
    assert all((im["width"], im["height"]) == (64, 48) for im in coco["images"])
    anns = coco["annotations"]
    assert [(a["image_id"], a["category_id"], a["iscrowd"]) for a in anns] == [(1, 1, 0), (2, 2, 0), (3, 1, 1), (4, 1, 0)]
    assert anns[0]["bbox"] == [10.0, 10.0, 8.0, 6.0] and anns[0]["area"] == 48.0
    gt = tmp_path / "gt.json"
    assert main(["export-coco", str(root), str(gt)]) == 0
    capsys.readouterr()
    # frame 6 is outside the annotated ranges: not an image of the export, so an error by default ...
    dets = out / "detections" / "thermal.json"
    assert main(["evaluate", "--gt-coco", str(gt), "--detections", str(dets)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(dets) in err and "1 image id(s)" in err and "--only-gt-images" in err
    # ... and dropped with --only-gt-images: then the drone row is flight mode's number
    assert main(["evaluate", "--gt-coco", str(gt), "--detections", str(dets), "--only-gt-images",
                 "--json", str(tmp_path / "s.json")]) == 0
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["dropped_detections"] == 1 and res["detections"] == 4
    # frame 1 TP, frame 2 on the bird FP, frame 3 on the ignored drone left out, frame 4 TP (IoU 0.75)
    assert res["drone"]["voc_ap"] == pytest.approx(2 / 3)  # FP, TP, TP of 2: the envelope gives 2/3 at every recall
    assert res["drone"]["voc_ap"] == pytest.approx(evaluate_flight(root, out)["streams"]["thermal"]["ap50_all"])
    assert res["all"]["per_category"]["bird"] == 0.0 and res["all"]["per_category"]["airplane"] == -1.0


def test_export_needs_a_stream_when_several_have_ground_truth(tmp_path, capsys):
    root, _ = _annotated_flight(tmp_path)
    make_video(root / "rgb.mp4", 6, size=(64, 48))
    (root / "gt" / "rgb.txt").write_text("1,1,10,10,8,6,1,1,1\n")
    (root / "flight.yaml").write_text((root / "flight.yaml").read_text()
                                      + "  rgb: {modality: rgb, video: rgb.mp4, fps: 25, gt: gt/rgb.txt}\n")
    assert main(["export-coco", str(root), str(tmp_path / "gt.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--stream" in err and "thermal, rgb" in err
    assert main(["export-coco", str(root), str(tmp_path / "gt.json"), "--stream", "wide"]) == 2
    assert "no stream named 'wide'" in capsys.readouterr().err
    assert not (tmp_path / "gt.json").exists()


GOOD_GT = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1, "name": "drone"}],
           "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}]}


@pytest.mark.parametrize("gt,what", [
    ("{", "invalid JSON"),
    ([], "JSON object"),
    ({"images": [], "categories": []}, "missing key 'annotations'"),
    ({**GOOD_GT, "images": [{"id": 1}, {"id": 1}]}, "images[1].id 1 is not unique"),
    ({**GOOD_GT, "images": [{"name": "a"}]}, "images[0]: missing key 'id'"),
    ({**GOOD_GT, "annotations": [{"image_id": 1, "category_id": 1}]}, "annotations[0]: missing key 'bbox'"),
    ({**GOOD_GT, "annotations": [{"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1]}]}, "image_id 9 is not among"),
    ({**GOOD_GT, "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1]}]}, "annotations[0].bbox"),
    ({**GOOD_GT, "annotations": [{"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1]}]}, "category_id 2 is not among"),
])
def test_bad_coco_ground_truth_is_one_line(tmp_path, capsys, gt, what):
    path = tmp_path / "gt.json"
    path.write_text(gt if isinstance(gt, str) else json.dumps(gt))
    dets = tmp_path / "d.json"
    dets.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5}]))
    assert main(["evaluate", "--gt-coco", str(path), "--detections", str(dets)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and what in err, err


def test_detections_must_fit_the_ground_truth(tmp_path, capsys):
    gt, dets = tmp_path / "gt.json", tmp_path / "d.json"
    gt.write_text(json.dumps(GOOD_GT))
    dets.write_text(json.dumps([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.5}]))
    assert main(["evaluate", "--gt-coco", str(gt), "--detections", str(dets)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(dets) in err and "category id(s) 3" in err
    assert main(["evaluate", "--gt-coco", str(gt)]) == 2
    assert "needs --detections" in capsys.readouterr().err
    # no detection at all: AP 0 where there is ground truth, -1 where pycocotools has nothing to score
    dets.write_text("[]")
    res = evaluate_coco(gt, dets)
    assert res["drone"]["AP"] == 0.0 and res["drone"]["APl"] == -1.0 and res["drone"]["voc_ap"] == 0.0
    # a perfect detection, the image without ground truth scored as "no target"
    dets.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5}]))
    assert evaluate_coco(gt, dets)["drone"]["AP"] == pytest.approx(1.0)
