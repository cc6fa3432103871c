"""The pyramid centre-point detector: multi-class centre targets and decoding, the model's interface,
per-image normalisation, learning a tiny batch, a user's weight file, tiled inference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detectors.centre import centre_loss, centre_targets, decode_centres
from detectors.inference import TorchDetector
from detectors.pyramid import PyramidConfig, PyramidDetector
from detectors.tiling import TilingConfig, needs_tiling, tile_origins, tiled_detect

SMALL = dict(widths=[4, 8, 8, 16, 16], blocks=[0, 1, 1, 1, 0], fpn=8, head=8)


# ------------------------------------------------------------------------------------------ centre targets
def test_multiclass_targets_put_each_box_in_its_class_channel():
    boxes = [torch.tensor([[10.0, 20.0, 14.0, 24.0], [40.0, 8.0, 48.0, 16.0]])]
    heat, reg, mask = centre_targets(boxes, (16, 16), 4, [torch.tensor([1, 3])], num_classes=4)
    assert heat.shape == (1, 4, 16, 16)
    assert heat[0, 0, 5, 3] == 1.0 and heat[0, 2, 3, 11] == 1.0  # centres (12, 22) and (44, 12) / 4
    assert heat[0, 1].max() == 0 and heat[0, 3].max() == 0
    assert int(mask.sum()) == 2
    assert reg[0, :, 3, 11].tolist() == pytest.approx([0.0, 0.0, math.log(2.0), math.log(2.0)])


def test_labels_outside_the_classes_are_skipped():
    heat, _, mask = centre_targets([torch.tensor([[0.0, 0.0, 8.0, 8.0]])], (4, 4), 4, [torch.tensor([5])], 4)
    assert heat.max() == 0 and not mask.any()


def test_decode_round_trip_keeps_labels_and_boxes():
    boxes = [torch.tensor([[10.0, 20.0, 16.0, 26.0], [60.0, 30.0, 80.0, 44.0]])]
    labels = [torch.tensor([2, 1])]
    heat, reg, _ = centre_targets(boxes, (16, 24), 4, labels, num_classes=3)
    (b, s, lab), = decode_centres({"heat": heat, "reg": reg}, min_score=0.5)
    order = torch.argsort(b[:, 0])
    assert lab[order].tolist() == [2, 1]
    assert torch.allclose(b[order], boxes[0], atol=1e-4)
    assert s.tolist() == [1.0, 1.0]


def test_loss_is_small_for_the_targets_and_large_for_a_blank_map():
    boxes = [torch.tensor([[10.0, 20.0, 16.0, 26.0]])]
    heat, reg, mask = centre_targets(boxes, (16, 16), 4, [torch.tensor([1])], 2)
    good = centre_loss({"heat": heat.clamp(1e-4, 1 - 1e-4), "reg": reg}, heat, reg, mask)
    blank = centre_loss({"heat": torch.full_like(heat, 0.01), "reg": torch.zeros_like(reg)}, heat, reg, mask)
    assert good["heat"] < 0.05 and good["box"] == 0
    assert blank["heat"] > 4 and blank["box"] > 0.5


# ------------------------------------------------------------------------------------------------ model
def test_model_outputs_boxes_for_any_input_size():
    torch.manual_seed(0)
    m = PyramidDetector(PyramidConfig(**SMALL)).eval()
    for h, w in [(37, 51), (256, 320), (64, 64)]:
        out = m.maps(torch.rand(2, 3, h, w))
        assert out["heat"].shape == (2, 4, math.ceil(h / 4), math.ceil(w / 4))
        res = m(torch.rand(1, 3, h, w))
        assert set(res[0]) == {"boxes", "scores", "labels"}
        b = res[0]["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()


def test_per_image_normalisation_makes_gain_and_offset_irrelevant():
    torch.manual_seed(0)
    m = PyramidDetector(PyramidConfig(**SMALL)).eval()
    x = torch.rand(1, 3, 64, 64) * 0.3 + 0.2
    a, b = m.maps(x), m.maps(x * 1.7 + 0.1)
    assert torch.allclose(a["heat"], b["heat"], atol=1e-4)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="widths"):
        PyramidConfig(widths=[8, 8]).validate()
    with pytest.raises(ValueError, match="classes"):
        PyramidConfig(classes=["bird", "drone"]).validate()


def _square_batch(n: int, rng: np.random.Generator):
    """Grey frames with one bright square (the drone) of 4-20 px and, in half of them, a dark blob (label 2)."""
    images, targets = [], []
    for _ in range(n):
        img = np.full((64, 64), 0.3, np.float32) + rng.normal(0, 0.02, (64, 64)).astype(np.float32)
        s = int(rng.integers(4, 20))
        x, y = (int(v) for v in rng.integers(2, 62 - s, 2))
        img[y:y + s, x:x + s] = 0.9
        boxes, labels = [[x, y, x + s, y + s]], [1]
        images.append(torch.from_numpy(img).expand(3, 64, 64).clone())
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})
    return images, targets


def test_learns_a_tiny_batch_to_find_squares_of_every_size():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    m = PyramidDetector(PyramidConfig(classes=["drone"], **SMALL))
    images, targets = _square_batch(8, rng)
    opt = torch.optim.Adam(m.parameters(), 0.01)
    first = None
    for step in range(100):
        m.train()
        loss = sum(m(images, targets).values())
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.25 * first
    m.eval()
    hits = 0
    with torch.no_grad():
        for img, t, res in zip(images, targets, m(torch.stack(images))):
            if len(res["boxes"]):
                from torchvision.ops import box_iou
                hits += int(box_iou(res["boxes"][:1], t["boxes"])[0, 0] > 0.5)
    assert hits >= 6


def test_a_users_weight_file_loads(tmp_path):
    torch.manual_seed(1)
    src = PyramidDetector(PyramidConfig(**SMALL))
    path = tmp_path / "mine.pt"
    torch.save(src.state_dict(), path)
    m = PyramidDetector(PyramidConfig(weights=str(path), **SMALL))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), m.state_dict().values()))
    torch.save({"stages.0.0.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        PyramidDetector(PyramidConfig(weights=str(tmp_path / "bad.pt"), **SMALL))


# ------------------------------------------------------------------------------------------------ tiling
def test_tile_origins_cover_the_axis_with_the_overlap():
    assert tile_origins(500, 640, 0.2) == [0]
    o = tile_origins(1920, 640, 0.2)
    assert o[0] == 0 and o[-1] == 1280
    assert all(b - a <= 512 for a, b in zip(o, o[1:]))
    o = tile_origins(1080, 640, 0.2)
    assert o == [0, 440]


def test_needs_tiling_only_above_the_threshold():
    cfg = TilingConfig(above=1024)
    assert not needs_tiling(512, 640, cfg) and not needs_tiling(1024, 768, cfg)
    assert needs_tiling(1080, 1920, cfg) and not needs_tiling(1080, 1920, TilingConfig(enabled=False))


class BlobModel:
    """A stand-in detector: every pixel above 0.5 is a drone; one box per connected bright region, in the
    coordinates of the image it was given (so a region cut by a tile border gives a cut box)."""

    def __init__(self):
        self.sizes = []

    def __call__(self, batch):
        import cv2

        self.sizes.append(tuple(batch.shape))
        out = []
        for img in batch:
            mask = (img[0].numpy() > 0.5).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:]]
            out.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "scores": torch.full((len(boxes),), 0.9), "labels": torch.ones(len(boxes), dtype=torch.long)})
        return out


def test_tiled_detect_finds_a_tiny_and_a_large_drone_once_each():
    img = torch.zeros(3, 1080, 1920)
    img[:, 500:503, 630:633] = 1.0   # 3 px drone across the border of the first two tile columns (512..640)
    img[:, 100:400, 900:1200] = 1.0  # 300 px drone: no tile holds it whole; the shrunk frame does
    model = BlobModel()
    res = tiled_detect(model, img, TilingConfig())
    boxes = res["boxes"].round().tolist()
    assert [630, 500, 633, 503] in boxes
    assert len(boxes) == 2
    big = [b for b in boxes if b[2] - b[0] > 100][0]
    assert big == pytest.approx([900, 100, 1200, 400], abs=2)
    assert any(s[-2:] == (640, 640) for s in model.sizes) and any(s[-1] == 1024 for s in model.sizes)


def test_torch_detector_tiles_large_frames_only():
    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def forward(self, x):
            self.shapes.append(tuple(x.shape[-2:]))
            return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                    for _ in range(len(x))]

    rec = Recorder()
    det = TorchDetector(rec, torch.device("cpu"), tiling=TilingConfig(above=1024, tile=640))
    det.detect_many([np.zeros((512, 640, 3), np.uint8)])
    assert rec.shapes == [(512, 640)]
    rec.shapes.clear()
    det.detect_many([np.zeros((1080, 1920, 3), np.uint8)])
    assert (640, 640) in rec.shapes and (576, 1024) in rec.shapes
