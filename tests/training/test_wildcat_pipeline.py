"""WILDCAT in the pipeline: GPS-made frame labels, weak crops, `dronetrack train` with `model: wildcat`,
the detector's crops mapped back to the frame, and `dronetrack process` searching only the GPS search
boxes, with whole-frame fallback (counted in summary.json) when the turret's pose log is missing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from detectors.checkpoint import load_checkpoint
from pipeline.cli import main
from pipeline.training.datasets import FrameStore
from pipeline.io.flight import load_flight
from pipeline.models import WildcatDetector, load_model
from pipeline.stages import crop_window
from pipeline.training.train import _Matches
from pipeline.training.weak_data import WeakConfig, WeakCropDataset, WeakFrame, WeakFrames
from pipeline.training.weak_labels import agreement, presence_labels


@pytest.fixture(scope="module")
def tiny_wildcat(tmp_path_factory, small_flight):
    """A 4-step training of a tiny WILDCAT on GPS labels of the 3 s test flight (split: the flight twice)."""
    root = tmp_path_factory.mktemp("wildcat")
    (root / "cache" / "synth").mkdir(parents=True)
    for seed in (7, 8):
        (root / "cache" / "synth" / f"seed{seed}_3s_2d_1b").symlink_to(small_flight, target_is_directory=True)
    cfg = {"out": str(root / "run"), "export": str(root / "shipped.pt"), "threads": 1, "model": "wildcat",
           "wildcat": {"backbone": {"width": 0.125, "output_stride": 8}, "kmax": 3, "kmin": 3},
           "data": {"cache": str(root / "cache"), "svanstrom": None, "every": 10, "val_every": 30, "crop": 96,
                    "synthetic": {"seeds": [7, 8], "seconds": 3.0, "drones": 2, "birds": 1}},
           "optim": {"steps": 4, "batch_size": 4, "eval_every": 2, "warmup_steps": 1}}
    (root / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(root / "train.yaml")]) == 0
    return root


def gt_presence(flight, stream: str, n: int) -> np.ndarray:
    store = FrameStore([flight.root], streams=[stream], every=1)
    present = {r.frame for r in store.records if (r.labels == 1).any()}
    return np.array([f in present for f in range(1, n + 1)], np.int8)


def test_gps_labels_agree_with_ground_truth_presence(small_flight):
    flight = load_flight(small_flight)
    for stream in flight.streams:
        gps = presence_labels(flight, stream)
        share, known = agreement(gps, gt_presence(flight, stream, len(gps)))
        assert known == len(gps) and share >= 0.95, (stream, share, known)
    gps, gt = (WeakFrames([small_flight], WeakConfig(labels=lab), every=5) for lab in ("gps", "gt"))
    assert len(gps) == len(gt) > 20
    labels = np.array([[a.label, b.label] for a, b in zip(gps.frames, gt.frames)])
    assert 0.95 <= (labels[:, 0] == labels[:, 1]).mean() and 0 < labels[:, 0].sum() < len(labels)
    # a present frame's search boxes (from GPS and pose only) hold its ground-truth drones
    for f in gps.frames:
        if f.label and f.regions is not None:
            for x0, y0, x1, y1 in f.record.boxes[f.record.labels == 1]:
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                assert any(a <= cx <= c and b <= cy <= d for a, b, c, d in f.regions)


def test_crops_hold_or_avoid_the_search_box():
    image = np.zeros((200, 300), np.uint8)
    image[100:110, 250:262] = 255
    region = np.array([[245, 95, 267, 115]], np.float32)
    ds = WeakCropDataset(WeakFrames([], WeakConfig()), crop=64, scale=(0.9, 1.1))
    for seed in range(20):
        rng = np.random.default_rng(seed)
        assert ds._crop(image, region[0], None, rng).max() == 255
        away = ds._crop(image, None, region, rng)
        assert away is None or away.max() < 255
    whole = ds._crop(image, np.array([0, 0, 300, 200], np.float32), None, np.random.default_rng(0), fit=1.0)
    assert whole.shape == (64, 64) and whole.max() > 100  # the whole frame, downscaled


def test_clip_labelled_frames_are_sampled_whole_whatever_their_label():
    # A Svanstrom clip frame has no search box: a positive is the whole frame downscaled; a negative must
    # go through the same resampling, or the network learns the resampling instead of drones.
    image = np.full((200, 300), 40, np.uint8)
    image[:4, :4] = image[-4:, -4:] = 255  # opposite corners: both inside the crop only when it is whole

    class Record:
        def image(self):
            return image

    frames = WeakFrames([], WeakConfig())
    ds = WeakCropDataset(frames, crop=64, scale=(0.9, 1.1))
    for label in (0, 1):
        frames.frames = [WeakFrame(Record(), label, None, whole=True)] * 8
        for i in range(8):
            crop = ds[i][0][0].numpy()
            assert crop.shape == (64, 64) and ds[i][1].item() == label
            assert bright_span(crop) > 40  # both corners: the whole frame's width, downscaled
    frames.frames = [WeakFrame(Record(), 0, None)] * 8  # a negative frame of a GPS flight: a native crop
    assert all(bright_span(ds[i][0][0].numpy()) < 40 for i in range(8))


def bright_span(crop: np.ndarray) -> int:
    cols = np.argwhere(crop > 0.5)[:, 1]
    return int(cols.max() - cols.min()) if len(cols) else 0


def test_point_ap_ranks_peaks_inside_grown_boxes():
    m = _Matches()
    m.add(0, np.array([[10, 10, 14, 12]], np.float32), np.zeros((2, 4)), np.array([0.9, 0.6]),
          np.array([[12, 11], [13, 11]]))  # the second peak on an already matched drone: false positive
    m.add(1, np.array([[50, 50, 54, 52]], np.float32), np.zeros((2, 4)), np.array([0.8, 0.7]),
          np.array([[100, 100], [60, 51]]))  # 6 px right of the box: right with a tolerance of 8
    # ranked: TP, FP, TP(0.7), FP(0.6): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    assert m.point_ap(8.0) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert m.point_ap(0.0) == pytest.approx(0.5)
    assert m.ap50() == 0.0  # empty boxes


def test_training_writes_a_wildcat_checkpoint(tiny_wildcat):
    last = load_checkpoint(tiny_wildcat / "run" / "last.pt")
    assert last["kind"] == "wildcat" and last["step"] == 4 and last["classes"] == ["drone"]
    assert {"pointing_rgb", "ap50_thermal", "accuracy", "pointing", "ap50", "score"} <= set(last["val"])
    assert last["config"]["backbone"]["weights"] is None and last["config"]["kmax"] == 3
    assert "12 with a drone, 5 without; labels: gps" in (tiny_wildcat / "run" / "log.txt").read_text()
    model, _ = load_model(tiny_wildcat / "shipped.pt", "wildcat")
    assert model.stride == 8 and (tiny_wildcat / "shipped.pt").stat().st_size < 1e6


def test_crops_map_back_to_the_frame(tiny_wildcat):
    torch.manual_seed(0)
    det = WildcatDetector(load_model(tiny_wildcat / "shipped.pt")[0], torch.device("cpu"))
    image = np.random.default_rng(0).integers(0, 255, (256, 320, 3), np.uint8)
    focus = (200.0, 100.0, 230.0, 120.0)
    window = crop_window(focus, (320, 256), 96)
    assert window == (167, 62, 263, 158)
    assert crop_window((300, 240, 319, 255), (320, 256), 96) == (224, 160, 320, 256)  # shifted inside
    assert crop_window((0, 0, 10, 10), (320, 64), 96) == (0, 0, 96, 64)  # cut to the image
    crop, full = det.detect_crops([(image, window, focus), (image, window, None)])
    assert len(crop) == len(full) == 1 and crop.extras["point"].shape == (1, 2)
    (x, y), (x0, y0, x1, y1) = crop.extras["point"][0], crop.xyxy[0]
    assert 200 - 4 <= x <= 230 + 4 and 100 - 4 <= y <= 120 + 4  # within half a cell of the focus box
    assert 167 <= x0 < x1 <= 263 and 62 <= y0 < y1 <= 158  # in frame pixels, inside the window
    (alone,) = det.detect_many([image[62:158, 167:263]])  # the same crop as an image: same map, shifted
    np.testing.assert_allclose(full.extras["point"], alone.extras["point"] + [167, 62], atol=1e-4)


def run_process(tmp_path: Path, flight: Path, checkpoint: Path, search: str, name: str) -> dict:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({"detector": {"kind": "wildcat", "checkpoint": str(checkpoint),
                                                "search": search, "device": "cpu"}}))
    assert main(["process", str(flight), "--out", str(tmp_path / name), "--config", str(cfg), "--no-progress",
                 "--max-frames", "20"]) == 0
    return json.loads((tmp_path / name / "summary.json").read_text())


def test_process_searches_gps_crops_and_falls_back_without_a_pose_log(tmp_path, tiny_wildcat, small_flight):
    shipped = tiny_wildcat / "shipped.pt"
    s = run_process(tmp_path, small_flight, shipped, "gps", "gps")["search"]
    for stream, c in s.items():
        assert c["full_frame_fallbacks"] == 0 and c["narrowed"] + c["no_target"] == c["frames"] > 0
        assert c["crops"] >= c["narrowed"] > 0 and 0 < c["searched_fraction"] < 0.2, (stream, c)
    assert "search" not in run_process(tmp_path, small_flight, shipped, "full", "full")
    # the same flight without the turret's pose log: GPS alone cannot place the drone in the image
    copy = tmp_path / "no_pose"
    shutil.copytree(small_flight, copy, symlinks=True, ignore=shutil.ignore_patterns("camera.csv"))
    spec = yaml.safe_load((copy / "flight.yaml").read_text())
    del spec["telemetry"]["camera"]
    (copy / "flight.yaml").write_text(yaml.safe_dump(spec))
    summary = run_process(tmp_path, copy, shipped, "gps", "no_pose")
    for stream, c in summary["search"].items():
        assert c["full_frame_fallbacks"] == c["frames"] == summary["frames_per_stream"][stream]
        assert c["crops"] == 0 and c["searched_fraction"] == 1.0


def test_narrowed_search_needs_wildcat(tmp_path, small_flight, capsys):
    assert main(["process", str(small_flight), "--out", str(tmp_path), "--no-progress", "detector.search=gps"]) == 2
    assert "detector.search: narrowed search (gps) needs a wildcat detector" in capsys.readouterr().err
