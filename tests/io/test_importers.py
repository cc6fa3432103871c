"""Public dataset importers (pipeline/io/importers.py): YOLO (splits, Roboflow layout, class names,
images of different sizes, bad label lines) and Anti-UAV (Anti-UAV410 frames, Anti-UAV300 videos in both
file namings, extracted frames), then `process` + `evaluate` on imported flights through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.evaluation.evaluate import annotated_frames
from pipeline.io.flight import load_flight
from pipeline.io.frames import list_images
from pipeline.io.importers import import_antiuav, import_yolo
from pipeline.io.motio import read_mot


def one_line_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def image(path: Path, size: tuple[int, int], boxes=(), level: int = 40) -> Path:
    """A dark image of `size` (w, h) with bright rectangles at `boxes` (x, y, w, h in pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((size[1], size[0], 3), level, np.uint8)
    for x, y, w, h in boxes:
        img[y:y + h, x:x + w] = 240
    cv2.imwrite(str(path), img)
    return path


def yolo_line(cls: int, box, size) -> str:
    x, y, w, h = box
    return f"{cls} {(x + w / 2) / size[0]:.6f} {(y + h / 2) / size[1]:.6f} {w / size[0]:.6f} {h / size[1]:.6f}"


# YOLO -----------------------------------------------------------------------------------------
@pytest.fixture
def yolo(tmp_path: Path) -> Path:
    """images/{train,val} + labels/{train,val} + data.yaml; train has images of three sizes."""
    src = tmp_path / "yolo"
    src.mkdir()
    (src / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n"
                                   "names: {0: Drone, 1: birds, 2: Airplane, 3: helicopter, 4: kite}\n")
    lab = src / "labels" / "train"
    lab.mkdir(parents=True)
    image(src / "images/train/img_1.jpg", (100, 80), [(10, 20, 10, 8)])
    (lab / "img_1.txt").write_text(yolo_line(0, (10, 20, 10, 8), (100, 80)) + "\n")
    image(src / "images/train/img_2.png", (64, 96), [(0, 0, 6, 6), (30, 40, 12, 10)])
    (lab / "img_2.txt").write_text("0 0.0425 0.03 0.1 0.06\n"  # overshoots the left edge by 0.48 px: clipped
                                   + yolo_line(4, (30, 40, 12, 10), (64, 96)) + "\n\n"
                                   + yolo_line(4, (30, 40, 12, 10), (64, 96)) + "\n")  # duplicate: dropped
    image(src / "images/train/img_10.png", (120, 60), [(50, 30, 9, 9)])  # after img_2 (natural order)
    (lab / "img_10.txt").write_text(yolo_line(1, (50, 30, 9, 9), (120, 60)) + "\n0 0.5 0.5 0 0.1\n")  # empty box
    image(src / "images/train/img_3.jpg", (100, 80))  # no label file: no target
    image(src / "images/train/sub/img_0.jpg", (100, 80))  # empty label file: no target
    (lab / "sub").mkdir()
    (lab / "sub" / "img_0.txt").write_text("")
    for i in (1, 2):
        box = (10 * i, 10, 8, 6)
        image(src / f"images/val/v{i}.jpg", (80, 60), [box])
        (src / "labels/val").mkdir(exist_ok=True)
        (src / f"labels/val/v{i}.txt").write_text(yolo_line(2 if i == 2 else 0, box, (80, 60)) + "\n")
    (src / "labels/train/classes.cache").write_text("ignored")
    return src


def test_yolo_splits_classes_and_sizes(yolo: Path, tmp_path: Path):
    train, val = import_yolo(yolo, tmp_path / "out")
    assert (train.name, val.name) == ("train", "val")
    flight = load_flight(train)
    s = flight.streams["rgb"]
    assert (s.frames, s.modality, s.fps, s.width, s.height, s.annotated) == ("frames", "rgb", 30.0, None, None, [(1, 5)])
    names = [p.name for p in list_images(train / "frames")]
    assert names == ["000001_img_1.jpg", "000002_img_2.png", "000003_img_3.jpg", "000004_img_10.png",
                     "000005_img_0.jpg"]
    assert (train / "frames" / names[0]).is_symlink()
    rows = read_mot(train / "gt" / "rgb.txt")
    assert rows[:, :8].round(2).tolist() == [
        [1, 1, 10, 20, 10, 8, 1, 1],
        [2, 2, 0, 0, 5.92, 5.76, 1, 1],   # drone, clipped at the left edge
        [2, 3, 30, 40, 12, 10, 1, 5],     # kite: a further class
        [4, 4, 50, 30, 9, 9, 1, 2],       # "birds" -> bird
    ]
    meta = flight.spec.meta["yolo"]
    assert meta["classes"] == {1: "drone", 2: "bird", 3: "airplane", 4: "helicopter", 5: "kite"}
    assert meta["class_map"] == {0: 1, 1: 2, 2: 3, 3: 4, 4: 5}
    assert meta["dropped"] == ["img_2.txt:4: duplicate of an earlier line", "img_10.txt:2: empty box 0.0x0.1"]
    assert annotated_frames(flight, "rgb") == {1, 2, 3, 4, 5}
    v = load_flight(val).streams["rgb"]
    assert (v.width, v.height) == (80, 60)
    assert read_mot(val / "gt" / "rgb.txt")[:, [0, 7]].tolist() == [[1, 1], [2, 3]]

    # importing again rewrites the flights; a foreign non-empty folder is refused
    assert import_yolo(yolo, tmp_path / "out", drone_classes=["kite"])[0] == train
    assert read_mot(train / "gt" / "rgb.txt")[:, 7].tolist() == [5, 5, 1, 2]  # Drone is not named: a further class
    (tmp_path / "mine" / "val").mkdir(parents=True)
    (tmp_path / "mine" / "val" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a flight folder written by import-yolo"):
        import_yolo(yolo, tmp_path / "mine")


def test_yolo_without_names_and_roboflow_layout(tmp_path: Path, capsys):
    src = tmp_path / "rf"
    for split in ("train", "valid"):
        image(src / split / "images" / "a.jpg", (50, 40), [(5, 5, 4, 4)])
        (src / split / "labels").mkdir(parents=True)
        (src / split / "labels" / "a.txt").write_text(yolo_line(0, (5, 5, 4, 4), (50, 40)) + "\n")
    image(src / "test" / "images" / "b.jpg", (50, 40))  # no labels folder: written, not scored
    flights = import_yolo(src, tmp_path / "out", modality="thermal")
    assert [f.name for f in flights] == ["test", "train", "valid"]
    assert load_flight(flights[0]).streams["thermal"].annotated == []
    assert read_mot(flights[1] / "gt" / "thermal.txt")[:, 7].tolist() == [1]  # one unnamed class: drones

    (src / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n3 0.2 0.2 0.1 0.1\n")
    code = main(["import-yolo", str(src), str(tmp_path / "out2")])
    one_line_error(capsys, code, str(src), "labels use classes 0, 3", "--drone-class")
    assert main(["import-yolo", str(src), str(tmp_path / "out2"), "--drone-class", "3"]) == 0
    assert read_mot(tmp_path / "out2" / "train" / "gt" / "rgb.txt")[:, 7].tolist() == [5, 1]
    assert "3 flight folders written" in capsys.readouterr().out


@pytest.mark.parametrize("line, words", [
    ("0 0.5 0.5 0.1", "expected 5 values (class cx cy w h), got 4"),
    ("0 0.5 0.5 0.1 0.1 0.9", "expected 5 values"),
    ("0 0.5 abc 0.1 0.1", "not a number"),
    ("0 0.5 1.2 0.1 0.1", "normalised to [0, 1]"),
    ("0 -0.05 0.5 0.1 0.1", "normalised to [0, 1]"),
    ("1.5 0.5 0.5 0.1 0.1", "class must be a non-negative integer"),
    ("0 nan 0.5 0.1 0.1", "NaN"),
])
def test_yolo_bad_label_lines(tmp_path: Path, capsys, line: str, words: str):
    src = tmp_path / "y"
    image(src / "images" / "a.jpg", (50, 40))
    (src / "labels").mkdir()
    (src / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    code = main(["import-yolo", str(src), str(tmp_path / "out")])
    one_line_error(capsys, code, f"{src / 'labels' / 'a.txt'}:2", words)


def test_yolo_bad_images_and_layouts(tmp_path: Path, capsys):
    src = tmp_path / "y"
    image(src / "images" / "a.jpg", (50, 40))
    (src / "images" / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (src / "labels").mkdir()
    code = main(["import-yolo", str(src), str(tmp_path / "out")])
    one_line_error(capsys, code, str(src / "images" / "b.jpg"), "cannot read image")
    (tmp_path / "nolabels" / "images").mkdir(parents=True)
    image(tmp_path / "nolabels" / "images" / "a.jpg", (50, 40))
    code = main(["import-yolo", str(tmp_path / "nolabels"), str(tmp_path / "out")])
    one_line_error(capsys, code, "no labels/ folder")
    (tmp_path / "empty").mkdir()
    code = main(["import-yolo", str(tmp_path / "empty"), str(tmp_path / "out")])
    one_line_error(capsys, code, "not a YOLO dataset")


# Anti-UAV -------------------------------------------------------------------------------------
def drone(i: int) -> list[int]:
    """The drone's box [x, y, w, h] in frame i (1-based) of the test sequences."""
    return [12 + 3 * i, 30 + i, 6, 6]


def sequence_frames(n: int, size=(160, 128), absent=(), seed: int = 0):
    """n frames: a smooth textured background and a bright 6x6 drone moving right, absent in `absent`."""
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.normal(60, 8, (size[1], size[0])).clip(0, 255).astype(np.uint8), (0, 0), 2)
    for i in range(1, n + 1):
        img = bg.copy()
        if i not in absent:
            x, y, w, h = drone(i)
            img[y:y + h, x:x + w] = 230
        yield img


def labels(n: int, absent=(), empty="[]") -> dict:
    rects = [json.loads(empty) if i in absent else drone(i) for i in range(1, n + 1)]
    return {"exist": [0 if i in absent else 1 for i in range(1, n + 1)], "gt_rect": rects,
            "VE": [0] * n}  # Anti-UAV410 has more per-frame keys: ignored


def au410_sequence(folder: Path, n: int, absent=(), **kw) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(sequence_frames(n, absent=absent), 1):
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), img)
    (folder / "IR_label.json").write_text(json.dumps(labels(n, absent, **kw)))
    return folder


def video(path: Path, n: int, size=(160, 128)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    for img in sequence_frames(n, size):
        w.write(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    w.release()
    return path


def test_antiuav410_frames(tmp_path: Path):
    src = tmp_path / "Anti-UAV410"
    au410_sequence(src / "test" / "seq_2", 12, absent={1, 2, 12})
    au410_sequence(src / "test" / "seq_10", 6, empty="[0, 0, 0, 0]", absent={3})
    seq_b = au410_sequence(src / "val" / "seqB", 5)
    doc = json.loads((seq_b / "IR_label.json").read_text())
    doc["gt_rect"][1] = []  # exist 1 but no box: dropped and reported
    (seq_b / "IR_label.json").write_text(json.dumps(doc))
    flights = import_antiuav(src, tmp_path / "out", fps=25)
    assert [f.relative_to(tmp_path / "out").as_posix() for f in flights] == ["test/seq_2", "test/seq_10", "val/seqB"]
    f = load_flight(flights[0])
    s = f.streams["thermal"]
    assert (list(f.streams), s.frames, s.fps, s.width, s.height, s.annotated) == (
        ["thermal"], "frames/thermal", 25.0, 160, 128, [(1, 12)])
    assert (flights[0] / "frames" / "thermal").is_symlink()
    rows = read_mot(flights[0] / "gt" / "thermal.txt")
    assert rows[:, 0].tolist() == list(range(3, 12)) and set(rows[:, 1]) == {1} and set(rows[:, 7]) == {1}
    assert rows[0, 2:6].tolist() == drone(3)
    assert len(read_mot(flights[1] / "gt" / "thermal.txt")) == 5
    b = load_flight(flights[2]).spec.meta["antiuav"]["streams"]["thermal"]
    assert (b["frames"], b["boxes"], b["dropped"]) == (5, 4, ["IR_label.json: frame 2: exist is 1 but gt_rect has no box"])

    copied = import_antiuav(src / "val" / "seqB", tmp_path / "copy", copy=True)[0]
    assert copied == tmp_path / "copy" / "seqB" and not (copied / "frames" / "thermal").is_symlink()
    assert len(list_images(copied / "frames" / "thermal")) == 5


def test_antiuav300_videos_both_namings_and_extracted_frames(tmp_path: Path, capsys):
    src = tmp_path / "Anti-UAV300"
    a = src / "train" / "20190925_101846_1_1"
    a.mkdir(parents=True)
    video(a / "infrared.mp4", 8)
    video(a / "visible.mp4", 8, size=(192, 144))
    (a / "infrared.json").write_text(json.dumps(labels(8, absent={8})))
    (a / "visible.json").write_text(json.dumps(labels(8)))
    b = src / "test-dev" / "seqB"  # CVPR 2020 naming
    b.mkdir(parents=True)
    video(b / "IR.mp4", 6)
    (b / "IR_label.json").write_text(json.dumps(labels(6)))
    c = src / "train" / "seqC"  # frames extracted into infrared/
    (c / "infrared").mkdir(parents=True)
    for i, img in enumerate(sequence_frames(4), 1):
        cv2.imwrite(str(c / "infrared" / f"{i}.png"), img)
    (c / "infrared.json").write_text(json.dumps({"gt_rect": [drone(i) for i in range(1, 5)]}))  # no exist
    flights = import_antiuav(src, tmp_path / "out")
    assert [f.name for f in flights] == ["seqB", "20190925_101846_1_1", "seqC"]
    fa = load_flight(flights[1])
    assert {n: (s.video, s.fps, s.width, s.height, s.annotated) for n, s in fa.streams.items()} == {
        "thermal": ("thermal.mp4", 25.0, 160, 128, [(1, 8)]), "rgb": ("rgb.mp4", 25.0, 192, 144, [(1, 8)])}
    assert len(read_mot(flights[1] / "gt" / "thermal.txt")) == 7 and len(read_mot(flights[1] / "gt" / "rgb.txt")) == 8
    assert list(load_flight(flights[0]).streams) == ["thermal"]
    assert load_flight(flights[2]).streams["thermal"].frames == "frames/thermal"
    assert len(read_mot(flights[2] / "gt" / "thermal.txt")) == 4

    assert main(["import-antiuav", str(src), str(tmp_path / "ir"), "--modality", "thermal"]) == 0
    assert list(load_flight(tmp_path / "ir" / "train" / "20190925_101846_1_1").streams) == ["thermal"]
    capsys.readouterr()


def test_antiuav_length_mismatch_trim_and_bad_json(tmp_path: Path, capsys):
    seq = au410_sequence(tmp_path / "src" / "seq", 6)
    (seq / "IR_label.json").write_text(json.dumps(labels(7)))
    code = main(["import-antiuav", str(tmp_path / "src"), str(tmp_path / "out")])
    one_line_error(capsys, code, str(seq / "IR_label.json"), "7 labelled frames but the folder holds 6 frames",
                   "--trim")
    assert main(["import-antiuav", str(tmp_path / "src"), str(tmp_path / "out"), "--trim"]) == 0
    f = load_flight(tmp_path / "out" / "seq")
    assert f.streams["thermal"].annotated == [(1, 6)] and len(read_mot(f.gt_path("thermal"))) == 6
    assert f.spec.meta["antiuav"]["streams"]["thermal"]["trimmed"] == "7 labelled frames, 6 frames: scored frames 1-6"

    for text, words in [('{"exist": [1, 1],\n "gt_rect": [[1, 2, 3, 4], [1, 2, 3]]}', "frame 2): expected [x, y, w, h]"),
                        ('{"exist": [1, 2], "gt_rect": [[], []]}', "expected 0 or 1"),
                        ('{"exist": [1], "gt_rect": [[], []]}', "exist has 1 values but gt_rect 2"),
                        ('{"exist": [1,\n\n oops', "invalid JSON"),
                        ('[1, 2]', "expected a JSON object with a gt_rect list")]:
        (seq / "IR_label.json").write_text(text)
        code = main(["import-antiuav", str(tmp_path / "src"), str(tmp_path / "out")])
        one_line_error(capsys, code, str(seq / "IR_label.json"), words)
    code = main(["import-antiuav", str(tmp_path / "nothing"), str(tmp_path / "out")])
    one_line_error(capsys, code, "no such dataset folder")
    (tmp_path / "plain").mkdir()
    code = main(["import-antiuav", str(tmp_path / "plain"), str(tmp_path / "out")])
    one_line_error(capsys, code, "no Anti-UAV sequence found")


# import, then process + evaluate ---------------------------------------------------------------
def test_two_commands_score_an_imported_sequence(tmp_path: Path, capsys):
    """Anti-UAV410-style frames with a bright moving drone: import, process with the motion baseline,
    evaluate; the drone is found in nearly every frame it is in, and the frames without it count."""
    au410_sequence(tmp_path / "src" / "test" / "seqA", 40, absent={1, 2, 3, 39, 40})
    assert main(["import-antiuav", str(tmp_path / "src"), str(tmp_path / "flights")]) == 0
    flight = tmp_path / "flights" / "test" / "seqA"
    assert len(read_mot(flight / "gt" / "thermal.txt")) == 35
    out = tmp_path / "run"
    assert main(["process", str(flight), "--out", str(out), "--no-progress", "--config", "configs/motion.yaml"]) == 0
    assert main(["evaluate", str(flight), str(out), "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())["streams"]["thermal"]
    assert scores["num_objects"] == 35
    assert scores["recall"] >= 0.9 and scores["ap50_all"] >= 0.9 and scores["mota"] >= 0.8, scores
    capsys.readouterr()


def test_imported_yolo_stills_of_different_sizes_process_and_evaluate(tmp_path: Path, capsys):
    """Unrelated thermal stills of three sizes: the warm-blob detector finds the bright drones; every
    labelled box is its own ground-truth object."""
    src = tmp_path / "y"
    (src / "labels").mkdir(parents=True)
    (src / "classes.txt").write_text("uav\n")
    sizes = [(96, 80), (128, 64), (80, 112)]
    for i in range(9):
        size, box = sizes[i % 3], (10 + 4 * i, 12 + 2 * i, 6, 6)
        image(src / "images" / f"im{i}.png", size, [box] if i != 4 else [])
        (src / "labels" / f"im{i}.txt").write_text("" if i == 4 else yolo_line(0, box, size) + "\n")
    assert main(["import-yolo", str(src), str(tmp_path / "flights"), "--modality", "thermal"]) == 0
    flight = tmp_path / "flights" / "y"
    assert read_mot(flight / "gt" / "thermal.txt")[:, 1].tolist() == list(range(1, 9))
    out = tmp_path / "run"
    assert main(["process", str(flight), "--out", str(out), "--no-progress", "--annotate",
                 "--config", "configs/motion.yaml"]) == 0
    assert main(["evaluate", str(flight), str(out), "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())["streams"]["thermal"]
    assert scores["num_objects"] == 8 and scores["ap50_all"] >= 0.8, scores
    capsys.readouterr()
