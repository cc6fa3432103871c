"""Public drone datasets -> flight folders, so `process` and `evaluate` run on them.

YOLO (`import_yolo`): `SRC/images/` and `SRC/labels/` (or Roboflow's `SRC/<split>/images` and
`SRC/<split>/labels`), optionally with split subfolders (`images/train`, `images/val`, ...: one flight
per split; images in deeper folders belong to their split). A label file `labels/<split>/<name>.txt`
holds one `class cx cy w h` line per box, normalised to its own image's size; an image without a label
file, or with an empty one, has no target. Classes are named by `data.yaml` (any YAML in SRC with
`names`, a list or an {id: name} mapping) or `classes.txt` / `obj.names`: a name like drone, UAV,
quadcopter maps to MOT class 1 (drone); bird, airplane, helicopter to 2, 3, 4 (as the Svanstrom
clips); any other to 5, 6, ... in class order. `drone_classes` (names or ids) overrides which classes are
drones. Without names, a dataset whose labels use one class id is taken as drones; several ids then
need `drone_classes`.
Output: `OUT/<split>/` (or `OUT/<SRC name>/`) with `frames/` (the images, linked or copied, named
`<index>_<original name>` so their natural order is the import order), `flight.yaml` (one stream named
after the modality, `frames: frames`, 30 fps, `annotated` covering every frame, width and height when
all images share one size) and `gt/<stream>.txt` (MOTChallenge: frame, id, left, top, width, height, 1,
class, 1; boxes in pixels of each image's own size, clipped to it; every box its own id, since the
images of a YOLO set are unrelated photos). A split with no label folder at all is written with
`annotated: []` (not scored). Frames of different sizes are fine for `process` and `evaluate`.

Anti-UAV (`import_antiuav`): Anti-UAV410 / 2023 (`<split>/<seq>/` with numbered frames and
`IR_label.json`) and Anti-UAV300 / 2020 / 2021 (`<seq>/infrared.mp4`, `visible.mp4`, `infrared.json`,
`visible.json`; or `IR.mp4`, `RGB.mp4`, `IR_label.json`, `RGB_label.json`; or the frames extracted
into `<seq>/infrared/`, `<seq>/visible/`). A label JSON has `exist` (0/1 per frame) and `gt_rect`
([x, y, w, h] per frame in pixels, [] or [0, 0, 0, 0] when absent; a list of such boxes is taken as
several targets); extra keys are ignored, and a missing `exist` is derived from the boxes. Output: one
flight per sequence at `OUT/<its path under SRC>/`, with a `thermal` stream (IR) and/or an `rgb` stream
(visible), annotated over every labelled frame (exist 0: no target), ground truth class 1. A label list
whose length differs from the frame count is an error, unless `trim` scores only the frames both have
(reported in the log and in `meta.antiuav`).

Rows that cannot be kept (an empty box, exist 1 without a box, a duplicate line) are dropped, logged and
listed in the flight's `meta.<format>.dropped`; malformed input (a label line with the wrong number of
fields, a non-number, a coordinate outside [0, 1] by more than `TOLERANCE`, an unreadable image, a bad
JSON) is an InputError naming the file (and line).
"""
from __future__ import annotations

import logging
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import cv2
import yaml

from pipeline.config import load_yaml
from pipeline.errors import InputError
from pipeline.io.frames import is_image, list_images, natural_key, read_image
from pipeline.io.jsonfile import read_json
from pipeline.io.atomic import write_yaml
from pipeline.io.svanstrom import SVANSTROM_CLASSES

log = logging.getLogger(__name__)
TOLERANCE = 0.01  # normalised YOLO coordinates may overshoot [0, 1] by this much (then clipped)
DRONE_NAME = re.compile(r"drone|uav|quadcopter|quadrotor|multirotor|multicopter|hexacopter|octocopter", re.I)
OTHER_NAMES = {"bird": 2, "airplane": 3, "aeroplane": 3, "plane": 3, "helicopter": 4}
FRAME_PREFIX_DIGITS = 6


# shared ---------------------------------------------------------------------------------------
@dataclass
class _Stream:
    """One stream of a flight being written: its media, rows (frame, id, x, y, w, h, class) and yaml."""

    name: str
    modality: str
    rows: list[tuple[int, int, float, float, float, float, int]] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)


def _prepare_folder(folder: Path, fmt: str) -> None:
    """Make `folder`, or clear one this importer wrote before (a flight.yaml with meta.<fmt>); refuse
    to write into any other non-empty folder."""
    if folder.exists() and any(folder.iterdir()):
        manifest = folder / "flight.yaml"
        try:
            meta = (yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}).get("meta", {})
        except (OSError, yaml.YAMLError, AttributeError, UnicodeDecodeError):
            meta = {}
        if not isinstance(meta, dict) or fmt not in meta:
            raise InputError(f"output folder exists and is not a flight folder written by import-{fmt}", folder)
        for child in ("frames", "gt", "flight.yaml"):
            p = folder / child
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p)
        for p in folder.glob("*.mp4"):
            if p.is_symlink() or p.is_file():
                p.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def _place(src: Path, dst: Path, copy: bool) -> None:
    """Link (absolute target) or copy a file or folder to `dst`."""
    if copy:
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            for f in list_images(src):
                shutil.copyfile(f, dst / f.name)
        else:
            shutil.copyfile(src, dst)
    else:
        dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())


def _write_flight(folder: Path, name: str, streams: list[_Stream], meta: dict[str, Any]) -> Path:
    (folder / "gt").mkdir(exist_ok=True)
    spec_streams = {}
    for s in streams:
        rows = sorted(s.rows)
        (folder / "gt" / f"{s.name}.txt").write_text(
            "".join(f"{f},{i},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,{c},1\n" for f, i, x, y, w, h, c in rows),
            encoding="utf-8")
        spec_streams[s.name] = {"modality": s.modality, **s.spec, "gt": f"gt/{s.name}.txt"}
    doc = {"name": name, "streams": spec_streams, "meta": meta}
    write_yaml(folder / "flight.yaml", doc)
    return folder


def _clip_box(x: float, y: float, w: float, h: float, size: tuple[int, int] | None
              ) -> tuple[float, float, float, float]:
    if size is None:
        return x, y, w, h
    x0, y0 = min(max(x, 0.0), size[0]), min(max(y, 0.0), size[1])
    x1, y1 = min(max(x + w, 0.0), size[0]), min(max(y + h, 0.0), size[1])
    return x0, y0, x1 - x0, y1 - y0


def _drop(dropped: list[str], path: Path, line: int | None, reason: str) -> None:
    where = f"{path.name}:{line}" if line is not None else path.name
    dropped.append(f"{where}: {reason}")
    log.warning("%s%s: row dropped: %s", path, f":{line}" if line is not None else "", reason)


# YOLO -----------------------------------------------------------------------------------------
@dataclass
class _Split:
    name: str            # "" for a dataset without split folders
    images_root: Path
    labels_root: Path | None  # None: no label folder for this split


def import_yolo(src: str | Path, out: str | Path, modality: str = "rgb",
                drone_classes: Iterable[str | int] | None = None, copy: bool = False,
                fps: float = 30.0) -> list[Path]:
    """Convert a YOLO dataset into flight folders under `out` (one per split); returns them in split order."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise InputError("no such dataset folder", src)
    if modality not in ("rgb", "thermal"):
        raise InputError(f"modality must be rgb or thermal, got {modality!r}")
    splits = _yolo_splits(src)
    names, names_file = _yolo_names(src)
    per_split = []
    used: set[int] = set()
    for sp in splits:
        images = _yolo_images(sp.images_root)
        labels = [_yolo_labels(img, sp) for img in images]
        used |= {c for lab in labels if lab is not None for c in lab.classes}
        per_split.append((sp, images, labels, [_image_size(img) for img in images]))
    class_map, class_names = _yolo_class_map(names, used, drone_classes, src, names_file)
    folders = []
    for sp, images, labels, sizes in per_split:  # everything checked: now write
        name = sp.name or src.resolve().name
        folders.append(_write_yolo_flight(out / name, name, sp, images, labels, sizes, class_map, class_names,
                                          modality, copy, fps, src))
    return folders


def _yolo_splits(src: Path) -> list[_Split]:
    images, labels = src / "images", src / "labels"
    if images.is_dir():
        if not labels.is_dir():
            raise InputError("no labels/ folder next to images/ (expected a YOLO dataset: images/ and labels/)", src)
        splits = []
        if any(is_image(p) for p in images.iterdir()):
            splits.append(_Split("", images, labels))
        for sub in sorted((p for p in images.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
            if any(is_image(p) for p in sub.rglob("*")):
                splits.append(_Split(sub.name, sub, labels / sub.name if (labels / sub.name).is_dir() else None))
        if not splits:
            raise InputError("images/ holds no image", images)
        return splits
    # Roboflow-style export: <split>/images and <split>/labels
    splits = [_Split(sub.name, sub / "images", sub / "labels" if (sub / "labels").is_dir() else None)
              for sub in sorted((p for p in src.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
              if (sub / "images").is_dir() and any(is_image(p) for p in (sub / "images").rglob("*"))]
    if not splits:
        raise InputError("not a YOLO dataset (expected images/ and labels/, or <split>/images and <split>/labels)",
                         src)
    return splits


def _yolo_images(root: Path) -> list[Path]:
    """Images under `root` at any depth, in natural order of their path relative to root."""
    files = [p for p in root.rglob("*") if is_image(p) and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.relative_to(root).as_posix()))


@dataclass
class _Labels:
    path: Path
    boxes: list[tuple[int, int, float, float, float, float]]  # (line, class, cx, cy, w, h)

    @property
    def classes(self) -> set[int]:
        return {b[1] for b in self.boxes}


def _yolo_labels(image: Path, sp: _Split) -> _Labels | None:
    """The image's label lines, validated; None when the split has no label folder. A missing or empty
    label file is an image with no target."""
    if sp.labels_root is None:
        return None
    path = (sp.labels_root / image.relative_to(sp.images_root)).with_suffix(".txt")
    if not path.is_file():
        return _Labels(path, [])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("not a text file", path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path) from None
    boxes = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise InputError(f"expected 5 values (class cx cy w h), got {len(parts)}", path, lineno)
        try:
            cls, vals = float(parts[0]), [float(p) for p in parts[1:]]
        except ValueError:
            raise InputError(f"not a number in {line.strip()[:60]!r}", path, lineno) from None
        if not all(math.isfinite(v) for v in [cls, *vals]):
            raise InputError("NaN or infinite value", path, lineno)
        if cls < 0 or cls != int(cls):
            raise InputError(f"class must be a non-negative integer, got {parts[0]}", path, lineno)
        if any(v < -TOLERANCE or v > 1 + TOLERANCE for v in vals):
            raise InputError(f"coordinates must be normalised to [0, 1], got {' '.join(parts[1:])}", path, lineno)
        boxes.append((lineno, int(cls), *vals))
    return _Labels(path, boxes)


def _yolo_names(src: Path) -> tuple[dict[int, str] | None, Path | None]:
    """Class names from a YAML with `names` in SRC (data.yaml first), else classes.txt / obj.names."""
    yamls = sorted(src.glob("*.yaml")) + sorted(src.glob("*.yml"))
    yamls.sort(key=lambda p: (p.stem not in ("data", "dataset"), p.name))
    for path in yamls:
        doc = load_yaml(path)
        if not isinstance(doc, dict) or "names" not in doc:
            continue
        names = doc["names"]
        if isinstance(names, list) and all(isinstance(n, (str, int)) for n in names):
            return {i: str(n) for i, n in enumerate(names)}, path
        if isinstance(names, dict) and all(isinstance(k, int) and k >= 0 for k in names):
            return {int(k): str(v) for k, v in names.items()}, path
        raise InputError("names: expected a list of class names or a mapping {id: name}", path)
    for rel in ("classes.txt", "obj.names", "labels/classes.txt"):
        path = src / rel
        if path.is_file():
            try:
                lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            except (OSError, UnicodeDecodeError) as e:
                raise InputError(f"cannot read: {e}", path) from None
            return {i: n for i, n in enumerate(ln for ln in lines if ln)}, path
    return None, None


def _default_class(name: str) -> int | None:
    """1 for drone-like names, 2-4 for bird / airplane / helicopter, None for others."""
    if DRONE_NAME.search(name):
        return 1
    key = name.strip().lower()
    return OTHER_NAMES.get(key, OTHER_NAMES.get(key.rstrip("s")))


def _yolo_class_map(names: dict[int, str] | None, used: set[int], drone_classes: Iterable[str | int] | None,
                    src: Path, names_file: Path | None) -> tuple[dict[int, int], dict[int, str]]:
    """YOLO class id -> MOT class (1 drone, 2 bird, 3 airplane, 4 helicopter, 5... others) and the MOT
    class names."""
    where = names_file or src
    if names is not None and (missing := sorted(used - set(names))):
        raise InputError(f"labels use class id(s) {', '.join(map(str, missing))} that {where.name} does not name",
                         where)
    ids = sorted(set(names or {}) | used)
    drones: set[int] | None = None
    if drone_classes is not None:
        drones = set()
        lower = {v.lower(): k for k, v in (names or {}).items()}
        for d in drone_classes:
            d = str(d).strip()
            if d.lower() in lower:
                drones.add(lower[d.lower()])
            elif d.isdigit():
                drones.add(int(d))
            else:
                known = ", ".join(f"{k} {v}" for k, v in sorted((names or {}).items())) or "none named"
                raise InputError(f"--drone-class {d!r} is neither a class id nor a class name ({known})", where)
    elif names is None and len(used) > 1:
        raise InputError(f"labels use classes {', '.join(map(str, sorted(used)))} but no data.yaml or classes.txt "
                         "names them: give --drone-class", src)
    mapping, out_names, next_id = {}, {1: "drone"}, 5
    for k in ids:
        name = (names or {}).get(k, f"class{k}")
        if drones is not None:  # the named classes are the drones; a drone-like name not named is another class
            cls = 1 if k in drones else _default_class(name)
            cls = None if cls == 1 and k not in drones else cls
        elif names is None:  # unnamed, one class id in use (checked above): drones
            cls = 1
        else:
            cls = _default_class(name)
        if cls is None:
            cls, next_id = next_id, next_id + 1
        mapping[k] = cls
        out_names[cls] = SVANSTROM_CLASSES[cls - 1] if cls <= 4 else name
    return mapping, out_names


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as OpenCV will decode it (EXIF rotation applied), from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError("cannot read image (corrupt or not an image)", path) from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _write_yolo_flight(folder: Path, name: str, sp: _Split, images: list[Path], labels: list[_Labels | None],
                       image_sizes: list[tuple[int, int]], class_map: dict[int, int], class_names: dict[int, str],
                       modality: str, copy: bool, fps: float, src: Path) -> Path:
    _prepare_folder(folder, "yolo")
    frames = folder / "frames"
    frames.mkdir()
    digits = max(FRAME_PREFIX_DIGITS, len(str(len(images))))
    stream = _Stream(modality, modality)
    dropped: list[str] = []
    sizes = set(image_sizes)
    next_id, labelled = 1, 0
    for frame, (img, lab, size) in enumerate(zip(images, labels, image_sizes), 1):
        _place(img, frames / f"{frame:0{digits}d}_{img.name}", copy)
        if lab is None:
            continue
        labelled += bool(lab.boxes)
        seen = set()
        for lineno, cls, cx, cy, w, h in lab.boxes:
            key = (cls, cx, cy, w, h)
            if key in seen:
                _drop(dropped, lab.path, lineno, "duplicate of an earlier line")
                continue
            seen.add(key)
            x, y, bw, bh = _clip_box((cx - w / 2) * size[0], (cy - h / 2) * size[1], w * size[0], h * size[1], size)
            if not (bw > 0 and bh > 0):
                _drop(dropped, lab.path, lineno, f"empty box {w}x{h}")
                continue
            stream.rows.append((frame, next_id, x, y, bw, bh, class_map[cls]))
            next_id += 1
    has_labels = sp.labels_root is not None
    if not has_labels:
        log.warning("%s: split %r has no label folder; its flight is not annotated (not scored)", src, sp.name)
    stream.spec = {"frames": "frames", "fps": float(fps), "annotated": [[1, len(images)]] if has_labels else []}
    if len(sizes) == 1:
        (w, h), = sizes
        stream.spec.update(width=w, height=h)
    meta = {"yolo": {"source": str(src.resolve()), "split": sp.name, "images": len(images),
                     "images_with_boxes": labelled, "boxes": len(stream.rows), "labelled": has_labels,
                     "classes": {k: class_names[k] for k in sorted(class_names)},
                     "class_map": {k: class_map[k] for k in sorted(class_map)}, "dropped": dropped}}
    return _write_flight(folder, name, [stream], meta)


# Anti-UAV -------------------------------------------------------------------------------------
ANTIUAV_LABELS = {"thermal": ("IR_label.json", "infrared.json"), "rgb": ("RGB_label.json", "visible.json")}
ANTIUAV_VIDEOS = {"thermal": ("IR.mp4", "infrared.mp4"), "rgb": ("RGB.mp4", "visible.mp4")}
ANTIUAV_FRAME_DIRS = {"thermal": ("IR", "infrared"), "rgb": ("RGB", "visible")}


def import_antiuav(src: str | Path, out: str | Path, modality: str = "both", copy: bool = False,
                   fps: float = 30.0, trim: bool = False) -> list[Path]:
    """Convert the Anti-UAV sequences under `src` into flight folders under `out`; returns them in
    natural order of their paths. `modality`: both, thermal or rgb. `fps`: the rate of sequences
    given as images (videos carry their own)."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise InputError("no such dataset folder", src)
    if modality not in ("both", "thermal", "rgb"):
        raise InputError(f"modality must be both, thermal or rgb, got {modality!r}")
    wanted = ("thermal", "rgb") if modality == "both" else (modality,)
    label_names = {n.lower(): m for m in wanted for n in ANTIUAV_LABELS[m]}
    seqs: dict[Path, dict[str, Path]] = {}
    for p in src.rglob("*.json"):
        m = label_names.get(p.name.lower())
        if m is not None and p.is_file():
            found = seqs.setdefault(p.parent, {})
            if m in found:
                raise InputError(f"two {m} label files in one sequence ({found[m].name}, {p.name})", p.parent)
            found[m] = p
    if not seqs:
        names = ", ".join(n for m in wanted for n in ANTIUAV_LABELS[m])
        raise InputError(f"no Anti-UAV sequence found (no {names} under it)", src)
    folders = []
    for seq in sorted(seqs, key=lambda p: natural_key(p.relative_to(src).as_posix())):
        rel = seq.relative_to(src)
        folder = out / (rel if rel.parts else seq.resolve().name)
        folders.append(_write_antiuav_flight(seq, seqs[seq], folder, copy, fps, trim))
    return folders


def _antiuav_media(seq: Path, modality: str, labels: dict[str, Path]) -> Path:
    """The sequence's video file or frame folder for a modality."""
    entries = {p.name.lower(): p for p in seq.iterdir()}
    for name in ANTIUAV_VIDEOS[modality]:
        p = entries.get(name.lower())
        if p is not None and p.is_file():
            return p
    for name in ANTIUAV_FRAME_DIRS[modality]:
        p = entries.get(name.lower())
        if p is not None and p.is_dir() and any(is_image(f) for f in p.iterdir()):
            return p
    if any(is_image(p) for p in seq.iterdir()):
        if len(labels) > 1:
            raise InputError("images next to both IR and RGB labels: cannot tell which camera they are from", seq)
        return seq
    expected = ", ".join([*ANTIUAV_VIDEOS[modality], *(d + "/" for d in ANTIUAV_FRAME_DIRS[modality])])
    raise InputError(f"no frames for {labels[modality].name} (expected {expected} or images next to it)", seq)


def _video_info(path: Path) -> tuple[int, float, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise InputError("cannot open video (corrupt, truncated or unknown format)", path)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if n <= 0:  # no count in the container: decode
            n = 0
            while cap.grab():
                n += 1
        if n == 0:
            raise InputError("video holds no decodable frame", path)
        return n, (fps if fps and fps > 0 else 30.0), size
    finally:
        cap.release()


def _read_antiuav_json(path: Path) -> tuple[list[int], list[list[tuple[float, float, float, float]]]]:
    """(exist, boxes per frame) of a label file, checked: equal lengths, exist values 0/1, every box."""
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("gt_rect"), list):
        raise InputError("expected a JSON object with a gt_rect list (and exist)", path)
    boxes = [_boxes(r, path, i) for i, r in enumerate(doc["gt_rect"], 1)]
    exist = doc.get("exist")
    if exist is None:
        exist = [int(b != []) for b in boxes]
    if not isinstance(exist, list):
        raise InputError("exist: expected a list of 0/1", path)
    if len(exist) != len(boxes):
        raise InputError(f"exist has {len(exist)} values but gt_rect {len(boxes)}", path)
    for i, e in enumerate(exist, 1):
        if e not in (0, 1):
            raise InputError(f"exist[{i - 1}] (frame {i}): expected 0 or 1, got {e!r}", path)
    return [int(e) for e in exist], boxes


def _boxes(rect: Any, path: Path, frame: int) -> list[tuple[float, float, float, float]]:
    """A gt_rect entry -> its boxes: [] / [0, 0, 0, 0] none, [x, y, w, h] one, [[x, y, w, h], ...] several."""
    def number(v: Any) -> bool:  # finite, and no int too large for a float (found by fuzzing)
        return isinstance(v, (int, float)) and not isinstance(v, bool) and -1e300 < v < 1e300

    if not isinstance(rect, list):
        raise InputError(f"gt_rect[{frame - 1}] (frame {frame}): expected [x, y, w, h], got {rect!r}"[:200], path)
    items = rect if rect and all(isinstance(r, list) for r in rect) else [rect]
    out = []
    for r in items:
        if r == []:
            continue
        if not (len(r) == 4 and all(map(number, r))):
            raise InputError(f"gt_rect[{frame - 1}] (frame {frame}): expected [x, y, w, h], got {r!r}"[:200], path)
        if any(r):
            out.append(tuple(float(v) for v in r))
    return out


def _write_antiuav_flight(seq: Path, labels: dict[str, Path], folder: Path, copy: bool, fps: float,
                          trim: bool) -> Path:
    streams, info, places = [], {}, []
    for modality in ("thermal", "rgb"):
        if modality not in labels:
            continue
        label_path = labels[modality]
        media = _antiuav_media(seq, modality, labels)
        exist, frame_boxes = _read_antiuav_json(label_path)
        stream = _Stream(modality, modality)
        if media.is_dir():
            files = list_images(media)
            n_frames, rate, size = len(files), float(fps), read_image(files[0]).shape[1::-1]
            places.append((media, f"frames/{modality}"))
            stream.spec = {"frames": f"frames/{modality}", "fps": rate}
        else:
            n_frames, rate, size = _video_info(media)
            places.append((media, f"{modality}{media.suffix.lower()}"))
            stream.spec = {"video": f"{modality}{media.suffix.lower()}", "fps": float(rate)}
        if size is not None:
            stream.spec.update(width=int(size[0]), height=int(size[1]))
        n_labels, trimmed = len(exist), None
        if n_labels != n_frames:
            what = "folder holds" if media.is_dir() else "video has"
            if not trim:
                raise InputError(f"{n_labels} labelled frames but the {what} {n_frames} frames "
                                 f"(give --trim to score only the first {min(n_labels, n_frames)})", label_path)
            trimmed = f"{n_labels} labelled frames, {n_frames} frames: scored frames 1-{min(n_labels, n_frames)}"
            log.warning("%s: %s", label_path, trimmed)
        n = min(n_labels, n_frames)
        dropped: list[str] = []
        for frame in range(1, n + 1):
            if not exist[frame - 1]:
                continue
            boxes = frame_boxes[frame - 1]
            if not boxes:
                _drop(dropped, label_path, None, f"frame {frame}: exist is 1 but gt_rect has no box")
            for k, b in enumerate(boxes, 1):
                x, y, w, h = _clip_box(*b, size)
                if not (w > 0 and h > 0):
                    _drop(dropped, label_path, None, f"frame {frame}: empty box {list(b)}")
                    continue
                stream.rows.append((frame, k, x, y, w, h, 1))
        stream.spec["annotated"] = [[1, n]] if n else []
        streams.append(stream)
        info[modality] = {"labels": str(label_path.resolve()), "media": str(media.resolve()), "frames": n_frames,
                          "labelled_frames": n_labels, "frames_with_target": sum(exist[:n]),
                          "boxes": len(stream.rows), "dropped": dropped, "trimmed": trimmed}
    _prepare_folder(folder, "antiuav")  # everything checked: now write
    for media, rel in places:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        _place(media, folder / rel, copy)
    meta = {"antiuav": {"sequence": seq.name, "source": str(seq.resolve()), "streams": info}}
    return _write_flight(folder, seq.name, streams, meta)
