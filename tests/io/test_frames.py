"""Frame folders as streams: natural order, reading (BGR, 16-bit), flight.yaml `frames:`, process / live /
training on them, frames of different sizes end to end, and bad input (empty folder, corrupt image)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.evaluation.evaluate import annotated_frames, count_frames
from pipeline.io.flight import load_flight
from pipeline.io.frames import FolderCapture, list_images, natural_key, read_image
from pipeline.io.live import LiveGrabber, parse_source
from pipeline.io.motio import read_mot
from pipeline.io.sources import FlightSource, FrameFolderReader, StreamReader, VideoFileSource


def write_frames(folder: Path, n: int, size=(64, 48), name="f_{i}.png", square: bool = True) -> list[Path]:
    """n images whose mean level encodes the frame (10 + 5 i) with a bright square moving right."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(1, n + 1):
        w, h = size(i) if callable(size) else size
        img = np.full((h, w, 3), 10 + 5 * i, np.uint8)
        if square:
            img[8:14, 2 * i:2 * i + 6] = 250
        p = folder / name.format(i=i)
        cv2.imwrite(str(p), img)
        out.append(p)
    return out


def one_line_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_natural_order_and_suffixes(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    for name in ("frame_10.png", "frame_2.PNG", "frame_1.jpg", "Frame_3.JPEG", "frame_4.bmp", "frame_11.tif",
                 "notes.txt", ".hidden.png", "frame_1b.jpg"):
        (d / name).write_bytes(b"x")
    (d / "sub").mkdir()
    (d / "sub" / "frame_0.png").write_bytes(b"x")
    assert [p.name for p in list_images(d)] == ["frame_1.jpg", "frame_1b.jpg", "frame_2.PNG", "Frame_3.JPEG",
                                                "frame_4.bmp", "frame_10.png", "frame_11.tif"]
    assert sorted(["img10", "img9", "img010x", "img1"], key=natural_key) == ["img1", "img9", "img10", "img010x"]


def test_reader_yields_bgr_frames_in_order_with_times(tmp_path):
    write_frames(tmp_path / "fr", 12, name="{i}.png")
    r = FrameFolderReader("thermal", "thermal", tmp_path / "fr", None, None)
    assert (r.fps, r.frame_count, r.time_of(31)) == (30.0, 12, 1.0)
    got = list(r)
    assert [f for f, _, _ in got] == list(range(1, 13))  # 10.png after 9.png
    assert [round(t, 4) for _, t, _ in got[:3]] == [0.0, 0.0333, 0.0667]
    assert all(img.shape == (48, 64, 3) and img.dtype == np.uint8 for _, _, img in got)
    assert [int(img[40, 40, 0]) for _, _, img in got] == [10 + 5 * i for i in range(1, 13)]
    source = VideoFileSource(tmp_path / "fr", "thermal", fps=10.0)
    assert source.streams == {"thermal": "thermal"} and source.expected_frames == 12
    assert [round(b.timestamp, 3) for b in source][:3] == [0.0, 0.1, 0.2]


def test_sixteen_bit_and_grey_images_become_bgr_uint8(tmp_path):
    raw = np.tile(np.linspace(7000, 9000, 64, dtype=np.uint16), (48, 1))
    cv2.imwrite(str(tmp_path / "a.tif"), raw)
    cv2.imwrite(str(tmp_path / "b.png"), np.full((48, 64), 77, np.uint8))
    a, b = read_image(tmp_path / "a.tif"), read_image(tmp_path / "b.png")
    assert a.shape == b.shape == (48, 64, 3) and a.dtype == b.dtype == np.uint8
    assert a[0, 0, 0] == 0 and a[0, -1, 0] == 255 and 100 < a[0, 32, 0] < 155  # stretched, not >> 8
    assert (b == 77).all()


def test_flight_with_frames_stream(tmp_path):
    root = tmp_path / "flight"
    write_frames(root / "frames" / "thermal", 10)
    (root / "timestamps").mkdir()
    (root / "timestamps" / "thermal.csv").write_text("frame,t\n" + "".join(f"{i},{0.5 + i * 0.04}\n" for i in range(1, 11)))
    (root / "gt").mkdir()
    (root / "gt" / "thermal.txt").write_text("3,1,6,8,6,6,1,1,1\n")
    doc = {"streams": {"thermal": {"modality": "thermal", "frames": "frames/thermal",
                                   "timestamps": "timestamps/thermal.csv", "gt": "gt/thermal.txt",
                                   "annotated": [[2, 5]]}}}
    (root / "flight.yaml").write_text(yaml.safe_dump(doc))
    flight = load_flight(root)
    reader = StreamReader.from_spec(flight, "thermal")
    assert isinstance(reader, FrameFolderReader) and reader.frame_count == 10
    bundles = list(FlightSource(flight))
    assert [b.frame_ids["thermal"] for b in bundles] == list(range(1, 11))
    assert bundles[0].timestamp == pytest.approx(0.54)
    assert count_frames(flight, "thermal") == 10 and annotated_frames(flight, "thermal") == {2, 3, 4, 5}

    from pipeline.training.datasets import FrameStore

    store = FrameStore([root], every=1)
    assert len(store) == 4  # the annotated frames 2-5
    image, boxes, labels, modality = store.frame(1)
    assert image.shape == (48, 64) and modality == "thermal" and boxes.tolist() == [[6, 8, 12, 14]]

    # exactly one of video / frames; the folder must exist; timestamps must match the images
    doc["streams"]["thermal"]["video"] = "thermal.mp4"
    (root / "flight.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="streams.thermal.video: give exactly one of video"):
        load_flight(root)
    del doc["streams"]["thermal"]["video"]
    doc["streams"]["thermal"]["frames"] = "frames/nope"
    (root / "flight.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="streams.thermal.frames: folder frames/nope does not exist"):
        load_flight(root)
    doc["streams"]["thermal"]["frames"] = "frames/thermal"
    (root / "flight.yaml").write_text(yaml.safe_dump(doc))
    (root / "frames" / "thermal" / "f_11.png").write_bytes((root / "frames" / "thermal" / "f_1.png").read_bytes())
    with pytest.raises(InputError, match="holds 11 images but its timestamps file lists 10"):
        list(FlightSource(load_flight(root)))


def test_process_a_folder_of_frames_of_different_sizes(tmp_path, capsys):
    """Frames of three sizes in one stream: camera motion, detector, tracker and sinks go through; the
    annotated video keeps the first frame's size."""
    sizes = [(96, 64), (120, 80), (64, 96)]
    write_frames(tmp_path / "imgs", 24, size=lambda i: sizes[(i - 1) // 8], name="img{i}.jpg")
    out = tmp_path / "out"
    code = main(["process", str(tmp_path / "imgs"), "--out", str(out), "--modality", "thermal", "--fps", "12.5",
                 "--annotate", "--no-progress", "--config", "configs/motion.yaml"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_per_stream"] == {"thermal": 24} and summary["streams"] == {"thermal": "thermal"}
    cap = cv2.VideoCapture(str(out / "annotated" / "thermal.mp4"))
    assert (int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (24, 96, 64)
    cap.release()
    tracks = read_mot(out / "tracks" / "thermal.txt")
    assert len(tracks) > 0 and tracks[:, 0].max() <= 24


def test_bad_frame_folders_give_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    code = main(["process", str(tmp_path / "empty"), "--out", str(tmp_path / "o1"), "--no-progress"])
    one_line_error(capsys, code, str(tmp_path / "empty"), "nor a folder of images")

    write_frames(tmp_path / "bad", 6)
    (tmp_path / "bad" / "f_4.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code = main(["process", str(tmp_path / "bad"), "--out", str(tmp_path / "o2"), "--no-progress",
                 "--config", "configs/motion.yaml"])
    one_line_error(capsys, code, str(tmp_path / "bad" / "f_4.png"), "cannot read image")
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["frames"] == 3  # the frames before the corrupt one are kept

    with pytest.raises(InputError, match="holds no image"):
        parse_source(str(tmp_path / "empty"))


def test_live_plays_a_frame_folder_as_a_camera(tmp_path, capsys):
    write_frames(tmp_path / "cam", 8)
    (tmp_path / "cam" / "f_9.png").write_bytes(b"not an image")  # skipped with a warning, live goes on
    assert parse_source(str(tmp_path / "cam")).kind == "frames"
    cap = FolderCapture(tmp_path / "cam", fps=20.0, skip_unreadable=True)
    assert (cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == (9, 20, 64)
    g = LiveGrabber(str(tmp_path / "cam"), loop=False, fps=200.0)
    levels = []
    with g:
        while (got := g.read(timeout=2.0)) is not None:
            levels.append(int(got[0][40, 40, 0]))
    assert g.ended and g.frames == 8 and g.dropped + len(levels) == 8 and levels[-1] == 50

    code = main(["live", str(tmp_path / "cam"), "--fps", "100", "--max-frames", "5", "--modality", "thermal",
                 "--config", "configs/motion.yaml"])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert len(records) == 5 and all("thermal" in r["streams"] for r in records)
