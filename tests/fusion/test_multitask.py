"""ROCK residual auxiliary block: shapes, residual merge, masked loss numbers, gradients, target encoding."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusion.multitask import (DEFAULT_TASKS, RockBlock, RockConfig, decode_angle, decode_range, encode_targets,
                              rock_loss)

torch.set_num_threads(1)


def _block(c: int = 8, **kw) -> RockBlock:
    torch.manual_seed(0)
    return RockBlock(RockConfig(channels=c, hidden=6, **kw))


@pytest.mark.parametrize("kw, key", [
    (dict(channels=0), "rock.channels"),
    (dict(hidden=0), "rock.hidden"),
    (dict(tasks={}), "rock.tasks"),
    (dict(tasks={"log-range": 1}), "rock.tasks.log-range"),
    (dict(tasks={"pan": 0}), "rock.tasks.pan"),
    (dict(loss_weights={"speed": 1.0}), "rock.loss_weights.speed"),
    (dict(loss_weights={"pan": -1.0}), "rock.loss_weights.pan"),
    (dict(huber_beta=0.0), "rock.huber_beta"),
])
def test_config_validate_names_key(kw, key):
    args = dict(channels=8) | kw
    with pytest.raises(ValueError, match=f"^{key}:"):
        RockConfig(**args).validate("rock.")


def test_shapes_and_default_tasks():
    block = _block()
    feat = torch.randn(3, 8, 5, 6)
    refined, preds = block(feat)
    assert refined.shape == feat.shape
    assert {k: v.shape for k, v in preds.items()} == {k: (3, d) for k, d in DEFAULT_TASKS.items()}
    with pytest.raises(ValueError, match="feat"):
        block(torch.randn(3, 4, 5, 6))


def test_residual_merge_is_feat_plus_back_projections():
    block = _block()
    feat = torch.randn(2, 8, 4, 4)
    refined, _ = block(feat)
    exp = feat + sum(block.merges[t](block.encoders[t](feat)) for t in DEFAULT_TASKS)
    assert torch.allclose(refined, exp, atol=1e-6) and not torch.allclose(refined, feat)
    with torch.no_grad():
        for m in block.merges.values():
            m.weight.zero_()
            m.bias.zero_()
    assert torch.equal(block(feat)[0], feat)


def test_loss_hand_computed_and_nan_ignored():
    pred = torch.tensor([[0.0], [2.0], [0.5]], requires_grad=True)
    target = torch.tensor([[0.5], [math.nan], [3.0]])
    # smooth L1, beta 1: 0.5 * 0.5^2 = 0.125 and 2.5 - 0.5 = 2.0; mean over the 2 available = 1.0625
    loss = rock_loss({"log_range": pred}, {"log_range": target})
    assert loss.item() == pytest.approx(1.0625)
    loss.backward()
    assert torch.equal(pred.grad, torch.tensor([[-0.25], [0.0], [-0.5]]))
    pan = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.0, 0.0]], requires_grad=True)
    pan_t = torch.tensor([[math.nan, math.nan], [0.3, 1.4], [math.nan, math.nan]])
    both = rock_loss({"log_range": pred, "pan": pan}, {"log_range": target, "pan": pan_t},
                     weights={"log_range": 2.0, "pan": 4.0}, beta=0.5)
    # beta 0.5: |0.5| -> 0.5^2 / (2 * 0.5) = 0.25, |2.5| -> 2.5 - 0.25 = 2.25, mean 1.25; pan: two available
    # entries, |0| -> 0 and |1.0| -> 0.75, mean 0.375; weighted sum 2 * 1.25 + 4 * 0.375
    assert both.item() == pytest.approx(4.0)


def test_loss_zero_when_all_missing_and_gradient_safe():
    block = _block()
    _, preds = block(torch.randn(2, 8, 4, 4))
    nan = {k: torch.full_like(v, math.nan) for k, v in preds.items()}
    loss = rock_loss(preds, nan)
    assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is None or torch.equal(p.grad, torch.zeros_like(p.grad)) for p in block.parameters())
    assert rock_loss(preds, {}).item() == 0.0
    with pytest.raises(ValueError, match="no prediction"):
        rock_loss(preds, {"speed": torch.zeros(2, 1)})
    with pytest.raises(ValueError, match="shape"):
        rock_loss(preds, {"pan": torch.zeros(2, 1)})


def test_gradients_reach_heads_and_main_features():
    block = _block()
    feat = torch.randn(4, 8, 5, 5, requires_grad=True)
    refined, preds = block(feat)
    targets = encode_targets(range_m=[100.0, math.nan, 800.0, 30.0], pan_deg=[10.0, -170.0, math.nan, 45.0],
                             tilt_deg=[5.0, 12.0, 30.0, math.nan], signature=[0.3, math.nan, math.nan, 1.2])
    aux = block.loss(preds, targets)
    assert torch.isfinite(aux) and aux > 0
    aux.backward(retain_graph=True)  # the auxiliary loss alone shapes the shared features (ROCK's point)
    assert feat.grad.abs().sum() > 0
    for t in DEFAULT_TASKS:
        assert block.heads[t].weight.grad.abs().sum() > 0
        assert block.encoders[t][0].weight.grad.abs().sum() > 0
        assert block.merges[t].weight.grad is None  # the back-projection serves the main task only
    refined.square().mean().backward()  # a stand-in for the detection loss
    for t in DEFAULT_TASKS:
        assert block.merges[t].weight.grad.abs().sum() > 0


def test_learns_log_range_from_features():
    torch.manual_seed(0)
    block = RockBlock(RockConfig(channels=4, hidden=8, tasks={"log_range": 1}))
    rng = np.random.default_rng(0)
    ranges = rng.uniform(50, 2000, 32)
    feat = torch.randn(32, 4, 4, 4) * 0.1
    feat[:, 0] += torch.tensor(np.log(ranges) / 4, dtype=torch.float32)[:, None, None]
    targets = encode_targets(range_m=ranges)
    first = None
    for _ in range(100):  # plain gradient descent (creating a torch.optim optimizer costs seconds of imports)
        loss = block.loss(block(feat)[1], targets)
        first = loss.item() if first is None else first
        block.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in block.parameters():
                if p.grad is not None:  # the merges get none from the auxiliary loss
                    p -= 0.1 * p.grad
    assert loss.item() < 0.1 * first


def test_encode_and_decode_targets():
    t = encode_targets(range_m=[100.0, -1.0, math.nan], pan_deg=[90.0, 180.0, -179.0], tilt_deg=[0.0, 30.0, -45.0],
                       signature=[0.5, math.nan, 2.0])
    assert t["log_range"].shape == (3, 1) and t["log_range"][0, 0].item() == pytest.approx(math.log(100.0))
    assert torch.isnan(t["log_range"][1:]).all()
    assert torch.allclose(t["pan"][:2], torch.tensor([[1.0, 0.0], [0.0, -1.0]]), atol=1e-6)
    wrapped = (decode_angle(t["pan"]) - torch.tensor([90.0, 180.0, -179.0]) + 180) % 360 - 180
    assert torch.allclose(wrapped, torch.zeros(3), atol=1e-4)
    assert torch.allclose(decode_angle(t["tilt"]), torch.tensor([0.0, 30.0, -45.0]), atol=1e-4)
    assert decode_range(t["log_range"][:1]).item() == pytest.approx(100.0, rel=1e-5)
    assert torch.isnan(t["signature"][1, 0]) and t["signature"][2, 0] == 2.0
    assert set(encode_targets(pan_deg=[1.0])) == {"pan"}
    with pytest.raises(ValueError, match="range_m"):
        encode_targets(range_m=[[1.0]])
