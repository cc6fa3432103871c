"""Deformable part-based RoI pooling against a naive per-RoI, per-part, per-displacement loop."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import ps_roi_align, roi_align

from detectors.part_pooling import deformable_ps_roi_pool, ps_roi_pool_at

SCALE = 1 / 8


def part_response(maps, roi, k, c, i, j, dx, dy, sr=2):
    """Average bilinear response of part (i, j) of channel group c, moved by (dx, dy) part sizes: roi_align
    (aligned, one bin) of that part's box on that part's single channel."""
    b, x1, y1, x2, y2 = roi.tolist()
    pw, ph = (x2 - x1) / k, (y2 - y1) / k
    box = torch.tensor([[0.0, x1 + (j + dx) * pw, y1 + (i + dy) * ph, x1 + (j + 1 + dx) * pw,
                         y1 + (i + 1 + dy) * ph]])
    ch = (c * k + i) * k + j
    return roi_align(maps[int(b):int(b) + 1, ch:ch + 1], box, 1, SCALE, sr, aligned=True)[0, 0, 0, 0]


def naive_pool(maps, rois, k, max_shift, step, cost):
    """The reference: displacements tried nearest to zero first, strict > keeps the first maximum."""
    grid = [(dx * step, dy * step) for dy in range(-max_shift, max_shift + 1)
            for dx in range(-max_shift, max_shift + 1)]
    grid.sort(key=lambda d: d[0] ** 2 + d[1] ** 2)
    C = maps.shape[1] // (k * k)
    pooled, shifts = [], []
    for roi in rois:
        for c in range(C):
            for i in range(k):
                for j in range(k):
                    best = None
                    for dx, dy in grid:
                        v = part_response(maps, roi, k, c, i, j, dx, dy)
                        score = v.item() - cost * (dx * dx + dy * dy)
                        if best is None or score > best[0]:
                            best = (score, v, (dx, dy))
                    pooled.append(best[1])
                    shifts.append(best[2])
    R = len(rois)
    return torch.stack(pooled).view(R, C, k, k), torch.tensor(shifts).view(R, C, k, k, 2)


def random_case(k: int, C: int, R: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(2, k * k * C, 10, 13, generator=g, requires_grad=True)
    xy = torch.rand(R, 2, generator=g) * torch.tensor([100.0, 76.0]) - 10  # some RoIs cross the border
    wh = torch.rand(R, 2, generator=g) * 50 + 6
    rois = torch.cat([torch.randint(0, 2, (R, 1), generator=g).float(), xy, xy + wh], 1)
    return maps, rois, torch.randn(R, C, k, k, generator=g)


@pytest.mark.parametrize("k,C,R", [(3, 3, 5), (7, 2, 3)])
def test_matches_naive_loop_values_shifts_gradients(k, C, R):
    maps, rois, w = random_case(k, C, R, seed=k)
    pooled, shifts = deformable_ps_roi_pool(maps, rois, k, SCALE, max_shift=2, shift_step=0.25, cost=0.1)
    (g_fast,) = torch.autograd.grad((pooled * w).sum(), maps)
    ref, ref_shifts = naive_pool(maps, rois, k, 2, 0.25, 0.1)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), maps)
    assert pooled.shape == (R, C, k, k) and shifts.shape == (R, C, k, k, 2)
    torch.testing.assert_close(shifts, ref_shifts, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=0)
    assert (shifts != 0).any(dim=-1).float().mean() > 0.5  # random maps: most parts move
    rigid = ps_roi_align(maps, rois, k, SCALE, 2)
    assert (pooled >= rigid - 0.1 * (0.5**2 + 0.5**2) - 1e-6).all()  # kept score - its cost >= rigid score


def test_pool_at_shifts_matches_naive_loop():
    k, D, G, R = 3, 4, 2, 4
    maps, rois, _ = random_case(k, D, R, seed=11)
    g = torch.Generator().manual_seed(12)
    shifts = torch.randint(-2, 3, (R, G, k, k, 2), generator=g) * 0.25
    out = ps_roi_pool_at(maps, rois, k, SCALE, shifts, max_shift=2, shift_step=0.25)
    w = torch.randn(out.shape, generator=g)
    (g_fast,) = torch.autograd.grad((out * w).sum(), maps)
    ref = torch.stack([torch.stack([torch.stack([
        torch.stack([torch.stack([part_response(maps, rois[r], k, d, i, j, *shifts[r, gr, i, j].tolist())
                                  for j in range(k)]) for i in range(k)])
        for d in range(D)]) for gr in range(G)]) for r in range(R)])
    (g_ref,) = torch.autograd.grad((ref * w).sum(), maps)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [3, 7])
def test_rigid_equals_ps_roi_align(k):
    maps, rois, _ = random_case(k, 2, 6, seed=5)
    pooled, shifts = deformable_ps_roi_pool(maps, rois, k, SCALE, deformable=False)
    torch.testing.assert_close(pooled, ps_roi_align(maps, rois, k, SCALE, 2), atol=0, rtol=0)
    assert (shifts == 0).all()


def peak_maps(amplitude: float = 10.0) -> torch.Tensor:
    """k=3, one class, maps at input resolution; the centre part's channel has a Gaussian peak 2 px (half a
    part) right of the centre part's centre for the RoI (4, 4, 16, 16); every other channel is flat zero."""
    yy, xx = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij")
    maps = torch.zeros(1, 9, 20, 20)
    maps[0, 4] = amplitude * torch.exp(-((xx - 11.5) ** 2 + (yy - 9.5) ** 2) / (2 * 1.5**2))
    return maps


def test_part_moves_toward_peak_and_large_cost_keeps_it():
    roi = torch.tensor([[0.0, 4, 4, 16, 16]])
    pooled, shifts = deformable_ps_roi_pool(peak_maps(), roi, 3, 1.0, cost=0.1)
    assert shifts[0, 0, 1, 1].tolist() == [0.5, 0.0]
    others = torch.ones(3, 3, dtype=torch.bool)
    others[1, 1] = False
    assert (shifts[0, 0][others] == 0).all()  # flat parts stay: any move only costs
    rigid = ps_roi_align(peak_maps(), roi, 3, 1.0, 2)
    assert pooled[0, 0, 1, 1] > rigid[0, 0, 1, 1] + 1.0
    pooled, shifts = deformable_ps_roi_pool(peak_maps(), roi, 3, 1.0, cost=1000.0)
    assert (shifts == 0).all()
    torch.testing.assert_close(pooled, rigid)
    _, shifts = deformable_ps_roi_pool(peak_maps(), roi, 3, 1.0, cost=0.0)
    assert (shifts[0, 0][others] == 0).all()  # ties (flat maps, no cost) keep the part in place
