"""Training samples: frame store, crops and augmentation, flips, determinism, eval mode, clip split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_svanstrom import HEADER, make_clip, square

from pipeline.training.datasets import DetectionDataset, FrameStore, collate, hflip, split_by_clip
from pipeline.io.flight import load_flight
from pipeline.io.motio import read_mot
from pipeline.io.svanstrom import import_svanstrom


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Converted clips: a thermal drone (96x80, 12 frames) and a visible bird labelled in frames 2-4, 7-8."""
    src = tmp_path_factory.mktemp("src")
    rows = [make_clip(src, "IR_DRONE_001", 12), make_clip(src, "V_BIRD_001", 10, labelled=[2, 3, 4, 7, 8])]
    (src / "index.csv").write_text(HEADER + "".join(rows))
    return import_svanstrom(src, tmp_path_factory.mktemp("out"))


def test_store_keeps_every_nth_annotated_frame_with_boxes(clips):
    store = FrameStore(clips, every=3)
    kept = [(r.flight, r.frame) for r in store.records]
    assert kept == [("IR_DRONE_001", f) for f in (1, 4, 7, 10)] + [("V_BIRD_001", 4), ("V_BIRD_001", 7)]
    image, boxes, labels, modality = store.frame(1)
    assert image.shape == (80, 96) and image.dtype == np.uint8 and modality == "thermal"
    x, y, w, h = square(4)
    np.testing.assert_allclose(boxes, [[x + 0.25, y, x + w + 0.25, y + h]])
    assert labels.tolist() == [1]
    image, _, labels, modality = store.frame(4)
    assert image.shape == (96, 128, 3) and modality == "rgb" and labels.tolist() == [2]
    assert abs(int(image[y:y + h, x + 1:x + w].mean()) - 235) < 20 and abs(int(image[60:, 60:].mean()) - 50) < 5
    rare = FrameStore(clips, every=3, keep_labels=[2])  # every bird frame
    assert [r.frame for r in rare.records if r.flight == "V_BIRD_001"] == [2, 3, 4, 7, 8]
    assert FrameStore(clips, streams=["rgb"], every=1).nbytes == 5 * (96 * 128 * 3 + 16 + 8)
    jpeg = FrameStore(clips, every=3, jpeg=95)
    assert jpeg.nbytes < store.nbytes / 3
    assert np.abs(jpeg.frame(4)[0].astype(int) - store.frame(4)[0]).mean() < 3


def test_synthetic_flight_store(small_flight):
    store = FrameStore([small_flight], streams=["thermal"], every=10)
    gt = read_mot(load_flight(small_flight).gt_path("thermal"))
    assert [r.frame for r in store.records] == list(range(1, 76, 10))  # 3 s at 25 fps
    assert {r.modality for r in store.records} == {"thermal"} and store.frame(0)[0].shape == (256, 320)
    n_boxes = sum(len(r.boxes) for r in store.records)
    assert n_boxes == np.isin(gt[:, 0], range(1, 76, 10)).sum() > 0
    assert all(set(r.labels.tolist()) <= {1} for r in store.records)
    for r in store.records:
        assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2] <= 320).all() and (r.boxes[:, 3] <= 256).all()


@pytest.mark.parametrize("crop", [64, 128])  # 128: larger than the thermal frames, so padded
def test_crops_contain_their_box_on_the_bright_square(clips, crop):
    ds = DetectionDataset(FrameStore(clips, every=1), crop=crop, p_object=1.0, seed=3)
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, crop, crop) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        assert target["boxes"].shape == (1, 4) and target["labels"].dtype == torch.int64
        x0, y0, x1, y1 = target["boxes"][0].tolist()
        assert 0 <= x0 < x1 <= crop and 0 <= y0 < y1 <= crop and x1 - x0 >= 2
        inner = image[0, round(y0) + 1:round(y1) - 1, round(x0) + 1:round(x1) - 1]
        assert inner.mean() > image[0].mean() + 0.2, f"sample {i}: box not on the square"


def test_random_crops_and_negatives(clips):
    ds = DetectionDataset(FrameStore(clips, streams=["rgb"], every=1), crop=48, p_object=0.0, seed=1)
    counts = [len(ds[i][1]["boxes"]) for i in range(len(ds))]
    ds.set_epoch(1)
    counts += [len(ds[i][1]["boxes"]) for i in range(len(ds))]
    assert 0 in counts and 1 in counts  # a random 48 px crop of a 128 x 96 frame sometimes misses the square


def test_hflip_moves_boxes_with_the_pixels():
    image = np.zeros((10, 20), np.uint8)
    image[2:5, 3:7] = 255
    flipped, boxes = hflip(image, np.array([[3, 2, 7, 5]], np.float32))
    np.testing.assert_array_equal(boxes, [[13, 2, 17, 5]])
    assert flipped[2:5, 13:17].min() == 255 and flipped.sum() == image.sum()


def test_deterministic_for_a_seed(clips):
    store = FrameStore(clips, every=2)
    a, b = DetectionDataset(store, crop=64, seed=5), DetectionDataset(store, crop=64, seed=5)
    for i in range(len(store)):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1]["boxes"], b[i][1]["boxes"])
    b.set_epoch(1)
    assert not torch.equal(a[0][0], b[0][0])
    assert not torch.equal(a[0][0], DetectionDataset(store, crop=64, seed=6)[0][0])


def test_eval_mode_and_collate(clips):
    store = FrameStore(clips, every=3)
    ds = DetectionDataset(store, mode="eval")
    images, targets = collate([ds[0], ds[len(ds) - 1]])
    assert images[0].shape == (3, 80, 96) and images[1].shape == (3, 96, 128)
    assert torch.equal(images[0][0], images[0][2])  # grey replicated
    np.testing.assert_allclose(images[1].permute(1, 2, 0).numpy() * 255, store.frame(len(ds) - 1)[0], atol=1e-3)
    np.testing.assert_allclose(targets[0]["boxes"].numpy(), store.frame(0)[1])


def test_split_by_clip_is_stratified_disjoint_and_deterministic(tmp_path, small_flight):
    src = tmp_path / "src"
    names = [f"{s}_{c}_{i:03d}" for s in ("IR", "V") for c in ("DRONE", "BIRD") for i in range(1, 5)]
    rows = [make_clip(src, n, 2) for n in names] + [make_clip(src, "IR_DRONE_099", 2, labelled=[])]
    (src / "index.csv").write_text(HEADER + "".join(rows))
    flights = import_svanstrom(src, tmp_path / "out") + [small_flight]
    train, val = split_by_clip(flights, 0.25, seed=0)
    assert not set(train) & set(val) and sorted(train + val) == sorted(flights)
    assert sorted(p.name[:-4] for p in val) == ["IR_BIRD", "IR_DRONE", "V_BIRD", "V_DRONE"]  # one per stratum
    assert small_flight in train  # the only synthetic flight: no stratum of one goes to validation
    assert tmp_path / "out" / "IR_DRONE_099" in train  # no labels, no frames: never validation
    assert split_by_clip(flights, 0.25, seed=0) == (train, val)
    assert any(split_by_clip(flights, 0.25, seed=s)[1] != val for s in range(1, 4))
    assert len(split_by_clip(flights, 0.5, seed=0)[1]) == 8
