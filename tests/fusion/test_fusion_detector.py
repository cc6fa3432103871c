"""Fusion detector: config validation, output shapes per operator, exact masking of a missing modality,
the flow stream, centre targets on hand-computed boxes, decode round trip, learning on a tiny batch."""
from __future__ import annotations

import math

import pytest
import torch

from fusion.detector import (FusionDetector, FusionDetectorConfig, centre_loss, centre_targets, decode)
from fusion.multitask import DEFAULT_TASKS

torch.set_num_threads(1)

FUSED = ["early", "concat", "mutan", "gated", "late"]
H, W = 30, 42  # not multiples of 8: the forward pads to 32 x 48 and crops back to ceil(H/4) x ceil(W/4)
OH, OW = math.ceil(H / 4), math.ceil(W / 4)  # 8, 11


def _model(op: str = "mutan", modalities=("rgb", "thermal"), seed: int = 0, **kw) -> FusionDetector:
    torch.manual_seed(seed)
    cfg = FusionDetectorConfig(modalities=list(modalities), operator=op, width=4, rank=2, mutan_dim=6,
                               dropout_p=kw.pop("dropout_p", 0.0), **kw)
    return FusionDetector(cfg)


def _images(b: int = 3, h: int = H, w: int = W, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 3, h, w, generator=g), torch.rand(b, 1, h, w, generator=g)]


def _fill_absent(images, present, how: str, seed: int = 5) -> list[torch.Tensor]:
    """Copies of images whose absent entries (present[b, m] False) hold zeros, random values or NaN."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for m, t in enumerate(images):
        t = t.clone()
        for b in range(t.shape[0]):
            if not present[b, m]:
                t[b] = {"zeros": torch.zeros_like(t[b]), "random": 50 * torch.randn(t[b].shape, generator=g),
                        "nan": torch.full_like(t[b], float("nan"))}[how]
        out.append(t)
    return out


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw, key", [
    (dict(modalities=["rgb"], operator="mutan"), "detector.operator"),
    (dict(modalities=["rgb", "thermal"], operator="none"), "detector.operator"),
    (dict(operator="sum"), "detector.operator"),
    (dict(modalities=["rgb", "lidar"]), "detector.modalities"),
    (dict(modalities=["rgb", "rgb"]), "detector.modalities"),
    (dict(modalities=[], operator="none"), "detector.modalities"),
    (dict(width=3), "detector.width"),
    (dict(dropout_p=1.0), "detector.dropout_p"),
    (dict(dropout_p=-0.1), "detector.dropout_p"),
    (dict(flow=-1), "detector.flow"),
    (dict(aux_weight=-1.0), "detector.aux_weight"),
    (dict(classes=["drone", "bird"]), "detector.classes"),
    (dict(classes=["bird"]), "detector.classes"),
    (dict(max_detections=0), "detector.max_detections"),
    (dict(nms_iou=0.0), "detector.nms_iou"),
    (dict(aux_tasks={"bad-name": 1}), "detector.aux_tasks.tasks.bad-name"),
    (dict(aux_tasks={"range": 0}), "detector.aux_tasks.tasks.range"),
])
def test_config_validate_names_key(kw, key):
    with pytest.raises(ValueError) as err:
        FusionDetectorConfig(**kw).validate("detector.")
    assert str(err.value).startswith(key + ":"), str(err.value)


def test_config_valid_ones_pass_and_constructor_validates():
    FusionDetectorConfig().validate("detector.")
    FusionDetectorConfig(modalities=["thermal"], operator="none", flow=2, rock=True).validate()
    assert FusionDetectorConfig().channels == [3, 1]
    assert FusionDetectorConfig(modalities=["thermal", "rgb"]).channels == [1, 3]
    with pytest.raises(ValueError, match="^operator:"):
        FusionDetector(FusionDetectorConfig(modalities=["rgb"], operator="late"))


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("rock", [False, True])
@pytest.mark.parametrize("op", FUSED + ["none"])
def test_output_shapes(op, rock):
    mods = ("thermal",) if op == "none" else ("rgb", "thermal")
    model = _model(op, mods, rock=rock).eval()
    imgs = _images(2)
    imgs = imgs[1:] if op == "none" else imgs
    present = torch.ones(2, len(mods), dtype=torch.bool)
    with torch.no_grad():
        out = model(imgs, present)
    assert out["heat"].shape == (2, 1, OH, OW)
    assert out["reg"].shape == (2, 4, OH, OW)
    assert out["heat"].dtype == torch.float32 and out["reg"].dtype == torch.float32
    assert bool(((out["heat"] >= 0) & (out["heat"] <= 1)).all()) and torch.isfinite(out["reg"]).all()
    if rock:
        assert set(out["aux"]) == set(DEFAULT_TASKS)
        for task, d in DEFAULT_TASKS.items():
            assert out["aux"][task].shape == (2, d)
    else:
        assert "aux" not in out


@pytest.mark.parametrize("h, w", [(32, 32), (40, 48), (33, 47), (4, 4)])
def test_output_size_is_ceil_of_quarter(h, w):
    model = _model("concat").eval()
    with torch.no_grad():
        out = model(_images(1, h, w), torch.ones(1, 2, dtype=torch.bool))
    assert out["heat"].shape[-2:] == (math.ceil(h / 4), math.ceil(w / 4))
    assert out["reg"].shape[-2:] == (math.ceil(h / 4), math.ceil(w / 4))


def test_forward_rejects_wrong_entry_count_and_all_none():
    model = _model("mutan").eval()
    with pytest.raises(ValueError, match="images"):
        model(_images(1)[:1], torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="images"):
        model([None, None], torch.zeros(1, 2, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- missing modality


@pytest.mark.parametrize("op", FUSED)
def test_absent_values_never_matter_and_samples_are_independent(op):
    model = _model(op).eval()
    present = torch.tensor([[True, True], [True, False], [False, True]])
    base = _images(3)
    with torch.no_grad():
        outs = [model(_fill_absent(base, present, how), present) for how in ("zeros", "random", "nan")]
    for out in outs:
        assert torch.isfinite(out["heat"]).all() and torch.isfinite(out["reg"]).all()
        assert torch.equal(out["heat"], outs[0]["heat"]) and torch.equal(out["reg"], outs[0]["reg"])

    # Changing sample 1's present RGB changes sample 1 only (eval: no cross-sample coupling).
    other = _fill_absent(base, present, "zeros")
    other[0][1] = torch.rand(3, H, W, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        changed = model(other, present)
    assert not torch.equal(changed["heat"][1], outs[0]["heat"][1])
    for b in (0, 2):
        assert torch.equal(changed["heat"][b], outs[0]["heat"][b])
        assert torch.equal(changed["reg"][b], outs[0]["reg"][b])


@pytest.mark.parametrize("op", FUSED)
@pytest.mark.parametrize("missing", [0, 1])
def test_none_equals_tensor_marked_absent(op, missing):
    model = _model(op).eval()
    present = torch.ones(2, 2, dtype=torch.bool)
    present[:, missing] = False
    imgs = _images(2)
    imgs[missing][0] = float("nan")  # garbage in a tensor marked absent
    with_none = list(imgs)
    with_none[missing] = None
    with torch.no_grad():
        a = model(imgs, present)
        b = model(with_none, present)
    assert torch.isfinite(a["heat"]).all() and torch.isfinite(a["reg"]).all()
    assert torch.equal(a["heat"], b["heat"]) and torch.equal(a["reg"], b["reg"])
    assert a["heat"].shape == (2, 1, OH, OW)


@pytest.mark.parametrize("op", FUSED)
def test_train_mode_nan_in_absent_modality_keeps_loss_and_gradients_finite(op):
    model = _model(op).train()
    present = torch.tensor([[True, True], [True, False], [False, True]])
    imgs = _fill_absent(_images(3), present, "nan")
    out = model(imgs, present)
    heat_t, reg_t, mask = centre_targets([torch.tensor([[10.0, 10.0, 16.0, 14.0]])] * 3, (OH, OW))
    loss = sum(centre_loss(out, heat_t, reg_t, mask).values())
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    for name, buf in model.named_buffers():
        assert not buf.is_floating_point() or torch.isfinite(buf).all(), name  # batch-norm statistics


# ---------------------------------------------------------------------------------------------- flow


@pytest.mark.parametrize("op", ["mutan", "late"])
def test_flow_none_is_zero_flow_and_flow_matters(op):
    model = _model(op, flow=2).eval()
    imgs, present = _images(2), torch.ones(2, 2, dtype=torch.bool)
    zero = torch.zeros(2, 4, H, W)
    flow = torch.randn(2, 4, H, W, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b, c = model(imgs, present), model(imgs, present, zero), model(imgs, present, flow)
    assert torch.equal(a["heat"], b["heat"]) and torch.equal(a["reg"], b["reg"])
    assert c["heat"].shape == (2, 1, OH, OW) and c["reg"].shape == (2, 4, OH, OW)
    assert (c["heat"] - a["heat"]).abs().max() > 1e-6
    assert (c["reg"] - a["reg"]).abs().max() > 1e-6


# ---------------------------------------------------------------------------------------------- targets


def test_centre_targets_hand_computed_box():
    heat, reg, mask = centre_targets([torch.tensor([[10.0, 20.0, 14.0, 24.0]])], (8, 8), stride=4)
    assert heat.shape == (1, 1, 8, 8) and reg.shape == (1, 4, 8, 8) and mask.shape == (1, 1, 8, 8)
    # centre (12, 22) px -> (3, 5.5) cells -> cell x=3, y=5, offset (0, 0.5), log sizes log(4/4) = 0
    assert heat[0, 0, 5, 3] == 1.0
    others = heat.clone()
    others[0, 0, 5, 3] = 0
    assert others.max() < 1.0
    expected_mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    expected_mask[0, 0, 5, 3] = True
    assert torch.equal(mask, expected_mask)
    assert torch.allclose(reg[0, :, 5, 3], torch.tensor([0.0, 0.5, 0.0, 0.0]))
    reg_elsewhere = reg.clone()
    reg_elsewhere[0, :, 5, 3] = 0
    assert torch.equal(reg_elsewhere, torch.zeros_like(reg))
    # sigma: max(0.5, 4 / 4 / 3) = 0.5 cell in both axes
    assert heat[0, 0, 5, 4].item() == pytest.approx(math.exp(-1 / (2 * 0.25)), rel=1e-6)
    assert heat[0, 0, 7, 3].item() == pytest.approx(math.exp(-4 / (2 * 0.25)), rel=1e-5)


def test_centre_targets_sigma_and_log_size_of_larger_box():
    # 24 x 12 px box centred at (42, 18) px -> cell (10, 4), offset (0.5, 0.5); sigma (2, 1) cells
    heat, reg, mask = centre_targets([torch.tensor([[30.0, 12.0, 54.0, 24.0]])], (8, 16))
    assert mask[0, 0].nonzero().tolist() == [[4, 10]]
    assert torch.allclose(reg[0, :, 4, 10], torch.tensor([0.5, 0.5, math.log(6.0), math.log(3.0)]))
    assert heat[0, 0, 4, 12].item() == pytest.approx(math.exp(-4 / 8), rel=1e-6)
    assert heat[0, 0, 5, 10].item() == pytest.approx(math.exp(-1 / 2), rel=1e-6)


def test_centre_targets_skips_centres_outside_the_map_and_handles_empty():
    boxes = [torch.tensor([[-10.0, -10.0, -2.0, -2.0], [28.0, 4.0, 36.0, 8.0], [4.0, 30.0, 8.0, 40.0]]),
             torch.zeros(0, 4),
             torch.tensor([[-10.0, -10.0, -2.0, -2.0], [4.0, 4.0, 8.0, 8.0]])]
    heat, reg, mask = centre_targets(boxes, (8, 8))
    # image 0: centres (-6, -6), (32, 6) and (6, 35) px fall outside the 8 x 8 cells (32 x 32 px)
    assert heat[0].abs().sum() == 0 and reg[0].abs().sum() == 0 and not mask[0].any()
    assert heat[1].abs().sum() == 0 and not mask[1].any()
    assert mask[2, 0].nonzero().tolist() == [[1, 1]] and heat[2, 0, 1, 1] == 1.0


def test_centre_targets_two_boxes_take_the_maximum():
    heat, _, mask = centre_targets([torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 0.0, 16.0, 8.0]])], (4, 4))
    # centres in cells (1, 1) and (3, 1); sigma max(0.5, 8/4/3) = 2/3; cell (2, 1) is 1 from both
    assert mask[0, 0].nonzero().tolist() == [[1, 1], [1, 3]]
    assert heat[0, 0, 1, 2].item() == pytest.approx(math.exp(-1 / (2 * (2 / 3) ** 2)), rel=1e-6)


# ---------------------------------------------------------------------------------------------- decode


BOXES = torch.tensor([[10.0, 20.0, 14.0, 24.0], [61.3, 9.7, 68.9, 14.1]])  # far apart on a 80 x 40 image


def _target_out(boxes_per_image, scale2: float = 1.0):
    """An `out` dict from centre targets; the second box's heat scaled by scale2."""
    h1, r1, _ = centre_targets([b[:1] for b in boxes_per_image], (10, 20))
    h2, r2, _ = centre_targets([b[1:] for b in boxes_per_image], (10, 20))
    return {"heat": torch.maximum(h1, scale2 * h2), "reg": r1 + r2}


def _sorted(boxes, scores):
    order = boxes[:, 0].argsort()
    return boxes[order], scores[order]


def test_decode_round_trip():
    out = _target_out([BOXES, BOXES.flip(0)])
    res = decode(out)
    assert len(res) == 2
    for boxes, scores in res:
        assert boxes.shape == (2, 4) and scores.shape == (2,)
        boxes, scores = _sorted(boxes, scores)
        assert torch.allclose(boxes, BOXES, atol=1e-4, rtol=0)
        assert torch.equal(scores, torch.ones(2))


def test_decode_min_score_and_max_detections():
    out = _target_out([BOXES], scale2=0.5)
    boxes, scores = decode(out, min_score=0.6)[0]
    assert torch.allclose(boxes, BOXES[:1], atol=1e-4, rtol=0) and torch.equal(scores, torch.ones(1))
    boxes, scores = _sorted(*decode(out, min_score=0.5)[0])
    assert len(boxes) == 2 and torch.allclose(scores, torch.tensor([1.0, 0.5]))
    boxes, scores = decode(out, max_detections=1)[0]
    assert torch.allclose(boxes, BOXES[:1], atol=1e-4, rtol=0) and torch.equal(scores, torch.ones(1))
    empty_boxes, empty_scores = decode({"heat": torch.zeros(1, 1, 10, 20), "reg": torch.zeros(1, 4, 10, 20)})[0]
    assert empty_boxes.shape == (0, 4) and empty_scores.shape == (0,)


def test_decode_nms_suppresses_overlapping_peaks():
    heat = torch.zeros(1, 1, 6, 6)
    heat[0, 0, 2, 1], heat[0, 0, 2, 3] = 0.9, 0.8  # two local maxima 2 cells apart
    reg = torch.zeros(1, 4, 6, 6)
    reg[0, 2:] = math.log(4.0)  # 16 x 16 px boxes centred 8 px apart: IoU 1/3 > 0.3
    boxes, scores = decode({"heat": heat, "reg": reg})[0]
    assert torch.allclose(scores, torch.tensor([0.9]))
    assert torch.allclose(boxes, torch.tensor([[-4.0, 0.0, 12.0, 16.0]]))
    assert len(decode({"heat": heat, "reg": reg}, nms_iou=0.5)[0][0]) == 2


# ---------------------------------------------------------------------------------------------- learning


def _square_batch():
    """Two 32 x 32 dark images, each with one bright 4 x 4 square; its box."""
    rgb = torch.full((2, 3, 32, 32), 0.1)
    th = torch.full((2, 1, 32, 32), 0.2)
    boxes = [torch.tensor([[12.0, 8.0, 16.0, 12.0]]), torch.tensor([[20.0, 22.0, 24.0, 26.0]])]
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = (int(v) for v in b[0].tolist())
        rgb[i, :, y0:y1, x0:x1] = 1.0
        th[i, :, y0:y1, x0:x1] = 0.9
    return [rgb, th], boxes


def test_mutan_learns_a_tiny_batch_and_gradients_reach_both_encoders():
    model = _model("mutan", dropout_p=0.0).train()
    imgs, boxes = _square_batch()
    present = torch.ones(2, 2, dtype=torch.bool)
    targets = centre_targets(boxes, (8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(60):
        opt.zero_grad()
        parts = centre_loss(model(imgs, present), *targets)
        loss = parts["heat"] + parts["box"]
        loss.backward()
        if step == 0:
            for enc in model.encoders:
                g = sum(p.grad.abs().sum() for p in enc.parameters() if p.grad is not None)
                assert g > 0
            assert all(p.grad is not None for p in model.encoders[1].parameters())
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] <= 0.5 * losses[0], (losses[0], losses[-1])


def test_centre_loss_with_no_boxes_is_finite_and_differentiable():
    model = _model("gated").train()
    out = model(_images(2, 32, 32), torch.ones(2, 2, dtype=torch.bool))
    heat_t, reg_t, mask = centre_targets([torch.zeros(0, 4), torch.zeros(0, 4)], (8, 8))
    parts = centre_loss(out, heat_t, reg_t, mask)
    assert set(parts) == {"heat", "box"}
    assert torch.isfinite(parts["heat"]) and parts["heat"] > 0
    assert parts["box"].item() == 0.0
    (parts["heat"] + parts["box"]).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_centre_loss_hand_computed():
    # one centre cell at p = 0.5 (target 1), one negative cell at p = 0.5 with target 0, box regression off by 1
    heat_t = torch.tensor([[[[1.0, 0.0]]]])
    mask = torch.tensor([[[[True, False]]]])
    reg_t = torch.zeros(1, 4, 1, 2)
    out = {"heat": torch.full((1, 1, 1, 2), 0.5), "reg": torch.zeros(1, 4, 1, 2)}
    out["reg"][0, 0, 0, 0] = 1.0
    out["reg"][0, 1, 0, 1] = 7.0  # not a centre cell: ignored
    parts = centre_loss(out, heat_t, reg_t, mask)
    expected_heat = -math.log(0.5) * 0.25 - math.log(0.5) * 0.25
    assert parts["heat"].item() == pytest.approx(expected_heat, rel=1e-6)
    assert parts["box"].item() == pytest.approx(1.0)


def test_features_and_head_output_equal_forward():
    torch.manual_seed(0)
    for op in ("mutan", "early", "concat"):
        m = FusionDetector(FusionDetectorConfig(operator=op, width=4, rock=True)).eval()
        ims = [torch.rand(2, 3, 30, 42), torch.rand(2, 1, 30, 42)]
        present = torch.tensor([[True, True], [True, False]])
        with torch.no_grad():
            out = m(ims, present)
            f, aux, size = m.features(ims, present)
            split = m.head_output(f, size)
        assert size == (30, 42) and f.shape == (2, 8, 8, 12)
        assert torch.equal(out["heat"], split["heat"]) and torch.equal(out["reg"], split["reg"])
        assert set(aux) == set(out["aux"])
    late = FusionDetector(FusionDetectorConfig(operator="late", width=4))
    with pytest.raises(ValueError, match="late fusion"):
        late.features([torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16)], torch.ones(1, 2, dtype=torch.bool))
