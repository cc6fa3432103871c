"""Deformable part-based RoI pooling (DP-FCN, Mordan et al. BMVC'17 / IJCV'18), vectorised over
torchvision's position-sensitive RoI Align.

A RoI is split into k x k parts. With position-sensitive maps, part (i, j) of channel group c reads its own
channel c*k*k + i*k + j (torchvision's ps_roi_align layout). Each part may move by (dx, dy), both in
{-max_shift..max_shift} * shift_step part sizes, and keeps the displacement that maximises its
average-pooled response minus cost * (dx^2 + dy^2): the star model of the slides, each part independent.

Shifting the whole RoI by one displacement moves every part by that displacement, so one ps_roi_align
call on the RoIs shifted by each displacement (all displacements stacked in one call) gives every part's
response at every displacement; the argmax per part selects among them. Gradients flow only through the
selected entries, i.e. the bilinear samples at the kept positions.
"""
from __future__ import annotations

import torch
from torchvision.ops import ps_roi_align


def displacements(max_shift: int, shift_step: float, device: torch.device | None = None) -> torch.Tensor:
    """(S, 2) displacements (dx, dy) in part sizes, S = (2*max_shift+1)^2, nearest to zero first, so that
    ties (flat maps, no cost) keep the part in place (argmax returns the first maximum)."""
    r = torch.arange(-max_shift, max_shift + 1, dtype=torch.float32, device=device) * shift_step
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    d = torch.stack([dx.flatten(), dy.flatten()], 1)
    return d[torch.sort(d.pow(2).sum(1), stable=True).indices]


def _pool_shifted(maps: torch.Tensor, rois: torch.Tensor, k: int, spatial_scale: float, offsets: torch.Tensor,
                  sampling_ratio: int) -> torch.Tensor:
    """ps_roi_align of the RoIs shifted by each offset (part sizes): (S, R, C, k, k)."""
    size = torch.stack([rois[:, 3] - rois[:, 1], rois[:, 4] - rois[:, 2]], 1) / k  # (R, 2) part w, h in px
    shift = (offsets.to(rois.dtype)[:, None, :] * size[None]).repeat(1, 1, 2)      # (S, R, 4): x, y, x, y
    shifted = torch.cat([rois[None, :, :1].expand(len(offsets), -1, -1), rois[None, :, 1:] + shift], 2)
    # float32 whatever the autocast state: the kernel needs one dtype, and float16 would quantise coordinates
    pooled = ps_roi_align(maps.float(), shifted.flatten(0, 1).float(), k, spatial_scale, sampling_ratio)
    return pooled.view(len(offsets), rois.shape[0], -1, k, k)


def deformable_ps_roi_pool(maps: torch.Tensor, rois: torch.Tensor, k: int, spatial_scale: float,
                           max_shift: int = 2, shift_step: float = 0.25, cost: float = 0.1,
                           deformable: bool = True, sampling_ratio: int = 2
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """maps (B, k*k*C, H, W), rois (R, 5) [batch, x1, y1, x2, y2] in input pixels ->
    pooled (R, C, k, k) and shifts (R, C, k, k, 2), the kept (dx, dy) of each part in part sizes.

    `pooled` is the part's response at the kept displacement, without the deformation cost: the cost is a
    fixed prior that chooses where a part looks, not evidence about the class, so scores stay comparable
    with rigid pooling (zero shift, zero cost) and the gradient reaches only the features. The cost term
    has no gradient of its own (lambda is a constant). deformable=False: rigid R-FCN pooling, zero shifts.
    """
    offsets = displacements(max_shift if deformable else 0, shift_step, maps.device)
    responses = _pool_shifted(maps, rois, k, spatial_scale, offsets, sampling_ratio)   # (S, R, C, k, k)
    penalty = cost * offsets.pow(2).sum(1).to(responses.dtype)
    best = (responses.detach() - penalty.view(-1, 1, 1, 1, 1)).argmax(0)                # (R, C, k, k)
    pooled = responses.gather(0, best[None]).squeeze(0)
    return pooled, offsets[best]


def ps_roi_pool_at(maps: torch.Tensor, rois: torch.Tensor, k: int, spatial_scale: float, shifts: torch.Tensor,
                   max_shift: int = 2, shift_step: float = 0.25, sampling_ratio: int = 2) -> torch.Tensor:
    """Pool position-sensitive maps (B, k*k*D, H, W) at given part displacements: shifts (R, G, k, k, 2) as
    returned by deformable_ps_roi_pool with the same max_shift and shift_step -> (R, G, D, k, k): the D
    channels of part (i, j) of group g read at group g's displacement of that part (e.g. class-agnostic
    box maps pooled where each class's parts went). Gradients reach the maps at those positions only."""
    offsets = displacements(max_shift, shift_step, maps.device)
    responses = _pool_shifted(maps, rois, k, spatial_scale, offsets, sampling_ratio)    # (S, R, D, k, k)
    best = (shifts.float()[..., None, :] - offsets).abs().sum(-1).argmin(-1)            # (R, G, k, k)
    R, D = responses.shape[1], responses.shape[2]
    r = torch.arange(R, device=maps.device).view(R, 1, 1, 1, 1)
    d = torch.arange(D, device=maps.device).view(1, 1, D, 1, 1)
    i = torch.arange(k, device=maps.device)
    return responses[best[:, :, None], r, d, i.view(k, 1), i]                           # (R, G, D, k, k)
