"""Temporal smoothing: ConvGRU equations on a hand-computed case, convergence, streaming state; the
per-track score filter on a hand-computed sequence."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusion.temporal import ConvGRU, ConvGRUCell, ScoreFilter

torch.set_num_threads(1)


def test_cell_shapes_and_zero_state():
    torch.manual_seed(0)
    cell = ConvGRUCell(3, 5)
    x = torch.randn(2, 3, 6, 7)
    h = cell(x)
    assert h.shape == (2, 5, 6, 7)
    assert torch.equal(h, cell(x, torch.zeros(2, 5, 6, 7)))
    assert cell(x, h).shape == h.shape
    with pytest.raises(ValueError, match="state shape"):
        cell(x, torch.zeros(2, 5, 3, 3))
    with pytest.raises(ValueError, match="kernel"):
        ConvGRUCell(3, 5, kernel=2)


def test_gru_equations_hand_computed():
    """Zero weights: z = sigmoid(b_z) = 0.25, n = tanh(b_n) = 0.5, so h_t = 0.5 * (1 - 0.75^t) from h_0 = 0;
    from h_0 = 1: h_t = 0.75^t + 0.5 * (1 - 0.75^t)."""
    gru = ConvGRU(2, 3)
    with torch.no_grad():
        for p in gru.parameters():
            p.zero_()
        gru.cell.gates.bias[:3] = math.log(0.25 / 0.75)  # update gate z
        gru.cell.gates.bias[3:] = 5.0  # reset gate: irrelevant with U = 0
        gru.cell.cand_x.bias[:] = math.atanh(0.5)
    seq = torch.randn(6, 2, 2, 4, 4)
    outs, last = gru(seq)
    assert outs.shape == (6, 2, 3, 4, 4) and torch.equal(last, outs[-1])
    for t in range(6):
        assert torch.allclose(outs[t], torch.full_like(outs[t], 0.5 * (1 - 0.75 ** (t + 1))), atol=1e-6)
    outs1, _ = gru(seq[:2], torch.ones(2, 3, 4, 4))
    assert torch.allclose(outs1[1], torch.full_like(outs1[1], 0.75 ** 2 + 0.5 * (1 - 0.75 ** 2)), atol=1e-6)


def test_reset_gate_and_candidate_use_the_state():
    """With U_n = identity (1x1) and r = sigmoid(0) = 0.5: n = tanh(0.5 h); z = 1: h' = n."""
    cell = ConvGRUCell(1, 1, kernel=1)
    with torch.no_grad():
        for p in cell.parameters():
            p.zero_()
        cell.gates.bias[0] = 50.0  # z = 1
        cell.cand_h.weight.fill_(1.0)
    h = torch.full((1, 1, 2, 2), 0.8)
    assert torch.allclose(cell(torch.zeros(1, 1, 2, 2), h), torch.full_like(h, math.tanh(0.4)), atol=1e-6)


def test_constant_input_converges():
    torch.manual_seed(0)
    gru = ConvGRU(4, 4)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        outs, last = gru(x.expand(120, 1, 4, 6, 6))
        early = (outs[2] - outs[1]).abs().max().item()
        late = (outs[-1] - outs[-2]).abs().max().item()
        assert early > 1e-2 and late < 1e-5
        assert torch.allclose(gru.cell(x, last), last, atol=1e-5)  # a fixed point of the update


def test_sequence_gradients_reach_inputs_and_weights():
    torch.manual_seed(0)
    gru = ConvGRU(2, 3)
    seq = torch.randn(4, 2, 2, 5, 5, requires_grad=True)
    outs, _ = gru(seq)
    outs[-1].sum().backward()
    assert seq.grad[0].abs().sum() > 0  # through time to the first frame
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gru.parameters())


def test_stepwise_state_reset_and_size_change():
    torch.manual_seed(0)
    gru = ConvGRU(2, 3)
    seq = torch.randn(3, 2, 2, 5, 5)
    outs, _ = gru(seq)
    h1 = gru.step(seq[0])
    h2 = gru.step(seq[1])
    assert torch.allclose(h1, outs[0]) and torch.allclose(h2, outs[1], atol=1e-6)
    assert gru.state.shape == (2, 3, 5, 5) and not gru.state.requires_grad
    assert torch.allclose(gru.step(seq[0], reset=True), outs[0])  # new stream: from zero
    small = torch.randn(2, 2, 4, 4)
    assert torch.allclose(gru.step(small), gru.cell(small))  # size change restarts
    one = torch.randn(1, 2, 4, 4)
    assert torch.allclose(gru.step(one), gru.cell(one))  # batch change restarts
    gru.reset()
    assert gru.state is None


def test_score_filter_hand_computed_sequence():
    f = ScoreFilter(alpha=0.5, max_missed=2)
    np.testing.assert_allclose(f.update(np.array([1, 2]), np.array([0.8, 0.2])), [0.8, 0.2])
    np.testing.assert_allclose(f.update(np.array([1]), np.array([0.4])), [0.6])  # 0.5 * 0.4 + 0.5 * 0.8
    # track 2 missed one update (< 2): it goes on from 0.2
    np.testing.assert_allclose(f.update(np.array([2, 1]), np.array([0.6, 1.0])), [0.4, 0.8])
    assert len(f) == 2 and f.value(1) == pytest.approx(0.8)
    f.update(np.zeros(0, np.int64), np.zeros(0))  # both missed once
    assert len(f) == 2
    f.update(np.zeros(0, np.int64), np.zeros(0))  # missed twice: forgotten
    assert len(f) == 0 and math.isnan(f.value(1))
    out = f.update(np.array([1, -1]), np.array([0.1, 0.7], np.float32))  # fresh start; -1 passes through
    np.testing.assert_allclose(out, [0.1, 0.7], rtol=1e-6)
    assert out.dtype == np.float32 and -1 not in f and 1 in f


def test_score_filter_alpha_one_and_errors():
    f = ScoreFilter(alpha=1.0, max_missed=3)
    for s in (0.1, 0.9, 0.3):
        assert f.update(np.array([7]), np.array([s]))[0] == pytest.approx(s)
    with pytest.raises(ValueError, match="duplicate"):
        f.update(np.array([7, 7]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="finite"):
        f.update(np.array([7]), np.array([math.nan]))
    with pytest.raises(ValueError, match="alpha"):
        ScoreFilter(alpha=0.0)
    f.reset()
    assert len(f) == 0 and f.step == 0


# ---------------------------------------------------------------------------------------------- warp_maps


def test_warp_maps_follows_the_turret():
    from fusion.temporal import warp_maps

    maps = torch.zeros(2, 1, 6, 8)
    maps[:, 0, 2, 3] = 1.0
    # The image moved 8 px right and 4 px down (2 and 1 cells at stride 4): the state moves with it.
    shift = torch.tensor([[1.0, 0.0, 8.0], [0.0, 1.0, 4.0], [0.0, 0.0, 1.0]])
    out = warp_maps(maps, torch.stack([shift, torch.eye(3)]), 4)
    assert out[0, 0].nonzero().tolist() == [[3, 5]] and out[0, 0, 3, 5].item() == pytest.approx(1.0)
    assert torch.allclose(out[1], maps[1])  # identity: unchanged
    # Cells the previous frame did not see start from zero.
    far = torch.tensor([[1.0, 0.0, 400.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert warp_maps(torch.ones(1, 2, 6, 8), far[None], 4).abs().max().item() == 0.0


def test_warp_maps_half_cell_shift_interpolates():
    from fusion.temporal import warp_maps

    maps = torch.zeros(1, 1, 4, 4)
    maps[0, 0, 1, 1] = 1.0
    half = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # 2 px = half a stride-4 cell
    out = warp_maps(maps, half[None], 4)[0, 0]
    assert out[1, 1].item() == pytest.approx(0.5) and out[1, 2].item() == pytest.approx(0.5)
    assert out.sum().item() == pytest.approx(1.0)


def test_recurrent_maps_start_as_the_identity_and_learn():
    from fusion.temporal import RecurrentMaps

    torch.manual_seed(0)
    rec = RecurrentMaps(4, hidden=3)
    f = torch.randn(2, 4, 5, 6)
    out, h = rec(f)
    assert torch.equal(out, f) and h.shape == (2, 3, 5, 6)  # merge starts at zero: the detector is unchanged
    out2, h2 = rec(f, h)
    assert h2.shape == h.shape and not torch.equal(h2, h)  # the state carries over
    loss = (rec(f, h)[0] - 1).pow(2).mean()
    loss.backward()
    assert rec.merge.weight.grad.abs().sum() > 0
