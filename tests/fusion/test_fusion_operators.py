"""Fusion operators: shapes, exact masking of absent modalities, gate renormalisation, modality dropout
rates, MUTAN against hand-computed bilinear forms, late and early fusion numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusion.operators import (ConcatFusion, EarlyFusion, FusionConfig, GatedMixture, LateFusion, MutanFusion,
                              build_fusion, early_concat, late_fusion, modality_dropout, present_mask)

torch.set_num_threads(1)

CA, CB, H, W = 4, 6, 5, 7


def _feats(b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, CA, H, W, generator=g), torch.randn(b, CB, H, W, generator=g)]


def _build(op: str, **kw):
    torch.manual_seed(1)
    return build_fusion(FusionConfig(operator=op, channels=[CA, CB], out_channels=8, rank=3, mutan_dim=5,
                                     **kw)).eval()


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw, key", [
    (dict(operator="sum"), "fusion.operator"),
    (dict(channels=[]), "fusion.channels"),
    (dict(channels=[4, 0]), "fusion.channels"),
    (dict(operator="mutan", channels=[4]), "fusion.channels"),
    (dict(out_channels=0), "fusion.out_channels"),
    (dict(rank=0), "fusion.rank"),
    (dict(mutan_dim=0), "fusion.mutan_dim"),
    (dict(dropout_p=1.0), "fusion.dropout_p"),
    (dict(dropout_p=-0.1), "fusion.dropout_p"),
    (dict(late_weights=[1.0]), "fusion.late_weights"),
    (dict(late_weights=[0.0, 0.0]), "fusion.late_weights"),
])
def test_config_validate_names_key(kw, key):
    args = dict(operator="mutan", channels=[4, 6]) | kw
    with pytest.raises(ValueError, match=f"^{key}:"):
        FusionConfig(**args).validate("fusion.")


def test_config_from_yaml_dict_and_defaults():
    from pipeline.config import ConfigError, from_dict

    cfg = from_dict(FusionConfig, {"operator": "concat", "channels": [16, 8], "dropout_p": 0.25}, "fusion")
    assert cfg.resolved_out_channels == 16 and cfg.rank == 5 and cfg.mutan_dim == 64
    with pytest.raises(ConfigError, match="fusion.operator"):
        from_dict(FusionConfig, {"operator": "product", "channels": [16, 8]}, "fusion")


def test_build_fusion_types_and_out_channels():
    types = {"early": EarlyFusion, "concat": ConcatFusion, "mutan": MutanFusion, "gated": GatedMixture,
             "late": LateFusion}
    for op, cls in types.items():
        assert type(_build(op)) is cls
    assert _build("early").out_channels == CA + CB + 2
    assert _build("mutan").out_channels == 8


# ---------------------------------------------------------------------------------------------- shapes, masking


@pytest.mark.parametrize("op", ["concat", "mutan", "gated"])
def test_intermediate_shapes(op):
    out = _build(op)(_feats(), torch.ones(3, 2, dtype=torch.bool))
    assert out.shape == (3, 8, H, W) and torch.isfinite(out).all()


@pytest.mark.parametrize("op", ["concat", "mutan", "gated"])
def test_absent_modality_values_cannot_leak(op):
    fuse = _build(op)
    a, b = _feats()
    present = torch.tensor([[True, False], [True, True], [False, True]])
    ref = fuse([a, b], present)
    for garbage in (math.nan, math.inf, -math.inf, None):
        b2, a2 = b.clone(), a.clone()
        b2[0] = 1e6 * torch.randn_like(b[0]) if garbage is None else garbage  # sample 0 has B absent
        a2[2] = 1e6 * torch.randn_like(a[2]) if garbage is None else garbage  # sample 2 has A absent
        out = fuse([a2, b2], present)
        assert torch.isfinite(out).all()
        assert torch.equal(out[0], ref[0]) and torch.equal(out[2], ref[2])
        assert torch.equal(out[1], ref[1])
    # a batch without any B tensor: the A-only sample's output is the same as above
    only_a = fuse([a[:1], None], present[:1])
    assert torch.equal(only_a[0], ref[0])
    # the complete sample does depend on B (the check above could not pass by ignoring B everywhere)
    b3 = b.clone()
    b3[1] += 1.0
    assert not torch.allclose(fuse([a, b3], present)[1], ref[1])


@pytest.mark.parametrize("op", ["concat", "mutan", "gated"])
def test_nan_in_absent_input_gives_finite_gradients(op):
    fuse = _build(op).train()
    a, b = _feats()
    b[0] = math.nan
    a.requires_grad_(True)
    fuse([a, b], torch.tensor([[True, False], [True, True], [True, True]])).square().sum().backward()
    grads = [p.grad for p in fuse.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_no_modality_present_gives_zero():
    for op in ("concat", "mutan", "gated"):
        out = _build(op)(_feats(), torch.tensor([[False, False], [True, True], [False, False]]))
        assert torch.equal(out[0], torch.zeros_like(out[0])) and torch.equal(out[2], torch.zeros_like(out[2]))
        assert out[1].abs().sum() > 0


def test_gate_weights_renormalise_over_present():
    fuse = _build("gated")
    a, b = _feats(b=6)
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1], [1, 0]], dtype=torch.bool)
    b[1] = math.nan
    w = fuse.weights([a, b], present)
    assert torch.equal(w[~present], torch.zeros(int((~present).sum())))
    assert torch.allclose(w.sum(1), torch.tensor([1, 1, 1, 0, 1, 1.0]), atol=1e-6)
    assert w[1, 0] == 1 and w[2, 1] == 1  # the only present modality weighs exactly 1
    assert 0 < w[0, 0] < 1 and not torch.allclose(w[0], w[4])  # gates depend on the sample
    # the output is the weighted sum of the experts' projections
    exp = sum(w[:, m, None, None, None] * fuse.proj[m](torch.nan_to_num(x)) for m, x in enumerate([a, b]))
    out = fuse([a, b], present)
    assert torch.allclose(out, exp, atol=1e-6)


def test_mutan_incomplete_sample_is_its_unimodal_expert():
    fuse = _build("mutan")
    a, b = _feats()
    present = torch.tensor([[True, False], [False, True], [True, True]])
    out = fuse([a, b], present)
    assert torch.equal(out[0], torch.relu(fuse.experts.proj[0](a[:1]))[0])
    assert torch.equal(out[1], torch.relu(fuse.experts.proj[1](b[1:2]))[0])
    w = fuse.experts.weights([a, b], present)
    full = torch.relu(w[2, 0] * fuse.experts.proj[0](a[2:]) + w[2, 1] * fuse.experts.proj[1](b[2:])
                      + fuse.joint([a[2:], b[2:]]))
    assert torch.allclose(out[2], full[0], atol=1e-6)


# ---------------------------------------------------------------------------------------------- MUTAN numbers


def test_mutan_rank1_scalar_hand_computed():
    fuse = MutanFusion([1, 1], out_channels=1, rank=1, mutan_dim=1)
    with torch.no_grad():
        for conv, (w, b) in zip(fuse.embed, [(0.5, 0.1), (2.0, -0.3)]):
            conv.weight.fill_(w)
            conv.bias.fill_(b)
        fuse.factors[0].weight.fill_(1.5)
        fuse.factors[1].weight.fill_(-0.7)
        fuse.out.weight.fill_(2.0)
        fuse.out.bias.fill_(0.25)
    a, b = torch.full((1, 1, 1, 1), 0.8), torch.full((1, 1, 1, 1), 0.4)
    expected = 2.0 * (1.5 * math.tanh(0.5 * 0.8 + 0.1)) * (-0.7 * math.tanh(2.0 * 0.4 - 0.3)) + 0.25
    assert fuse.joint([a, b]).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("rank", [1, 3])
def test_mutan_matches_numpy_tucker_form(rank):
    torch.manual_seed(3)
    d = 4
    fuse = MutanFusion([CA, CB], out_channels=2, rank=rank, mutan_dim=d)
    a, b = _feats(b=2)
    got = fuse.joint([a, b]).detach().double().numpy()

    def mat(conv):
        return conv.weight.detach().double().numpy()[:, :, 0, 0]

    qa = np.tanh(np.einsum("dc,bchw->bdhw", mat(fuse.embed[0]), a.double().numpy())
                 + fuse.embed[0].bias.detach().double().numpy()[None, :, None, None])
    qb = np.tanh(np.einsum("dc,bchw->bdhw", mat(fuse.embed[1]), b.double().numpy())
                 + fuse.embed[1].bias.detach().double().numpy()[None, :, None, None])
    z = 0
    for r in range(rank):  # z = sum_r (W_r^a q_a) * (W_r^b q_b)
        wa, wb = mat(fuse.factors[0])[r * d:(r + 1) * d], mat(fuse.factors[1])[r * d:(r + 1) * d]
        z = z + np.einsum("ed,bdhw->behw", wa, qa) * np.einsum("ed,bdhw->behw", wb, qb)
    exp = np.einsum("od,bdhw->bohw", mat(fuse.out), z) + fuse.out.bias.detach().double().numpy()[None, :, None, None]
    np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- dropout


def test_modality_dropout_never_drops_all_and_rates():
    g = torch.Generator().manual_seed(0)
    n, p = 10_000, 0.3
    present = torch.rand(n, 2, generator=g) < 0.7
    kept = modality_dropout(present, p, g)
    assert not (kept & ~present).any()  # a subset of present
    assert torch.equal(kept.any(1), present.any(1))  # never all of a sample's present ones
    both = present.all(1)
    rate = (present & ~kept)[both].float().mean().item()
    assert rate == pytest.approx(p - p ** 2 / 2, abs=0.02)  # 0.255
    single = present.sum(1) == 1
    assert torch.equal(kept[single], present[single])  # the only present modality is never dropped
    lone = both & (kept.sum(1) == 1)  # rescued ones: both modalities equally often
    assert kept[lone][:, 0].float().mean().item() == pytest.approx(0.5, abs=0.03)
    three = modality_dropout(torch.ones(n, 3, dtype=torch.bool), 0.5, g)
    assert three.any(1).all()
    assert (~three).float().mean().item() == pytest.approx(0.5 - 0.125 / 3, abs=0.02)
    assert torch.equal(modality_dropout(present, 0.0), present)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(modality_dropout(present, 0.5, g1), modality_dropout(present, 0.5, g2))


def test_modules_apply_dropout_in_training_only():
    fuse = _build("gated", dropout_p=0.6)
    a, b = _feats(b=16)
    present = torch.ones(16, 2, dtype=torch.bool)
    assert torch.equal(fuse([a, b], present), fuse([a, b], present))  # eval: deterministic, no dropout
    torch.manual_seed(11)
    mask = modality_dropout(present, 0.6)
    assert not mask.all()
    torch.manual_seed(11)
    trained = fuse.train()([a, b], present)
    assert torch.equal(trained, fuse.eval()([a, b], mask))


# ---------------------------------------------------------------------------------------------- late, early


def test_late_fusion_numbers():
    sa = torch.tensor([0.2, 0.9, 0.5])
    sb = torch.tensor([0.6, math.nan, 0.1])
    present = torch.tensor([[True, True], [True, False], [False, False]])
    assert torch.allclose(late_fusion([sa, sb], present), torch.tensor([0.4, 0.9, 0.0]))
    assert torch.allclose(late_fusion([sa, sb], present, [3.0, 1.0]), torch.tensor([0.3, 0.9, 0.0]))
    per = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    assert torch.allclose(late_fusion([sa, sb], present, per), torch.tensor([0.2, 0.9, 0.0]))
    only = late_fusion([sa[:2], None], torch.tensor([[True, False]] * 2))
    assert torch.allclose(only, sa[:2])
    maps = late_fusion([torch.ones(2, 1, 3, 3), 3 * torch.ones(2, 1, 3, 3)], torch.ones(2, 2, dtype=torch.bool))
    assert maps.shape == (2, 1, 3, 3) and torch.allclose(maps, torch.full_like(maps, 2.0))
    module = _build("late", late_weights=[3.0, 1.0])
    assert torch.allclose(module([sa, sb], present), torch.tensor([0.3, 0.9, 0.0]))


def test_early_concat_layout_and_mask_channels():
    rgb = torch.rand(2, 3, 8, 10)
    th = torch.rand(2, 1, 8, 10)
    th[1] = math.nan
    present = torch.tensor([[True, True], [True, False]])
    x = early_concat([rgb, th], present, channels=[3, 1])
    assert x.shape == (2, 3 + 1 + 2, 8, 10) and torch.isfinite(x).all()
    assert torch.equal(x[:, :3], rgb) and torch.equal(x[0, 3], th[0, 0])
    assert torch.equal(x[1, 3], torch.zeros(8, 10))
    assert torch.equal(x[:, 4:], present.float()[:, :, None, None].expand(2, 2, 8, 10))
    y = early_concat([rgb, None], torch.tensor([[True, False]] * 2), channels=[3, 1])
    assert torch.equal(y[1], x[1])
    assert early_concat([None, rgb], torch.tensor([[False, True]] * 2), with_mask=False).shape == (2, 6, 8, 10)
    assert _build("early")([torch.rand(2, CA, 8, 8), None], torch.tensor([[True, False]] * 2)).shape == (2, 12, 8, 8)


# ---------------------------------------------------------------------------------------------- errors, helpers


def test_input_errors_and_present_mask():
    fuse = _build("concat")
    a, b = _feats()
    with pytest.raises(ValueError, match="None but marked present"):
        fuse([a, None], torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="align"):
        fuse([a, b[:, :, :4]], torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="channels"):
        fuse([b, a], torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(TypeError):
        fuse([a, b], torch.ones(3, 2))
    with pytest.raises(ValueError):
        fuse([None, None], torch.zeros(3, 2, dtype=torch.bool))
    assert torch.equal(present_mask([a, None]), torch.tensor([[True, False]] * 3))
    assert present_mask([None, None], batch=2).shape == (2, 2)
