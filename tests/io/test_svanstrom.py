"""Svanstrom clips -> flight folders: layout, ground truth, annotated runs, dropped rows, bad input."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.evaluation.evaluate import annotated_frames, evaluate_files
from pipeline.io.flight import load_flight
from pipeline.io.motio import read_mot
from pipeline.io.svanstrom import clip_info, import_svanstrom

HEADER = "video,sensor,label,frames,labelled_frames,width,height,fps\n"
SIZES = {"ir": (96, 80), "v": (128, 96)}


def square(i: int) -> tuple[int, int, int, int]:
    """Box (x, y, w, h) of the bright square drawn in frame i (1-based)."""
    return 10 + 3 * i, 20 + i, 8, 6


def make_clip(src: Path, name: str, frames: int, labelled: list[int] | None = None, extra: str = "") -> str:
    """A clip like the dataset's: a bright square on a dark background, labelled in `labelled` frames
    (default all); returns its index.csv row."""
    sensor, label = name.split("_")[0].lower(), name.split("_")[1].lower()
    folder = src / ("ir" if sensor == "ir" else "visible")
    folder.mkdir(parents=True, exist_ok=True)
    w, h = SIZES[sensor]
    out = cv2.VideoWriter(str(folder / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    for i in range(1, frames + 1):
        img = np.full((h, w, 3), 50, np.uint8)
        x, y, bw, bh = square(i)
        img[y:y + bh, x:x + bw] = 235
        out.write(img)
    out.release()
    labelled = list(range(1, frames + 1)) if labelled is None else labelled
    rows = "".join(f"{i},{square(i)[0]}.25,{square(i)[1]}.00,{square(i)[2]},{square(i)[3]},{label}\n" for i in labelled)
    (folder / f"{name}.csv").write_text("frame,x,y,w,h,label\n" + rows + extra)
    return f"{folder.name}/{name}.mp4,{sensor},{label},{frames},{len(labelled)},{w},{h},30\n"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    rows = [make_clip(src, "IR_DRONE_001", 12, extra="13,1,1,5,5,drone\n"),
            make_clip(src, "V_BIRD_001", 10, labelled=[2, 3, 4, 7, 8]),
            make_clip(src, "IR_DRONE_002", 6, labelled=[])]
    (src / "index.csv").write_text(HEADER + "".join(rows))
    return src


def test_converted_flights_load_with_ground_truth_and_annotated_runs(source: Path, tmp_path: Path):
    out = tmp_path / "out"
    folders = import_svanstrom(source, out)
    assert [f.name for f in folders] == ["IR_DRONE_001", "V_BIRD_001", "IR_DRONE_002"]
    ir, vis, empty = (load_flight(f) for f in folders)
    assert list(ir.streams) == ["thermal"] and ir.streams["thermal"].modality == "thermal"
    assert list(vis.streams) == ["rgb"] and vis.streams["rgb"].modality == "rgb"
    assert (ir.streams["thermal"].fps, ir.streams["thermal"].width, ir.streams["thermal"].height) == (30.0, 96, 80)
    assert ir.video_path("thermal").is_symlink()
    gt = read_mot(vis.gt_path("rgb"))
    assert gt[:, 0].tolist() == [2, 3, 4, 7, 8]
    np.testing.assert_allclose(gt[0, 1:9], [1, 10 + 6 + 0.25, 22, 8, 6, 1, 2, 1])  # id 1, box, flag 1, bird = 2
    assert vis.streams["rgb"].annotated == [(2, 4), (7, 8)]
    assert sorted(annotated_frames(vis, "rgb")) == [2, 3, 4, 7, 8]
    assert empty.streams["thermal"].annotated == [] and read_mot(empty.gt_path("thermal")).shape == (0, 10)
    info = clip_info(ir)
    assert (info["sensor"], info["label"], info["frames"], info["labelled_frames"]) == ("ir", "drone", 12, 12)
    assert info["dropped"] == ["IR_DRONE_001.csv:14: frame 13 outside the video's frames 1..12"]
    assert clip_info(vis)["dropped"] == [] and clip_info(vis)["label"] == "bird"


def test_copy_and_clip_selection(source: Path, tmp_path: Path):
    [folder] = import_svanstrom(source, tmp_path / "out", clips=["V_BIRD_001"], copy=True)
    video = load_flight(folder).video_path("rgb")
    assert not video.is_symlink() and video.read_bytes() == (source / "visible" / "V_BIRD_001.mp4").read_bytes()
    with pytest.raises(InputError, match="no clip named V_NOPE_001"):
        import_svanstrom(source, tmp_path / "out", clips=["V_NOPE_001"])


@pytest.mark.parametrize("edit, where, message", [
    (lambda s: (s / "index.csv").unlink(), "index.csv", "no index.csv"),
    (lambda s: (s / "ir" / "IR_DRONE_002.mp4").unlink(), "index.csv:4", "does not exist"),
    (lambda s: (s / "index.csv").write_text((s / "index.csv").read_text() + "ir/x.mp4,ir,drone\n"),
     "index.csv:5", "expected 8 values"),
    (lambda s: (s / "index.csv").write_text((s / "index.csv").read_text().replace(",12,12,", ",11,12,")),
     "index.csv:2", "index says 11 frames"),
    (lambda s: (s / "index.csv").write_text((s / "index.csv").read_text().replace("v,bird", "v,kite")),
     "index.csv:3", "bad row"),
    (lambda s: (s / "visible" / "V_BIRD_001.csv").write_text("frame,x,y,w,h,label\n2,1,1,4,4,bird\n3,1,x,4,4,bird\n"),
     "V_BIRD_001.csv:3", "bad value"),
    (lambda s: (s / "visible" / "V_BIRD_001.csv").write_text("frame,x,y,w,h,label\n2,1,1,4,4,kite\n"),
     "V_BIRD_001.csv:2", "unknown label"),
    (lambda s: (s / "visible" / "V_BIRD_001.csv").unlink(), "V_BIRD_001.csv", "no label file"),
])
def test_bad_input_names_file_and_line(source: Path, tmp_path: Path, edit, where, message):
    edit(source)
    with pytest.raises(InputError, match=message) as e:
        import_svanstrom(source, tmp_path / "out")
    assert f"{where}: " in str(e.value)


def test_real_clips_match_source_and_evaluate(shared_data: Path, tmp_path: Path):
    src = shared_data / "svanstrom"
    names = ["IR_DRONE_067", "V_AIRPLANE_002", "IR_BIRD_001"]
    for folder in import_svanstrom(src, tmp_path, clips=names):
        flight = load_flight(folder)
        info = clip_info(flight)
        [stream] = flight.streams
        with open(src / ("ir" if info["sensor"] == "ir" else "visible") / f"{folder.name}.csv") as f:
            source_rows = list(csv.DictReader(f))
        gt = read_mot(flight.gt_path(stream))
        assert len(gt) == len(source_rows) == info["labelled_frames"] and info["dropped"] == []
        np.testing.assert_allclose(gt[:, [0, 2, 3, 4, 5]], [[float(r[k]) for k in ("frame", "x", "y", "w", "h")]
                                                            for r in source_rows], atol=0.006)
        assert set(gt[:, 7]) == {("drone", "bird", "airplane", "helicopter").index(info["label"]) + 1}
        frames = annotated_frames(flight, stream)
        assert frames == set(gt[:, 0].astype(int))
        if info["label"] == "drone":  # the ground truth scored as tracks against itself is perfect
            assert info["frames"] == 306 and max(frames) == 304  # the last two frames are not labelled
            m = evaluate_files(flight.gt_path(stream), flight.gt_path(stream), frames=frames)
            assert m["mota"] == pytest.approx(1.0) and m["num_objects"] == 304
        if info["label"] == "bird":
            assert flight.streams[stream].annotated == [(2, 179), (254, 310)]
