"""COCO ground truth: score detections against a COCO-format ground-truth file (`dronetrack evaluate
--gt-coco GT.json --detections D.json`), and turn a flight's MOTChallenge ground truth into one
(`dronetrack export-coco FLIGHT OUT.json`), so any COCO tool can score a run.

Scores come from pycocotools' COCOeval ("bbox"): its twelve summary numbers for all categories (the
mean over categories that have ground truth, as COCOeval prints them) and for the drone category alone,
each category's AP, plus VOC AP from the project's own code (pipeline.evaluation.detmetrics, at `iou`,
pixels counted inclusively, +1, as in flight mode) with crowd regions ignored as VOC's "difficult".

The exported ground truth: one image per scored frame of one stream (image id = the stream's 1-based
frame number, the `image_id` of `dronetrack process`'s OUT/detections/<stream>.json), categories 1 drone,
2 bird, 3 airplane, 4 helicopter (the MOTChallenge class column; a row without class is a drone, as in
flight mode; other classes become `class<k>`), ground-truth rows with flag 0 as crowd regions (ignored),
area = w * h. A stream with `annotated` ranges exports only those frames: a COCO image list means
"every object on these images is annotated".
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.errors import InputError
from pipeline.evaluation.detmetrics import average_precision, pr_curve
from pipeline.evaluation.evaluate import annotated_frames, read_coco_results
from pipeline.io.flight import load_flight
from pipeline.io.jsonfile import read_json
from pipeline.io.motio import read_mot

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
CLASS_NAMES = {1: "drone", 2: "bird", 3: "airplane", 4: "helicopter"}
DRONE_NAMES = ("drone", "uav", "quadcopter")  # a ground-truth category with one of these names is the drone one


# reading and checking a COCO ground-truth file ----------------------------------------------------
def load_coco_gt(path: str | Path) -> dict[str, Any]:
    """A COCO ground-truth file, checked: a JSON object with lists `images` (unique integer `id`),
    `categories` (unique integer `id`, optional `name`) and `annotations` (`image_id` and `category_id`
    among those, `bbox` [x, y, w, h] finite with w, h >= 0). Optional per annotation, filled in when
    absent as COCO tools expect: `id` (1, 2, ...), `iscrowd` (0), `area` (w * h). Anything wrong is an
    InputError naming the file and the entry (`annotations[3].bbox`)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError("COCO ground truth is a JSON object with images, annotations and categories", path)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise InputError(f"missing key {key!r} (COCO ground truth has images, annotations and categories)", path)
        if not isinstance(data[key], list):
            raise InputError(f"{key} must be a list", path)

    def entry(kind: str, i: int, e: Any, keys: tuple[str, ...]) -> dict:
        if not isinstance(e, dict):
            raise InputError(f"{kind}[{i}] must be an object", path)
        for k in keys:
            if k not in e:
                raise InputError(f"{kind}[{i}]: missing key {k!r}", path)
            if not _is_int(e[k]):
                raise InputError(f"{kind}[{i}].{k} must be an integer", path)
        return e

    images = [entry("images", i, e, ("id",)) for i, e in enumerate(data["images"])]
    categories = [entry("categories", i, e, ("id",)) for i, e in enumerate(data["categories"])]
    for kind, items in (("images", images), ("categories", categories)):
        seen: set[int] = set()
        for i, e in enumerate(items):
            if e["id"] in seen:
                raise InputError(f"{kind}[{i}].id {e['id']} is not unique", path)
            seen.add(e["id"])
    image_ids, cat_ids = {e["id"] for e in images}, {e["id"] for e in categories}
    anns, ann_ids = [], set()
    for i, e in enumerate(data["annotations"]):
        a = dict(entry("annotations", i, e, ("image_id", "category_id")))
        if a["image_id"] not in image_ids:
            raise InputError(f"annotations[{i}].image_id {a['image_id']} is not among the images", path)
        if a["category_id"] not in cat_ids:
            raise InputError(f"annotations[{i}].category_id {a['category_id']} is not among the categories", path)
        box = a.get("bbox")
        if box is None:
            raise InputError(f"annotations[{i}]: missing key 'bbox'", path)
        if not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box)) and box[2] >= 0 and box[3] >= 0):
            raise InputError(f"annotations[{i}].bbox must be [x, y, w, h] with finite numbers and w, h >= 0", path)
        if "id" in a:
            if not _is_int(a["id"]) or a["id"] in ann_ids:
                raise InputError(f"annotations[{i}].id must be a unique integer", path)
        a.setdefault("iscrowd", 0)
        if a["iscrowd"] not in (0, 1) or isinstance(a["iscrowd"], bool):
            raise InputError(f"annotations[{i}].iscrowd must be 0 or 1", path)
        a.setdefault("area", float(box[2]) * float(box[3]))
        if not _is_number(a["area"]) or a["area"] < 0:
            raise InputError(f"annotations[{i}].area must be a finite number >= 0", path)
        ann_ids.add(a.get("id"))
        anns.append(a)
    next_id = max((a["id"] for a in anns if "id" in a), default=0) + 1
    for a in anns:
        if "id" not in a:
            a["id"], next_id = next_id, next_id + 1
    return {**data, "images": images, "categories": categories, "annotations": anns}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:  # finite, and no int too large for a float (found by fuzzing)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and -1e300 < v < 1e300


def drone_category(gt: dict[str, Any]) -> int | None:
    """The id of the ground truth's drone category (named drone, uav or quadcopter; the lowest id if
    several), or None."""
    ids = [c["id"] for c in gt["categories"] if str(c.get("name", "")).strip().lower() in DRONE_NAMES]
    return min(ids) if ids else None


# scoring ------------------------------------------------------------------------------------------
def evaluate_coco(gt_path: str | Path, detections_path: str | Path, iou: float = 0.5,
                  only_gt_images: bool = False) -> dict[str, Any]:
    """Score a COCO results file (a JSON list, or `dronetrack process`'s OUT/detections/<stream>.json)
    against COCO ground truth. Detections on an image the ground truth does not list, or of a category
    it does not list, are an InputError (as pycocotools refuses them too), unless `only_gt_images`:
    then those on unknown images are dropped and counted. Returns {"all": scores, "drone": scores (when
    the ground truth has a drone category), "images", "annotations", "detections",
    "dropped_detections", "categories"}; scores hold STATS (pycocotools' summary, -1 where nothing
    is there to score), `per_category` COCO AP, and voc_ap (all-point) and voc_ap_11pt at `iou`."""
    gt = load_coco_gt(gt_path)
    rows = read_coco_results(detections_path)
    image_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    img = rows[:, 0].astype(np.int64)
    unknown = sorted(set(img.tolist()) - image_ids)
    dropped = 0
    if unknown:
        if not only_gt_images:
            shown = ", ".join(map(str, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
            raise InputError(f"detections on {len(unknown)} image id(s) that {Path(gt_path).name} does not list "
                             f"({shown}); --only-gt-images drops them", detections_path)
        keep = np.isin(img, list(image_ids))
        dropped, rows = int((~keep).sum()), rows[keep]
    cats = rows[:, 7].astype(np.int64)
    bad = sorted(set(cats.tolist()) - cat_ids)
    if bad:
        raise InputError(f"detections of category id(s) {', '.join(map(str, bad[:5]))} that "
                         f"{Path(gt_path).name} does not list (it has {', '.join(map(str, sorted(cat_ids)))})",
                         detections_path)
    results = [{"image_id": int(r[0]), "category_id": int(r[7]), "bbox": [float(v) for v in r[2:6]],
                "score": float(r[6])} for r in rows]
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt["categories"]}
    out: dict[str, Any] = {"all": _scores(gt, results, None, iou)}
    drone = drone_category(gt)
    if drone is not None:
        out["drone"] = _scores(gt, results, drone, iou)
    out.update({"images": len(gt["images"]), "annotations": len(gt["annotations"]), "detections": len(results),
                "dropped_detections": dropped, "categories": names})
    return out


def _scores(gt: dict[str, Any], results: list[dict], category: int | None, iou: float) -> dict[str, Any]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list: an empty result set is AP 0 where there is ground truth
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if category is not None:
            ev.params.catIds = [category]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out: dict[str, Any] = {k: float(v) for k, v in zip(STATS, ev.stats)}
    precision = ev.eval["precision"]  # [iou thresholds, recall points, categories, areas, max detections]
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt["categories"]}
    per_cat = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        per_cat[names[cat]] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    out["per_category"] = per_cat
    voc = [_voc(gt, results, c, iou) for c in ev.params.catIds]
    voc = [v for v in voc if v is not None]  # categories with ground truth, as COCO averages
    out["voc_ap"] = float(np.mean([v[0] for v in voc])) if voc else -1.0
    out["voc_ap_11pt"] = float(np.mean([v[1] for v in voc])) if voc else -1.0
    return out


def _voc(gt: dict[str, Any], results: list[dict], category: int, iou: float) -> tuple[float, float] | None:
    """VOC AP (all-point, 11-point) of one category with the project's matching; None without positives."""
    anns = [a for a in gt["annotations"] if a["category_id"] == category]
    if not any(not a["iscrowd"] for a in anns):
        return None
    dets = [r for r in results if r["category_id"] == category]
    rec, prec, _ = pr_curve([a["image_id"] for a in anns], np.array([a["bbox"] for a in anns], np.float64),
                            [d["image_id"] for d in dets], np.array([d["bbox"] for d in dets], np.float64),
                            np.array([d["score"] for d in dets], np.float64), iou,
                            np.array([bool(a["iscrowd"]) for a in anns]))
    return average_precision(rec, prec, "all"), average_precision(rec, prec, "11pt")


def format_coco_table(result: dict[str, Any], iou: float = 0.5) -> str:
    """Rows `all` and `drone`; pycocotools' AP and AR numbers and the VOC AP, in percent ('-' where
    pycocotools has nothing to score, e.g. no small objects)."""
    cols = [(k, k) for k in STATS[:9]] + [(f"VOC AP{round(100 * iou)}", "voc_ap")]
    rows = [["category"] + [h for h, _ in cols]]
    for name in ("all", "drone"):
        if name in result:
            rows.append([name] + [f"{100 * result[name][k]:.1f}" if result[name][k] >= 0 else "-" for _, k in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


# export -------------------------------------------------------------------------------------------
def flight_to_coco(flight_dir: str | Path, stream: str | None = None) -> dict[str, Any]:
    """A flight stream's MOTChallenge ground truth as a COCO ground-truth dict (see the module doc).
    `stream` may be left out when exactly one stream has ground truth."""
    flight = load_flight(flight_dir)
    manifest = flight.root / "flight.yaml"
    with_gt = [s for s in flight.streams if flight.gt_path(s) is not None]
    if stream is None:
        if len(with_gt) != 1:
            have = ", ".join(with_gt) if with_gt else "none"
            raise InputError(f"choose a stream with --stream (streams with ground truth: {have})", manifest)
        stream = with_gt[0]
    if stream not in flight.streams:
        raise InputError(f"no stream named {stream!r} (streams: {', '.join(flight.streams)})", manifest)
    gt_path = flight.gt_path(stream)
    if gt_path is None:
        raise InputError(f"stream {stream!r} has no ground truth (gt:)", manifest)
    frames = sorted(annotated_frames(flight, stream))
    rows = read_mot(gt_path)
    if len(rows):
        rows = rows[np.isin(rows[:, 0].astype(np.int64), frames)]
    classes = sorted({1, 2, 3, 4} | {int(c) for c in rows[:, 7] if c > 0})
    categories = [{"id": c, "name": CLASS_NAMES.get(c, f"class{c}"), "supercategory": "airborne"} for c in classes]
    width, height = _frame_size(flight, stream)
    video = flight.video_path(stream)
    images = [{"id": f, "file_name": f"{stream}_{f:06d}.png", "frame": f, "video": video.name,
               **({"width": width, "height": height} if width else {})} for f in frames]
    anns = []
    for r in rows:
        x, y, w, h = (float(v) for v in r[2:6])
        cls = int(r[7]) if r[7] > 0 else 1
        ann = {"id": len(anns) + 1, "image_id": int(r[0]), "category_id": cls, "bbox": [x, y, w, h],
               "area": w * h, "iscrowd": int(r[6] == 0), "track_id": int(r[1])}
        if r[8] >= 0:
            ann["visibility"] = float(r[8])
        anns.append(ann)
    spec = flight.streams[stream]
    info = {"description": f"ground truth of stream {stream} of flight {flight.spec.name or flight.root.name}, "
                           "exported by dronetrack export-coco", "flight": str(flight.root), "stream": stream,
            "annotated": [list(r) for r in spec.annotated] if spec.annotated is not None else "all frames",
            "image_id": "the stream's 1-based frame number"}
    return {"info": info, "licenses": [], "images": images, "annotations": anns, "categories": categories}


def _frame_size(flight, stream: str) -> tuple[int | None, int | None]:
    spec = flight.streams[stream]
    if spec.width and spec.height:
        return int(spec.width), int(spec.height)
    path = flight.video_path(stream)
    if path.is_dir():  # a folder of images: the first one's size
        for p in sorted(path.iterdir()):
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED) if p.is_file() else None
            if img is not None:
                return int(img.shape[1]), int(img.shape[0])
        return None, None
    cap = cv2.VideoCapture(str(path))
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    return (w, h) if w > 0 and h > 0 else (None, None)


def export_coco(flight_dir: str | Path, out: str | Path, stream: str | None = None) -> dict[str, Any]:
    """Write `flight_to_coco` to `out` (atomically); returns the dict."""
    from pipeline.io.atomic import write_json

    data = flight_to_coco(flight_dir, stream)
    write_json(out, data, indent=None)
    return data
